"""Secure aggregation's options, checked against the rest of the federation's (one line each).

Example::

    >>> from types import SimpleNamespace
    >>> resolved_secagg(SimpleNamespace(secagg_neighbours=None, secagg_threshold=None), per_round=50)
    (12, 7)
    >>> resolved_secagg(SimpleNamespace(secagg_neighbours=None, secagg_threshold=None), per_round=4)
    (3, 2)
"""

import math
import numbers

MAX_NEIGHBOURS = 255  # a share's index is one byte
SUPPORTS = ("dense", "union")  # what is summed where no public mask says
_SETTINGS = ("secagg_neighbours", "secagg_threshold", "secagg_range")


def check_secagg(neighbours: int, threshold: int) -> None:
    """One line where ``neighbours`` (k) or ``threshold`` (t of k shares) cannot give a secure round.

    Example::

        >>> try:
        ...     check_secagg(neighbours=4, threshold=2)
        ... except ValueError as error:
        ...     print(str(error).split(":")[0])
        secagg_threshold=2 must be above half of the 4 neighbours (3 to 4)
    """
    if not isinstance(neighbours, int) or isinstance(neighbours, bool) or neighbours < 2:
        raise ValueError(f"secagg_neighbours={neighbours!r} must be a whole number >= 2")
    if neighbours > MAX_NEIGHBOURS:
        raise ValueError(f"secagg_neighbours={neighbours} must be at most {MAX_NEIGHBOURS}")
    low = neighbours // 2 + 1
    if not isinstance(threshold, int) or isinstance(threshold, bool) or threshold > neighbours:
        raise ValueError(
            f"secagg_threshold={threshold!r} must be a whole number of the {neighbours} neighbours' "
            f"shares ({low} to {neighbours})"
        )
    if threshold < low:
        raise ValueError(
            f"secagg_threshold={threshold} must be above half of the {neighbours} neighbours ({low} to "
            f"{neighbours}): at half or below the server could rebuild both of a device's secrets"
        )


def check_secure_aggregation(config) -> None:
    """The secure sum's settings, and what cannot go with it: a server that needs each update
    (robust aggregators, the mask check), weights other than 1, codecs and error feedback (the
    fixed-point words are the upload's code)."""
    late = config.secagg_late_failure_rate
    if not (isinstance(late, numbers.Real) and not isinstance(late, bool) and 0 <= late < 1):
        raise ValueError(f"secagg_late_failure_rate must be in [0, 1), got {late!r}")
    if config.secagg_support not in SUPPORTS:
        raise ValueError(
            f"secagg_support must be one of {', '.join(SUPPORTS)}, got {config.secagg_support!r}"
        )
    if not config.secure_aggregation:
        if config.secagg_support != "dense":
            raise ValueError("secagg_support needs secure_aggregation=True")
        for name in _SETTINGS:
            if getattr(config, name) is not None:
                raise ValueError(f"{name} needs secure_aggregation=True")
        if late:
            raise ValueError("secagg_late_failure_rate needs secure_aggregation=True")
        return
    refusals = [
        (config.codec is not None, "a codec (the fixed-point words are the upload's code)"),
        (config.error_feedback or config.error_feedback_momentum, "error feedback (nothing is dropped)"),
        (config.aggregator not in (None, "mean"), f"aggregator={config.aggregator!r} (it needs each update)"),
        (config.enforce_mask, "enforce_mask (the server sees no single upload; under Algorithm 1 only "
         "the public mask's kept coordinates are summed, so nothing can be sent outside it)"),
        (config.aggregation == "weighted", "aggregation='weighted' (every update is summed with weight 1)"),
        (config.secagg_support == "union" and config.share_log_sigma2 and config.mask,
         "secagg_support='union' under Algorithm 1 (its public mask is the support already)"),
    ]  # fmt: skip
    for refused, what in refusals:
        if refused:
            raise ValueError(f"secure_aggregation does not go with {what}")
    value_range = config.secagg_range
    real = isinstance(value_range, numbers.Real) and not isinstance(value_range, bool)
    if value_range is not None and not (real and 0 < value_range < math.inf):
        raise ValueError(f"secagg_range must be a finite number above 0, got {value_range!r}")
    if config.secagg_neighbours is not None or config.secagg_threshold is not None:
        k = config.secagg_neighbours if config.secagg_neighbours is not None else 2
        t = config.secagg_threshold if config.secagg_threshold is not None else k // 2 + 1
        check_secagg(k, t)


def resolved_secagg(config, per_round: int) -> tuple[int, int]:
    """k and t for rounds of ``per_round`` devices: by default k = 2 ceil(log2 K) neighbours (Bell
    et al.'s logarithmic degree; every other device when that is more) and t = k // 2 + 1."""
    k = config.secagg_neighbours
    if k is None:
        k = 2 * math.ceil(math.log2(max(per_round, 2)))
    k = min(k, per_round - 1)
    t = config.secagg_threshold if config.secagg_threshold is not None else k // 2 + 1
    if t > k:
        raise ValueError(
            f"secagg_threshold={t} exceeds the {k} neighbours a device has in rounds of {per_round} devices"
        )
    check_secagg(k, t)
    return k, t


def secagg_range(config) -> float:
    """The fixed-point range: DP's clip bound when uploads are clipped (no value is above it), else
    ``secagg_range`` or 1."""
    if config.secagg_range is not None:
        return float(config.secagg_range)
    return float(config.dp_clip) if config.dp_clip is not None else 1.0
