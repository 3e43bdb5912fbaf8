"""Figure 2's data: per-epoch fractions of dense communication, by each measure the ledger counts."""

import pytest

from lightning_fed.communication import CommunicationLedger, bucket_traffic
from lightning_fed.plots import cumulative_bytes, epoch_fractions, plot_transmitted_fraction


def _ledger_state(kept_per_epoch: list[int], numel: int = 10_000, devices: int = 4) -> dict:
    ledger = CommunicationLedger()
    for epoch, kept in enumerate(kept_per_epoch):
        ledger.record(bucket_traffic([[kept]] * devices, [kept], [numel], [True], devices))
        ledger.end_step(epoch=epoch)
    return ledger.state_dict()


def test_fractions_follow_the_ledger_and_golomb_is_cheapest_when_sparse():
    fractions = epoch_fractions(_ledger_state([10_000, 1_000, 50]))
    assert fractions["epoch"].tolist() == [0, 1, 2]
    assert fractions["paper"].tolist() == pytest.approx([1.0, 0.1, 0.005])
    # dense: nothing to index; sparse: positions cost, Rice-coded gaps less than 32-bit indices
    assert fractions["wire"][0] == fractions["golomb"][0] == pytest.approx(1.0)
    assert fractions["paper"][2] < fractions["golomb"][2] < fractions["wire"][2]


def test_a_ledger_saved_before_the_golomb_measure_has_no_golomb_line(tmp_path):
    state = _ledger_state([10_000, 50])
    for epoch in state["epochs"].values():
        del epoch["upload_golomb_bytes"], epoch["download_golomb_bytes"]
    assert epoch_fractions(state)["golomb"] is None
    path = plot_transmitted_fraction({"old": state, "new": _ledger_state([50])}, tmp_path / "f2.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cumulative_bytes_add_up_each_measure_step_by_step():
    totals = cumulative_bytes(_ledger_state([10_000, 50]))
    dense_step = 2 * 4 * 10_000 * 4  # 2 x N x P values of 4 bytes
    assert totals["dense"].tolist() == [dense_step, 2 * dense_step]
    assert totals["paper"].tolist() == [dense_step, dense_step + 2 * 4 * 50 * 4]
    assert totals["paper"][1] < totals["wire"][1] < totals["dense"][1]
