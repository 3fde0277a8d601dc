"""A secret kept in a file of its own: made once, exclusively, readable by its owner only."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path


def read_or_create(path: Path, make: Callable[[], str], *, keep_private: bool = False) -> str:
    """Return the secret in ``path``, writing ``make()`` there (mode 0600) if there is none.

    Two processes starting together agree: the file is created exclusively, and the one
    that loses the race reads the winner's. ``keep_private`` also resets the mode of a file
    that exists, where the directory is ours to change (not a read-only keys volume).

    Raises:
        OSError: the file can be neither created nor read.
    """
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        pass
    else:
        with os.fdopen(fd, "w") as fh:
            fh.write(make())
    if keep_private:
        path.chmod(0o600)
    return path.read_text().strip()
