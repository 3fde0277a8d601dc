"""Clock: the source of ``now`` (Unix seconds) for every domain decision."""

from __future__ import annotations

import time
from collections.abc import Callable

Clock = Callable[[], int]


def system_clock() -> int:
    """Return the current Unix time in whole seconds."""
    return int(time.time())
