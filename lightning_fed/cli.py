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
