"""Which federation options client-level DP goes with, and its own options' values: one-line errors.

Example::

    >>> from lightning_fed.federation.config import FederationConfig
    >>> try:
    ...     FederationConfig(dp_clip=1.0, dp_noise_multiplier=1.0, aggregation="weighted")
    ... except ValueError as error:
    ...     print(error)
    dp_clip: DP-FedAvg's sum weighs every device alike (its sensitivity is the clip); use aggregation='mean'
"""

import math
import numbers


def _number(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


def _check_values(config) -> None:
    if not (_number(config.dp_clip) and config.dp_clip > 0):
        raise ValueError(f"dp_clip must be a finite number > 0, got {config.dp_clip!r}")
    sigma = config.dp_noise_multiplier
    if sigma is not None and not (_number(sigma) and sigma >= 0):
        raise ValueError(f"dp_noise_multiplier must be a finite number >= 0, got {sigma!r}")
    epsilon = config.target_epsilon
    if epsilon is not None and not (_number(epsilon) and epsilon > 0):
        raise ValueError(f"target_epsilon must be a finite number > 0, got {epsilon!r}")
    if not (_number(config.dp_delta) and 0 < config.dp_delta < 1):
        raise ValueError(f"dp_delta must be a number in (0, 1), got {config.dp_delta!r}")
    if config.dp_accountant not in (None, "pld", "rdp"):
        raise ValueError(f"dp_accountant must be one of pld, rdp, got {config.dp_accountant!r}")
    quantile = config.dp_target_quantile
    if quantile is not None and not (_number(quantile) and 0 < quantile < 1):
        raise ValueError(f"dp_target_quantile must be a number in (0, 1), got {quantile!r}")
    if not (_number(config.dp_clip_lr) and config.dp_clip_lr > 0):
        raise ValueError(f"dp_clip_lr must be a finite number > 0, got {config.dp_clip_lr!r}")
    count = config.dp_count_noise
    if count is not None and not (_number(count) and count > 0):
        raise ValueError(f"dp_count_noise must be a finite number > 0, got {count!r}")
    if sigma is None and epsilon is None:
        raise ValueError("dp_clip needs dp_noise_multiplier, or target_epsilon to calibrate it")


def _check_combinations(config) -> None:
    from lightning_fed.federation.aggregators import make_aggregator

    if config.aggregation != "mean":
        raise ValueError(
            "dp_clip: DP-FedAvg's sum weighs every device alike (its sensitivity is the clip); "
            "use aggregation='mean'"
        )
    if make_aggregator(config.aggregator).needs_updates:
        raise ValueError(
            "dp_clip: the noise is calibrated to the mean's sensitivity, not to "
            f"aggregator={config.aggregator!r}'s"
        )
    if config.sampling == "weighted":
        raise ValueError(
            "dp_clip: the accountant knows uniform (exactly K) and poisson sampling; not sampling='weighted'"
        )
    if config.attack is not None:
        raise ValueError(
            f"dp_clip: attack={config.attack!r} sends what it likes, unclipped (and an omniscient attacker "
            "reads the honest updates): DP with an attack is not supported"
        )


def check_privacy(config) -> None:
    """``config``'s DP options, alone and with the rest, or a one-line ``ValueError``."""
    if config.dp_clip is None:
        for name in (
            "dp_noise_multiplier",
            "target_epsilon",
            "dp_accountant",
            "dp_target_quantile",
            "dp_count_noise",
        ):
            if getattr(config, name) is not None:
                raise ValueError(f"{name} needs dp_clip (the L2 bound of each device's message)")
        return
    _check_values(config)
    _check_combinations(config)


def check_public_mask(config, plan) -> None:
    """Under the paper's variant each device's mask follows from its own log_sigma2, so the support of
    its upload is private data the guarantee would have to cover: refused (Algorithm 1's mask is public)."""
    masked = any(tensor.mask_of is not None for tensor in plan.shared)
    if config.dp_clip is not None and masked and config.mask and not config.share_log_sigma2:
        raise ValueError(
            "dp_clip needs share_log_sigma2 (Algorithm 1): under the paper's variant each device's mask "
            "follows from its private log_sigma2, so which weights it sends is itself private"
        )
