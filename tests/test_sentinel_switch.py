"""Sentinel failovers under load lose no answered write: forced, killed, partitioned.

Each test has its own master, replica and three sentinels (the ``own_sentinel`` fixture),
drives logins and rotations from concurrent clients through the app, fails the master
over one way, and waits until the sentinels are done (for an old master that lives on:
until it has been demoted and has resynced from the new one, which discards what it
accepted on its own). Then every login and rotation answered 200 after the fault must
still be there, checked through a fresh app: its access token accepted, the last refresh
token of each chain still rotating. Nothing answers 500; what could not be served got
503 ``store_unavailable`` with ``Retry-After``.

"After the fault" counts requests sent once the test saw it: for a forced failover, once
every sentinel reports the new master (before that an old master that is still up is the
master as far as anyone can tell, and an answer from it may be lost, as Redis's
asynchronous replication allows); for a killed or paused master, from the signal on.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from typing import Any

from support import TEST_PASSWORD, fast_settings, register
from topologies import SentinelProcesses

from authsvc.config import RateLimit
from authsvc.store import sentinel as sentinel_module

RETRY_AFTER = 1
CLIENTS = 6
ROTATIONS_PER_LOGIN = 4


@dataclasses.dataclass
class Answer:
    kind: str  # "login" or "rotate"
    sent_at: float
    answered_at: float
    status: int
    body: dict[str, Any]
    presented: str | None = None  # the refresh token a rotation presented


@dataclasses.dataclass
class Load:
    """Logins and rotations from concurrent clients, every answer kept with its times."""

    client: Any
    answers: list[Answer] = dataclasses.field(default_factory=list)
    stop: asyncio.Event = dataclasses.field(default_factory=asyncio.Event)

    async def _send(self, kind: str, path: str, body: dict[str, str]) -> Answer:
        sent_at = time.monotonic()
        response = await self.client.post(path, json=body)
        payload = await response.json()
        answer = Answer(kind, sent_at, time.monotonic(), response.status, payload)
        if response.status == 503:
            assert payload["error"] == "store_unavailable", payload
            assert response.headers["Retry-After"] == str(RETRY_AFTER)
        self.answers.append(answer)
        return answer

    async def _one_client(self, username: str) -> None:
        while not self.stop.is_set():
            login = await self._send(
                "login", "/v1/auth/login", {"username": username, "password": TEST_PASSWORD}
            )
            if login.status != 200:
                await asyncio.sleep(0.05)
                continue
            token = login.body["refresh_token"]
            for _ in range(ROTATIONS_PER_LOGIN):
                if self.stop.is_set():
                    return
                rotation = await self._send("rotate", "/v1/auth/refresh", {"refresh_token": token})
                rotation.presented = token
                if rotation.status == 200:
                    token = rotation.body["refresh_token"]
                elif rotation.status == 401:
                    break  # the chain is gone: log in again
                else:
                    await asyncio.sleep(0.05)  # 503: the same token again, later
                await asyncio.sleep(0.02)

    async def run(self) -> None:
        await asyncio.gather(*(self._one_client(f"user{index}") for index in range(CLIENTS)))


async def _register_clients(client: Any) -> None:
    for index in range(CLIENTS):
        await register(client, f"user{index}")


def _unavailable_window(load: Load, since: float) -> tuple[float, float] | None:
    """(first, last) 503 answer times relative to ``since``, or None without a 503."""
    times = [a.answered_at - since for a in load.answers if a.status == 503]
    return (min(times), max(times)) if times else None


async def _check_answered_writes_survive(client: Any, load: Load, since: float) -> int:
    """Every 200 for a request sent after ``since`` is in the store; return how many."""
    statuses = {answer.status for answer in load.answers}
    assert statuses <= {200, 401, 503}, statuses
    issued_before = {
        answer.body["refresh_token"]
        for answer in load.answers
        if answer.status == 200 and answer.sent_at <= since
    }
    # A rotation refused 401 presented a token whose answer came before the fault (and
    # may be lost with the old master), never one answered 200 after it.
    for answer in load.answers:
        if answer.kind == "rotate" and answer.status == 401:
            assert answer.presented in issued_before, (
                f"a refresh token answered after the fault is gone (rotation sent "
                f"{answer.sent_at - since:.2f}s after it)"
            )
    after = [a for a in load.answers if a.status == 200 and a.sent_at > since]
    assert after, "no write was answered 200 after the fault"
    missing = []
    for answer in after:
        me = await client.get(
            "/v1/auth/me", headers={"Authorization": f"Bearer {answer.body['access_token']}"}
        )
        if me.status != 200:
            missing.append((answer.kind, round(answer.sent_at - since, 2), me.status))
    assert not missing, (
        f"{len(missing)} of {len(after)} sessions answered 200 are gone "
        f"(kind, seconds after the fault, status): {missing[:5]} ... {missing[-5:]}"
    )
    # The newest refresh token of each chain still rotates: the last rotation was kept.
    presented = {answer.presented for answer in load.answers if answer.presented}
    for answer in after:
        if answer.body["refresh_token"] not in presented:
            rotated = await client.post(
                "/v1/auth/refresh", json={"refresh_token": answer.body["refresh_token"]}
            )
            assert rotated.status == 200, (answer.kind, await rotated.text())
    return len(after)


async def _start(client_for: Any, sentinel: SentinelProcesses) -> tuple[Any, Load, Any]:
    unlimited = RateLimit(1_000_000, 60)  # every client comes from one address
    settings = fast_settings(
        redis_url=sentinel.url,
        store_timeout=0.5,
        store_retry_after=RETRY_AFTER,
        login_rate_limit=unlimited,
        refresh_rate_limit=unlimited,
        max_sessions_per_user=100_000,  # no session of the test is evicted by the cap
    )
    client = await client_for(settings)
    await _register_clients(client)
    sentinel.wait_replicated()
    load = Load(client)
    running = asyncio.ensure_future(load.run())
    await asyncio.sleep(0.3)
    return settings, load, running


async def _finish(load: Load, running: Any, seconds: float = 0.5) -> None:
    """Keep the load on a little longer (served by the new master), then stop it."""
    await asyncio.sleep(seconds)
    load.stop.set()
    await running


async def test_forced_failover_keeps_every_write_answered_after_the_switch(
    client_for: Any, own_sentinel: SentinelProcesses
) -> None:
    settings, load, running = await _start(client_for, own_sentinel)
    started = time.monotonic()
    old_port = own_sentinel.force_failover()
    new_port = await asyncio.to_thread(own_sentinel.wait_for_new_master, old_port)
    switched = time.monotonic()
    # The old master is up and writable until the sentinels demote it (about ten seconds);
    # the load goes on through that window, until it has resynced from the new master.
    await asyncio.to_thread(own_sentinel.wait_demoted, old_port, new_port)
    demoted = time.monotonic()
    await _finish(load, running)

    fresh = await client_for(settings)
    kept = await _check_answered_writes_survive(fresh, load, switched)
    # Not promised: logins sent while the sentinels were switching, before every one of
    # them named the new master (Redis's asynchronous replication may lose those).
    during = [
        a for a in load.answers if a.kind == "login" and a.status == 200
        and started < a.sent_at <= switched
    ]  # fmt: skip
    lost = 0
    for answer in during:
        me = await fresh.get(
            "/v1/auth/me", headers={"Authorization": f"Bearer {answer.body['access_token']}"}
        )
        lost += me.status != 200
    print(
        f"forced failover: switch seen {switched - started:.2f}s after SENTINEL FAILOVER, "
        f"old master resynced {demoted - started:.2f}s after; {kept} writes after the switch "
        f"kept; 503 window {_unavailable_window(load, started)}; logins sent during the "
        f"switch: {len(during)}, {lost} lost"
    )


async def test_killed_master_keeps_every_write_answered_after_the_kill(
    client_for: Any, own_sentinel: SentinelProcesses
) -> None:
    settings, load, running = await _start(client_for, own_sentinel)
    old_port = own_sentinel.kill_master()
    killed = time.monotonic()
    await asyncio.to_thread(own_sentinel.wait_for_new_master, old_port)
    promoted = time.monotonic()
    await _finish(load, running)

    fresh = await client_for(settings)
    kept = await _check_answered_writes_survive(fresh, load, killed)
    window = _unavailable_window(load, killed)
    assert window is not None, "no request met the failover"
    print(
        f"killed master: new master {promoted - killed:.2f}s after SIGKILL; {kept} writes "
        f"after the kill kept; 503 window {window}"
    )


async def test_paused_master_keeps_every_write_answered_and_is_not_used_once_resumed(
    client_for: Any, own_sentinel: SentinelProcesses
) -> None:
    """SIGSTOP for longer than the failover timeout, then SIGCONT: the client sees a
    partition. The resumed old master is still a master in its own eyes, with requests
    queued in its sockets, until the sentinels demote it."""
    settings, load, running = await _start(client_for, own_sentinel)
    old_port = own_sentinel.pause_master()
    paused = time.monotonic()
    try:
        new_port = await asyncio.to_thread(own_sentinel.wait_for_new_master, old_port)
        promoted = time.monotonic()
        await asyncio.sleep(max(0.0, paused + 4.0 - time.monotonic()))  # failover timeout: 3 s
    finally:
        own_sentinel.resume(old_port)
    resumed = time.monotonic()
    await asyncio.to_thread(own_sentinel.wait_demoted, old_port, new_port)
    await _finish(load, running)

    fresh = await client_for(settings)
    kept = await _check_answered_writes_survive(fresh, load, paused)
    window = _unavailable_window(load, paused)
    assert window is not None, "no request met the partition"
    late = [a for a in load.answers if a.status == 503 and a.answered_at > resumed]
    assert not late, f"{len(late)} requests got 503 after the old master came back"
    print(
        f"paused master: new master {promoted - paused:.2f}s after SIGSTOP, resumed at "
        f"{resumed - paused:.2f}s; {kept} writes after the pause kept; 503 window {window}"
    )


async def _lands_on(client: Any, sentinel: SentinelProcesses, port: int, username: str) -> bool:
    """Log in once; True when the keys it wrote went to the server on ``port``."""
    before = sentinel.dbsize(port)
    response = await client.post(
        "/v1/auth/login", json={"username": username, "password": TEST_PASSWORD}
    )
    assert response.status in (200, 503), await response.text()
    return response.status == 200 and sentinel.dbsize(port) > before


async def _wait_followed(
    client: Any, sentinel: SentinelProcesses, old_port: int, new_port: int
) -> None:
    """Log in until a login lands on the new master; meanwhile the old one must still be
    a master (not demoted yet), so it is authsvc that moved, not READONLY that moved it."""
    for _ in range(200):
        if await _lands_on(client, sentinel, new_port, "user0"):
            break
        await asyncio.sleep(0.05)
    else:
        raise AssertionError("authsvc never wrote to the new master")
    assert sentinel.role(old_port) == "master", "the old master was demoted before authsvc moved"


async def test_watcher_moves_to_another_sentinel_when_its_sentinel_dies(
    client_for: Any, own_sentinel: SentinelProcesses
) -> None:
    _settings, load, running = await _start(client_for, own_sentinel)
    load.stop.set()
    await running
    # The watcher subscribes to the first sentinel of the URL first.
    own_sentinel.kill_sentinel(0)
    await asyncio.sleep(0.2)
    old_port = own_sentinel.force_failover()
    new_port = await asyncio.to_thread(own_sentinel.wait_for_new_master, old_port)
    await _wait_followed(load.client, own_sentinel, old_port, new_port)


async def test_periodic_check_follows_a_switch_whose_message_was_missed(
    client_for: Any, own_sentinel: SentinelProcesses, monkeypatch: Any
) -> None:
    monkeypatch.setattr(sentinel_module, "SWITCH_CHANNEL", "+never-published")
    monkeypatch.setattr(sentinel_module, "CHECK_INTERVAL", 0.5)
    _settings, load, running = await _start(client_for, own_sentinel)
    load.stop.set()
    await running
    old_port = own_sentinel.force_failover()
    new_port = await asyncio.to_thread(own_sentinel.wait_for_new_master, old_port)
    await _wait_followed(load.client, own_sentinel, old_port, new_port)


async def test_readonly_reply_is_retried_once_on_the_new_master(
    client_for: Any, own_sentinel: SentinelProcesses, monkeypatch: Any
) -> None:
    """A client that missed the switch altogether (no message, no periodic check) still
    has a pooled connection to the old master when it is demoted: the write it sends
    there is refused with READONLY, so it did not run, and is sent again to the master
    the sentinels name. The login is answered 200, not 503, and is kept."""
    monkeypatch.setattr(sentinel_module, "SWITCH_CHANNEL", "+never-published")
    monkeypatch.setattr(sentinel_module, "CHECK_INTERVAL", 3600.0)
    settings, load, running = await _start(client_for, own_sentinel)
    load.stop.set()
    await running
    old_port = own_sentinel.force_failover()
    new_port = await asyncio.to_thread(own_sentinel.wait_for_new_master, old_port)
    await asyncio.to_thread(own_sentinel.demote, old_port, new_port)

    assert await _lands_on(load.client, own_sentinel, new_port, "user1")
    fresh = await client_for(settings)
    assert (await fresh.get("/readyz")).status == 200
