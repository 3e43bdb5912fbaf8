"""Train a sparse (or dense) model with N federated devices and report what it communicated.

    python scripts/fit.py --devices 16            # the paper's default: CifarNet, Fashion-MNIST, iid
    python scripts/fit.py --devices 1000 --devices-per-round 50 --local-epochs 1 --batch-size 32
    python scripts/fit.py --config configs/fmnist_16.yaml --output-dir ~/lf-runs/fmnist16
    python scripts/fit.py --output-dir ~/lf-runs/fmnist16 --resume

Bad input exits with code 2 and one line naming the value; nothing in the output folder is touched.
"""

import argparse
import os
import sys
from pathlib import Path

sys.path[:0] = [str(Path(__file__).resolve().parents[1]), str(Path(__file__).resolve().parent)]


def build_parser() -> argparse.ArgumentParser:
    # Light modules only (no torch, no Lightning): --help answers at once.
    from datamodules.catalog import INFO
    from datamodules.partitions import PARTITIONS
    from lightning_fed.defaults import DEFAULT_INIT_LOG_SIGMA2, DEFAULT_THRESHOLD
    from lightning_fed.runs.cli import (
        HelpFormatter,
        OneLineParser,
        finite_float,
        finite_float_above_0,
        finite_float_at_least_0,
        fraction_below_1,
        int_at_least,
    )
    from modules.catalog import NETWORK_NAMES as NETWORKS

    p = OneLineParser(prog="fit.py", description=__doc__, formatter_class=HelpFormatter)
    p.add_argument("--config", help="YAML file of option defaults (keys as the long options, '_' for '-')")
    g = p.add_argument_group("federation")
    g.add_argument(
        "--devices", type=int_at_least(1), default=16, help="federated devices N, all nodes together"
    )
    g.add_argument(
        "--processes",
        type=int_at_least(1),
        default=None,
        help="processes per node hosting the devices (default: 1 on CPU, one per GPU)",
    )
    g.add_argument(
        "--num-nodes", type=int_at_least(1), default=1, help="machines; processes x nodes divide N"
    )
    g.add_argument(
        "--node-timeout", type=finite_float_above_0, default=60.0, metavar="SECONDS",
        help="across machines: how long a node may take to join, or stay silent, before the others stop "
        "with one line naming it (default 60)",
    )  # fmt: skip
    g.add_argument(
        "--accelerator", default="auto", choices=["auto", "cpu", "gpu", "cuda"],
        help="what trains: auto takes the GPUs when there are any, else the CPU",
    )  # fmt: skip
    g.add_argument(
        "--transport",
        default="dense",
        choices=["dense", "sparse"],
        help="across processes: all-reduce of sums (dense) or all-gather of the payloads (sparse)",
    )
    g.add_argument("--share-log-sigma2", action="store_true", help="Algorithm 1 proper: sync log_sigma2 too")
    g.add_argument(
        "--aggregation",
        default="mean",
        choices=["mean", "weighted"],
        help="server average: over N (the paper) or weighted by shard size (FedAvg)",
    )
    g.add_argument("--dense", action="store_true", help="the dense baseline: no variational dropout")
    g = p.add_argument_group("rounds (the paper: every device, every round, one step, server Adam)")
    g.add_argument("--devices-per-round", type=int_at_least(1), help="K devices per round (default: N)")
    g.add_argument(
        "--sampling",
        default="uniform",
        choices=["uniform", "weighted", "poisson"],
        help="K of N: uniform, by size, or each device with probability K/N (poisson)",
    )
    g.add_argument("--local-steps", type=int_at_least(1), help="H local steps per round (default 1)")
    g.add_argument("--local-epochs", type=int_at_least(1), help="instead of H: passes over its shard")
    g.add_argument(
        "--failure-rate", type=fraction_below_1, default=0.0, help="chance a sampled device fails to report"
    )
    g.add_argument(
        "--server-optimizer",
        default=None,
        choices=["fedavg", "fedavgm", "fedadam", "fedyogi", "fedadagrad"],
        help="server step (default: Adam of --lr for gradients, fedavg for local steps)",
    )
    g.add_argument(
        "--server-lr",
        type=finite_float_above_0,
        default=None,
        help="server learning rate (default: 1 for fedavg and fedavgm, 0.01 for the adaptive ones)",
    )
    g.add_argument("--server-momentum", type=fraction_below_1, default=0.9, help="fedavgm momentum")
    g.add_argument(
        "--client-optimizer", default="module", choices=["module", "sgd"], help="Adam of --lr, or SGD"
    )
    g.add_argument("--client-lr", type=finite_float_above_0, default=None, help="client SGD learning rate")
    g.add_argument("--proximal-mu", type=finite_float_at_least_0, default=0.0, help="FedProx mu (0: off)")
    g.add_argument(
        "--device-store",
        default="auto",
        choices=["auto", "memory", "disk"],
        help="devices' log_sigma2: in memory or in a file of rows in the run folder (auto: disk past 2 GiB)",
    )
    g.add_argument(
        "--placement",
        default="auto",
        choices=["auto", "hosted", "balanced"],
        help="which process trains a round's device: the one hosting it, or dealt evenly (auto: "
        "balanced for sampled rounds of devices without local state)",
    )
    g = p.add_argument_group("compression (after the masks; the default sends float32 values losslessly)")
    g.add_argument(
        "--codec", default=None, metavar="SPEC",
        help="uploads: stages joined by '+', e.g. topk:0.01+qsgd:8; stages: topk:DENSITY[:WARMUP_STEPS], "
        "float32, fp16, qsgd:BITS[:BLOCK] (BITS 2, 4, 8), sign[:BLOCK]",
    )  # fmt: skip
    g.add_argument(
        "--download-codec", default=None, metavar="SPEC", help="the server's messages (default: --codec)"
    )
    g.add_argument(
        "--error-feedback", action="store_true", help="devices keep what the codec dropped and send it later"
    )
    g.add_argument(
        "--error-feedback-momentum", type=fraction_below_1, default=0.0,
        help="DGC's momentum correction: devices accumulate momentum M of their updates (0: off)",
    )  # fmt: skip
    g.add_argument(
        "--download-error-feedback",
        action="store_true",
        help="the server does the same (paper's protocol, or with --download-delta)",
    )
    g.add_argument(
        "--download-delta",
        action="store_true",
        help="FedAvg rounds: download the model's change since the copy a device holds, not the model",
    )
    g.add_argument(
        "--download-sparse",
        action="store_true",
        help="FedAvg rounds under Algorithm 1: download the kept weights of the public M(alpha) and their "
        "positions; a device holds the rest pruned",
    )
    g = p.add_argument_group("robustness (devices that lie, and a server that does not trust them)")
    g.add_argument(
        "--aggregator", default=None, metavar="SPEC",
        help="the server's rule for a round's updates: mean (default), median, trimmed_mean:BETA, krum:F, "
        "multi_krum:F:M, bulyan:F, norm_bound:BOUND, centered_clip:TAU[:ITERATIONS]",
    )  # fmt: skip
    g.add_argument(
        "--enforce-mask", action="store_true",
        help="with --share-log-sigma2: the server zeroes and counts values sent outside the public M(alpha)",
    )  # fmt: skip
    g.add_argument(
        "--attack", default=None, metavar="SPEC",
        help="what attackers send: sign_flip, scale:BOOST, gaussian:SIGMA, label_flip, alie[:Z], ipm[:EPS]",
    )  # fmt: skip
    g.add_argument(
        "--malicious-fraction", type=fraction_below_1, default=0.0, help="the share of devices that attack"
    )
    g.add_argument(
        "--worker-momentum", type=fraction_below_1, default=0.0, metavar="BETA",
        help="devices send their own momentum of their updates, m = BETA m + (1 - BETA) u (0: off)",
    )  # fmt: skip
    g = p.add_argument_group("privacy (client-level DP-FedAvg: clipped uploads, a noised sum, an accountant)")
    g.add_argument("--dp-clip", type=finite_float, default=None, metavar="C", help="L2 bound of each upload")
    g.add_argument(
        "--dp-noise-multiplier", type=finite_float, default=None, metavar="SIGMA",
        help="noise std over C (default: calibrated from --target-epsilon)",
    )  # fmt: skip
    g.add_argument(
        "--target-epsilon", type=finite_float, default=None, help="privacy budget: stop when spent"
    )
    g.add_argument("--dp-delta", type=finite_float, default=1e-5, help="the guarantee's delta")
    g.add_argument(
        "--dp-target-quantile", type=finite_float, default=None, metavar="GAMMA",
        help="adaptive clipping: the clip follows this quantile of the update norms (--dp-clip: its start)",
    )  # fmt: skip
    g.add_argument("--dp-clip-lr", type=finite_float, default=0.2, help="adaptive clipping's learning rate")
    g.add_argument("--dp-count-noise", type=finite_float, default=None, help="noise on the clip count")
    g.add_argument(
        "--dp-accountant", default=None, choices=["pld", "rdp"], help="default: pld (rdp for exactly K)"
    )
    g = p.add_argument_group("secure aggregation (SecAgg+: the server sees each round's sum, no upload)")
    g.add_argument("--secure-aggregation", action="store_true", help="sum each round's uploads with SecAgg+")
    g.add_argument(
        "--secagg-neighbours", type=int_at_least(2), default=None, metavar="K",
        help="devices each one masks with and shares its secrets among (default: 2 ceil(log2 K_round))",
    )  # fmt: skip
    g.add_argument(
        "--secagg-threshold", type=int_at_least(2), default=None, metavar="T",
        help="shares (of K) that rebuild a secret, above K / 2 (default: K // 2 + 1)",
    )  # fmt: skip
    g.add_argument(
        "--secagg-range", type=finite_float, default=None, metavar="R",
        help="uploads clipped to [-R, R] as fixed point (default: --dp-clip, else 1)",
    )  # fmt: skip
    g.add_argument(
        "--secagg-late-failure-rate", type=finite_float, default=0.0, metavar="RATE",
        help="chance a device that sent its masked upload is silent in the unmasking (default: 0)",
    )  # fmt: skip
    g.add_argument(
        "--secagg-support", choices=["dense", "union"], default="dense",
        help="without a public mask (the paper's variant), sum every coordinate or the union of the "
        "round's supports, learned by a secure sum of counts first (default: dense)",
    )  # fmt: skip
    g = p.add_argument_group("data")
    g.add_argument("--dataset", default="fashion-mnist", choices=list(INFO), help="dataset")
    g.add_argument(
        "--data-dir",
        default=None,
        help="the folder that holds the data set (or that --download fills); it must exist, and nothing "
        "else is read (default: ~/.cache/lightning-fed, then /usr/share/datasets/fashion-mnist); for "
        "shakespeare, where the parsed plays are cached",
    )
    g.add_argument("--download", action="store_true", help="let torchvision download missing data")
    g.add_argument(
        "--partition", default=None, choices=list(PARTITIONS),
        help="how data is split (default: natural for shakespeare, its speaking roles; iid otherwise)",
    )  # fmt: skip
    g.add_argument(
        "--window", type=int_at_least(1), default=None, help="shakespeare: characters a sample (80)"
    )
    g.add_argument(
        "--stride", type=int_at_least(1), default=None, help="shakespeare: characters between samples (80)"
    )
    g.add_argument("--dirichlet-alpha", type=finite_float, default=0.5, help="label skew (dirichlet)")
    g.add_argument("--num-shards", type=int_at_least(1), default=None, help="label shards (shards)")
    g.add_argument("--unequal-sigma", type=finite_float, default=0.0, help="log-normal shard sizes (iid)")
    g.add_argument("--classes-per-device", type=int_at_least(1), default=2, help="classes (pathological)")
    g.add_argument(
        "--size-distribution",
        default="power-law",
        choices=["power-law", "exponential"],
        help="law of the shard sizes (sizeskew)",
    )
    g.add_argument("--size-exponent", type=finite_float_above_0, default=1.0, help="size skew (sizeskew)")
    g.add_argument("--batch-size", type=int_at_least(1), default=128, help="minibatch per device")
    g.add_argument(
        "--val-size",
        type=int_at_least(0),
        default=None,
        help="validation samples held out of the training set (default: 5000; 500 for mnist-5k)",
    )
    g.add_argument("--augment", action="store_true", help="crop and flip (32x32 datasets)")
    g.add_argument(
        "--eval-devices",
        type=int_at_least(0),
        default=0,
        help="after each validation, evaluate E seeded devices' own models (mean, spread; 0: off)",
    )
    g = p.add_argument_group("model and optimisation")
    g.add_argument("--network", default="cifarnet", choices=list(NETWORKS), help="network")
    g.add_argument(
        "--recurrent-noise", default="batch", choices=["batch", "sequence"],
        help="char_lstm: one draw of the LSTM's weights a mini-batch, or one a sequence (Lobacheva et al.)",
    )  # fmt: skip
    g.add_argument("--threshold", type=finite_float, default=DEFAULT_THRESHOLD, help="log_alpha threshold T")
    g.add_argument("--lr", type=finite_float, default=1e-3, help="Adam learning rate")
    g.add_argument("--log-sigma2-lr", type=finite_float, default=None, help="learning rate of log_sigma2")
    g.add_argument(
        "--lr-schedule", default="constant", choices=["constant", "cosine"],
        help="learning rate over the epochs: constant, or cosine down to --min-lr-ratio",
    )  # fmt: skip
    g.add_argument("--min-lr-ratio", type=finite_float, default=0.01, help="cosine: last lr / first lr")
    g.add_argument(
        "--init-log-sigma2", type=finite_float, default=DEFAULT_INIT_LOG_SIGMA2, help="initial log_sigma2"
    )
    g.add_argument("--kl-warmup-epochs", type=finite_float, default=0.0, help="KL weight ramp 0 -> final")
    g.add_argument("--kl-delay-epochs", type=finite_float, default=0.0, help="epochs at KL weight 0")
    g.add_argument(
        "--kl-final-weight",
        type=finite_float_at_least_0,
        default=1.0,
        help="KL weight after the ramp (1: ELBO)",
    )
    g.add_argument("--kl-decay-at", type=finite_float_at_least_0, help="epoch the KL weight starts to fall")
    g.add_argument("--kl-decay-epochs", type=finite_float_at_least_0, default=0.0, help="length of the fall")
    g.add_argument("--kl-decay-to", type=finite_float_at_least_0, help="KL weight after the fall")
    g.add_argument("--init-from", default=None, help="checkpoint or state dict to start theta from")
    g.add_argument("--pretrained", action="store_true", help="ImageNet weights (resnet18; internet)")
    g.add_argument("--seed", type=int, default=0, help="seeds model, data split and shuffling")
    g.add_argument(
        "--deterministic", action="store_true",
        help="deterministic GPU kernels (torch.use_deterministic_algorithms, via Lightning); a CPU run "
        "is bit-for-bit repeatable without it",
    )  # fmt: skip
    g = p.add_argument_group("run")
    g.add_argument("--max-epochs", type=int_at_least(0), default=60, help="epochs")
    g.add_argument("--max-rounds", type=int_at_least(1), default=None, help="stop after this many rounds")
    g.add_argument(
        "--limit-train-batches", type=finite_float, default=None,
        help="train steps per epoch: a count, or a fraction (<= 1) of the epoch (default: all)",
    )  # fmt: skip
    g.add_argument(
        "--limit-val-batches", type=finite_float, default=None,
        help="validation batches: a count, or a fraction (<= 1) of them; 0 skips validation (default: all)",
    )  # fmt: skip
    g.add_argument("--log-every-n-steps", type=int_at_least(1), default=10, help="step metrics interval")
    g.add_argument("--comm-budget-bytes", type=finite_float, default=None, help="stop past this traffic")
    g.add_argument("--fast-dev-run", action="store_true", help="one batch of each stage, no logging")
    g.add_argument("--output-dir", default="runs/latest", help="run folder: checkpoints, logs, summary")
    g.add_argument(
        "--resume", nargs="?", const="last", default=None, help="resume from PATH or the run's last.ckpt"
    )
    g.add_argument(
        "--checkpoint-every-n-steps", type=int_at_least(0), default=30,
        help="also save last.ckpt every N steps (rounds), so a killed run loses at most N; 0: epoch ends only"
        " (30 is about 4 min at 16 devices on 2 CPU cores)",
    )  # fmt: skip
    g.add_argument("--wandb-project", default="lightning-fed", help="W&B project")
    g.add_argument(
        "--wandb-mode", default="offline", choices=["offline", "online", "disabled"], help="W&B mode"
    )
    return p


def parse_args(argv=None) -> argparse.Namespace:
    parser = build_parser()
    args, _ = parser.parse_known_args(argv)
    if args.config:
        parser.set_defaults(**_read_config(parser, args.config))
    args = parser.parse_args(argv)
    _check_data(parser, args)
    _check_kl_decay(parser, args)
    _check_processes(parser, args)
    _check_rounds(parser, args)
    _check_codecs(parser, args)
    _check_robustness(parser, args)
    _check_privacy(parser, args)
    _check_secure(parser, args)
    _check_placement(parser, args)
    return args


def _check_placement(parser, args) -> None:
    """``--placement balanced`` only where a round's devices can be dealt to any process: one line
    naming what ties them to the process hosting them."""
    if args.placement != "balanced":
        return
    from fit_run import as_flags, federation_config

    from lightning_fed.federation.placement import balance_blocker, row_names_of

    config = federation_config(args)
    local = not (args.dense or args.share_log_sigma2)  # the paper's variant keeps log_sigma2 on each
    blocker = balance_blocker(config, local, row_names_of(config, args.devices))
    if blocker is not None:
        parser.error(as_flags(f"--placement balanced {blocker}; use --placement hosted"))


def _check_data(parser, args) -> None:
    """The data set's default partition; its network, partition, window and stride fit it."""
    from datamodules.catalog import INFO
    from datamodules.shakespeare import check_text_options
    from modules.catalog import NETWORK_NAMES, TEXT_NETWORKS

    info = INFO[args.dataset]
    args.partition = args.partition or info.partition
    text = info.kind == "text"
    if text != (args.network in TEXT_NETWORKS):
        allowed = TEXT_NETWORKS if text else [n for n in NETWORK_NAMES if n not in TEXT_NETWORKS]
        parser.error(
            f"--network {args.network} does not fit --dataset {args.dataset}; use one of {', '.join(allowed)}"
        )
    if args.recurrent_noise != "batch" and args.network not in TEXT_NETWORKS:
        parser.error(
            f"--recurrent-noise {args.recurrent_noise} applies to the recurrent networks "
            f"({', '.join(TEXT_NETWORKS)}), not --network {args.network}"
        )
    if args.recurrent_noise != "batch" and args.dense:
        parser.error(f"--recurrent-noise {args.recurrent_noise}: --dense draws no weight noise")
    try:
        check_text_options(args.dataset, info, args.partition, args.window, args.stride)
    except ValueError as error:
        parser.error(
            str(error)
            .replace("window and stride", "--window and --stride")
            .replace("partition ", "--partition ")
        )


def _check_privacy(parser, args) -> None:
    """DP's options and what they go with (the library's checks, in fit.py's flags)."""
    dp = (
        args.dp_clip,
        args.dp_noise_multiplier,
        args.target_epsilon,
        args.dp_accountant,
        args.dp_target_quantile,
    )
    if all(option is None for option in dp):
        return
    from fit_run import as_flags, federation_config

    from lightning_fed.privacy.accountant import PrivacyAccountant
    from lightning_fed.privacy.adaptive_clip import update_noise_multiplier

    if args.dp_clip is not None and not (args.share_log_sigma2 or args.dense):
        parser.error(
            "--dp-clip needs --share-log-sigma2 (Algorithm 1) or --dense: under the paper's variant each "
            "device's mask follows from its private log_sigma2, so which weights it sends is itself private"
        )
    try:
        federation_config(args)
        if args.dp_clip is not None:
            K = args.devices_per_round or args.devices
            PrivacyAccountant(1.0, args.dp_delta, args.devices, K, args.sampling, args.dp_accountant)
            if args.dp_target_quantile is not None and args.dp_noise_multiplier is not None:
                count_noise = args.dp_count_noise or K * (1 - args.failure_rate) / 20
                update_noise_multiplier(args.dp_noise_multiplier, count_noise)
    except ValueError as error:
        parser.error(as_flags(str(error)))


def _check_secure(parser, args) -> None:
    """Secure aggregation's options and what they go with (the library's checks, in fit.py's flags)."""
    given = (args.secagg_neighbours, args.secagg_threshold, args.secagg_range)
    late, support = args.secagg_late_failure_rate, args.secagg_support != "dense"
    if not args.secure_aggregation and all(option is None for option in given) and not late and not support:
        return
    from fit_run import as_flags, federation_config

    from lightning_fed.secure.options import resolved_secagg

    try:
        config = federation_config(args)
        if args.secure_aggregation:
            resolved_secagg(config, args.devices_per_round or args.devices)
    except ValueError as error:
        parser.error(as_flags(str(error)))


def _check_robustness(parser, args) -> None:
    """The aggregator and the attack parse and fit the federation (the library's checks, its
    argument names turned into fit.py's flags)."""
    if not (args.aggregator or args.enforce_mask or args.attack or args.malicious_fraction):
        return
    from fit_run import as_flags

    from lightning_fed.federation.aggregators import make_aggregator
    from lightning_fed.federation.attacks import make_attack
    from lightning_fed.federation.config import FederationConfig
    from lightning_fed.federation.server_aggregation import checked_server_aggregation

    try:
        make_aggregator(args.aggregator, "--aggregator")
        if args.attack is not None:
            make_attack(args.attack, [], "--attack")
        config = FederationConfig(
            num_devices=args.devices, share_log_sigma2=args.share_log_sigma2, aggregation=args.aggregation,
            devices_per_round=args.devices_per_round, failure_rate=args.failure_rate,
            aggregator=args.aggregator, enforce_mask=args.enforce_mask, attack=args.attack,
            malicious_fraction=args.malicious_fraction,
        )  # fmt: skip
        checked_server_aggregation(config, args.devices_per_round or args.devices)
    except ValueError as error:
        parser.error(as_flags(str(error)))


def _check_codecs(parser, args) -> None:
    """Each codec spec parses, and error feedback is asked only of a codec that drops something."""
    feedback = (args.error_feedback, args.download_error_feedback, args.error_feedback_momentum)
    _check_download_delta(parser, args)
    _check_download_sparse(parser, args)
    if not any((args.codec, args.download_codec, *feedback)):
        return
    from lightning_fed.communication import default_download, make_codec

    codecs = {}
    for option, spec in (("--codec", args.codec), ("--download-codec", args.download_codec)):
        try:
            codecs[option] = make_codec(spec, option)
        except ValueError as error:
            parser.error(str(error))
    download = codecs["--download-codec"] if args.download_codec else default_download(codecs["--codec"])
    checks = (
        ("--codec", codecs["--codec"], "--error-feedback", args.error_feedback),
        ("--download-codec", download, "--download-error-feedback", args.download_error_feedback),
    )
    for option, codec, feedback, asked in checks:
        if asked and not codec.lossy:
            parser.error(
                f"{feedback} needs a lossy {option} (topk, fp16, qsgd or sign); {codec!r} drops nothing"
            )
    if args.error_feedback_momentum and not args.error_feedback:
        parser.error("--error-feedback-momentum is DGC's momentum correction: it needs --error-feedback")
    sampled = args.devices_per_round not in (None, args.devices) or args.local_steps not in (None, 1)
    fedavg_rounds = sampled or args.local_epochs or args.failure_rate
    if args.download_error_feedback and fedavg_rounds and not args.download_delta:
        parser.error(
            "--download-error-feedback applies to the paper's protocol (every device, every round, "
            "one step) and to --download-delta; sampled rounds download the model itself"
        )


def _lossy(parser, spec: str) -> bool:
    from lightning_fed.communication import make_codec

    try:
        return make_codec(spec, "--download-codec").lossy
    except ValueError as error:
        parser.error(str(error))


def _check_download_delta(parser, args) -> None:
    """``--download-delta``: FedAvg rounds; with every device in every round a lossy download needs
    the server's error feedback, in sampled rounds each device's copy is tracked instead
    (``lightning_fed.federation.downlink.check_download``, at argparse speed)."""
    if not args.download_delta:
        return
    if args.local_steps in (None, 1) and not args.local_epochs and not args.failure_rate:
        parser.error(
            "--download-delta applies to FedAvg rounds (--local-steps, --local-epochs or --failure-rate); "
            "the paper's protocol already downloads the averaged gradient"
        )
    every = args.devices_per_round in (None, args.devices)
    if not every and args.download_error_feedback:
        parser.error(
            f"--download-error-feedback with --download-delta applies with every device in every round; "
            f"with --devices-per-round {args.devices_per_round} each device gets the change from the copy "
            "it holds, which carries what the codec dropped"
        )
    if (
        every
        and args.download_codec
        and not args.download_error_feedback
        and _lossy(parser, args.download_codec)
    ):
        parser.error(
            f"--download-delta with --download-codec {args.download_codec} needs --download-error-feedback, "
            "else the devices' copy drifts from the model round after round"
        )


def _check_download_sparse(parser, args) -> None:
    """``--download-sparse``: FedAvg rounds of a sparse model under Algorithm 1 (at argparse speed)."""
    if not args.download_sparse:
        return
    if args.download_delta:
        parser.error("--download-sparse and --download-delta are two forms of the download; give one")
    if args.dense:
        parser.error("--download-sparse sends the kept weights of M(alpha); --dense has no M(alpha)")
    if not args.share_log_sigma2:
        parser.error(
            "--download-sparse needs --share-log-sigma2 (Algorithm 1): in the paper's variant each device's "
            "M(alpha) depends on its own log_sigma2, which the server does not hold"
        )
    sampled = args.devices_per_round not in (None, args.devices) or args.local_steps not in (None, 1)
    if not (sampled or args.local_epochs or args.failure_rate):
        parser.error(
            "--download-sparse applies to FedAvg rounds (--devices-per-round, --local-steps, --local-epochs "
            "or --failure-rate); the paper's protocol downloads the averaged gradient, already sparse"
        )


def _check_rounds(parser, args) -> None:
    if args.devices_per_round is not None and args.devices_per_round > args.devices:
        parser.error(
            f"--devices-per-round {args.devices_per_round} exceeds --devices {args.devices}; "
            f"give at most {args.devices}"
        )
    if args.local_steps is not None and args.local_epochs is not None:
        parser.error("--local-steps and --local-epochs exclude each other: give one")


def _check_processes(parser, args) -> None:
    """``--processes`` and ``--num-nodes`` agree with torchrun's or srun's processes if they started
    them, and their product divides ``--devices`` into equal blocks."""
    from lightning_fed.federation.hosting import check_processes
    from lightning_fed.runs.cluster import check_launched_shape

    try:
        args.processes = check_launched_shape(args.processes, args.num_nodes) or args.processes
    except ValueError as error:
        parser.error(str(error).replace("processes=", "--processes ").replace("num_nodes=", "--num-nodes "))
    if args.processes is None:
        return

    try:
        check_processes(args.processes * args.num_nodes, args.devices)
    except ValueError as error:
        parser.error(f"--processes {args.processes}: {error}")


def _check_kl_decay(parser, args) -> None:
    """The KL weight's fall needs both ends, and starts after the ramp is over."""
    if (args.kl_decay_at is None) != (args.kl_decay_to is None):
        parser.error("--kl-decay-at and --kl-decay-to go together: give both or neither")
    ramp_end = args.kl_delay_epochs + args.kl_warmup_epochs
    if args.kl_decay_at is not None and args.kl_decay_at < ramp_end:
        parser.error(
            f"--kl-decay-at {args.kl_decay_at:g} is before the end of the KL ramp "
            f"(--kl-delay-epochs + --kl-warmup-epochs = {ramp_end:g}); give a value >= {ramp_end:g}"
        )


def _read_config(parser, path: str) -> dict:
    import yaml

    if not os.path.isfile(path):
        parser.error(f"--config {path!r} does not exist")
    try:
        values = yaml.safe_load(Path(path).read_text()) or {}
    except yaml.YAMLError:
        parser.error(f"--config {path!r} is not valid YAML")
    known = {action.dest for action in parser._actions}
    unknown = sorted(set(values) - known)
    if unknown:
        parser.error(f"--config {path!r} has unknown keys {unknown}; use the long option names")
    return values


def main(argv=None) -> int:
    # A W&B service inherited from a parent process (a notebook, a test runner) would host this run
    # beside the parent's runs and keep its id busy for the next `--resume`; each call owns its own.
    os.environ.pop("WANDB_SERVICE", None)
    args = parse_args(argv)
    from fit_run import FitError, run

    try:
        return run(args)
    except FitError as error:
        print(f"fit.py: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
