"""Command-line helpers shared by the scripts."""

import argparse


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
        >>> text = parser.format_help()
        >>> "federated devices (default: 16)" in text, "(default: False)" in text
        (True, False)
    """

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "default" in text or action.default in (None, False, argparse.SUPPRESS):
            return text
        return f"{text} (default: %(default)s)"
