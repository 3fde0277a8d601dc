"""Login limits: per username and address, failures per account, the address behind proxies."""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from typing import Any

import pytest
from support import (
    FULLWIDTH_ALICE,
    TEST_PASSWORD,
    FakeClock,
    assert_error,
    bearer,
    login,
    post_login,
    register,
)

from authsvc.config import RateLimit
from authsvc.http.appkeys import HASHER

LOOPBACK = (ipaddress.ip_network("127.0.0.0/8"),)


async def _attempt(
    client: Any,
    username: str = "alice",
    forwarded: str | None = None,
    password: str = TEST_PASSWORD,
) -> Any:
    headers = {"X-Forwarded-For": forwarded} if forwarded else {}
    return await client.post(
        "/v1/auth/login",
        json={"username": username, "password": password},
        headers=headers,
    )


async def test_login_rate_limit_per_username(make_client: Any) -> None:
    client = await make_client(login_rate_limit=RateLimit(3, 60))
    await register(client)
    for _ in range(3):
        response = await post_login(client, "alice", "wrong password!")
        await assert_error(response, 401, "invalid_credentials")
    limited = await post_login(client, "alice", "wrong password!")
    await assert_error(limited, 429, "rate_limited")
    assert 1 <= int(limited.headers["Retry-After"]) <= 60
    # The right password does not get through either while the window lasts.
    await assert_error(await post_login(client, "alice"), 429, "rate_limited")


async def test_rate_limit_counts_username_variants_together(make_client: Any) -> None:
    """The limit is per normalised username, so spelling it differently does not help."""
    client = await make_client(login_rate_limit=RateLimit(3, 60))
    await register(client)
    for variant in ["alice", "ALICE", " Alice "]:
        assert (await post_login(client, variant, "wrong password!")).status == 401
    limited = await post_login(client, FULLWIDTH_ALICE, "wrong password!")
    await assert_error(limited, 429, "rate_limited")


async def test_login_rate_limit_per_client_address(make_client: Any) -> None:
    client = await make_client(login_rate_limit=RateLimit(3, 60))
    for name in ["u1", "u2", "u3"]:
        assert (await post_login(client, name, "wrong password!")).status == 401
    limited = await post_login(client, "u4", "wrong password!")
    await assert_error(limited, 429, "rate_limited")
    assert 1 <= int(limited.headers["Retry-After"]) <= 60


async def test_rate_limited_login_does_no_password_work(make_client: Any) -> None:
    client = await make_client(login_rate_limit=RateLimit(1, 60))
    assert (await post_login(client, "alice", "wrong password!")).status == 401
    hasher = client.app[HASHER]
    before = hasher.calls
    assert (await post_login(client, "alice", "wrong password!")).status == 429
    assert hasher.calls == before


async def test_rate_limit_refills_steadily_with_no_double_burst_at_a_window_edge(
    make_client: Any, clock: FakeClock
) -> None:
    """2/60 is a bucket of two that refills one every 30 s, not two per clock minute.

    Fixed windows let a client spend one window's attempts at its last second and the
    next window's at the first second after: twice the limit at once.
    """
    client = await make_client(login_rate_limit=RateLimit(2, 60))
    await register(client)
    clock.now += 59 - clock.now % 60  # the last second of a clock minute
    assert (await _attempt(client)).status == 200
    assert (await _attempt(client)).status == 200
    clock.advance(1)  # a new clock minute: a fixed window would allow two more
    limited = await _attempt(client)
    assert limited.status == 429
    assert limited.headers["Retry-After"] == "29"
    assert (await limited.json())["error"] == "rate_limited"
    clock.advance(29)
    assert (await _attempt(client)).status == 200
    assert (await _attempt(client)).status == 429
    clock.advance(60)  # a full bucket again, and no more than full
    assert (await _attempt(client)).status == 200
    assert (await _attempt(client)).status == 200
    assert (await _attempt(client)).status == 429


async def test_failed_logins_per_account_are_capped_in_any_window(
    make_client: Any, clock: FakeClock
) -> None:
    """ASVS 2.2.1: at most LOGIN_FAILURE_LIMIT failures per account in any window."""
    client = await make_client(login_failure_limit=RateLimit(3, 3600))
    await register(client)
    for _ in range(3):
        assert (await _attempt(client, password="not alice's password")).status == 401
        clock.advance(600)
    # From any address, with any password, until the oldest failure leaves the window.
    for forwarded in [None, "203.0.113.9"]:
        limited = await _attempt(client, forwarded=forwarded)
        assert limited.status == 429
        body = await limited.json()
        assert body["error"] == "rate_limited"
        assert "failed logins" in body["error_description"]
        assert limited.headers["Retry-After"] == "1800"  # 3600 - 3 * 600 since the first
    clock.advance(1800)
    assert (await _attempt(client)).status == 200


async def test_a_successful_login_clears_the_accounts_failures(
    make_client: Any, clock: FakeClock
) -> None:
    """The cap counts consecutive failures (NIST 800-63B §5.2.2): a success resets it."""
    client = await make_client(login_failure_limit=RateLimit(3, 3600))
    await register(client)
    await register(client, "bob")
    for _ in range(2):
        assert (await _attempt(client, password="not alice's password")).status == 401
    assert (await _attempt(client)).status == 200
    for _ in range(3):
        assert (await _attempt(client, password="not alice's password")).status == 401
    assert (await _attempt(client)).status == 429
    # Another account is not touched by alice's failures.
    assert (await _attempt(client, "bob")).status == 200


async def test_failure_cap_treats_unknown_and_known_accounts_alike(make_client: Any) -> None:
    """Locking only real accounts would tell which usernames exist."""
    client = await make_client(login_failure_limit=RateLimit(2, 3600))
    await register(client)
    for username in ["alice", "nobody"]:
        statuses = [
            (await _attempt(client, username, password="wrong password!")).status for _ in range(3)
        ]
        assert statuses == [401, 401, 429], username


async def test_concurrent_guesses_cannot_exceed_the_failure_cap(make_client: Any) -> None:
    """Each attempt takes its place in the account's log before the password is checked."""
    client = await make_client(login_failure_limit=RateLimit(5, 3600))
    await register(client)
    responses = await asyncio.gather(
        *(_attempt(client, password=f"guess number {i}!") for i in range(20))
    )
    statuses = sorted(response.status for response in responses)
    assert statuses == [401] * 5 + [429] * 15


async def test_forwarded_header_from_an_untrusted_peer_warns_once(
    client: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """Behind a load balancer with no AUTHSVC_TRUSTED_PROXIES every client shares one
    address, and one bucket: the operator is told, once."""
    await register(client)
    with caplog.at_level(logging.WARNING, logger="authsvc.http.io"):
        await _attempt(client)
        assert not caplog.records
        for _ in range(3):
            await _attempt(client, forwarded="203.0.113.9")
    warnings = [r.getMessage() for r in caplog.records if "X-Forwarded-For" in r.getMessage()]
    assert len(warnings) == 1
    assert "AUTHSVC_TRUSTED_PROXIES" in warnings[0]
    assert "203.0.113.9" not in warnings[0]


async def test_forwarded_header_from_a_trusted_proxy_does_not_warn(
    make_client: Any, caplog: pytest.LogCaptureFixture
) -> None:
    client = await make_client(trusted_proxies=LOOPBACK)
    await register(client)
    with caplog.at_level(logging.WARNING, logger="authsvc.http.io"):
        await _attempt(client, forwarded="203.0.113.9")
    assert not [r for r in caplog.records if "X-Forwarded-For" in r.getMessage()]


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
