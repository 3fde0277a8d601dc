"""Throttles on what costs us, kept in the store so every instance shares them.

- Token buckets per client for registration and refresh, and per username and per client
  for login (AUTHSVC_*_RATE_LIMIT): a burst of ATTEMPTS, then ATTEMPTS per WINDOW, never
  twice the burst at a window's edge. A client is an IPv4 address or an IPv6 network of
  AUTHSVC_RATE_LIMIT_IPV6_PREFIX bits (``authsvc.domain.addresses.client_network``): one host
  holds a whole /64, and would hold as many buckets as addresses. One refresh bucket per
  client, for /v1/auth/refresh and /oauth/token alike.
- A token bucket per client of failed client authentications
  (AUTHSVC_CLIENT_AUTH_FAILURE_LIMIT), taken from by failures only.
- A sliding window of failed logins per account (AUTHSVC_LOGIN_FAILURE_LIMIT) that a
  successful login clears: at most that many failures in any window.

Each is counted before any password work or signature, so a refused request costs one
Redis call; a refresh's bucket is taken by ``Store.rotate``, in the rotation's own call
but on Cluster.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from authsvc.config import RateLimit
from authsvc.domain.addresses import DEFAULT_IPV6_PREFIX, client_network
from authsvc.errors import RateLimited
from authsvc.store.keyspace import LOGIN_USER_SCOPE
from authsvc.store.records import Bucket
from authsvc.store.redis_store import Store


@dataclass(frozen=True, slots=True)
class Limits:
    login: RateLimit
    login_failures: RateLimit
    registration: RateLimit
    refresh: RateLimit
    client_auth_failures: RateLimit
    ipv6_prefix: int = DEFAULT_IPV6_PREFIX


class Throttle:
    """Every rate limit of authsvc, on one store."""

    def __init__(self, store: Store, limits: Limits) -> None:
        self._store = store
        self._limits = limits

    async def _take(self, scope: str, value: str, limit: RateLimit, *, now: int) -> None:
        retry_after = await self._store.take_token(_bucket(scope, value, limit), now=now)
        if retry_after:
            raise RateLimited(retry_after=retry_after)

    async def login_attempt(self, username: str, ip: str, *, now: int) -> None:
        """Count a login attempt against its username, its address and the account.

        The attempt counts as a failure of the account until ``login_succeeded``.

        Raises:
            RateLimited: with the seconds until an attempt is allowed again.
        """
        if username:
            await self._take(LOGIN_USER_SCOPE, username, self._limits.login, now=now)
        if ip:
            await self._take("login-ip", self._client(ip), self._limits.login, now=now)
        if username:
            # Also for names no account has: an unknown user and a wrong password must
            # look the same, refusals included.
            await self.password_attempt(username, now=now)

    async def password_attempt(self, username: str, *, now: int) -> None:
        """Count a password check of an account as a failure until ``login_succeeded``:
        a login's, or the current password of a change (AUTHSVC_LOGIN_FAILURE_LIMIT).

        Raises:
            RateLimited: the account has had too many failures in the window.
        """
        failures = self._limits.login_failures
        retry_after = await self._store.count_failure(
            username, secrets.token_hex(8), now=now, limit=failures.attempts,
            window=failures.window,
        )  # fmt: skip
        if retry_after:
            raise RateLimited(
                "too many failed logins (or password checks) for this account, retry later",
                retry_after=retry_after,
            )

    async def login_succeeded(self, username: str) -> None:
        """A verified password ends the account's run of failures (NIST: "consecutive")."""
        await self._store.clear_failures(username)

    async def registration(self, ip: str, *, now: int) -> None:
        """Raises: RateLimited when this client registered too often."""
        if ip:
            client = self._client(ip)
            await self._take("registration-ip", client, self._limits.registration, now=now)

    async def client_auth_failed(self, ip: str, *, now: int) -> None:
        """Count a failed client authentication against its client.

        Raises:
            RateLimited: the client failed more often than the limit allows.
        """
        if ip:
            limit = self._limits.client_auth_failures
            await self._take("client-auth-ip", self._client(ip), limit, now=now)

    def refresh_bucket(self, ip: str) -> Bucket | None:
        """The bucket a refresh from ``ip`` takes from: ``Store.rotate`` takes it in the
        rotation's own call (in a call just before it on Cluster, another slot)."""
        return _bucket("refresh-ip", self._client(ip), self._limits.refresh) if ip else None

    def _client(self, ip: str) -> str:
        return client_network(ip, self._limits.ipv6_prefix)


def _bucket(scope: str, value: str, limit: RateLimit) -> Bucket:
    return Bucket(scope, value, capacity=limit.attempts, refill=limit.window)
