"""What ``scripts/fit.py`` does once its arguments are parsed: check, build, fit, test, summarise."""

import logging
import os
import re
import shlex
import sys
import time
import traceback
import warnings
from pathlib import Path

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import ModelSummary, Timer
from pytorch_lightning.loggers import CSVLogger

from callbacks import (
    CommunicationBudget,
    CommunicationMonitor,
    FederatedEvaluation,
    KLWarmup,
    PrivacyMonitor,
    RobustnessMonitor,
    RunCheckpoint,
    RunProgressBar,
    SparseModelExport,
    SparsityMonitor,
)
from datamodules import FederatedDataModule
from lightning_fed import FederatedStrategy
from lightning_fed.federation import DeviceFailed, NonFiniteError
from lightning_fed.federation.config import FederationConfig
from lightning_fed.federation.node_watch import NodeLost
from lightning_fed.nn import layer_labels
from lightning_fed.runs.cluster import node_line
from lightning_fed.runs.epoch_log import read_epochs
from lightning_fed.runs.hardware import default_processes, is_launcher, resolve_accelerator, strategy_options
from lightning_fed.runs.plots import write_run_plots
from lightning_fed.runs.resume import last_checkpoint, resume_checkpoint
from lightning_fed.runs.run_lock import RunFolderInUse, hold_run_folder
from lightning_fed.runs.screen import drop_lightning_noise, lightning_info_to
from lightning_fed.runs.summary import format_summary, run_summary, write_run_files
from lightning_fed.runs.wandb_run import finish_wandb, wandb_logger
from lightning_fed.secure.aborted import SecAggAborted
from modules.classifier import SparseVDClassifier

INTERRUPTED = 130  # fit.py's exit code after Ctrl-C (128 + SIGINT, as shells report it)


drop_lightning_noise()  # Lightning's warnings about itself, and advice that does not apply (runs.screen)


class FitError(Exception):
    """Bad input to fit.py: printed as one line, exit code 2."""


# The library's errors name its arguments; fit.py's user typed the flags.
_FLAGS = {
    "num_devices": "--devices", "batch_size": "--batch-size", "val_size": "--val-size",
    "devices_per_round": "--devices-per-round", "classes_per_device": "--classes-per-device",
    "num_shards": "--num-shards", "min_lr_ratio": "--min-lr-ratio", "max_bytes": "--comm-budget-bytes",
    "accelerator": "--accelerator", "output_dir": "--output-dir", "resume": "--resume",
    "network": "--network", "data_dir": "--data-dir", "sampling": "--sampling",
    "aggregation": "--aggregation", "aggregator": "--aggregator", "enforce_mask": "--enforce-mask",
    "attack": "--attack", "malicious_fraction": "--malicious-fraction", "dp_clip": "--dp-clip",
    "dp_noise_multiplier": "--dp-noise-multiplier", "target_epsilon": "--target-epsilon",
    "dp_delta": "--dp-delta", "dp_accountant": "--dp-accountant", "share_log_sigma2": "--share-log-sigma2",
    "dp_target_quantile": "--dp-target-quantile", "dp_clip_lr": "--dp-clip-lr",
    "dp_count_noise": "--dp-count-noise", "secure_aggregation": "--secure-aggregation",
    "secagg_neighbours": "--secagg-neighbours", "secagg_threshold": "--secagg-threshold",
    "secagg_range": "--secagg-range", "secagg_late_failure_rate": "--secagg-late-failure-rate",
    "secagg_support": "--secagg-support",
}  # fmt: skip
# a library argument set to True is a flag given
_SWITCHES = {"download=True": "--download", "secure_aggregation=True": "--secure-aggregation"}


def as_flags(message: str) -> str:
    """``message`` with the library's argument names replaced by fit.py's flags: ``name=value``
    always, a bare name only where it has an underscore (``resume it`` stays words).

    Example::

        >>> as_flags("num_devices=70000 exceeds the 55000 training samples; use at most 55000 devices")
        '--devices 70000 exceeds the 55000 training samples; use at most 55000 devices'
        >>> as_flags("accelerator=gpu needs a GPU, this machine has none; use accelerator=cpu")
        '--accelerator gpu needs a GPU, this machine has none; use --accelerator cpu'
        >>> as_flags("data_dir='x' holds no mnist data; pass download=True to fetch it there")
        "--data-dir 'x' holds no mnist data; pass --download to fetch it there"
    """
    for text, flag in _SWITCHES.items():
        message = message.replace(text, flag)
    for name, flag in _FLAGS.items():
        message = re.sub(rf"(?<![-\w]){name}=", f"{flag} ", message)
        if "_" in name:
            message = re.sub(rf"(?<![-\w]){name}\b", flag, message)  # not the flag just written
    return message


def build_datamodule(args) -> FederatedDataModule:
    params = {"iid": {"unequal_sigma": args.unequal_sigma}, "dirichlet": {"alpha": args.dirichlet_alpha}}
    params["shards"] = {"num_shards": args.num_shards} if args.num_shards else {}
    params["pathological"] = {"classes_per_device": args.classes_per_device}
    params["sizeskew"] = {"distribution": args.size_distribution, "exponent": args.size_exponent}
    dm = FederatedDataModule(
        args.dataset, args.devices, args.partition, params.get(args.partition, {}), args.batch_size,
        args.data_dir, args.seed, args.download, 0, args.val_size, args.augment, args.window, args.stride,
    )  # fmt: skip
    dm.setup("fit")  # load and partition now, so bad data fails before any process starts
    dm.check_shard_sizes(full_batches=not sends_rounds(args))
    return dm


def sends_rounds(args) -> bool:
    """Whether the run's rounds sample devices, take local steps or lose devices (not the paper's)."""
    every = args.devices_per_round in (None, args.devices)
    local = args.local_steps not in (None, 1) or args.local_epochs is not None
    return not every or local or args.failure_rate > 0


def round_options(args) -> dict:
    """``FederatedStrategy``'s round options from fit.py's flags."""
    return {
        "devices_per_round": args.devices_per_round, "sampling": args.sampling,
        "local_steps": args.local_steps or 1, "local_epochs": args.local_epochs,
        "failure_rate": args.failure_rate, "server_optimizer": args.server_optimizer,
        "server_lr": args.server_lr, "server_momentum": args.server_momentum,
        "client_optimizer": args.client_optimizer, "client_lr": args.client_lr,
        "proximal_mu": args.proximal_mu, "device_store": args.device_store, "placement": args.placement,
        "codec": args.codec, "download_codec": args.download_codec,
        "error_feedback": args.error_feedback, "error_feedback_momentum": args.error_feedback_momentum,
        "download_error_feedback": args.download_error_feedback,
        "download": "delta" if args.download_delta else "sparse" if args.download_sparse else "model",
        "aggregator": args.aggregator, "enforce_mask": args.enforce_mask, "attack": args.attack,
        "malicious_fraction": args.malicious_fraction, "worker_momentum": args.worker_momentum,
        "dp_clip": args.dp_clip,
        "dp_noise_multiplier": args.dp_noise_multiplier, "target_epsilon": args.target_epsilon,
        "dp_delta": args.dp_delta, "dp_accountant": args.dp_accountant,
        "dp_target_quantile": args.dp_target_quantile, "dp_clip_lr": args.dp_clip_lr,
        "dp_count_noise": args.dp_count_noise, "secure_aggregation": args.secure_aggregation,
        "secagg_neighbours": args.secagg_neighbours, "secagg_threshold": args.secagg_threshold,
        "secagg_range": args.secagg_range, "secagg_late_failure_rate": args.secagg_late_failure_rate,
        "secagg_support": args.secagg_support,
    }  # fmt: skip


def build_model(args, dm: FederatedDataModule) -> SparseVDClassifier:
    return SparseVDClassifier(
        args.network, dm.num_train, dm.info.num_classes, dm.info.channels, dm.info.size,
        kl_weight=0.0 if (args.kl_warmup_epochs or args.kl_delay_epochs) else args.kl_final_weight,
        threshold=args.threshold, lr=args.lr, log_sigma2_lr=args.log_sigma2_lr, dense=args.dense,
        init_log_sigma2=args.init_log_sigma2, mask_log_sigma2=args.share_log_sigma2,
        init_from=args.init_from, pretrained=args.pretrained, lr_schedule=args.lr_schedule,
        min_lr_ratio=args.min_lr_ratio, recurrent_noise=args.recurrent_noise,
    )  # fmt: skip


def federation_config(args) -> FederationConfig:
    """The federation's trajectory options from fit.py's flags (what the strategy builds too)."""
    options = {k: v for k, v in round_options(args).items() if k not in ("device_store", "placement")}
    return FederationConfig(
        num_devices=args.devices, transport=args.transport, share_log_sigma2=args.share_log_sigma2,
        aggregation=args.aggregation, **options,
    )  # fmt: skip


def resolve_resume(args, model: SparseVDClassifier) -> str | None:
    """The checkpoint to resume from, checked against the model and the trajectory options; None
    for a fresh run."""
    output = Path(args.output_dir).expanduser()
    trajectory = federation_config(args).trajectory(args.devices, args.seed)
    return resume_checkpoint(output, args.resume, model, args.devices, args.network, trajectory)


def claim_run_folder(output: Path) -> int | None:
    """Creates the run folder and holds its lock for this process (``lightning_fed.runs.run_lock``)."""
    if output.exists() and not output.is_dir():
        raise FitError(f"--output-dir {str(output)!r} is a file, not a folder; pass a folder")
    try:
        return hold_run_folder(output)
    except RunFolderInUse as error:
        raise FitError(f"--output-dir {error}") from None
    except OSError as error:
        raise FitError(f"--output-dir {str(output)!r} cannot be created: {error.strerror}") from None


def run_checkpoint(args, output: Path) -> RunCheckpoint:
    """``last.ckpt`` at epoch ends and every ``--checkpoint-every-n-steps``; Ctrl-C saves and stops."""
    return RunCheckpoint(
        output / "checkpoints", every_n_steps=args.checkpoint_every_n_steps, stop_on_interrupt=True
    )


def build_callbacks(args, output: Path) -> list[pl.Callback]:
    """The run's callbacks; built before anything is written, since they check their arguments."""
    callbacks = [
        run_checkpoint(args, output),
        RunProgressBar(),
        ModelSummary(),  # through logging into fit.log; Lightning's default where rich is installed prints it
        Timer(),  # its state is checkpointed: train time adds up over resumed sessions
        CommunicationMonitor(logging_interval=args.log_every_n_steps),
        SparsityMonitor(log_histograms=not args.dense),
        SparseModelExport(dirpath=output),
    ]
    if args.kl_warmup_epochs or args.kl_delay_epochs or args.kl_decay_at is not None:
        warmup = KLWarmup(
            warmup=args.kl_warmup_epochs, delay=args.kl_delay_epochs, end=args.kl_final_weight,
            decay_at=args.kl_decay_at, decay=args.kl_decay_epochs, decay_to=args.kl_decay_to or 0.0,
        )  # fmt: skip
        callbacks.append(warmup)
    if args.comm_budget_bytes is not None:
        callbacks.append(CommunicationBudget(args.comm_budget_bytes))
    if args.eval_devices:
        callbacks.append(FederatedEvaluation(args.eval_devices, seed=args.seed))
    if args.aggregator or args.enforce_mask:
        callbacks.append(RobustnessMonitor())
    if args.dp_clip is not None:
        callbacks.append(PrivacyMonitor(logging_interval=args.log_every_n_steps))
    return callbacks


def build_trainer(args, output: Path, callbacks: list[pl.Callback]) -> pl.Trainer:
    loggers = [CSVLogger(output, name="csv")]
    if args.wandb_mode != "disabled" and not args.fast_dev_run:
        logger = wandb_logger(
            output, project=args.wandb_project, mode=args.wandb_mode, config=vars(args),
            resume=args.resume is not None, open_now=is_launcher(), program="fit.py",
        )  # fmt: skip
        loggers.append(logger)
    options = strategy_options(args.accelerator, args.processes, torch.cuda.device_count())
    strategy = FederatedStrategy(
        num_devices=args.devices, transport=args.transport, share_log_sigma2=args.share_log_sigma2,
        aggregation=args.aggregation, node_timeout=args.node_timeout, **round_options(args),
        **options["strategy"],
    )  # fmt: skip
    limits = {
        k: getattr(args, k)
        for k in ("limit_train_batches", "limit_val_batches")
        if getattr(args, k) is not None
    }
    limits = {k: int(v) if float(v).is_integer() and v > 1 else v for k, v in limits.items()}
    return pl.Trainer(
        accelerator=args.accelerator, num_nodes=args.num_nodes, strategy=strategy, **options["trainer"],
        max_epochs=args.max_epochs, max_steps=args.max_rounds or -1, fast_dev_run=args.fast_dev_run,
        deterministic=True if args.deterministic else None,
        logger=loggers, callbacks=callbacks,
        default_root_dir=output, use_distributed_sampler=False, log_every_n_steps=args.log_every_n_steps,
        **limits,
    )  # fmt: skip


def _callback(trainer: pl.Trainer, kind: type):
    return next(callback for callback in trainer.callbacks if isinstance(callback, kind))


def summarise(trainer: pl.Trainer, model: SparseVDClassifier, dm, test_metrics: dict, seconds: float) -> dict:
    """The run's summary (``summary.json``): :func:`lightning_fed.runs.summary.run_summary` of its
    parts, and where its data was read from."""
    figures = run_summary(
        trainer, model.kept_fraction(), test_metrics, seconds,
        train_seconds=_callback(trainer, Timer).time_elapsed("train"),
        export_sizes=_callback(trainer, SparseModelExport).sizes,
    )  # fmt: skip
    evaluated = next((c.summary() for c in trainer.callbacks if isinstance(c, FederatedEvaluation)), {})
    return {**figures, **evaluated, "dataset": dm.dataset_name, "data_source": dm.data_source}


def data_line(dm: FederatedDataModule) -> str:
    """The one line a run prints about its data: which set, read from where, how it was split."""
    return (
        f"fit.py: data: {dm.dataset_name} from {dm.data_source} ({dm.num_train:,} training samples over "
        f"{dm.num_devices} devices, {dm.val_size:,} for validation)"
    )


def quiet_device_process() -> None:
    """A device process that fit.py's launcher started prints errors only: every warning and info
    line it would print, the launcher prints once (not once per process)."""
    if is_launcher():
        return
    warnings.simplefilter("ignore")
    for name in ("pytorch_lightning", "lightning_fabric", "lightning"):
        logging.getLogger(name).setLevel(logging.ERROR)


def run(args) -> int:
    start = time.time()
    launcher = is_launcher()  # now: Lightning sets LOCAL_RANK in this process once it trains
    quiet_device_process()
    pl.seed_everything(args.seed, workers=True, verbose=False)  # before the model: its init is seeded
    try:
        dm = build_datamodule(args)
        model = build_model(args, dm)
        output = Path(args.output_dir).expanduser()
        callbacks = build_callbacks(args, output)
        gpus = torch.cuda.device_count()
        args.accelerator = resolve_accelerator(args.accelerator, args.devices, gpus)
        if args.processes is None:
            args.processes = default_processes(args.devices, args.num_nodes, args.accelerator, gpus)
        ckpt_path = resolve_resume(args, model)  # last: every other bad input is named before this one
        lock = claim_run_folder(output) if is_launcher() else None  # the device processes run under it
    except (ValueError, FileNotFoundError) as error:
        raise FitError(as_flags(str(error))) from None
    if is_launcher():  # after every check: a bad input's error stays the only line
        print(data_line(dm), file=sys.stderr)
    if (line := node_line(output, args.processes, args.num_nodes)) is not None:  # which node this is
        print(line, file=sys.stderr)
    try:
        return fit_test_and_write(args, dm, model, output, callbacks, ckpt_path, start)
    except NodeLost as error:  # a node never joined: no node trained, so nothing else to say
        print(error, file=sys.stderr)
        return 1
    except (NonFiniteError, DeviceFailed, SecAggAborted) as error:
        if launcher:
            last = last_checkpoint(output)
            kept = f"{last} is from before it" if last.exists() else "no checkpoint was written yet"
            where = ""
            if error.__cause__ is not None:
                where = f" (traceback in {write_traceback(output, error.__cause__)})"
            print(f"fit.py: stopped: {error}{where}; {kept}", file=sys.stderr)
        return 1
    finally:
        if lock is not None:
            os.close(lock)


def logged_epochs(output: Path) -> dict[int, dict[str, float]] | None:
    """The run's per-epoch figures from its CSV logs (every session of it), or None without any."""
    try:
        return read_epochs(output)
    except FileNotFoundError:
        return None


def write_traceback(output: Path, error: BaseException) -> Path:
    """The traceback of what stopped the run, in ``OUTPUT/traceback.txt`` (the screen gets one line)."""
    path = output / "traceback.txt"
    path.write_text("".join(traceback.format_exception(error)))
    return path


def fit_test_and_write(args, dm, model, output: Path, callbacks, ckpt_path: str | None, start: float) -> int:
    """Trains (or resumes), tests, and writes the summary, ledger and plots into ``output``; the exit code."""
    output.mkdir(parents=True, exist_ok=True)
    with lightning_info_to(output / "fit.log" if is_launcher() else None):  # the screen: bar and events
        trainer = build_trainer(args, output, callbacks)
        trainer.fit(model, dm, ckpt_path=ckpt_path)
        stopped = _callback(trainer, RunCheckpoint).interrupted_at
        if stopped is not None:
            return write_interrupted(trainer, model, dm, output, stopped, time.time() - start)
        test_metrics = trainer.test(model, dm, verbose=False)[0] if not args.fast_dev_run else {}
    summary = summarise(trainer, model, dm, test_metrics, time.time() - start)
    if trainer.is_global_zero:
        ledger = trainer.strategy.ledger.state_dict()
        write_run_files(output, summary, ledger)
        history = _callback(trainer, SparsityMonitor).history
        plots = write_run_plots(
            output / "plots", ledger, history, labels=layer_labels(model), epochs=logged_epochs(output)
        )
        for line in finish_wandb(trainer, summary, plots):
            print(f"fit.py: {line}", file=sys.stderr)
        print(format_summary(summary))
    return 0


def write_interrupted(trainer: pl.Trainer, model, dm, output: Path, stopped: tuple, seconds: float) -> int:
    """After Ctrl-C: the summary so far (untested), the ledger, and one line saying how to go on."""
    epoch, step = stopped
    if trainer.is_global_zero:
        summary = summarise(trainer, model, dm, {}, seconds)
        summary = {**summary, "test_acc": None, "interrupted_at_step": step}
        write_run_files(output, summary, trainer.strategy.ledger.state_dict())
        again = shlex.join([sys.executable, *sys.argv] + ([] if "--resume" in sys.argv else ["--resume"]))
        checkpoint = last_checkpoint(output)
        print(
            f"fit.py: interrupted at epoch {epoch}, step {step}; saved {checkpoint}; continue with: {again}",
            file=sys.stderr,
        )
        return INTERRUPTED
    return 0  # a device process stopped as agreed; a non-zero exit would have its launcher stop the run
