"""A codec from a spec: a string for fit.py and YAML, or a list of codec objects in Python.

A spec is stages joined by ``+``, filters first and at most one value coder:

- ``topk:DENSITY[:WARMUP_STEPS]``: top-k (:class:`~lightning_fed.communication.topk.TopK`);
- ``float32`` (lossless, the default), ``fp16``, ``qsgd:BITS[:BLOCK]`` (BITS in 2, 4, 8),
  ``sign[:BLOCK]``: the value coder (:mod:`lightning_fed.communication.values`).

Positions are always written in the cheapest encoding.

Example::

    >>> make_codec("topk:0.01+qsgd:8")
    SparseCodec(topk:0.01+qsgd:8)
    >>> make_codec([TopK(0.1, warmup_steps=50), Sign()])
    SparseCodec(topk:0.1:50+sign)
    >>> make_codec("qsgd:3")
    Traceback (most recent call last):
    ...
    ValueError: codec 'qsgd:3': qsgd bits must be one of 2, 4, 8, got 3
"""

import inspect

from lightning_fed.communication.codecs import Codec, SparseCodec
from lightning_fed.communication.topk import TopK
from lightning_fed.communication.values import QSGD, Float16, Float32, Sign, ValueCoder

STAGES = "topk:DENSITY[:WARMUP_STEPS], float32, fp16, qsgd:BITS[:BLOCK], sign[:BLOCK]"


def make_codec(spec: "str | list | Codec | None", option: str = "codec") -> Codec:
    """The codec of ``spec`` (None or ``""``: lossless float32, the paper's protocol); errors name
    ``option``, the setting the spec came from."""
    if isinstance(spec, Codec):
        return _checked(spec, option)
    if spec is None or spec == "":
        return SparseCodec()
    if isinstance(spec, str):
        try:
            stages = [_stage(part) for part in spec.split("+")]
        except ValueError as error:
            raise ValueError(f"{option} {spec!r}: {error}") from None
        return _compose(stages, spec, option)
    return _compose(list(spec), spec, option)


def default_download(codec: Codec) -> Codec:
    """The server's codec when none is given: the uploads' value coder without their filters.

    The average of the devices' top-k uploads is already as sparse as their union; top-k again on
    the server, with no residual there, would drop what the devices sent. A codec of another kind
    is used as it is.

    Example::

        >>> default_download(make_codec("topk:0.01+qsgd:8"))
        SparseCodec(qsgd:8)
    """
    if isinstance(codec, SparseCodec) and codec.filters:
        return SparseCodec([e.name for e in codec.encodings], values=codec.values)
    return codec


def _checked(codec: Codec, option: str) -> Codec:
    """A user's codec must take the keywords the strategy passes (``step``, ``seed``)."""
    parameters = inspect.signature(codec.encode).parameters
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())
    if not (takes_any or {"step", "seed"} <= parameters.keys()):
        raise ValueError(
            f"{option}: {type(codec).__name__}.encode must take the keywords step and seed "
            "(see lightning_fed.communication.Codec.encode)"
        )
    return codec


def _compose(stages: list, spec, option: str) -> SparseCodec:
    filters = [s for s in stages if hasattr(s, "filter")]
    coders = [s for s in stages if isinstance(s, ValueCoder)]
    other = [s for s in stages if s not in filters and s not in coders]
    if other:
        raise ValueError(f"{option} {spec!r}: {other[0]!r} is neither a filter nor a value coder ({STAGES})")
    if len(coders) > 1:
        named = ", ".join(map(repr, coders))
        raise ValueError(f"{option} {spec!r}: give at most one value coder, got {named}")
    if coders and stages.index(coders[0]) < max((stages.index(f) for f in filters), default=-1):
        raise ValueError(f"{option} {spec!r}: filters (topk) come before the value coder")
    return SparseCodec(filters=filters, values=coders[0] if coders else None)


def _stage(text: str):
    name, *args = text.strip().split(":")
    try:
        if name == "topk" and len(args) in (1, 2):
            return TopK(float(args[0]), *(int(a) for a in args[1:]))
        if name == "qsgd" and len(args) in (1, 2):
            return QSGD(*(int(a) for a in args))
        if name == "sign" and len(args) <= 1:
            return Sign(*(int(a) for a in args))
        if name in ("float32", "fp16") and not args:
            return Float32() if name == "float32" else Float16()
    except ValueError as error:
        if "must be" in str(error):
            raise
        raise ValueError(f"{text!r} has a value that is not a number") from None
    raise ValueError(f"unknown stage {text!r}; stages are {STAGES}")
