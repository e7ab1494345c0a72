"""One exclusive advisory lock on a file, held while a block runs: the image cache's builders and the
processes sharing a study take turns through it.

`fcntl.flock`, not the existence of a lock file: the kernel releases the lock when its process dies, even
by SIGKILL, so a killed holder never leaves a stale lock behind.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Callable, Iterator
from pathlib import Path

__all__ = ["exclusive"]


@contextlib.contextmanager
def exclusive(path: Path, error: Callable[[OSError], Exception] | None = None) -> Iterator[None]:
    """Hold an exclusive `flock` on `path` (created if missing, its folder not) while the block runs.

    An `OSError` opening `path` is raised as it is, or as `error(e)` when given (a message naming the fix).
    Not re-entrant: a process must not nest two blocks on one path.
    """
    try:
        fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o666)
    except OSError as e:
        if error is None:
            raise
        raise error(e) from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            # Unlocked, not only closed: a forked child holding a copy of `fd` must not keep the lock.
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
