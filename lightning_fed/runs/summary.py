"""A run's summary (``summary.json``): accuracy, kept weights, the ledger's totals, time, hardware."""

import json
from pathlib import Path

from lightning_fed.runs.hardware import hardware_of

SUMMARY_FILE = "summary.json"


def run_summary(
    trainer,
    kept_fraction: float,
    test_metrics: dict,
    seconds: float,
    train_seconds: float,
    export_sizes: dict,
) -> dict:
    """The figures of a finished (or interrupted) run of ``FederatedStrategy`` under ``trainer``."""
    total = trainer.strategy.ledger.total
    aggregation = getattr(trainer.strategy, "server_aggregation", None)
    return {
        "test_acc": float(test_metrics.get("test/acc", float("nan"))),
        "kept_fraction": kept_fraction,
        "comm_paper_fraction": total.paper_fraction,
        "comm_wire_fraction": total.wire_fraction,
        "comm_paper_bytes": total.paper_bytes,
        "comm_wire_bytes": total.wire_bytes,
        "comm_transport_bytes": total.transport_bytes,
        "comm_dense_bytes": total.dense_bytes,
        "steps": total.steps,
        "rounds": total.steps,
        "devices_per_round": trainer.strategy.devices_per_round or trainer.strategy.num_devices,
        "updates_sent": total.reported,
        "models_received": total.sampled,
        "epochs": trainer.current_epoch,
        "devices": trainer.strategy.num_devices,
        "processes": trainer.world_size,
        "wall_seconds": seconds,
        "train_seconds": train_seconds,
        "hardware": hardware_of(trainer.strategy.root_device),
        "export_bytes": export_sizes.get("export/sparse_bytes"),
        "export_dense_bytes": export_sizes.get("export/dense_bytes"),
        "aggregator": repr(aggregation.aggregator) if aggregation is not None else "mean",
        "rejected_values": aggregation.total_rejected if aggregation is not None else 0,
        **privacy_figures(getattr(aggregation, "privacy", None)),
        **secure_figures(getattr(trainer.strategy, "transport_of_round", None)),
    }


def secure_figures(transport) -> dict:
    """Secure aggregation's figures for the summary: SecAgg+'s bytes by kind and direction, and the
    values its fixed point clipped (empty without it).

    Example::

        >>> from types import SimpleNamespace
        >>> secure_figures(SimpleNamespace(bytes_by_kind={"keys/up": 68}, point=SimpleNamespace(clipped=0)))
        {'secagg_bytes': {'keys/up': 68}, 'secagg_clipped': 0}
        >>> secure_figures(object())
        {}
    """
    if not hasattr(transport, "bytes_by_kind"):
        return {}
    return {"secagg_bytes": dict(transport.bytes_by_kind), "secagg_clipped": transport.point.clipped}


def privacy_figures(privacy) -> dict:
    """DP-FedAvg's figures for the summary: the guarantee spent and its parameters (empty without DP)."""
    if privacy is None:
        return {}
    return {
        "dp_epsilon": privacy.epsilon, "dp_delta": privacy.accountant.delta, "dp_clip": privacy.clip,
        "dp_noise_multiplier": privacy.noise_multiplier, "dp_rounds": privacy.rounds,
        "dp_accountant": privacy.accountant.kind, "dp_neighbours": privacy.accountant.neighbours,
    }  # fmt: skip


def write_run_files(output: Path, summary: dict, ledger: dict) -> None:
    """``summary.json`` (indented, for people) and ``ledger.json`` (the ledger's state) in ``output``.

    Example::

        >>> import tempfile
        >>> folder = Path(tempfile.mkdtemp())
        >>> write_run_files(folder, {"test_acc": 0.9}, {"steps": []})
        >>> sorted(p.name for p in folder.iterdir()), json.loads((folder / "summary.json").read_text())
        (['ledger.json', 'summary.json'], {'test_acc': 0.9})
    """
    (Path(output) / SUMMARY_FILE).write_text(json.dumps(summary, indent=2))
    (Path(output) / "ledger.json").write_text(json.dumps(ledger))


def has_summary(output) -> bool:
    """Whether the run folder ``output`` holds a summary: the run finished (or stopped on Ctrl-C)."""
    return (Path(output).expanduser() / SUMMARY_FILE).is_file()


def read_summary(output, needs: tuple[str, ...] = ()) -> dict:
    """The summary a run wrote into its folder ``output``, holding at least the keys ``needs``.

    Raises ``ValueError``, naming the file and what is wrong with it, where there is no summary,
    it is not JSON, or a key of ``needs`` is missing.

    Example::

        >>> import tempfile
        >>> folder = Path(tempfile.mkdtemp())
        >>> write_run_files(folder, {"test_acc": 0.9, "epochs": 3}, {"steps": []})
        >>> read_summary(folder, needs=("epochs",))["epochs"], has_summary(folder)
        (3, True)
        >>> read_summary(folder, needs=("comm_dense_bytes",))  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: .../summary.json has no comm_dense_bytes
    """
    path = Path(output).expanduser() / SUMMARY_FILE
    try:
        summary = json.loads(path.read_text())
    except OSError as error:
        raise ValueError(f"{path}: cannot read it ({error.strerror or type(error).__name__})") from None
    except ValueError:
        raise ValueError(f"{path} is not JSON") from None
    missing = [key for key in needs if not isinstance(summary, dict) or key not in summary]
    if missing:
        raise ValueError(f"{path} has no {', '.join(missing)}")
    return summary


def format_summary(summary: dict) -> str:
    """The summary as the aligned table fit.py prints."""
    rows = [
        ("test accuracy", f"{100 * summary['test_acc']:.2f} %"),
        ("kept weights", f"{100 * summary['kept_fraction']:.2f} %"),
        ("communication, paper's measure", f"{100 * summary['comm_paper_fraction']:.2f} % of dense"),
        ("communication, wire bytes", f"{100 * summary['comm_wire_fraction']:.2f} % of dense"),
        ("bytes sent (wire)", f"{summary['comm_wire_bytes'] / 2**20:.1f} MiB"),
        ("model file (sparse / dense)", f"{summary['export_bytes']:,} / {summary['export_dense_bytes']:,} B"),
        (
            "devices, per round x rounds",
            f"{summary['devices']}, {summary['devices_per_round']} x {summary['rounds']}",
        ),
        ("updates sent / models received", f"{summary['updates_sent']:,} / {summary['models_received']:,}"),
        (
            "processes, bytes between them",
            f"{summary['processes']}, {summary['comm_transport_bytes'] / 2**20:.1f} MiB",
        ),
        ("wall time (this call)", f"{summary['wall_seconds']:.0f} s"),
        ("training time (all sessions)", f"{summary['train_seconds']:.0f} s"),
        ("trained on", summary["hardware"]),
    ]
    if summary.get("data_source"):
        rows.append(("data", f"{summary['dataset']} from {summary['data_source']}"))
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)
