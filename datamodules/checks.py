"""Argument checks of the data side: a one-line ``ValueError`` naming the value and what is allowed."""

import math
import numbers


def check_count(name: str, value, minimum: int = 1) -> int:
    """``value`` as an ``int`` if it is an integer >= ``minimum`` (``bool`` is not a count).

    Example:
        >>> check_count("val_size", 0, minimum=0)
        0
        >>> check_count("num_devices", 0)
        Traceback (most recent call last):
        ...
        ValueError: num_devices must be an integer >= 1, got 0
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def check_number(name: str, value, positive: bool = False) -> float:
    """``value`` as a ``float`` if it is a finite real number >= 0 (> 0 when ``positive``).

    Example:
        >>> check_number("unequal_sigma", 1)
        1.0
        >>> check_number("Dirichlet alpha", 0, positive=True)
        Traceback (most recent call last):
        ...
        ValueError: Dirichlet alpha must be a finite number > 0, got 0
    """
    real = isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)
    if not real or value < 0 or (positive and value == 0):
        raise ValueError(f"{name} must be a finite number {'>' if positive else '>='} 0, got {value!r}")
    return float(value)
