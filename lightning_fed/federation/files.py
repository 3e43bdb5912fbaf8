"""Files that are either the old version or the new one, whole: written aside, synced, renamed."""

import os
from pathlib import Path


def write_aside(path: Path, write) -> None:
    """``write(partial)`` then rename into ``path``: ``path`` is either the old file or the new, whole."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    try:
        write(partial)
        with open(partial, "rb+") as handle:
            os.fsync(handle.fileno())
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    os.replace(partial, path)
