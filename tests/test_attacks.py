"""Attacks on the session surface, one test each, named for what the attacker tries.

An access token presented as a refresh token, bytes in headers that once reached a 500
at login, and a hypothesis state machine that interleaves logins, refreshes, replays,
logouts and revocations against a model of the sessions. Every request goes through HTTP
to an app on the suite's Redis. Every refusal of an access token (RFC 8725's attacks, a
refresh token as a Bearer token, odd bytes in the Bearer header) is in
test_access_token_refusals.py.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import threading
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any, TypeVar

import hypothesis
import hypothesis.strategies as st
import jwt
import pytest
import redis
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from support import TEST_PASSWORD, FakeClock, bearer, fast_settings, login, raw_request, register
from support import refresh as refresh_request

from authsvc.config import Settings
from authsvc.server.app import create_app
from authsvc.tokens.keys import KeyRing

T = TypeVar("T")


async def _session(client: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """Register alice and log her in; return her login pair and its verified claims."""
    await register(client)
    pair = await login(client)
    claims = jwt.decode(pair["access_token"], options={"verify_signature": False})
    return pair, claims


# -- one kind of token where the other belongs -------------------------------------------


async def test_access_token_used_as_a_refresh_token_is_refused(client: Any) -> None:
    pair, _ = await _session(client)
    response = await refresh_request(client, pair["access_token"])
    assert response.status == 401
    assert (await response.json())["error"] == "invalid_grant"
    assert (await client.get("/v1/auth/me", headers=bearer(pair))).status == 200


# -- bytes in headers ------------------------------------------------------------------------


def _raw_post(path: str, body: bytes, content_type: str, *header_lines: bytes) -> bytes:
    """A POST as bytes, with header lines no HTTP client library would send."""
    return (
        f"POST {path} HTTP/1.1\r\nHost: authsvc\r\nConnection: close\r\n"
        f"Content-Type: {content_type}\r\nContent-Length: {len(body)}\r\n".encode()
        + b"".join(line + b"\r\n" for line in header_lines)
        + b"\r\n"
        + body
    )


def _status_and_body(raw: bytes) -> tuple[int, Any]:
    head, _, body = raw.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body)


async def _sessions_of(client: Any, pair: dict[str, Any]) -> list[dict[str, Any]]:
    response = await client.get("/v1/auth/sessions", headers=bearer(pair))
    assert response.status == 200, await response.text()
    sessions: list[dict[str, Any]] = (await response.json())["sessions"]
    return sessions


async def test_a_latin1_user_agent_at_login_is_kept_with_replacement_characters(
    client: Any,
) -> None:
    """``café`` in ISO-8859-1 reaches aiohttp's handlers as a lone surrogate, which Redis's
    client cannot encode: it once gave a 500 once the password had checked out."""
    await register(client)
    credentials = json.dumps({"username": "alice", "password": TEST_PASSWORD}).encode()
    raw = await raw_request(
        client,
        _raw_post("/v1/auth/login", credentials, "application/json", b"User-Agent: caf\xe9/1.0"),
    )
    status, pair = _status_and_body(raw)
    assert status == 200, raw
    assert [s["user_agent"] for s in await _sessions_of(client, pair)] == ["caf\ufffd/1.0"]


async def test_a_latin1_user_agent_on_the_password_grant_is_kept_with_replacement_characters(
    make_client: Any,
) -> None:
    client = await make_client(password_grant=True)
    await register(client)
    form = f"grant_type=password&username=alice&password={TEST_PASSWORD}".encode()
    raw = await raw_request(
        client,
        _raw_post(
            "/oauth/token", form, "application/x-www-form-urlencoded", b"User-Agent: \xff\xfe"
        ),
    )
    status, pair = _status_and_body(raw)
    assert status == 200, raw
    assert [s["user_agent"] for s in await _sessions_of(client, pair)] == ["\ufffd\ufffd"]


@pytest.mark.parametrize(
    "forwarded",
    [b"fe80::1%caf\xe9", b"203.0.113.9\xff", b"fe80::1%eth0", b"\xe9"],
)
async def test_an_x_forwarded_for_that_is_no_plain_address_is_not_stored(
    make_client: Any, forwarded: bytes
) -> None:
    """Behind a trusted proxy the hop is stored with the session: not UTF-8, or an IPv6
    scope (any text after a %), it is no client address, and the peer's is kept."""
    client = await make_client(trusted_proxies=(ipaddress.ip_network("127.0.0.1/32"),))
    await register(client)
    credentials = json.dumps({"username": "alice", "password": TEST_PASSWORD}).encode()
    raw = await raw_request(
        client,
        _raw_post(
            "/v1/auth/login", credentials, "application/json", b"X-Forwarded-For: " + forwarded
        ),
    )
    status, pair = _status_and_body(raw)
    assert status == 200, raw
    assert [s["ip"] for s in await _sessions_of(client, pair)] == ["127.0.0.1"]
    # A plain address from the same proxy is the client's.
    proxied = await client.post(
        "/v1/auth/login",
        json={"username": "alice", "password": TEST_PASSWORD},
        headers={"X-Forwarded-For": "203.0.113.9"},
    )
    assert proxied.status == 200
    assert "203.0.113.9" in [s["ip"] for s in await _sessions_of(client, pair)]


# -- a stateful model of sessions ----------------------------------------------------------


class AppDriver:
    """A real app on the suite's Redis, served from an event loop in a thread of its own,
    so that hypothesis's synchronous state machine can drive it request by request."""

    def __init__(self, settings: Settings, clock: FakeClock, key_ring: KeyRing) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self._client = self._run(self._start(create_app(settings, clock=clock, key_ring=key_ring)))

    @staticmethod
    async def _start(app: web.Application) -> TestClient[web.Request, web.Application]:
        client: TestClient[web.Request, web.Application] = TestClient(TestServer(app))
        await client.start_server()
        return client

    def _run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout=60)

    def request(self, method: str, path: str, **kwargs: Any) -> tuple[int, dict[str, Any]]:
        async def send() -> tuple[int, dict[str, Any]]:
            async with self._client.request(method, path, **kwargs) as response:
                body = await response.json() if response.content_type.endswith("json") else {}
                assert response.status < 500, body
                return response.status, body

        return self._run(send())

    def close(self) -> None:
        self._run(self._client.close())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()


@dataclass
class ModelSession:
    """What the model expects of one session."""

    access_token: str
    issued_at: int  # of the access token: sensitive actions need it recent
    refresh_token: str
    used: list[str] = field(default_factory=list)  # the chain's used refresh tokens
    rotated_at: int | None = None  # when `used[-1]` was rotated
    live: bool = True


def _session_machine(
    driver: AppDriver, clock: FakeClock, redis_url: str, settings: Settings
) -> type[RuleBasedStateMachine]:
    grace, max_age = settings.refresh_reuse_grace, settings.sensitive_max_age
    access_ttl = settings.access_token_ttl

    class Sessions(RuleBasedStateMachine):
        """Login, refresh, replays (in and after the grace), logout, logout-all and
        deleting sessions, in any order, against a model of which sessions live."""

        def __init__(self) -> None:
            super().__init__()
            flush = redis.Redis.from_url(redis_url)
            flush.flushdb()
            flush.close()
            status, _ = driver.request("POST", "/v1/users", json=CREDENTIALS)
            assert status == 201
            # In login order: session ids are random, and hypothesis must be able to
            # replay the same choices onto the same sessions.
            self.sessions: dict[str, ModelSession] = {}

        def _bearer(self, sid: str) -> dict[str, str]:
            return {"Authorization": f"Bearer {self.sessions[sid].access_token}"}

        def _fresh(self, sid: str) -> bool:
            return clock.now - self.sessions[sid].issued_at <= max_age

        def _usable(self, sid: str) -> bool:
            """A live session whose access token has not expired by the service clock
            (exp is checked with a second of leeway)."""
            session = self.sessions[sid]
            return session.live and clock.now - session.issued_at <= access_ttl

        @rule()
        def login(self) -> None:
            status, pair = driver.request("POST", "/v1/auth/login", json=CREDENTIALS)
            assert status == 200
            assert pair["session_id"] not in self.sessions
            self.sessions[pair["session_id"]] = ModelSession(
                pair["access_token"], clock.now, pair["refresh_token"]
            )

        @precondition(lambda self: self.sessions)
        @rule(data=st.data())
        def refresh(self, data: st.DataObject) -> None:
            sid = data.draw(st.sampled_from(list(self.sessions)))
            session = self.sessions[sid]
            status, pair = driver.request(
                "POST", "/v1/auth/refresh", json={"refresh_token": session.refresh_token}
            )
            if not session.live:
                assert (status, pair["error"]) == (401, "invalid_grant")
                return
            assert status == 200 and pair["session_id"] == sid
            session.used.append(session.refresh_token)
            session.refresh_token, session.rotated_at = pair["refresh_token"], clock.now
            session.access_token, session.issued_at = pair["access_token"], clock.now

        @precondition(lambda self: any(s.used for s in self.sessions.values()))
        @rule(data=st.data(), after_grace=st.booleans())
        def replay_a_used_refresh_token(self, data: st.DataObject, after_grace: bool) -> None:
            sid = data.draw(st.sampled_from([s for s, m in self.sessions.items() if m.used]))
            session = self.sessions[sid]
            token = data.draw(st.sampled_from(session.used))
            if after_grace:
                clock.advance(grace + 1)
            status, pair = driver.request("POST", "/v1/auth/refresh", json={"refresh_token": token})
            in_grace = (
                token == session.used[-1]
                and session.rotated_at is not None
                and clock.now - session.rotated_at <= grace
            )
            if session.live and in_grace:
                # A retry: the same successor again, and the session goes on.
                assert status == 200
                assert pair["refresh_token"] == session.refresh_token
                return
            assert (status, pair["error"]) == (401, "invalid_grant")
            session.live = False  # a replay ends that session (and only that one)

        @precondition(lambda self: self.sessions)
        @rule(data=st.data())
        def logout(self, data: st.DataObject) -> None:
            sid = data.draw(st.sampled_from(list(self.sessions)))
            status, _ = driver.request("POST", "/v1/auth/logout", headers=self._bearer(sid))
            assert status == (204 if self._usable(sid) else 401)
            if status == 204:
                self.sessions[sid].live = False

        @precondition(lambda self: self.sessions)
        @rule(data=st.data())
        def logout_all(self, data: st.DataObject) -> None:
            sid = data.draw(st.sampled_from(list(self.sessions)))
            status, _ = driver.request("POST", "/v1/auth/logout-all", headers=self._bearer(sid))
            if not self._usable(sid) or not self._fresh(sid):
                assert status == 401
                return
            assert status == 204
            for session in self.sessions.values():
                session.live = False

        @precondition(lambda self: self.sessions)
        @rule(data=st.data())
        def delete_a_session(self, data: st.DataObject) -> None:
            caller = data.draw(st.sampled_from(list(self.sessions)))
            target = data.draw(st.sampled_from(list(self.sessions)))
            status, _ = driver.request(
                "DELETE", f"/v1/auth/sessions/{target}", headers=self._bearer(caller)
            )
            if not self._usable(caller) or (target != caller and not self._fresh(caller)):
                assert status == 401
            elif not self.sessions[target].live:
                assert status == 404
            else:
                assert status == 204
                self.sessions[target].live = False

        # The edges: the last second of the grace and of a token's freshness, and the next.
        @rule(seconds=st.sampled_from([1, grace, grace + 1, max_age, max_age + 1]))
        def time_passes(self, seconds: int) -> None:
            clock.advance(seconds)

        @invariant()
        def exactly_the_models_live_sessions_are_live(self) -> None:
            for sid in self.sessions:
                status, body = driver.request("GET", "/v1/auth/me", headers=self._bearer(sid))
                if self._usable(sid):
                    assert (status, body["session_id"]) == (200, sid)
                else:  # ended, or its access token expired (the refresh rule sees the rest)
                    assert status == 401

    return Sessions


CREDENTIALS = {"username": "alice", "password": TEST_PASSWORD}


@pytest.mark.slow  # a hypothesis state machine: seconds
def test_sessions_follow_the_model_under_any_interleaving(
    redis_url: str, key_ring: KeyRing
) -> None:
    """A hypothesis state machine: bounded in CI (a few examples of some dozen steps)."""
    clock = FakeClock()
    settings = fast_settings(redis_url=redis_url)
    driver = AppDriver(settings, clock, key_ring)
    try:
        run_state_machine_as_test(
            _session_machine(driver, clock, redis_url, settings),
            settings=hypothesis.settings(
                max_examples=25,
                stateful_step_count=30,
                deadline=None,
                database=None,
                suppress_health_check=[hypothesis.HealthCheck.too_slow],
            ),
        )
    finally:
        driver.close()
