"""SparseVDClassifier: the ELBO, masking inside Lightning, init_from, checkpoints, bad input."""

import pytest
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, TensorDataset

from lightning_fed.nn import kl_divergence, sparsity
from modules.catalog import TEXT_NETWORKS
from modules.classifier import SparseVDClassifier
from modules.networks import NETWORKS, build_network


def _loader(n=64, seed=0):
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 1, 28, 28, generator=generator)
    y = torch.randint(0, 10, (n,), generator=generator)
    return DataLoader(TensorDataset(x, y), batch_size=16)


def _trainer(tmp_path, **kwargs):
    options = dict(
        accelerator="cpu",
        devices=1,
        max_epochs=1,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
    )
    options.update(kwargs)
    return pl.Trainer(**options)


def test_loss_is_the_elbo_with_the_whole_training_set_size():
    model = SparseVDClassifier("lenet300_100", num_train=1000, kl_weight=0.5)
    x, y = torch.randn(8, 1, 28, 28), torch.randint(0, 10, (8,))
    terms = model.elbo_terms(model(x), y)
    expected = terms["nll"] + 0.5 * kl_divergence(model.network) / 1000
    assert torch.allclose(terms["loss"], expected)
    assert terms["kl"] > 0


def test_dense_baseline_has_no_kl_and_no_variational_layers():
    model = SparseVDClassifier("lenet300_100", num_train=100, dense=True)
    assert model.kept_fraction() == 1.0 and not model.gradient_masks
    terms = model.elbo_terms(model(torch.randn(2, 1, 28, 28)), torch.tensor([1, 2]))
    assert terms["kl"] == 0 and torch.equal(terms["loss"], terms["nll"])


def test_training_in_lightning_masks_gradients_and_sparsifies(tmp_path):
    torch.manual_seed(0)
    model = SparseVDClassifier("lenet300_100", num_train=64, lr=1e-2)
    seen = []

    class Check(pl.Callback):
        def on_before_optimizer_step(self, trainer, pl_module, optimizer):
            for name, mask in pl_module.gradient_masks.items():
                grad = pl_module.network.get_submodule(name).weight.grad
                seen.append(bool(torch.all(grad[~mask] == 0)))

    _trainer(tmp_path, max_epochs=3, callbacks=[Check()]).fit(model, _loader())
    assert seen and all(seen)
    assert sparsity(model.network)["total"].fraction < 1.0


def test_checkpoint_round_trips_theta_and_log_sigma2(tmp_path):
    torch.manual_seed(0)
    model = SparseVDClassifier("lenet5", num_train=64)
    trainer = _trainer(tmp_path, max_epochs=1)
    trainer.fit(model, _loader())
    path = tmp_path / "model.ckpt"
    trainer.save_checkpoint(path)
    restored = SparseVDClassifier.load_from_checkpoint(path)
    for (name, a), (_, b) in zip(model.state_dict().items(), restored.state_dict().items(), strict=True):
        assert torch.equal(a, b), name
    assert any(name.endswith("log_sigma2") for name in restored.state_dict())


def test_init_from_dense_and_variational_sources(tmp_path):
    dense = build_network("cifarnet", 1, 28, 10)
    torch.save(dense.state_dict(), tmp_path / "dense.pt")
    model = SparseVDClassifier("cifarnet", num_train=10, init_from=str(tmp_path / "dense.pt"))
    assert torch.equal(model.network[0].weight, dense[0].weight)
    assert torch.all(model.network[0].log_sigma2 == -10.0)
    with torch.no_grad():
        model.network[0].log_sigma2.fill_(-4.0)
    again = SparseVDClassifier("cifarnet", num_train=10, init_from={"state_dict": model.state_dict()})
    assert torch.all(again.network[0].log_sigma2 == -4.0)
    baseline = SparseVDClassifier("cifarnet", num_train=10, dense=True, init_from=model.state_dict())
    assert torch.equal(baseline.network[7].weight, model.network[7].weight)


def test_init_from_mismatch_and_bad_files_are_clear_errors(tmp_path):
    torch.save(build_network("lenet5", 1, 28, 10).state_dict(), tmp_path / "lenet.pt")
    with pytest.raises(ValueError, match=r"init_from: checkpoint does not match the network"):
        SparseVDClassifier("cifarnet", num_train=10, init_from=str(tmp_path / "lenet.pt"))
    torch.save(build_network("cifarnet", 1, 32, 10).state_dict(), tmp_path / "wide.pt")
    with pytest.raises(ValueError, match=r"'7.weight' has shape \(384, 4096\)"):
        SparseVDClassifier("cifarnet", num_train=10, init_from=str(tmp_path / "wide.pt"))
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match=r"is not a readable PyTorch file"):
        SparseVDClassifier("cifarnet", num_train=10, init_from=str(tmp_path / "junk.pt"))
    with pytest.raises(FileNotFoundError, match=r"does not exist"):
        SparseVDClassifier("cifarnet", num_train=10, init_from=str(tmp_path / "absent.pt"))


@pytest.mark.parametrize("num_train", [0, -5, 2.5])
def test_bad_training_set_size(num_train):
    with pytest.raises(ValueError, match=rf"num_train must be a positive integer .*got {num_train}"):
        SparseVDClassifier("lenet5", num_train=num_train)


def test_bad_threshold_and_network_name():
    with pytest.raises(ValueError, match=r"threshold must be a finite number, got nan"):
        SparseVDClassifier("lenet5", num_train=10, threshold=float("nan"))
    with pytest.raises(
        ValueError, match=r"unknown network 'alexnet'; choose one of char_lstm, char_lstm_small, cifarnet"
    ):
        SparseVDClassifier("alexnet", num_train=10)
    with pytest.raises(ValueError, match=r"lr must be a finite number > 0, got -1"):
        SparseVDClassifier("lenet5", num_train=10, lr=-1)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"lr_schedule": "step"}, r"lr_schedule must be one of constant, cosine, got 'step'"),
        ({"min_lr_ratio": 2.0}, r"min_lr_ratio must be in \[0, 1\], got 2.0"),
        ({"min_lr_ratio": -0.5}, r"min_lr_ratio must be a finite number >= 0, got -0.5"),
    ],
)
def test_bad_learning_rate_schedule(kwargs, message):
    with pytest.raises(ValueError, match=message):
        SparseVDClassifier("lenet5", num_train=10, **kwargs)


@pytest.mark.parametrize(
    ("schedule", "factors"), [("constant", [1.0, 1.0, 1.0]), ("cosine", [1.0, 0.55, 0.1])]
)
def test_learning_rate_schedule_steps_every_group_once_per_epoch(schedule, factors, tmp_path):
    model = SparseVDClassifier(
        "lenet300_100", num_train=64, lr=1e-2, log_sigma2_lr=1e-3, lr_schedule=schedule, min_lr_ratio=0.1
    )
    seen = []

    class Look(pl.Callback):
        def on_train_epoch_start(self, trainer, pl_module):
            seen.append([group["lr"] for group in trainer.optimizers[0].param_groups])

    _trainer(tmp_path, max_epochs=3, callbacks=[Look()]).fit(model, _loader())
    assert [lr for epoch in seen for lr in epoch] == pytest.approx(
        [lr * f for f in factors for lr in (1e-2, 1e-3)]
    )


@pytest.mark.parametrize("name", sorted(set(NETWORKS) - set(TEXT_NETWORKS)))
@pytest.mark.parametrize("shape", [(1, 28), (3, 32)])
def test_every_network_runs_on_both_input_kinds(name, shape):
    channels, size = shape
    net = build_network(name, channels, size, num_classes=7).eval()
    assert net(torch.zeros(2, channels, size, size)).shape == (2, 7)


@pytest.mark.parametrize("name", TEXT_NETWORKS)
def test_every_text_network_predicts_the_next_character_of_each_window(name):
    net = build_network(name, 1, 80, num_classes=81).eval()
    assert net(torch.zeros(2, 80, dtype=torch.int64)).shape == (2, 81)
