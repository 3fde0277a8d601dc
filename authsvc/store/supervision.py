"""What supervising the embedded store needs besides the process: the wait before each
restart, and the flag that says the store is known to be gone.

``Backoff``: 0.1 s before the first restart, twice as long before each next one (a try
that failed, or a store that died again soon after it came back), at most 5 s; a store
that had run for 30 s before it died starts again from 0.1 s.

``StoreState``: set by the process that owns the store (the parent with ``--workers N``)
while its child is dead and not yet back, read by ``/healthz`` in that process and in
every worker. It lives in shared memory, handed to the workers when they are spawned, so
a worker knows without asking anything.
"""

from __future__ import annotations

import ctypes
import multiprocessing

FIRST_DELAY = 0.1
MAX_DELAY = 5.0
HEALTHY_AFTER = 30.0


class Backoff:
    """The waits between restarts: doubling from ``first`` to ``cap``, reset by a healthy run."""

    def __init__(
        self,
        first: float = FIRST_DELAY,
        cap: float = MAX_DELAY,
        healthy_after: float = HEALTHY_AFTER,
    ) -> None:
        self.first = first
        self.cap = cap
        self.healthy_after = healthy_after
        self._next = first

    def after_exit(self, uptime: float) -> float:
        """The wait before restarting a store that died after ``uptime`` seconds of service."""
        if uptime >= self.healthy_after:
            self._next = self.first
        return self._take()

    def after_failure(self) -> float:
        """The wait before trying again after a restart that did not come up."""
        return self._take()

    def _take(self) -> float:
        delay = self._next
        self._next = min(delay * 2, self.cap)
        return delay


class StoreState:
    """Whether the embedded store is known to be gone, shared with spawned workers."""

    def __init__(self) -> None:
        # Shared memory that pickles (only) while a process is being spawned.
        self._gone = multiprocessing.get_context("spawn").RawValue(ctypes.c_bool, False)

    @property
    def gone(self) -> bool:
        return bool(self._gone.value)

    def set_gone(self, gone: bool) -> None:
        self._gone.value = gone
