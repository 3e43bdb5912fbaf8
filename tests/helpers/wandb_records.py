"""Read a W&B offline run file (``run-*.wandb``) back: a LevelDB-style log of protobuf ``Record``s.

The file starts with a 7-byte header (``:W&B``, magic 0xBEE1, version); then 32 KiB blocks of
chunks, each with a 7-byte header (CRC32, little-endian length, type: 1 full, 2 first, 3 middle,
4 last). A block's tail shorter than a chunk header is zero padding.
"""

import json
import struct
import time
from pathlib import Path

from google.protobuf.message import DecodeError
from wandb.proto import wandb_internal_pb2

BLOCK = 32768
HEADER = 7
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def read_records(path) -> list:
    """Every ``wandb_internal_pb2.Record`` in the run file, in order."""
    data = Path(path).read_bytes()
    ident, magic, _ = struct.unpack("<4sHB", data[:HEADER])
    assert ident == b":W&B" and magic == 0xBEE1, f"{path} is not a W&B run file"
    records, pending, offset = [], b"", HEADER
    while offset + HEADER <= len(data):
        if BLOCK - offset % BLOCK < HEADER:
            offset += BLOCK - offset % BLOCK
            continue
        _, length, kind = struct.unpack("<IHB", data[offset : offset + HEADER])
        if offset + HEADER + length > len(data):
            break  # the writer has not flushed this record yet
        chunk = data[offset + HEADER : offset + HEADER + length]
        offset += HEADER + length
        if kind in (FULL, FIRST):
            pending = chunk
        elif kind in (MIDDLE, LAST):
            pending += chunk
        if kind in (FULL, LAST):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            records.append(record)
    return records


def finished_records(path, timeout: float = 120.0) -> list:
    """The records of a finished run, once its file ends with the ``exit`` record.

    ``run.finish()`` can return before W&B's writer has flushed its last 32 KiB block to disk (seen
    on a loaded 2-core machine: the last epoch's histogram was missing), so wait for the end.
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            records = read_records(path)
        except DecodeError:  # caught mid-write: the writer flushes in 32 KiB blocks
            records = []
        if records and records[-1].WhichOneof("record_type") == "exit":
            return records
        assert time.monotonic() < deadline, f"{path} has no exit record after {timeout} s"
        time.sleep(0.5)


def history_rows(path) -> list[dict]:
    """The ``history`` records (one per ``wandb.log`` call) of a finished run as ``{key: value}`` dicts."""
    rows = []
    for record in finished_records(path):
        if record.WhichOneof("record_type") == "history":
            rows.append({_key(item): json.loads(item.value_json) for item in record.history.item})
    return rows


def run_file(folder) -> Path:
    """The single ``run-*.wandb`` file under ``folder`` (a run's save_dir)."""
    files = sorted(Path(folder).rglob("run-*.wandb"))
    assert len(files) == 1, f"expected one W&B run file under {folder}, found {files}"
    return files[0]


def _key(item) -> str:
    return item.key or "/".join(item.nested_key)
