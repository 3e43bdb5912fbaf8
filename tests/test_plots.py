"""Figure 2's data: per-epoch fractions of dense communication, by each measure the ledger counts."""

import json

import pytest
import torch

from lightning_fed.communication import CommunicationLedger, SparseCodec, Traffic
from lightning_fed.runs.plots import cumulative_bytes, epoch_fractions, plot_transmitted_fraction


def _ledger_state(kept_per_epoch: list[int], numel: int = 10_000, devices: int = 4) -> dict:
    """One step an epoch: every device uploads ``kept`` entries, the server sends them back."""
    ledger, codec = CommunicationLedger(), SparseCodec()
    for epoch, kept in enumerate(kept_per_epoch):
        message = torch.zeros(numel)
        message[:kept] = 1.0
        payload = codec.encode([message])
        for _ in range(devices):
            ledger.record(Traffic(upload=kept, upload_bytes=len(payload)))
        ledger.record(Traffic(download=devices * kept, download_bytes=devices * len(payload)))
        ledger.record(Traffic(dense_values=2 * devices * numel))
        ledger.end_step(epoch=epoch)
    return ledger.state_dict()


def test_fractions_follow_the_payloads():
    fractions = epoch_fractions(_ledger_state([10_000, 1_000, 50]))
    assert fractions["epoch"].tolist() == [0, 1, 2]
    assert fractions["paper"].tolist() == pytest.approx([1.0, 0.1, 0.005])
    # dense: 5 header bytes on 40,000 of values; sparse: positions cost a little more than the values
    assert fractions["wire"][0] == pytest.approx(1.0 + 5 / 40_000)
    assert fractions["paper"][2] < fractions["wire"][2] < 2 * fractions["paper"][2]
    assert fractions["golomb"] is None  # the estimate of ledgers before real payloads


def test_a_ledger_saved_with_the_golomb_estimate_still_plots_it(tmp_path):
    state = _ledger_state([10_000, 50])
    for epoch in state["epochs"].values():
        epoch["upload_golomb_bytes"] = epoch["download_golomb_bytes"] = epoch["upload_bytes"] // 2
    assert epoch_fractions(state)["golomb"].tolist() == pytest.approx(
        [t["upload_bytes"] / (4 * t["dense_values"]) for t in state["epochs"].values()]
    )
    path = plot_transmitted_fraction({"old": state, "new": _ledger_state([50])}, tmp_path / "f2.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cumulative_bytes_add_up_each_measure_step_by_step():
    totals = cumulative_bytes(_ledger_state([10_000, 50]))
    dense_step = 2 * 4 * 10_000 * 4  # 2 x N x P values of 4 bytes
    assert totals["dense"].tolist() == [dense_step, 2 * dense_step]
    assert totals["paper"].tolist() == [dense_step, dense_step + 2 * 4 * 50 * 4]
    assert totals["paper"][1] < totals["wire"][1] < totals["dense"][1]


def _captured(monkeypatch) -> list:
    from lightning_fed.runs import plots

    figures = []
    monkeypatch.setattr(plots, "_save", lambda figure, path: figures.append(figure) or path)
    return figures


def test_kept_per_layer_numbers_epochs_as_logged_names_layers_and_styles_each_line(monkeypatch, tmp_path):
    from lightning_fed.runs.plots import plot_kept_per_layer

    figures = _captured(monkeypatch)
    rows = [
        {"epoch": e, "sparsity/network.0": 0.5, "sparsity/network.3": 0.5, "sparsity/total": 0.5}
        for e in range(3)
    ]
    plot_kept_per_layer(rows, tmp_path / "kept.png", labels={"network.0": "conv1", "network.3": "fc1"})
    lines = figures[0].axes[0].get_lines()
    assert [list(line.get_xdata()) for line in lines] == [[0, 1, 2]] * 3  # epoch 0 is epoch 0, as in the logs
    assert [line.get_label() for line in lines] == ["conv1 (network.0)", "fc1 (network.3)", "total"]
    assert lines[0].get_linestyle() != lines[1].get_linestyle()  # two lines on top of each other stay apart
    assert lines[0].get_marker() != lines[1].get_marker()


def test_accuracy_against_bytes_puts_dense_and_sparse_on_one_plot_and_each_run_writes_it(
    monkeypatch, tmp_path
):
    from lightning_fed.runs.plots import plot_accuracy_against_bytes, write_run_plots

    dense, sparse = _ledger_state([10_000, 10_000]), _ledger_state([10_000, 50])
    epochs = {0: {"val/acc": 0.6}, 1: {"val/acc": 0.7}}
    figures = _captured(monkeypatch)
    plot_accuracy_against_bytes({"dense": (dense, epochs), "sparse": (sparse, epochs)}, tmp_path / "a.png")
    axes = figures[0].axes[0]
    (dense_line, sparse_line) = axes.get_lines()
    assert list(dense_line.get_ydata()) == list(sparse_line.get_ydata()) == [0.6, 0.7]
    assert sparse_line.get_xdata()[1] < dense_line.get_xdata()[1]  # the same accuracy for fewer bytes
    assert axes.get_xscale() == "log"
    names = [p.name for p in write_run_plots(tmp_path, sparse, [], epochs=epochs)]
    assert "accuracy_against_bytes.png" in names
    assert "accuracy_against_bytes.png" not in [p.name for p in write_run_plots(tmp_path, sparse, [])]


def test_accuracy_against_epsilon_draws_each_run_and_the_ceilings_and_a_private_run_writes_it(
    monkeypatch, tmp_path
):
    from lightning_fed.runs.plots import plot_accuracy_against_epsilon, write_run_plots

    private = {0: {"privacy/epsilon": 1.0, "val/acc": 0.5}, 1: {"privacy/epsilon": 2.5, "val/acc": 0.6}}
    other = {0: {"privacy/epsilon": 0.5, "val/acc": 0.4}, 1: {"privacy/epsilon": 1.0, "val/acc": 0.45}}
    figures = _captured(monkeypatch)
    plot_accuracy_against_epsilon(
        {"sparse": private, "dense": other}, tmp_path / "e.png", {"non-private": 0.8}
    )
    lines = figures[0].axes[0].get_lines()
    assert [list(line.get_xdata()) for line in lines[:2]] == [[1.0, 2.5], [0.5, 1.0]]
    assert list(lines[1].get_ydata()) == [0.4, 0.45] and list(lines[2].get_ydata()) == [0.8, 0.8]
    state = _ledger_state([10_000, 50])
    assert "accuracy_against_epsilon.png" in [
        p.name for p in write_run_plots(tmp_path, state, [], epochs=private)
    ]
    plain = {0: {"val/acc": 0.6}}
    assert "accuracy_against_epsilon.png" not in [
        p.name for p in write_run_plots(tmp_path, state, [], epochs=plain)
    ]


def _run_folder(root, name: str, accuracies: list[float]):
    """A fit.py run folder of one 10-round epoch per accuracy: its ledger and CSV log."""
    folder = root / name
    (folder / "csv" / "version_0").mkdir(parents=True)
    traffic = {"steps": 10, "upload_bytes": 100, "download_bytes": 100}
    epochs = {str(e): traffic for e in range(len(accuracies))}
    (folder / "ledger.json").write_text(json.dumps({"epochs": epochs}))
    rows = "".join(f"{e},{a}\n" for e, a in enumerate(accuracies))
    (folder / "csv" / "version_0" / "metrics.csv").write_text("epoch,val/acc\n" + rows)
    return folder


def test_a_comparison_draws_each_run_against_rounds_and_bytes(monkeypatch, tmp_path):
    from scripts.plot_comparison import main

    dense, sparse = _run_folder(tmp_path, "dense", [0.5, 0.7]), _run_folder(tmp_path, "sparse", [0.4, 0.6])
    figures = _captured(monkeypatch)
    main(["--run", f"dense={dense}", "--run", f"sparse={sparse}", "--out", str(tmp_path / "plots")])
    rounds, sent = (figure.axes[0] for figure in figures)
    assert [list(line.get_xdata()) for line in rounds.get_lines()] == [[10.0, 20.0]] * 2
    assert [list(line.get_ydata()) for line in sent.get_lines()] == [[0.5, 0.7], [0.4, 0.6]]
    assert [t.get_text() for t in rounds.get_legend().get_texts()] == ["dense", "sparse"]


@pytest.mark.parametrize(
    "run, message",
    [("dense", "'dense' is not LABEL=RUN_DIR"), ("dense=/nowhere", "/nowhere has no ledger.json")],
)
def test_a_comparison_of_a_bad_run_is_one_line_naming_it(run, message, tmp_path, capsys):
    from scripts.plot_comparison import main

    with pytest.raises(SystemExit) as stop:
        main(["--run", run, "--out", str(tmp_path / "plots")])
    err = capsys.readouterr().err
    assert stop.value.code == 2 and message in err and err.count("\n") == 1
    assert not (tmp_path / "plots").exists()
