"""Security events (API.md): each cause records its event with the request's client, the
owner and operators list them newest first, each is a log line and a count, the list is
capped and expires, and recording costs a login, a refresh or an account change no round
trip of its own."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
import logging
import re
from typing import Any

import pytest
import redis.asyncio
from support import TEST_PASSWORD, FakeClock, bearer, fast_settings, login, register
from support import refresh as refresh_request
from topologies import RedisClusterProcesses

from authsvc.config import Settings
from authsvc.http.appkeys import STORE
from authsvc.store import eventcodec, keyspace
from authsvc.store.records import EventRecord
from authsvc.store.scripts import source
from authsvc.telemetry.logs import json_formatter

UA = {"User-Agent": "events-test/1.0"}
LOCAL = "127.0.0.1"
OPS = ("ops", "ops-secret")
# The operator's request: its user agent is what the account's events record of it.
OPERATOR = {
    "Authorization": "Basic " + base64.b64encode(b"ops:ops-secret").decode(),
    "User-Agent": "ops-console/2.1",
}
UNKNOWN_USER = "0" * 32


# A Cluster is processes of its own: slow (tests/README.md).
@pytest.fixture(params=["single", pytest.param("cluster", marks=pytest.mark.slow), "memory"])
def store_settings(request: pytest.FixtureRequest) -> Settings:
    """Settings for one store, empty at the start of the test."""
    if request.param == "memory":
        return fast_settings(redis_url="memory://")
    if request.param == "single":
        request.getfixturevalue("redis_client")  # flushed before each test
        return fast_settings(redis_url=request.getfixturevalue("redis_url"))
    cluster: RedisClusterProcesses = request.getfixturevalue("redis_cluster")
    cluster.flush()
    return fast_settings(redis_url=cluster.url)


async def _login(client: Any, device: str | None = None, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"username": "alice", "password": TEST_PASSWORD, **extra}
    if device is not None:
        body["device"] = device
    response = await client.post("/v1/auth/login", json=body, headers=UA)
    assert response.status == 200, await response.text()
    result: dict[str, Any] = await response.json()
    return result


async def _events(client: Any, pair: dict[str, Any]) -> list[dict[str, Any]]:
    response = await client.get("/v1/auth/events", headers=bearer(pair))
    assert response.status == 200, await response.text()
    assert response.headers["Cache-Control"] == "no-store"
    body = await response.json()
    assert list(body) == ["events"]
    events: list[dict[str, Any]] = body["events"]
    return events


def _event(kind: str, at: int, session_id: str | None, device: str = "") -> dict[str, Any]:
    return {
        "type": kind,
        "at": at,
        "session_id": session_id,
        "ip": LOCAL,
        "user_agent": UA["User-Agent"],
        "device": device,
    }


def _by_operator(kind: str, at: int, session_id: str | None = None) -> dict[str, Any]:
    """An event an operator's request caused: that request's address and user agent."""
    return {**_event(kind, at, session_id), "user_agent": OPERATOR["User-Agent"]}


async def _admin_events(client: Any, user_id: str) -> list[dict[str, Any]]:
    response = await client.get(f"/v1/admin/users/{user_id}/events", headers=OPERATOR)
    assert response.status == 200, await response.text()
    assert response.headers["Cache-Control"] == "no-store"
    body = await response.json()
    assert list(body) == ["events"]
    events: list[dict[str, Any]] = body["events"]
    return events


async def _every_account_change(
    client: Any, clock: FakeClock
) -> tuple[str, dict[str, Any], list[Any]]:
    """Cause every event of an account change (the owner's password change, each operator
    action), a second apart; return the user id, a live pair and the events expected,
    newest first."""
    user_id = (await register(client))["user_id"]
    admin = f"/v1/admin/users/{user_id}"
    expected: list[dict[str, Any]] = []

    a = await _login(client)
    expected.append(_event("login", clock(), a["session_id"]))
    clock.advance(1)
    owners = "the owner chose this passphrase"
    changed = await client.post(
        "/v1/auth/password",
        json={"current_password": TEST_PASSWORD, "new_password": owners},
        headers={**bearer(a), **UA},
    )
    assert changed.status == 204, await changed.text()
    expected.append(_event("password_changed", clock(), a["session_id"]))

    clock.advance(1)
    roles = await client.put(f"{admin}/roles", json={"roles": ["support"]}, headers=OPERATOR)
    assert roles.status == 204
    expected.append(_by_operator("roles_changed", clock()))

    clock.advance(1)
    b = await _login(client, password=owners)
    expected.append(_event("login", clock(), b["session_id"]))
    clock.advance(1)
    one = await client.delete(f"{admin}/sessions/{b['session_id']}", headers=OPERATOR)
    assert one.status == 204
    expected.append(_by_operator("session_revoked", clock(), b["session_id"]))

    clock.advance(1)
    every = await client.delete(f"{admin}/sessions", headers=OPERATOR)
    assert every.status == 204
    # Ends a's session too: a logout-all no session of the user asked for.
    expected.append(_by_operator("logout_all", clock()))

    clock.advance(1)
    assert (await client.post(f"{admin}/disable", headers=OPERATOR)).status == 204
    expected.append(_by_operator("account_disabled", clock()))
    clock.advance(1)
    assert (await client.post(f"{admin}/enable", headers=OPERATOR)).status == 204
    expected.append(_by_operator("account_enabled", clock()))

    clock.advance(1)
    operators = "an operator chose this passphrase"
    set_password = await client.put(
        f"{admin}/password", json={"new_password": operators}, headers=OPERATOR
    )
    assert set_password.status == 204
    expected.append(_by_operator("password_changed", clock()))

    clock.advance(1)
    last = await _login(client, password=operators)
    expected.append(_event("login", clock(), last["session_id"]))
    return user_id, last, expected[::-1]


async def _every_cause(client: Any, clock: FakeClock) -> tuple[dict[str, Any], list[Any]]:
    """Cause every event recorded today, a second apart; return a live pair and the events
    expected, newest first."""
    await register(client)
    expected: list[dict[str, Any]] = []

    a = await _login(client, device="laptop")
    expected.append(_event("login", clock(), a["session_id"], "laptop"))
    clock.advance(1)
    wrong = {"username": "alice", "password": "not the password", "device": "phone"}
    assert (await client.post("/v1/auth/login", json=wrong, headers=UA)).status == 401
    expected.append(_event("login_failed", clock(), None, "phone"))
    unknown = {"username": "nobody", "password": "not the password"}
    assert (await client.post("/v1/auth/login", json=unknown, headers=UA)).status == 401

    clock.advance(1)
    rotated = await (await refresh_request(client, a["refresh_token"])).json()  # no event
    clock.advance(1)
    b = await _login(client)
    expected.append(_event("login", clock(), b["session_id"]))
    clock.advance(1)
    deleted = await client.delete(
        f"/v1/auth/sessions/{b['session_id']}", headers={**bearer(rotated), **UA}
    )
    assert deleted.status == 204
    expected.append(_event("session_revoked", clock(), b["session_id"]))

    clock.advance(1)
    c = await _login(client)
    expected.append(_event("login", clock(), c["session_id"]))
    clock.advance(1)
    revoked = await client.post("/oauth/revoke", data={"token": c["refresh_token"]}, headers=UA)
    assert revoked.status == 200
    expected.append(_event("session_revoked", clock(), c["session_id"]))

    clock.advance(60)  # past the grace: the first token of a's chain is a replay now
    replayed = await client.post(
        "/v1/auth/refresh", json={"refresh_token": a["refresh_token"]}, headers=UA
    )
    assert replayed.status == 401
    expected.append(_event("refresh_replay", clock(), a["session_id"]))

    clock.advance(1)
    d = await _login(client)
    expected.append(_event("login", clock(), d["session_id"]))
    clock.advance(1)
    assert (await client.post("/v1/auth/logout", headers={**bearer(d), **UA})).status == 204
    expected.append(_event("logout", clock(), d["session_id"]))

    clock.advance(1)
    e = await _login(client)
    expected.append(_event("login", clock(), e["session_id"]))
    clock.advance(1)
    assert (await client.post("/v1/auth/logout-all", headers={**bearer(e), **UA})).status == 204
    expected.append(_event("logout_all", clock(), e["session_id"]))

    clock.advance(1)
    f = await _login(client, device="tablet")
    expected.append(_event("login", clock(), f["session_id"], "tablet"))
    return f, expected[::-1]


async def test_every_cause_records_its_event_listed_newest_first(
    client_for: Any, store_settings: Settings, clock: FakeClock
) -> None:
    client = await client_for(store_settings)
    pair, expected = await _every_cause(client, clock)
    assert await _events(client, pair) == expected


async def test_every_account_change_records_its_event_for_owner_and_operator(
    client_for: Any, store_settings: Settings, clock: FakeClock
) -> None:
    """password_changed (the owner's, an operator's), roles_changed, session_revoked and
    logout_all by an operator, account_disabled, account_enabled: each after its cause,
    with the client of the request that caused it, listed alike for owner and operator."""
    client = await client_for(dataclasses.replace(store_settings, admin_clients=(OPS,)))
    user_id, pair, expected = await _every_account_change(client, clock)
    assert await _events(client, pair) == expected
    assert await _admin_events(client, user_id) == expected


async def test_an_operator_lists_an_account_s_events(make_client: Any) -> None:
    """200 newest first for an account; 404 not_found for an unknown user; 401
    invalid_client without the operator's credentials, or with wrong ones."""
    client = await make_client(admin_clients=(OPS,))
    user_id = (await register(client))["user_id"]
    first = await _login(client)
    second = await _login(client)
    listed = await _admin_events(client, user_id)
    assert [(e["type"], e["session_id"]) for e in listed] == [
        ("login", second["session_id"]),
        ("login", first["session_id"]),
    ]
    for unknown in (UNKNOWN_USER, "not-a-user-id"):
        missing = await client.get(f"/v1/admin/users/{unknown}/events", headers=OPERATOR)
        assert missing.status == 404
        assert (await missing.json())["error"] == "not_found"
    wrong = "Basic " + base64.b64encode(b"ops:wrong").decode()
    for headers in ({}, {"Authorization": wrong}, bearer(second)):
        refused = await client.get(f"/v1/admin/users/{user_id}/events", headers=headers)
        assert refused.status == 401
        assert (await refused.json())["error"] == "invalid_client"
        assert refused.headers["WWW-Authenticate"] == 'Basic realm="authsvc"'


async def test_the_cap_evicting_a_session_records_session_evicted(
    client_for: Any, store_settings: Settings, clock: FakeClock
) -> None:
    """The evicted session's id, the evicting login's client; the script fills the id in."""
    client = await client_for(dataclasses.replace(store_settings, max_sessions_per_user=2))
    await register(client)
    first = await _login(client, device="one")
    clock.advance(1)
    second = await _login(client, device="two")
    clock.advance(1)
    third = await _login(client, device="three")
    at = clock()
    assert await _events(client, third) == [
        _event("login", at, third["session_id"], "three"),
        _event("session_evicted", at, first["session_id"], "three"),
        _event("login", at - 1, second["session_id"], "two"),
        _event("login", at - 2, first["session_id"], "one"),
    ]


async def test_a_user_keeps_the_newest_events_per_user(
    make_client: Any, redis_client: redis.asyncio.Redis, clock: FakeClock
) -> None:
    client = await make_client(events_per_user=3)
    user = await register(client)
    pairs = []
    for _ in range(5):
        pairs.append(await login(client))
        clock.advance(1)
    listed = await _events(client, pairs[-1])
    assert [e["session_id"] for e in listed] == [p["session_id"] for p in pairs[:1:-1]]
    assert await redis_client.llen(keyspace.events(user["user_id"])) == 3


async def test_an_event_older_than_the_ttl_is_not_listed(
    make_client: Any, redis_client: redis.asyncio.Redis, clock: FakeClock
) -> None:
    client = await make_client(events_ttl=100)
    user = await register(client)
    await login(client)
    clock.advance(60)
    kept = await login(client)
    clock.advance(50)  # the first login is 110 s old, the second 50 s
    fresh = await (await refresh_request(client, kept["refresh_token"])).json()
    listed = await _events(client, fresh)
    assert [e["session_id"] for e in listed] == [kept["session_id"]]
    # The list itself goes 100 s after its newest event (real seconds, in Redis).
    assert 90 <= await redis_client.ttl(keyspace.events(user["user_id"])) <= 100


async def test_a_user_sees_only_their_own_events(client: Any) -> None:
    await register(client, "alice")
    await register(client, "bob")
    alice = await login(client, "alice")
    bob = await login(client, "bob")
    assert (await client.post("/v1/auth/logout", headers=bearer(alice))).status == 204
    listed = await _events(client, bob)
    assert [(e["type"], e["session_id"]) for e in listed] == [("login", bob["session_id"])]


async def test_listing_events_needs_a_fresh_access_token(
    make_client: Any, clock: FakeClock
) -> None:
    client = await make_client(sensitive_max_age=300)
    await register(client)
    pair = await login(client)
    missing = await client.get("/v1/auth/events")
    assert missing.status == 401
    assert missing.headers["WWW-Authenticate"] == "Bearer"
    assert (await missing.json())["error"] == "invalid_token"
    clock.advance(301)
    stale = await client.get("/v1/auth/events", headers=bearer(pair))
    assert stale.status == 401
    assert (await stale.json())["error"] == "invalid_token"
    fresh = await (await refresh_request(client, pair["refresh_token"])).json()
    assert [e["type"] for e in await _events(client, fresh)] == ["login"]
    assert (await client.post("/v1/auth/logout", headers=bearer(fresh))).status == 204
    assert (await client.get("/v1/auth/events", headers=bearer(fresh))).status == 401


async def test_each_event_is_one_log_line_and_one_count(
    client: Any, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="authsvc"):
        pair, expected = await _every_cause(client, clock)
    lines = [r for r in caplog.records if hasattr(r, "event")]
    user_id = (await (await client.get("/v1/auth/me", headers=bearer(pair))).json())["user_id"]
    assert [(r.event, r.user_id, r.session_id) for r in lines] == [
        (e["type"], user_id, e["session_id"]) for e in expected[::-1]
    ]
    replay = next(r for r in lines if r.event == "refresh_replay")
    assert replay.levelno == logging.WARNING
    # In the JSON format the fields are the object's keys.
    entry = json.loads(json_formatter().format(replay))
    assert (entry["event"], entry["user_id"], entry["session_id"]) == (
        "refresh_replay", user_id, expected[5]["session_id"]
    )  # fmt: skip
    assert entry["message"] == (
        f"refresh token replayed after its grace: session {expected[5]['session_id']} "
        f"of user {user_id} revoked"
    )

    text = await (await client.get("/metrics")).text()
    counts = {
        kind: float(value)
        for kind, value in re.findall(r'^authsvc_security_events_total\{type="(\w+)"\} (\S+)$',
                                      text, re.MULTILINE)
    }  # fmt: skip
    assert counts == {
        "login": 6, "login_failed": 1, "refresh_replay": 1, "session_evicted": 0,
        "logout": 1, "logout_all": 1, "session_revoked": 2, "password_changed": 0,
        "account_disabled": 0, "account_enabled": 0, "roles_changed": 0,
    }  # fmt: skip


async def test_an_eviction_is_logged_and_counted(
    make_client: Any, caplog: pytest.LogCaptureFixture
) -> None:
    client = await make_client(max_sessions_per_user=1)
    await register(client)
    first = await login(client)
    with caplog.at_level(logging.INFO, logger="authsvc"):
        await login(client)
    (line,) = [r for r in caplog.records if getattr(r, "event", "") == "session_evicted"]
    assert line.session_id == first["session_id"]
    text = await (await client.get("/metrics")).text()
    assert 'authsvc_security_events_total{type="session_evicted"} 1.0' in text


class Commands:
    """What the app's store sends to Redis, one entry a round trip, scripts by name."""

    def __init__(self, client: Any, monkeypatch: pytest.MonkeyPatch) -> None:
        redis_client = client.app[STORE].redis
        names = ("login", "take_token", "count_failure", "rotate", "record_event",
                 "revoke_session", "revoke_user", "session_live", "change_password",
                 "set_disabled", "set_roles")  # fmt: skip
        scripts = {
            hashlib.sha1(source(n).encode(), usedforsecurity=False).hexdigest(): n for n in names
        }
        self.sent: list[str] = []
        send = redis_client.execute_command

        async def recorded(*args: Any, **options: Any) -> Any:
            name = str(args[0]).upper()
            self.sent.append(f"script {scripts[args[1]]}" if name == "EVALSHA" else name)
            return await send(*args, **options)

        monkeypatch.setattr(redis_client, "execute_command", recorded)

    def take(self) -> list[str]:
        sent, self.sent = self.sent, []
        return sent


async def test_events_ride_in_the_scripts_of_login_refresh_and_revocation(
    make_client: Any, monkeypatch: pytest.MonkeyPatch, clock: FakeClock
) -> None:
    """No round trip of its own: the login, eviction, replay and revocations record their
    events in the script that decides them."""
    client = await make_client(max_sessions_per_user=1)
    await register(client)
    first = await login(client)
    commands = Commands(client, monkeypatch)

    rotated = await (await refresh_request(client, first["refresh_token"])).json()
    assert commands.take() == ["script rotate"]
    second = await login(client)  # evicts the first session
    assert commands.take() == [
        "script take_token", "script take_token", "script count_failure", "GET", "HMGET",
        "DEL", "script login",
        "DEL",  # the evicted session's hash: memory only, as before events
    ]  # fmt: skip
    again = await (await refresh_request(client, second["refresh_token"])).json()
    clock.advance(60)  # past the grace
    commands.take()
    assert (await refresh_request(client, second["refresh_token"])).status == 401  # replay
    assert commands.take() == ["script rotate"]
    third = await login(client)
    commands.take()
    assert (await client.post("/v1/auth/logout", headers=bearer(third))).status == 204
    assert commands.take() == ["script session_live", "script revoke_session"]

    fourth = await login(client)
    commands.take()
    assert (await client.post("/v1/auth/logout-all", headers=bearer(fourth))).status == 204
    assert commands.take() == ["script session_live", "ZRANGE", "script revoke_user"]
    last = await login(client)
    listed = [(e["type"], e["session_id"]) for e in await _events(client, last)]
    assert listed == [
        ("login", last["session_id"]),
        ("logout_all", fourth["session_id"]),
        ("login", fourth["session_id"]),
        ("logout", third["session_id"]),
        ("login", third["session_id"]),
        ("refresh_replay", second["session_id"]),
        ("login", second["session_id"]),
        ("session_evicted", first["session_id"]),
        ("login", first["session_id"]),
    ]
    assert rotated["session_id"] == first["session_id"]
    assert again["session_id"] == second["session_id"]


async def test_account_changes_record_their_events_in_the_scripts_that_make_them(
    make_client: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No round trip of its own: each change's script records its event."""
    client = await make_client(admin_clients=(OPS,))
    user_id = (await register(client))["user_id"]
    admin = f"/v1/admin/users/{user_id}"
    pair = await login(client)
    commands = Commands(client, monkeypatch)

    new_password = "the owner chose this passphrase"
    body = {"current_password": TEST_PASSWORD, "new_password": new_password}
    assert (await client.post("/v1/auth/password", json=body, headers=bearer(pair))).status == 204
    changes = [commands.take()]
    assert (
        await client.put(f"{admin}/roles", json={"roles": ["a"]}, headers=OPERATOR)
    ).status == 204
    changes.append(commands.take())
    assert (await client.post(f"{admin}/disable", headers=OPERATOR)).status == 204
    changes.append(commands.take())
    assert (await client.post(f"{admin}/enable", headers=OPERATOR)).status == 204
    changes.append(commands.take())
    operators = {"new_password": "an operator chose this passphrase"}
    assert (await client.put(f"{admin}/password", json=operators, headers=OPERATOR)).status == 204
    changes.append(commands.take())
    assert (await client.delete(f"{admin}/sessions", headers=OPERATOR)).status == 204
    changes.append(commands.take())
    for sent, script in zip(
        changes,
        ["change_password", "set_roles", "set_disabled", "set_disabled", "change_password",
         "revoke_user"],
        strict=True,
    ):  # fmt: skip
        assert f"script {script}" in sent
        assert "script record_event" not in sent, sent
    last = await login(client, password=operators["new_password"])
    assert [e["type"] for e in await _events(client, last)] == [
        "login", "logout_all", "password_changed", "account_enabled", "account_disabled",
        "roles_changed", "password_changed", "login",
    ]  # fmt: skip


async def test_an_account_change_is_one_log_line_and_one_count(
    make_client: Any, caplog: pytest.LogCaptureFixture
) -> None:
    client = await make_client(admin_clients=(OPS,))
    user_id = (await register(client))["user_id"]
    with caplog.at_level(logging.INFO, logger="authsvc.domain.security_events"):
        response = await client.post(f"/v1/admin/users/{user_id}/disable", headers=OPERATOR)
        assert response.status == 204
    lines = [r for r in caplog.records if getattr(r, "event", None) == "account_disabled"]
    assert len(lines) == 1
    assert lines[0].user_id == user_id
    assert lines[0].session_id is None
    text = await (await client.get("/metrics")).text()
    assert 'authsvc_security_events_total{type="account_disabled"} 1.0' in text


async def test_an_account_s_keys_hold_its_events(
    client: Any, redis_client: redis.asyncio.Redis
) -> None:
    """The list lies under the user's hash tag: deleting the tag's keys deletes it."""
    user = await register(client)
    await login(client)
    key = keyspace.events(user["user_id"])
    assert f"{{{user['user_id']}}}" in key
    assert await redis_client.type(key) == b"list"


def test_an_event_is_a_small_messagepack_array() -> None:
    """Bytes per event: a phone's login (the user agent cut to 64 bytes), a failed login."""
    phone = EventRecord(
        "login", 1_767_229_200, "Yp4cN0aV6hJd-Lq2Rs8TwA", "203.0.113.17",
        "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 "
        "(KHTML, like Gecko) Version/17.4 Mobile/15E148 Safari/604.1", "iPhone 15",
    )  # fmt: skip
    failed = EventRecord("login_failed", 1_767_229_200, None, "203.0.113.17", "curl/8.5.0")
    assert len(eventcodec.encode(phone)) <= 128
    assert len(eventcodec.encode(failed)) <= 48
    cut = dataclasses.replace(phone, user_agent=phone.user_agent[:64])
    assert eventcodec.decode(eventcodec.encode(phone)) == cut
    assert eventcodec.decode(eventcodec.encode(failed)) == failed
    assert eventcodec.decode(b"\xc1 not an event") is None


def test_the_lua_helper_finishes_an_event_as_the_encoder_would() -> None:
    """``with_session_id`` appends a MessagePack str: the same bytes as encoding it whole."""
    event = EventRecord("session_evicted", 1_767_229_200, "Yp4cN0aV6hJd-Lq2Rs8TwA", LOCAL)
    head = eventcodec.encode_without_session(event)
    assert head + bytes([0xA0 + 22]) + b"Yp4cN0aV6hJd-Lq2Rs8TwA" == eventcodec.encode(event)
