"""Redis failures that mean "try again later" become ``StoreUnavailable``.

redis-py raises a typed error for most of them; a few replies have no type of their own
and are recognised by their error code, the first word of the reply.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable
from typing import Concatenate, ParamSpec, Protocol, TypeVar

from redis.exceptions import (
    BusyLoadingError,
    ClusterDownError,
    ClusterError,
    MasterDownError,
    OutOfMemoryError,
    ReadOnlyError,
    RedisClusterException,
    ResponseError,
    SlotNotCoveredError,
    TryAgainError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from authsvc.errors import StoreUnavailable
from authsvc.store.sentinel import MasterSwitched

logger = logging.getLogger(__name__)

# Down, unreachable, a replica answering after a failover (READONLY), or a reply from a
# master replaced while it was awaited (its outcome is unknown: no retry).
_UNREACHABLE = (RedisConnectionError, RedisTimeoutError, ReadOnlyError, MasterSwitched, OSError)
# Up, but refusing for now: out of memory, loading its data, failing over, resharding.
_REFUSING = (
    OutOfMemoryError,
    BusyLoadingError,
    MasterDownError,
    TryAgainError,
    ClusterDownError,
    SlotNotCoveredError,
    ClusterError,
    RedisClusterException,
)
# Replies redis-py has no type for: a script running too long, too few replicas for
# min-replicas-to-write, and a disk that refuses writes.
_REFUSING_CODES = ("BUSY", "NOREPLICAS", "MISCONF")

P = ParamSpec("P")
T = TypeVar("T")


class HasRetryAfter(Protocol):
    retry_after: int

    def note_unavailable(self) -> None: ...


S = TypeVar("S", bound=HasRetryAfter)


def translate_errors(
    method: Callable[Concatenate[S, P], Awaitable[T]],
) -> Callable[Concatenate[S, P], Awaitable[T]]:
    """Wrap a store method so that an unavailable store raises ``StoreUnavailable``."""

    async def wrapper(self: S, /, *args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return await method(self, *args, **kwargs)
        except _UNREACHABLE:
            self.note_unavailable()
            raise StoreUnavailable(retry_after=self.retry_after) from None
        except _REFUSING as exc:
            logger.warning("store refused a command: %s", type(exc).__name__)
            self.note_unavailable()
            raise StoreUnavailable(retry_after=self.retry_after) from None
        except ResponseError as exc:
            code = str(exc).split(" ", 1)[0]
            if code in _REFUSING_CODES:
                logger.warning("store refused a command: %s", code)
                self.note_unavailable()
                raise StoreUnavailable(retry_after=self.retry_after) from None
            raise

    return functools.wraps(method)(wrapper)
