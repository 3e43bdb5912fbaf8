"""One run at a time in a run folder: an advisory lock on the folder itself.

Two ``fit.py`` runs writing one folder overwrite each other's ``last.ckpt``, so the second
``--resume`` of a run that is still training (a runner restarted while its old processes go on)
would corrupt both. The lock is ``flock`` on the folder's own file descriptor: it writes no file,
and the operating system drops it when the process ends, however it ends, so a killed run never
leaves a stale lock behind.
"""

import os
from pathlib import Path

try:
    import fcntl
except ImportError:  # Windows: no flock; runs there are not guarded
    fcntl = None


class RunFolderInUse(ValueError):
    """Another process holds the run folder's lock."""


def hold_run_folder(folder: Path) -> int | None:
    """Takes the run folder's lock for the life of this process; returns its file descriptor.

    Creates the folder if needed. Raises ``RunFolderInUse`` at once if another process holds
    it. Closing the descriptor (or ending the process) lets it go.

    Example::

        >>> import tempfile
        >>> folder = Path(tempfile.mkdtemp()) / "run"
        >>> held = hold_run_folder(folder)
        >>> try:
        ...     hold_run_folder(folder)
        ... except RunFolderInUse as error:
        ...     print(str(error).replace(str(folder), "RUN"))
        'RUN' is in use by a fit.py still training there; wait for it to end or pass another folder
        >>> os.close(held)
        >>> os.close(hold_run_folder(folder))  # free again
    """
    folder.mkdir(parents=True, exist_ok=True)
    if fcntl is None:
        return None
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(descriptor)
        raise RunFolderInUse(
            f"{str(folder)!r} is in use by a fit.py still training there; "
            "wait for it to end or pass another folder"
        ) from None
    return descriptor
