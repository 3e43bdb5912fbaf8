"""A resume that would change the run is refused in one line naming the option and its saved value;
options that cannot change the trajectory stay free (FederationConfig.check_resume, one check for
the strategy and fit.py)."""

import pytest
from torch import nn

from lightning_fed import FederatedStrategy
from lightning_fed.nn import variational
from tests.helpers.small_fit import small_fit

SAVED = {"devices_per_round": 2, "local_steps": 2, "client_optimizer": "sgd", "codec": "topk:0.5"}


def _network():
    return variational(nn.Sequential(nn.Flatten(), nn.Linear(784, 10)))


@pytest.fixture(scope="module")
def saved_run(data_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("saved")
    small_fit(data_dir, root, _network, FederatedStrategy(**SAVED), max_steps=2)
    return root / "checkpoints" / "last.ckpt"


CHANGED = [
    ({"devices_per_round": 3}, "with --devices-per-round 2, not 3"),
    ({"local_steps": 3}, "with --local-steps 2, not 3"),
    ({"codec": "topk:0.25"}, "with --codec topk:0.5, not topk:0.25"),
    ({"error_feedback": True}, "without --error-feedback"),
    ({"client_optimizer": "module"}, "with --client-optimizer sgd, not module"),
    ({"client_lr": 0.5}, r"with --client-lr \(none\), not 0.5"),
    ({"server_optimizer": "fedadam"}, r"with --server-optimizer \(none\), not fedadam"),
    ({"failure_rate": 0.2}, "with --failure-rate 0.0, not 0.2"),
    ({"aggregation": "weighted"}, "with --aggregation mean, not weighted"),
    ({"sampling": "weighted"}, "with --sampling uniform, not weighted"),
    ({"proximal_mu": 0.1}, "with --proximal-mu 0.0, not 0.1"),
    ({"mask": False}, "with --mask"),
]


@pytest.mark.parametrize("change, message", CHANGED)
def test_a_resume_with_a_trajectory_option_changed_is_refused_naming_it(
    saved_run, data_dir, tmp_path, change, message
):
    before = saved_run.read_bytes()
    strategy = FederatedStrategy(**{**SAVED, **change})
    with pytest.raises(ValueError, match=f"^checkpoint {saved_run} was trained {message}; resume it with"):
        small_fit(data_dir, tmp_path, _network, strategy, max_steps=4, resume=str(saved_run))
    assert saved_run.read_bytes() == before  # nothing touched
    assert not (tmp_path / "checkpoints").exists()


def test_a_resume_with_another_seed_is_refused(saved_run, data_dir, tmp_path):
    with pytest.raises(ValueError, match=r"was trained with --seed 3, not 4; resume it"):
        small_fit(
            data_dir,
            tmp_path,
            _network,
            FederatedStrategy(**SAVED),
            max_steps=4,
            resume=str(saved_run),
            seed=4,
        )


def test_a_resume_with_the_same_options_and_more_steps_goes_on(saved_run, data_dir, tmp_path):
    _, strategy = small_fit(
        data_dir, tmp_path, _network, FederatedStrategy(**SAVED), max_steps=4, resume=str(saved_run)
    )
    assert strategy.lightning_module.trainer.global_step == 4
    assert len(strategy.ledger.history) == 4


@pytest.mark.parametrize(
    "saved, now, message",
    [
        ("sparse", "model", "with --download-sparse"),
        ("model", "delta", "without --download-delta"),
        ("delta", "sparse", "with --download-delta, not --download-sparse"),
    ],
)
def test_a_resume_with_another_download_names_its_flag(saved, now, message):
    from lightning_fed.federation.config import check_same_trajectory

    with pytest.raises(ValueError, match=f"^checkpoint last.ckpt was trained {message}; resume it with"):
        check_same_trajectory({"download": saved}, {"download": now}, "last.ckpt")
