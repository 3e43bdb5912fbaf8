"""Package exports loaded on first use (PEP 562), so that ``import lightning_fed.X`` of a light
module (a command line's ``--help``) does not import torch and Lightning."""

import importlib


def lazy_exports(package: str, exports: dict[str, str]):
    """``__getattr__`` and ``__dir__`` for ``package`` that import ``exports[name]`` when ``name`` is read.

    Example::

        >>> getattr_, dir_ = lazy_exports("demo", {"sqrt": "math"})
        >>> getattr_("sqrt")(9.0), "sqrt" in dir_()
        (3.0, True)
    """

    def __getattr__(name: str):
        if name not in exports:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(exports[name]), name)

    def __dir__() -> list[str]:
        return sorted(exports)

    return __getattr__, __dir__
