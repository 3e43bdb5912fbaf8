"""The error of a secure round that cannot finish (importable without the cryptography libraries)."""


class SecAggAborted(RuntimeError):
    """A round the protocol cannot finish: too few answers to rebuild a device's secret. The
    server learned nothing of the round and applies nothing."""
