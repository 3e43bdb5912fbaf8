"""Many devices' local parameters on disk: one float32 file a device, hard-linked into checkpoints.

A process that hosts 1,000 devices of CifarNet in the paper's variant keeps 5.5 GB of log_sigma2;
:class:`DiskRows` keeps each device's row (its local parameters, then its error-feedback tensors,
in a fixed ``layout``) in a file of its own, ``FOLDER/ROW.f32``, and holds in memory only the row
of the device it computes. A device that never trained has no file (its parameters are still the
initial ones).

Every write replaces a device's file by a new one (written aside, then renamed), so a checkpoint
can keep a device's row by a hard link instead of a copy: the checkpoint's folder of links
(:meth:`DiskRows.copy_to`) costs no disk for the rows that do not change after it, and a save
copies nothing. A device that trains after the save gets a new file; the checkpoint keeps the
old one. Checkpoints of lightning-fed <= 0.2 kept one file of rows at ``row * row_bytes``;
:func:`read_row` and :meth:`DiskRows.adopt` read both.
"""

import os
import shutil
from pathlib import Path

import torch

Layout = list[tuple[str, tuple[int, ...]]]


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


def read_row(path, row: int, layout: Layout) -> dict[str, torch.Tensor]:
    """Row ``row`` of a saved store (a checkpoint's folder of rows, or an old file of rows), named
    and shaped by ``layout``."""
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


class DiskRows:
    """The local parameters of many devices as float32 files of one folder, read and written per device.

    Example::

        >>> import tempfile
        >>> folder = Path(tempfile.mkdtemp()) / "process-0"
        >>> rows = DiskRows(folder, devices=[4, 7], layout=[("w", (2,))])
        >>> rows.read(7) is None
        True
        >>> rows.write(7, {"w": torch.tensor([1.5, -2.0])})
        >>> rows.read(7)["w"].tolist(), rows.row_of(7), rows.row_of(4)
        ([1.5, -2.0], 1, None)
        >>> rows.copy_to(folder.parent / "saved")  # a folder of hard links
        >>> rows.write(7, {"w": torch.tensor([0.0, 0.0])})  # a new file: the saved row stays
        >>> read_row(folder.parent / "saved", 1, [("w", (2,))])["w"].tolist()
        [1.5, -2.0]
    """

    def __init__(self, path: Path, devices: list[int], layout: Layout) -> None:
        self.path, self.layout = Path(path), list(layout)
        self.index = {device: row for row, device in enumerate(devices)}
        self.row_bytes = 4 * sum(layout_numels(self.layout))
        self.written = [False] * len(devices)
        self._unsynced: set[int] = set()  # rows written since the last save
        shutil.rmtree(self.path, ignore_errors=True)  # a fresh store: rows of an earlier session go,
        self.path.with_name(self.path.name + ".f32").unlink(missing_ok=True)  # and the file of <= 0.2
        self.path.mkdir(parents=True)

    def row_of(self, device: int) -> int | None:
        row = self.index[device]
        return row if self.written[row] else None

    def read(self, device: int) -> dict[str, torch.Tensor] | None:
        row = self.row_of(device)
        if row is None:
            return None
        buffer = bytearray(self.row_bytes)
        with open(_row_file(self.path, row), "rb") as file:
            if file.readinto(buffer) != self.row_bytes:
                raise OSError(f"{self.path}: short read of device {device}")
        return _as_tensors(buffer, self.layout)

    def write(self, device: int, tensors: dict[str, torch.Tensor]) -> None:
        """Write ``device``'s row straight from its tensors into a new file (no row-sized copy in
        memory, and a checkpoint's hard link to the old file keeps the old row)."""
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
            >>> saved = DiskRows(folder / "saved", devices=[0, 1], layout=[("w", (2,))])
            >>> saved.write(1, {"w": torch.tensor([3.0, 4.0])})
            >>> rows = DiskRows(folder / "live", devices=[5, 6], layout=[("w", (2,))])
            >>> rows.adopt(6, saved.path, source_row=1)
            >>> rows.read(6)["w"].tolist(), rows.row_of(5)
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
