"""A device's row (its local parameters and its upload stages' state), kept in memory or on disk.

A row is what of a device's state is as large as the model: its local parameters (log_sigma2 in
the paper's variant) and what its upload stages keep between its rounds (error feedback's
residual, DGC's velocity: one tensor per shared tensor). A :class:`RowSchema` names them and
packs them into one flat row (``NAME`` for a parameter, ``stage:STATE:I`` for a stage's state of
the I-th shared tensor) and unpacks it. Two stores keep rows with one interface (``read``,
``write``, ``row_of``): :class:`MemoryRows` (tensors, on the model's device) and :class:`DiskRows`.

A process that hosts 1,000 devices of CifarNet in the paper's variant keeps 5.5 GB of log_sigma2;
:class:`DiskRows` keeps each device's row in a file of its own, ``FOLDER/ROW.f32``, beside the
folder's schema header ``FOLDER/schema.json`` (the layout: every entry's name and shape, in order,
float32), and holds in memory only the row of the device it computes. A device that never trained
has no row (its parameters are still the initial ones).

Every write replaces a device's file by a new one (written aside, then renamed), so a checkpoint
can keep a device's row by a hard link instead of a copy: the checkpoint's folder of links
(:meth:`DiskRows.copy_to`) costs no disk for the rows that do not change after it, and a save
copies nothing. A device that trains after the save gets a new file; the checkpoint keeps the
old one. Checkpoints of lightning-fed <= 0.2 kept one file of rows at ``row * row_bytes``;
:func:`read_row` and :meth:`DiskRows.adopt` read both.
"""

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch

Layout = list[tuple[str, tuple[int, ...]]]
SCHEMA = "schema.json"  # a folder of rows' header: its layout
ROWS_FORMAT = "lightning-fed device rows"  # the header's "format"; its "dtype" is float32
STAGE = "stage:"  # a stage's state in a row: "stage:STATE:I", of the I-th shared tensor
_STAGE_BEFORE_0_4 = "feedback:"  # the same, as rows of lightning-fed <= 0.3 named it


@dataclass(frozen=True)
class RowSchema:
    """What a device's row holds, in order: its local parameters (``params``: names and shapes),
    then each of ``stage_names`` (the upload stages' state) for each shared tensor (``numels``).

    Example::

        >>> schema = RowSchema([("w", (2,))], stage_names=("residual",), numels=(3,))
        >>> schema.layout
        [('w', (2,)), ('stage:residual:0', (3,))]
        >>> row = schema.pack({"w": torch.zeros(2)}, {})  # a device with no residual yet: zeros
        >>> params, stages = unpack(row)
        >>> list(params), {k: [t.tolist() for t in v] for k, v in stages.items()}
        (['w'], {'residual': [[0.0, 0.0, 0.0]]})
    """

    params: Layout
    stage_names: tuple[str, ...] = ()
    numels: tuple[int, ...] = ()

    @property
    def layout(self) -> Layout:
        stages = [(f"{STAGE}{n}:{i}", (k,)) for n in self.stage_names for i, k in enumerate(self.numels)]
        return [(name, tuple(shape)) for name, shape in self.params] + stages

    def pack(self, params: dict[str, torch.Tensor], stages: dict) -> dict[str, torch.Tensor]:
        """One row of ``params`` and the ``stage_names`` in ``stages`` (zeros where there are none)."""
        row = dict(params)
        for name in self.stage_names:
            tensors = stages.get(name)
            for i, numel in enumerate(self.numels):
                row[f"{STAGE}{name}:{i}"] = tensors[i] if tensors is not None else torch.zeros(numel)
        return row


def unpack(row: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, list[torch.Tensor]]]:
    """A row's local parameters, and its stages' state as ``{state: [tensor per shared one]}``.

    Example::

        >>> params, stages = unpack({"w": torch.zeros(2), "stage:velocity:0": torch.ones(3)})
        >>> list(params), {k: [t.tolist() for t in v] for k, v in stages.items()}
        (['w'], {'velocity': [[1.0, 1.0, 1.0]]})
    """
    params: dict[str, torch.Tensor] = {}
    stages: dict[str, list[torch.Tensor]] = {}
    for key, value in row.items():
        prefix = next((p for p in (STAGE, _STAGE_BEFORE_0_4) if key.startswith(p)), None)
        if prefix is None:
            params[key] = value
        else:
            stages.setdefault(key[len(prefix) :].rsplit(":", 1)[0], []).append(value.reshape(-1))
    return params, stages


class MemoryRows:
    """Every hosted device's row as tensors on the model's device: the store of a few devices.

    Example::

        >>> rows = MemoryRows(devices=[4, 7])
        >>> rows.read(7) is None
        True
        >>> rows.write(7, {"w": torch.tensor([1.5, -2.0])}, {"residual": [torch.ones(1)]})
        >>> params, stages = rows.read(7)
        >>> params["w"].tolist(), list(stages), rows.row_of(7), rows.row_of(4)
        ([1.5, -2.0], ['residual'], 1, None)
    """

    def __init__(self, devices: list[int]) -> None:
        self.index = {device: row for row, device in enumerate(devices)}
        self._rows: dict[int, tuple[dict[str, torch.Tensor], dict]] = {}

    def row_of(self, device: int) -> int | None:
        return self.index[device] if device in self._rows else None

    def read(self, device: int) -> tuple[dict[str, torch.Tensor], dict] | None:
        return self._rows.get(device)

    def write(self, device: int, params: dict[str, torch.Tensor], stages: dict) -> None:
        """Copy ``params`` into the device's row (its own tensors from the first write on); its
        stages' state is the device's own already (each stage writes new tensors) and is kept."""
        held = self._rows.get(device)
        if held is None:
            held = ({name: value.detach().clone() for name, value in params.items()}, {})
        else:
            for name, value in params.items():
                held[0][name].copy_(value)
        self._rows[device] = (held[0], dict(stages))


def layout_numels(layout: Layout) -> list[int]:
    """The number of floats of each entry of ``layout``."""
    return [int(torch.Size(shape).numel()) for _, shape in layout]


def _row_file(folder: Path, row: int) -> Path:
    return folder / f"{row}.f32"


def _row_source(path, row: int, row_bytes: int) -> tuple[Path, int]:
    """Where row ``row`` of a saved store is: its own file in a folder (offset 0), or its offset
    in one file of rows (the format of lightning-fed <= 0.2)."""
    path = Path(path)
    return (_row_file(path, row), 0) if path.is_dir() else (path, row * row_bytes)


def _as_tensors(buffer: bytearray, layout: Layout) -> dict[str, torch.Tensor]:
    flat = torch.frombuffer(buffer, dtype=torch.float32)
    parts = flat.split(layout_numels(layout))
    return {name: t.view(shape) for (name, shape), t in zip(layout, parts, strict=True)}


def saved_layout(path) -> Layout | None:
    """The layout in the schema header of a saved folder of rows (None: no header, as in
    checkpoints of lightning-fed <= 0.3, whose layout is in the checkpoint)."""
    header = Path(path) / SCHEMA
    if not header.is_file():
        return None
    try:
        fields = json.loads(header.read_text())
        if fields["format"] != ROWS_FORMAT or fields["dtype"] != "float32":
            raise ValueError
        return [(name, tuple(shape)) for name, shape in fields["layout"]]
    except (ValueError, KeyError, TypeError):
        raise ValueError(f"{header} is not a schema header of device rows") from None


def read_row(path, row: int, layout: Layout | None = None) -> dict[str, torch.Tensor]:
    """Row ``row`` of a saved store (a checkpoint's folder of rows, or an old file of rows), named
    and shaped by the folder's schema header, or by ``layout`` where it has none.

    Raises:
        ValueError: the row is missing or short, or ``layout`` is not the header's.
    """
    header = saved_layout(path) if Path(path).is_dir() else None
    if header is not None and layout is not None and not same_layout(layout, header):
        raise ValueError(f"{path} holds rows of another layout than the checkpoint names")
    layout = header if header is not None else layout
    if layout is None:
        raise ValueError(f"{path} has no schema header and no layout was given")
    buffer = bytearray(4 * sum(layout_numels(layout)))
    source, offset = _row_source(path, row, len(buffer))
    try:
        with open(source, "rb") as file:
            file.seek(offset)
            complete = file.readinto(buffer) == len(buffer)
    except FileNotFoundError:
        complete = False
    if not complete:
        raise ValueError(f"{path} is truncated: it has no row {row}")
    return _as_tensors(buffer, layout)


def same_layout(a: Layout, b: Layout) -> bool:
    """Whether two layouts name the same entries in the same order and shapes (shapes as lists, from
    JSON, or tuples; a stage's state named as by lightning-fed <= 0.3 or today).

    Example::

        >>> old = [("w", [2]), ("feedback:residual:0", [3])]  # a checkpoint of lightning-fed <= 0.3
        >>> same_layout(old, [("w", (2,)), ("stage:residual:0", (3,))])
        True
    """

    def entries(layout: Layout) -> list:
        return [(n.replace(_STAGE_BEFORE_0_4, STAGE, 1), tuple(s)) for n, s in layout]

    return entries(a) == entries(b)


class DiskRows:
    """The rows of many devices as float32 files of one folder, read and written per device.

    Example::

        >>> import tempfile
        >>> folder = Path(tempfile.mkdtemp()) / "process-0"
        >>> rows = DiskRows(folder, devices=[4, 7], schema=RowSchema([("w", (2,))]))
        >>> rows.read(7) is None
        True
        >>> rows.write(7, {"w": torch.tensor([1.5, -2.0])}, {})
        >>> rows.read(7)[0]["w"].tolist(), rows.row_of(7), rows.row_of(4)
        ([1.5, -2.0], 1, None)
        >>> rows.copy_to(folder.parent / "saved")  # a folder of hard links, with its header
        >>> rows.write(7, {"w": torch.tensor([0.0, 0.0])}, {})  # a new file: the saved row stays
        >>> read_row(folder.parent / "saved", 1)["w"].tolist()
        [1.5, -2.0]
    """

    def __init__(self, path: Path, devices: list[int], schema: RowSchema) -> None:
        self.path, self.schema, self.layout = Path(path), schema, schema.layout
        self.index = {device: row for row, device in enumerate(devices)}
        self.row_bytes = 4 * sum(layout_numels(self.layout))
        self.written = [False] * len(devices)
        self._unsynced: set[int] = set()  # rows written since the last save
        shutil.rmtree(self.path, ignore_errors=True)  # a fresh store: rows of an earlier session go,
        self.path.with_name(self.path.name + ".f32").unlink(missing_ok=True)  # and the file of <= 0.2
        self.path.mkdir(parents=True)
        header = {"format": ROWS_FORMAT, "dtype": "float32", "layout": self.layout}
        (self.path / SCHEMA).write_text(json.dumps(header) + "\n")

    def row_of(self, device: int) -> int | None:
        row = self.index[device]
        return row if self.written[row] else None

    def read(self, device: int) -> tuple[dict[str, torch.Tensor], dict] | None:
        """``device``'s local parameters and stages' state (None: it never trained)."""
        row = self.row_of(device)
        if row is None:
            return None
        buffer = bytearray(self.row_bytes)
        with open(_row_file(self.path, row), "rb") as file:
            if file.readinto(buffer) != self.row_bytes:
                raise OSError(f"{self.path}: short read of device {device}")
        return unpack(_as_tensors(buffer, self.layout))

    def write(self, device: int, params: dict[str, torch.Tensor], stages: dict) -> None:
        """Write ``device``'s row straight from its tensors into a new file (no row-sized copy in
        memory, and a checkpoint's hard link to the old file keeps the old row)."""
        tensors = self.schema.pack(params, stages)
        parts = [tensors[name].detach().to("cpu", torch.float32).contiguous() for name, _ in self.layout]
        row = self.index[device]
        target = _row_file(self.path, row)
        partial = target.with_name(target.name + ".partial")
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            if os.pwritev(fd, [part.reshape(-1).numpy() for part in parts], 0) != self.row_bytes:
                raise OSError(f"{self.path}: short write of device {device}")
        finally:
            os.close(fd)
        os.replace(partial, target)
        self.written[row] = True
        self._unsynced.add(row)

    def adopt(self, device: int, source, source_row: int) -> None:
        """``device``'s row taken from row ``source_row`` of a saved store of the same layout (a
        checkpoint's): hard-linked from its folder, or copied file to file inside the kernel from
        an old file of rows; nothing of it passes through this process's memory.

        Example::

            >>> import tempfile
            >>> folder = Path(tempfile.mkdtemp())
            >>> schema = RowSchema([("w", (2,))])
            >>> saved = DiskRows(folder / "saved", devices=[0, 1], schema=schema)
            >>> saved.write(1, {"w": torch.tensor([3.0, 4.0])}, {})
            >>> rows = DiskRows(folder / "live", devices=[5, 6], schema=schema)
            >>> rows.adopt(6, saved.path, source_row=1)
            >>> rows.read(6)[0]["w"].tolist(), rows.row_of(5)
            ([3.0, 4.0], None)
        """
        row = self.index[device]
        origin, offset = _row_source(source, source_row, self.row_bytes)
        target = _row_file(self.path, row)
        missing = f"{source} is truncated: it has no row {source_row}"
        if not origin.is_file():
            raise ValueError(missing)
        if offset == 0 and origin.stat().st_size == self.row_bytes:
            _link_or_copy(origin, target)
        else:
            self._copy_range(origin, offset, target, missing)
            self._unsynced.add(row)
        self.written[row] = True

    def _copy_range(self, origin: Path, offset: int, target: Path, missing: str) -> None:
        with open(origin, "rb") as source, open(target, "wb") as out:
            left, at = self.row_bytes, 0
            while left:
                done = os.copy_file_range(source.fileno(), out.fileno(), left, offset + at, at)
                if done == 0:
                    raise ValueError(missing)
                at, left = at + done, left - done

    def copy_to(self, target: Path) -> None:
        """The written rows as a folder of hard links at ``target`` (a copy where the file system
        cannot link), built aside, synced and renamed into place: ``target`` is whole or absent.
        Rows of devices that never trained have no file there either. Rows written since the last
        save are synced to disk first (the others were synced then)."""
        target = Path(target)
        if target.exists():  # saved at this step already (a folder, or a file of rows of <= 0.2 that
            return  # this session resumed from): no device has trained since, the same rows
        partial = target.with_name(target.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True)
        try:
            for row in sorted(self._unsynced):
                _sync_file(_row_file(self.path, row))
            _link_or_copy(self.path / SCHEMA, partial / SCHEMA)
            for row, written in enumerate(self.written):
                if written:
                    _link_or_copy(_row_file(self.path, row), _row_file(partial, row))
            _sync_file(partial)
        except BaseException:
            shutil.rmtree(partial, ignore_errors=True)
            raise
        os.replace(partial, target)
        _sync_file(target.parent)
        self._unsynced.clear()


def _link_or_copy(origin: Path, target: Path) -> None:
    try:
        os.link(origin, target)
    except OSError:  # another file system, or one without hard links
        shutil.copyfile(origin, target)


def _sync_file(path: Path) -> None:
    """fsync a file or a folder (its entries)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def remove_saved(path: Path) -> None:
    """Remove a saved store of rows: a folder (this format) or a file (lightning-fed <= 0.2)."""
    path = Path(path)
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)
