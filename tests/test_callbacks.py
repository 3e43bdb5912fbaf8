"""The callbacks in a project that knows nothing of lightning-fed, and with ours; resume; bad arguments."""

import csv
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.loggers import CSVLogger, WandbLogger
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from callbacks import (
    CommunicationBudget,
    CommunicationMonitor,
    KLWarmup,
    SparseModelExport,
    SparsityMonitor,
    load_sparse_state_dict,
)
from callbacks.traffic import dense_step_bytes
from tests.helpers.wandb_records import history_rows, run_file

STEPS_PER_EPOCH = 4


class ForeignModule(pl.LightningModule):
    """A plain module with magnitude-pruned first layer (75 % zeros) and a ``kl_weight``."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3))
        keep = torch.arange(16 * 8).reshape(16, 8) % 4 == 0
        self.register_buffer("keep", keep)
        with torch.no_grad():
            self.net[0].weight.mul_(keep)
        self.net[0].weight.register_hook(lambda grad: grad * self.keep)
        self.kl_weight = 0.0
        self.seen_kl_weights: list[float] = []

    def training_step(self, batch, batch_idx):
        self.seen_kl_weights.append(self.kl_weight)
        x, y = batch
        return nn.functional.cross_entropy(self.net(x), y)

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.log("val/acc", (self.net(x).argmax(1) == y).float().mean())

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def loaders():
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(64, 8, generator=generator)
    y = torch.randint(0, 3, (64,), generator=generator)
    data = TensorDataset(x, y)
    return DataLoader(data, batch_size=16), DataLoader(data, batch_size=64)


def all_callbacks(folder: Path, max_bytes: float = 1e12) -> list[pl.Callback]:
    return [
        SparsityMonitor(log_histograms=True),
        CommunicationMonitor(logging_interval=1),
        KLWarmup(warmup=1, delay=0, unit="epochs"),
        SparseModelExport(dirpath=folder),
        CommunicationBudget(max_bytes=max_bytes),
    ]


def trainer_for(folder: Path, callbacks, max_epochs: int, wandb: bool = False) -> pl.Trainer:
    loggers = [CSVLogger(folder, name="csv", version=0)]
    if wandb:
        loggers.append(WandbLogger(project="test", save_dir=str(folder), mode="offline"))
    return pl.Trainer(
        accelerator="cpu", devices=1, max_epochs=max_epochs, logger=loggers, callbacks=list(callbacks),
        enable_progress_bar=False, enable_model_summary=False, log_every_n_steps=1,
        default_root_dir=folder, num_sanity_val_steps=0,
    )  # fmt: skip


def csv_rows(folder: Path) -> list[dict]:
    with open(folder / "csv" / "version_0" / "metrics.csv") as handle:
        return list(csv.DictReader(handle))


def last_value(rows: list[dict], key: str) -> float:
    return float([row[key] for row in rows if row.get(key)][-1])


def test_every_callback_in_a_foreign_module_with_csv_and_wandb(tmp_path):
    module, callbacks = ForeignModule(), all_callbacks(tmp_path)
    trainer = trainer_for(tmp_path, callbacks, max_epochs=2, wandb=True)
    trainer.fit(module, *loaders())
    trainer.loggers[1].experiment.finish()
    steps, step_bytes = 2 * STEPS_PER_EPOCH, dense_step_bytes(module, 1)
    # KLWarmup: weight 0 -> 1 over the first epoch, 1 after
    assert module.seen_kl_weights == [0.0, 0.25, 0.5, 0.75, 1.0, 1.0, 1.0, 1.0]
    rows = csv_rows(tmp_path)
    # SparsityMonitor counts exact zeros of the pruned layer
    assert last_value(rows, "sparsity/net.0") == 0.25 and last_value(rows, "sparsity/net.2") == 1.0
    # CommunicationMonitor: dense traffic implied by the parameter count
    assert last_value(rows, "comm/total/dense_bytes") == steps * step_bytes
    assert callbacks[4].spent_bytes == steps * step_bytes and trainer.global_step == steps
    # the same metrics reach W&B
    wandb_rows = history_rows(run_file(tmp_path / "wandb"))
    keys = set().union(*wandb_rows)
    assert {"sparsity/net.0", "comm/total/dense_bytes", "comm/budget_used", "export/sparse_bytes"} <= keys
    assert any(key.startswith("log_alpha/") for key in keys) is False  # no variational layer here
    # SparseModelExport: the state dict round trip is exact
    state = load_sparse_state_dict(tmp_path / "sparse_model.pt")
    for name, value in module.state_dict().items():
        assert torch.equal(state[name], value), name


def _mlp() -> nn.Module:
    return nn.Sequential(
        nn.Flatten(), nn.Linear(8, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 3)
    )


def _tiny_sparse_vd():
    from modules.classifier import SparseVDClassifier

    torch.manual_seed(0)
    return SparseVDClassifier(_mlp(), num_train=6400, num_classes=3, init_log_sigma2=-4.0, lr=1e-3)


def test_export_of_our_sparse_model_is_smaller_by_the_kept_fraction_and_tests_the_same(tmp_path):
    from modules.classifier import SparseVDClassifier

    model = _tiny_sparse_vd()
    trainer = trainer_for(
        tmp_path, [SparseModelExport(dirpath=tmp_path), SparsityMonitor(log_histograms=True)], 3, wandb=True
    )
    train, test = loaders()
    trainer.fit(model, train, test)
    sizes = trainer.callbacks[0].sizes
    kept = model.kept_fraction()
    assert 0.05 < kept < 0.8  # a real mix of kept and dropped weights
    dense_bytes, tensors = sizes["export/dense_bytes"], len(model.network.state_dict())
    # values (4 B per kept weight) + a bitmap (1/32 of dense), plus ~1 KiB of zip entry per tensor
    assert (
        kept * dense_bytes <= sizes["export/sparse_bytes"] <= dense_bytes * (kept + 1 / 32) + 1024 * tensors
    )
    expected = trainer.test(model, test, verbose=False)[0]["test/acc"]
    dense = SparseVDClassifier(_mlp(), num_train=64, num_classes=3, dense=True)
    dense.load_state_dict(load_sparse_state_dict(tmp_path / "sparse_model.pt"))
    assert trainer.test(dense, test, verbose=False)[0]["test/acc"] == expected
    model.eval()
    x = test.dataset.tensors[0]
    assert torch.equal(dense.eval()(x), model(x))
    trainer.loggers[1].experiment.finish()
    rows = history_rows(run_file(tmp_path / "wandb"))
    assert {"sparsity/total", "sparsity/network.1"} <= set().union(*rows)
    histograms = [row["log_alpha/network.1/_type"] for row in rows if "log_alpha/network.1/_type" in row]
    assert histograms == ["histogram"] * 3  # one per epoch


def test_budget_stops_training_after_the_step_that_spends_it(tmp_path):
    module = ForeignModule()
    step_bytes = dense_step_bytes(module, 1)
    budget = CommunicationBudget(max_bytes=3.5 * step_bytes)
    trainer = trainer_for(tmp_path, [budget], max_epochs=5)
    trainer.fit(module, *loaders())
    assert trainer.global_step == 4 and budget.stopped_step == 4
    assert budget.spent_bytes == 4 * step_bytes


def test_resumed_callbacks_continue_their_schedules_and_totals(tmp_path):
    whole_callbacks = all_callbacks(tmp_path / "whole")
    trainer_for(tmp_path / "whole", whole_callbacks, max_epochs=3).fit(ForeignModule(), *loaders())
    trainer_for(tmp_path / "first", all_callbacks(tmp_path / "first"), max_epochs=1).fit(
        ForeignModule(), *loaders()
    )
    checkpoint = next((tmp_path / "first").rglob("*.ckpt"))
    resumed_module, resumed_callbacks = ForeignModule(), all_callbacks(tmp_path / "resumed")
    trainer_for(tmp_path / "resumed", resumed_callbacks, max_epochs=3).fit(
        resumed_module, *loaders(), ckpt_path=checkpoint
    )
    for whole, resumed in zip(whole_callbacks, resumed_callbacks, strict=True):
        assert resumed.state_dict() == whole.state_dict(), type(whole).__name__
    assert resumed_module.seen_kl_weights == [1.0] * 8  # epochs 2 and 3: the ramp is over
    assert len(resumed_callbacks[0].history) == 3  # epoch 1's row came back from the checkpoint
    whole_rows, resumed_rows = csv_rows(tmp_path / "whole"), csv_rows(tmp_path / "resumed")
    for key in ("comm/total/dense_bytes", "sparsity/total", "train/kl_weight"):
        if any(row.get(key) for row in whole_rows):
            assert last_value(resumed_rows, key) == last_value(whole_rows, key), key


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: SparsityMonitor(log_histograms="yes"), r"log_histograms must be True or False, got 'yes'"),
        (
            lambda: CommunicationMonitor(logging_interval=0),
            r"logging_interval must be an integer >= 1, got 0",
        ),
        (lambda: CommunicationMonitor(bytes_axis=1), r"bytes_axis must be True or False, got 1"),
        (lambda: KLWarmup(warmup=-1), r"warmup must be a finite number >= 0, got -1"),
        (lambda: KLWarmup(delay=float("nan")), r"delay must be a finite number >= 0, got nan"),
        (lambda: KLWarmup(start=2), r"start must be a number in \[0, 1\], got 2"),
        (lambda: KLWarmup(end=-1), r"end must be a finite number >= 0, got -1"),
        (lambda: KLWarmup(shape="step"), r"shape should be 'linear' or 'cosine', got 'step'"),
        (lambda: KLWarmup(unit="batches"), r"unit should be 'epochs' or 'steps', got 'batches'"),
        (lambda: KLWarmup(warmup=True), r"warmup must be a finite number >= 0, got True"),
        (lambda: KLWarmup(decay=-2, decay_at=5), r"decay must be a finite number >= 0, got -2"),
        (lambda: KLWarmup(decay_to=float("inf")), r"decay_to must be a finite number >= 0, got inf"),
        (
            lambda: KLWarmup(warmup=10, delay=5, decay_at=12),
            r"decay_at must be None or a finite number >= delay \+ warmup \(15\), got 12",
        ),
        (lambda: KLWarmup(decay_at="30"), r"decay_at must be None or a finite number .* got '30'"),
        (lambda: SparseModelExport(value_dtype="int8"), r"value_dtype must be one of float32, float16"),
        (lambda: SparseModelExport(filename="a/b.pt"), r"filename must be a plain file name, got 'a/b.pt'"),
        (lambda: CommunicationBudget(max_bytes=0), r"max_bytes must be a finite number of bytes > 0, got 0"),
        (lambda: CommunicationBudget(max_bytes=float("inf")), r"max_bytes must be .* got inf"),
        (
            lambda: CommunicationBudget(1e9, measure="bits"),
            r"measure must be one of wire, paper, got 'bits'",
        ),
    ],
)
def test_bad_arguments_are_one_clear_error(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_missing_or_foreign_export_file_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"sparse model '.*absent.pt' does not exist"):
        load_sparse_state_dict(tmp_path / "absent.pt")
    torch.save({"weight": torch.zeros(2)}, tmp_path / "plain.pt")
    with pytest.raises(ValueError, match=r"is not a lightning-fed-sparse/1 file"):
        load_sparse_state_dict(tmp_path / "plain.pt")


def test_kl_warmup_ramps_to_its_end_weight_in_a_fit(tmp_path):
    module = ForeignModule()
    trainer_for(tmp_path, [KLWarmup(warmup=1, end=0.5)], max_epochs=2).fit(module, *loaders())
    assert module.seen_kl_weights == [0.0, 0.125, 0.25, 0.375, 0.5, 0.5, 0.5, 0.5]


def test_kl_weight_falls_after_the_ramp_when_a_decay_is_given(tmp_path):
    module = ForeignModule()
    warmup = KLWarmup(warmup=1, end=0.5, decay_at=2, decay=1, decay_to=0.1)
    trainer_for(tmp_path, [warmup], max_epochs=4).fit(module, *loaders())
    ramp, hold, fall, after = (module.seen_kl_weights[i : i + 4] for i in range(0, 16, 4))
    assert ramp == [0.0, 0.125, 0.25, 0.375] and hold == [0.5] * 4
    assert fall == pytest.approx([0.5, 0.4, 0.3, 0.2]) and after == pytest.approx([0.1] * 4)
