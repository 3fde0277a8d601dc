"""Login rate limits per username and client address, and the address behind proxies."""

from __future__ import annotations

import ipaddress
from typing import Any

from support import TEST_PASSWORD, FakeClock, bearer, login, register

from authsvc.config import RateLimit

LOOPBACK = (ipaddress.ip_network("127.0.0.0/8"),)


async def _attempt(client: Any, username: str = "alice", forwarded: str | None = None) -> Any:
    headers = {"X-Forwarded-For": forwarded} if forwarded else {}
    return await client.post(
        "/v1/auth/login",
        json={"username": username, "password": TEST_PASSWORD},
        headers=headers,
    )


async def test_rate_limit_window_ends_on_the_clock(make_client: Any, clock: FakeClock) -> None:
    client = await make_client(login_rate_limit=RateLimit(2, 60))
    await register(client)
    clock.now -= clock.now % 60  # start of a window
    assert (await _attempt(client)).status == 200
    assert (await _attempt(client)).status == 200
    clock.advance(15)
    limited = await _attempt(client)
    assert limited.status == 429
    assert limited.headers["Retry-After"] == "45"
    assert (await limited.json())["error"] == "rate_limited"
    clock.advance(45)
    assert (await _attempt(client)).status == 200


async def test_forwarded_address_is_ignored_from_untrusted_peers(client: Any) -> None:
    await register(client)
    pair = await login(client)
    await _attempt(client, forwarded="203.0.113.9")
    sessions = (await (await client.get("/v1/auth/sessions", headers=bearer(pair))).json())[
        "sessions"
    ]
    assert {session["ip"] for session in sessions} == {"127.0.0.1"}


async def test_forwarded_address_counts_behind_a_trusted_proxy(make_client: Any) -> None:
    client = await make_client(trusted_proxies=LOOPBACK, login_rate_limit=RateLimit(2, 60))
    for username in ("alice", "bob", "carol"):
        await register(client, username)
    first = await _attempt(client, forwarded="198.51.100.7, 203.0.113.9")
    assert first.status == 200
    pair = await first.json()
    (session,) = (await (await client.get("/v1/auth/sessions", headers=bearer(pair))).json())[
        "sessions"
    ]
    # The hop the trusted proxy saw; anything left of it was written by the client.
    assert session["ip"] == "203.0.113.9"
    assert (await _attempt(client, "carol", forwarded="203.0.113.9")).status == 200
    # A third user from the same forwarded address hits the per-address limit...
    assert (await _attempt(client, "bob", forwarded="203.0.113.9")).status == 429
    # ...but from another address it does not.
    assert (await _attempt(client, "bob", forwarded="203.0.113.10")).status == 200
