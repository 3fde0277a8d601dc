"""Login attempts per username and per client address (AUTHSVC_LOGIN_RATE_LIMIT)."""

from __future__ import annotations

from authsvc.config import RateLimit
from authsvc.errors import RateLimited
from authsvc.store import Store


class LoginRateLimiter:
    """Fixed-window counters in the store, shared by every instance."""

    def __init__(self, store: Store, limit: RateLimit) -> None:
        self._store = store
        self._limit = limit

    async def count_attempt(self, username: str, ip: str, *, now: int) -> None:
        """Count a login attempt before any password work is done.

        Raises:
            RateLimited: with the seconds until the window ends.
        """
        scopes = [("user", username)] if username else []
        if ip:
            scopes.append(("ip", ip))
        if not scopes:
            return
        window = self._limit.window
        counts = await self._store.count_login_attempts(scopes, now=now, window=window)
        if max(counts) > self._limit.attempts:
            raise RateLimited(retry_after=window - now % window)
