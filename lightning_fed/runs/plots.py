"""The run's plots as PNG: the paper's Figure 2, cumulative bytes, kept weights per layer, and
validation accuracy against the bytes sent. Epochs are numbered as in the logs, from 0.

Every function takes plain data (a ledger's ``state_dict()``, as in ``ledger.json``, and the
``SparsityMonitor.history`` rows), so the plots can be redrawn from a finished run's files.
Matplotlib's object API is used (no pyplot state), so this works in any process.
"""

from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from lightning_fed.communication import Traffic

GIB = 2**30
LINE_STYLES = ("-", "--", "-.", ":")
MARKERS = ("o", "s", "^", "v", "D", "P", "X")


def _line_style(index: int) -> dict:
    """A line style and marker per index, so lines that overlap stay apart by more than colour."""
    return {"linestyle": LINE_STYLES[index % len(LINE_STYLES)], "marker": MARKERS[index % len(MARKERS)]}


def count_axis(axes, label: str) -> None:
    """Labels the x axis of epochs or steps and ticks it at whole numbers only (a 2-epoch run gets
    0 and 1, not 0.2, 0.4, ...).

    Example::

        >>> axes = Figure().add_subplot()
        >>> _ = axes.plot([0, 1], [0.5, 0.25])
        >>> count_axis(axes, "epoch")
        >>> [float(t) for t in axes.get_xticks() if 0 <= t <= 1]
        [0.0, 1.0]
    """
    axes.set_xlabel(label)
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))


def epoch_fractions(ledger_state: dict) -> dict[str, np.ndarray | None]:
    """Per epoch: ``epoch`` numbers and the fraction of dense communication by each measure:
    ``paper`` (values sent), ``wire`` (payload bytes) and ``golomb`` (the Rice-coded estimate that
    ledgers before real payloads kept; None for every other ledger: their wire bytes are coded).

    Example::

        >>> state = {"epochs": {"0": {"upload": 5, "download": 5, "upload_bytes": 60,
        ...                           "download_bytes": 60, "dense_values": 40,
        ...                           "upload_golomb_bytes": 30, "download_golomb_bytes": 30}}}
        >>> {k: v.tolist() for k, v in epoch_fractions(state).items()}
        {'epoch': [0], 'paper': [0.25], 'wire': [0.75], 'golomb': [0.375]}
    """
    rows = sorted((int(e), t) for e, t in ledger_state.get("epochs", {}).items())
    traffic = [Traffic.from_dict(t) for _, t in rows]
    counted_golomb = all("upload_golomb_bytes" in t for _, t in rows)
    fractions = {"epoch": np.array([e for e, _ in rows], dtype=int)}
    for measure in ("paper", "wire"):
        fractions[measure] = np.array([getattr(t, f"{measure}_fraction") for t in traffic], dtype=float)
    fractions["golomb"] = None
    if counted_golomb and rows:
        golomb = [
            (t["upload_golomb_bytes"] + t["download_golomb_bytes"]) / (4 * t["dense_values"]) for _, t in rows
        ]
        fractions["golomb"] = np.array(golomb, dtype=float)
    return fractions


def cumulative_bytes(ledger_state: dict) -> dict[str, np.ndarray]:
    """Cumulative paper, wire and dense bytes after every step (needs the ledger's history)."""
    history = [Traffic.from_dict(t) for t in ledger_state.get("history", [])]
    return {
        measure: np.cumsum(np.array([getattr(t, f"{measure}_bytes") for t in history], dtype=float))
        for measure in ("paper", "wire", "dense")
    }


def plot_transmitted_fraction(runs: dict[str, dict], path) -> Path:
    """Figure 2 of the paper: fraction of gradients transmitted per epoch, against the dense line.

    ``runs`` maps a label to a ledger state; a dense baseline's ledger may be one of them. Each run
    gets a line per measure (paper's, wire bytes, and Golomb-coded where its ledger counted it).
    """
    figure = Figure(figsize=(6, 4), layout="constrained")
    axes = figure.add_subplot()
    axes.axhline(1.0, color="black", linestyle="--", linewidth=1, label="dense (all gradients)")
    for label, state in runs.items():
        fractions = epoch_fractions(state)
        epochs = fractions["epoch"]
        axes.plot(epochs, fractions["paper"], marker=".", label=f"{label}: values (paper's measure)")
        axes.plot(epochs, fractions["wire"], marker=".", linestyle=":", label=f"{label}: wire bytes")
        if fractions["golomb"] is not None:
            axes.plot(epochs, fractions["golomb"], linestyle="--", label=f"{label}: Golomb-coded")
    axes.set(ylabel="fraction of dense communication", ylim=(0, 1.1))
    count_axis(axes, "epoch (from 0, as logged)")
    axes.set_title("Fraction of gradients transmitted per epoch")
    axes.legend(fontsize="small")
    return _save(figure, path)


def plot_cumulative_bytes(runs: dict[str, dict], path) -> Path:
    """Cumulative GiB over training steps: paper's measure and wire bytes, and the dense equivalent."""
    figure = Figure(figsize=(6, 4), layout="constrained")
    axes = figure.add_subplot()
    for label, state in runs.items():
        totals = cumulative_bytes(state)
        steps = np.arange(1, len(totals["wire"]) + 1)
        axes.plot(steps, totals["wire"] / GIB, label=f"{label}: wire bytes")
        axes.plot(steps, totals["paper"] / GIB, linestyle=":", label=f"{label}: values x 4 B")
        axes.plot(steps, totals["dense"] / GIB, linestyle="--", label=f"{label}: dense SGD would send")
    axes.set(ylabel="cumulative GiB (all devices)")
    count_axis(axes, "step")
    axes.set_title("Cumulative communication")
    axes.legend(fontsize="small")
    return _save(figure, path)


def plot_kept_per_layer(history: list[dict], path, labels: dict[str, str] | None = None) -> Path:
    """Kept fraction of weights per layer (``sparsity/<layer>`` rows of ``SparsityMonitor``).

    ``labels`` names the layers (``{"network.0": "conv1"}``, from :func:`~lightning_fed.nn.layer_labels`);
    each line gets its own style and marker.
    """
    labels = labels or {}
    figure = Figure(figsize=(6, 4), layout="constrained")
    axes = figure.add_subplot()
    epochs = np.array([row["epoch"] for row in history])
    layers = [k for k in (history[0] if history else {}) if k.startswith("sparsity/")]
    for index, key in enumerate(layers):
        name = key.removeprefix("sparsity/")
        style = {"color": "black", "linewidth": 2} if key == "sparsity/total" else _line_style(index)
        label = f"{labels[name]} ({name})" if name in labels else name
        axes.plot(
            epochs, [row[key] for row in history], label=label, markevery=max(len(epochs) // 12, 1), **style
        )
    axes.set(ylabel="kept fraction of weights", yscale="log")
    count_axis(axes, "epoch (from 0, as logged)")
    axes.set_title("Weights kept (log_alpha < T) per layer")
    axes.legend(fontsize="small")
    return _save(figure, path)


def accuracy_against_bytes(ledger_state: dict, epochs: dict[int, dict[str, float]]) -> dict[str, np.ndarray]:
    """Per epoch that has a validation accuracy: the wire bytes sent up to its end, and the accuracy.

    ``epochs`` is :func:`lightning_fed.runs.epoch_log.read_epochs` of the run's folder.

    Example::

        >>> state = {"epochs": {"0": {"upload_bytes": 100, "download_bytes": 0},
        ...                     "1": {"upload_bytes": 50, "download_bytes": 50}}}
        >>> points = accuracy_against_bytes(state, {0: {"val/acc": 0.5}, 1: {"val/acc": 0.75}})
        >>> {k: v.tolist() for k, v in points.items()}
        {'bytes': [100.0, 200.0], 'accuracy': [0.5, 0.75]}
    """
    rows = sorted((int(e), Traffic.from_dict(t)) for e, t in ledger_state.get("epochs", {}).items())
    sent = np.cumsum(np.array([t.wire_bytes for _, t in rows], dtype=float))
    kept = [
        (total, epochs[e]["val/acc"])
        for (e, _), total in zip(rows, sent, strict=True)
        if "val/acc" in epochs.get(e, {})
    ]
    return {
        "bytes": np.array([b for b, _ in kept], dtype=float),
        "accuracy": np.array([a for _, a in kept], dtype=float),
    }


def plot_accuracy_against_bytes(runs: dict[str, tuple[dict, dict]], path) -> Path:
    """Validation accuracy against the cumulative wire bytes, one line per run (dense and sparse
    on one plot): what each byte bought. ``runs`` maps a label to ``(ledger state, epochs)``."""
    figure = Figure(figsize=(6, 4), layout="constrained")
    axes = figure.add_subplot()
    for index, (label, (state, epochs)) in enumerate(runs.items()):
        points = accuracy_against_bytes(state, epochs)
        axes.plot(points["bytes"] / GIB, points["accuracy"], label=label, **_line_style(index))
    axes.set(xlabel="cumulative wire bytes, all devices (GiB, log scale)", ylabel="validation accuracy")
    axes.set_xscale("log")
    axes.set_title("Accuracy against communication")
    axes.legend(fontsize="small")
    return _save(figure, path)


def accuracy_against_rounds(ledger_state: dict, epochs: dict[int, dict[str, float]]) -> dict[str, np.ndarray]:
    """Per epoch that has a validation accuracy: the rounds run up to its end, and the accuracy.

    Example::

        >>> state = {"epochs": {"0": {"steps": 20}, "1": {"steps": 20}, "2": {"steps": 20}}}
        >>> points = accuracy_against_rounds(state, {0: {"val/acc": 0.5}, 2: {"val/acc": 0.75}})
        >>> {k: v.tolist() for k, v in points.items()}
        {'rounds': [20.0, 60.0], 'accuracy': [0.5, 0.75]}
    """
    rows = sorted((int(e), t.get("steps", 0)) for e, t in ledger_state.get("epochs", {}).items())
    rounds = np.cumsum(np.array([steps for _, steps in rows], dtype=float))
    kept = [
        (r, epochs[e]["val/acc"])
        for (e, _), r in zip(rows, rounds, strict=True)
        if "val/acc" in epochs.get(e, {})
    ]
    return {
        "rounds": np.array([r for r, _ in kept], dtype=float),
        "accuracy": np.array([a for _, a in kept], dtype=float),
    }


def plot_accuracy_against_rounds(runs: dict[str, tuple[dict, dict]], path) -> Path:
    """Validation accuracy against the rounds run, one line per run (``runs`` as for
    :func:`plot_accuracy_against_bytes`)."""
    figure = Figure(figsize=(6, 4), layout="constrained")
    axes = figure.add_subplot()
    for index, (label, (state, epochs)) in enumerate(runs.items()):
        points = accuracy_against_rounds(state, epochs)
        axes.plot(points["rounds"], points["accuracy"], label=label, **_line_style(index))
    count_axis(axes, "rounds")
    axes.set_ylabel("validation accuracy")
    axes.set_title("Accuracy against rounds")
    axes.legend(fontsize="small")
    return _save(figure, path)


def accuracy_against_epsilon(epochs: dict[int, dict[str, float]]) -> dict[str, np.ndarray]:
    """Per epoch with both: the privacy budget spent by its end (``privacy/epsilon``, logged by
    ``callbacks.PrivacyMonitor``) and the validation accuracy.

    Example::

        >>> epochs = {0: {"privacy/epsilon": 1.5, "val/acc": 0.6}, 1: {"val/acc": 0.7},
        ...           2: {"privacy/epsilon": 2.0}}
        >>> {k: v.tolist() for k, v in accuracy_against_epsilon(epochs).items()}
        {'epsilon': [1.5], 'accuracy': [0.6]}
    """
    kept = [
        (v["privacy/epsilon"], v["val/acc"])
        for _, v in sorted(epochs.items())
        if {"privacy/epsilon", "val/acc"} <= set(v)
    ]
    return {
        "epsilon": np.array([e for e, _ in kept], dtype=float),
        "accuracy": np.array([a for _, a in kept], dtype=float),
    }


def plot_accuracy_against_epsilon(
    runs: dict[str, dict], path, ceilings: dict[str, float] | None = None
) -> Path:
    """Validation accuracy against the epsilon spent, one line per run (``runs``: a label to the
    run's logged epochs); ``ceilings``: non-private runs' accuracy, drawn as horizontal lines."""
    figure = Figure(figsize=(6, 4), layout="constrained")
    axes = figure.add_subplot()
    for index, (label, epochs) in enumerate(runs.items()):
        points = accuracy_against_epsilon(epochs)
        axes.plot(points["epsilon"], points["accuracy"], label=label, **_line_style(index))
    for index, (label, accuracy) in enumerate((ceilings or {}).items()):
        axes.axhline(accuracy, color="grey", linestyle=("--", ":", "-.")[index % 3], linewidth=1, label=label)
    axes.set(xlabel="epsilon spent (delta 1e-5)", ylabel="validation accuracy")
    axes.set_title("Accuracy against privacy spent")
    axes.legend(fontsize="small")
    return _save(figure, path)


def write_run_plots(
    folder, ledger_state: dict, sparsity_history: list[dict], label: str = "run",
    labels: dict[str, str] | None = None, epochs: dict[int, dict[str, float]] | None = None,
) -> list[Path]:  # fmt: skip
    """The plots of one run, as PNG files in ``folder``; returns their paths.

    ``labels`` names the layers of the kept-weights plot; with ``epochs`` (the run's logged
    epochs) and a validation accuracy among them, accuracy against bytes is drawn too, and under
    differential privacy accuracy against the epsilon spent.
    """
    folder = Path(folder)
    paths = [
        plot_transmitted_fraction({label: ledger_state}, folder / "transmitted_fraction.png"),
        plot_cumulative_bytes({label: ledger_state}, folder / "cumulative_bytes.png"),
    ]
    if sparsity_history:
        paths.append(plot_kept_per_layer(sparsity_history, folder / "kept_per_layer.png", labels))
    if epochs and len(accuracy_against_bytes(ledger_state, epochs)["bytes"]):
        runs = {label: (ledger_state, epochs)}
        paths.append(plot_accuracy_against_bytes(runs, folder / "accuracy_against_bytes.png"))
    if epochs and len(accuracy_against_epsilon(epochs)["epsilon"]):
        paths.append(plot_accuracy_against_epsilon({label: epochs}, folder / "accuracy_against_epsilon.png"))
    return paths


def _save(figure: Figure, path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)
    return path
