"""Command-line helpers shared by the scripts."""

import argparse
import math


class OneLineParser(argparse.ArgumentParser):
    """argparse whose errors are one line (``PROG: error: MESSAGE``) and exit code 2.

    Example::

        >>> parser = OneLineParser(prog="fit.py")
        >>> _ = parser.add_argument("--devices", type=int)
        >>> try:
        ...     parser.parse_args(["--devices", "x"])
        ... except SystemExit as stop:
        ...     stop.code
        2
    """

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message}\n")


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """The description as written, and each option's default after its help (unless the help
    already says it, or there is none: a flag that is off, an option that is unset).

    Example::

        >>> parser = OneLineParser(prog="fit.py", formatter_class=HelpFormatter)
        >>> _ = parser.add_argument("--devices", type=int, default=16, help="federated devices")
        >>> _ = parser.add_argument("--dense", action="store_true", help="plain layers")
        >>> _ = parser.add_argument("--failure-rate", type=float, default=0.0, help="chance to fail")
        >>> text = " ".join(parser.format_help().split())
        >>> "federated devices (default: 16)" in text, "(default: False)" in text
        (True, False)
        >>> "chance to fail (default: 0.0)" in text
        True
    """

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        unset = action.default is None or action.default is False or action.default == argparse.SUPPRESS
        if "default" in text or unset:  # by identity: a default of 0 or 0.0 is shown
            return text
        return f"{text} (default: %(default)s)"


def int_at_least(minimum: int):
    """An argparse ``type``: an integer of at least ``minimum``, else a one-line error naming the value.

    Example::

        >>> parser = OneLineParser(prog="fit.py")
        >>> _ = parser.add_argument("--devices", type=int_at_least(1))
        >>> parser.parse_args(["--devices", "16"]).devices
        16
        >>> try:
        ...     int_at_least(1)("0")
        ... except argparse.ArgumentTypeError as error:
        ...     print(error)
        0 is not allowed (must be an integer >= 1)
    """

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer (must be >= {minimum})") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{text} is not allowed (must be an integer >= {minimum})")
        return value

    return parse


def finite_float(text: str) -> float:
    """An argparse ``type``: a finite float (``nan`` and ``inf`` refused).

    Example::

        >>> finite_float("1e-3")
        0.001
    """
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text} is not allowed (must be a finite number)")
    return value


def fraction_below_1(text: str) -> float:
    """An argparse ``type``: a number in [0, 1) (a rate such as ``--failure-rate``)."""
    value = finite_float(text)
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"{text} is not allowed (must be a number in [0, 1))")
    return value


def finite_float_above_0(text: str) -> float:
    """An argparse ``type``: a finite number > 0 (a learning rate, a scale)."""
    value = finite_float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text} is not allowed (must be a finite number > 0)")
    return value


def finite_float_at_least_0(text: str) -> float:
    """An argparse ``type``: a finite number >= 0."""
    value = finite_float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text} is not allowed (must be a finite number >= 0)")
    return value


def whole_numbers(text: str) -> list[int]:
    """An argparse ``type``: whole numbers separated by commas (a benchmark's settings).

    Example::

        >>> whole_numbers("1000,10000")
        [1000, 10000]
        >>> whole_numbers("10,x")
        Traceback (most recent call last):
        ...
        argparse.ArgumentTypeError: '10,x' is not whole numbers separated by commas (e.g. 10,50)
    """
    try:
        return [int(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not whole numbers separated by commas (e.g. 10,50)"
        ) from None
