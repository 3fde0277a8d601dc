"""The soak: mixed traffic through nginx to two authsvc instances while faults happen.

The replicated shape of docker-compose.yml on one machine: nginx (config/nginx/authsvc.conf,
with only its addresses changed) in front of two ``authsvc serve`` instances of two workers
each (AUTHSVC_WORKERS=2), on one Redis with an append-only file. Clients (``--clients``
coroutines, each with accounts of its own) log in, refresh, retry a refresh within the
grace, replay one after it, verify, read /me, log out, log out everywhere and use the
operator API, for ``--duration`` seconds, while the main thread, on a fixed cycle, restarts
Redis (SIGTERM, then a start on the same AOF), kills a worker with SIGKILL (its parent
starts another) and rolls both instances one after the other: each is taken out of nginx
(marked ``down``, nginx reloaded: its old workers close their keep-alive connections
themselves), sent SIGTERM, waited for, started, and put back (``--no-drain`` skips the
nginx part: then a request nginx sends on an idle keep-alive connection just as the
instance closes it is lost, and answered 502: the race every keep-alive proxy has).

Every request and its answer is a line of ``requests.jsonl`` (tokens only as hashes), every
fault a line of ``faults.jsonl``, every memory sample a line of ``samples.jsonl``; the
checker reads them back afterwards and fails the run (exit status 1) on:

- a 5xx outside the windows the faults document: 503 ``store_unavailable`` from a Redis
  restart until REDIS_WINDOW_S after it is back; 502 for a request that was in flight in a
  worker at its SIGKILL (sent before it, or within KILL_SETTLE_S of it as the kernel tears
  the worker down, and answered within KILL_WINDOW_S of it); no answer at all (the
  connection closed) for a request sent to nginx while it reloads, which closes its idle
  keep-alive connections to clients (a client that sent on one just then has it closed under
  it, and sends again: nginx's race, not authsvc's); nothing else, ever;
- an access token accepted (``/me``, ``/verify``) after its session ended, on any instance
  (the clients probe each instance directly as well as through nginx);
- two live chains for one session: two different successors for one refresh token;
- a replay that did not end its session: the replay not refused, or any token of the
  session accepted after it;
- a grace retry that did not get the same successor back.

Server RSS (each instance: its parent and workers) and Redis ``used_memory`` are sampled
every SAMPLE_S seconds and their slopes printed per hour. A run of LONG_RUN_S or more stops
rolling and killing for its last STEADY_SHARE (Redis restarts go on), and asserts the
slopes over that steady part (see ``check_memory``); a shorter one only prints them.

What each fault does to clients, and the result of a 30-minute run: docs/reliability.md.
Usage: ``scripts/soak [--duration 60] [--clients 6] [--think 0.2] [--workdir DIR]``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import hashlib
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import redis
from harness import BenchError
from processes import LOOPBACK, HttpServer, Process, RedisServer, free_port, listeners

ROOT = Path(__file__).resolve().parent.parent
NGINX_CONF = ROOT / "config" / "nginx" / "authsvc.conf"
PASSWORD = "soak horse battery staple"
ADMIN = ("soak-operator", "soak-operator-secret")
BASIC = "Basic " + base64.b64encode(":".join(ADMIN).encode()).decode()
GRACE_S = 3  # AUTHSVC_REFRESH_REUSE_GRACE: a replay waits it out
SAMPLE_S = 5.0
CYCLE_S = 60.0  # one Redis restart, one worker kill and one roll of both instances per cycle
REDIS_AT, KILL_AT, ROLL_AT = 8.0, 20.0, 30.0  # seconds into each cycle
REDIS_DOWN_S = 2.0  # how long a restart keeps Redis away (a host's reboot is longer)
REDIS_WINDOW_S = 5.0  # 503 allowed until this long after Redis answers again
KILL_WINDOW_S = 3.0  # 502 allowed for requests in flight at a worker's SIGKILL
# A SIGKILL takes effect as the kernel tears the process down, not as it is sent: a request
# sent in the next moment can still reach the dying worker (its socket's backlog, or an
# idle keep-alive connection of nginx's that nginx learns is closed only then).
KILL_SETTLE_S = 0.1
RELOAD_WINDOW_S = 0.5  # no answer allowed for requests sent to nginx as it reloads
RETRY_S, RETRIES = 0.2, 60
THINK_S = 0.2  # between a client's scenarios (--think): the machine is shared
MAX_PENDING_REPLAYS = 2  # per client, each waiting out the grace
# nginx leaves an upstream out for fail_timeout (10 s in config/nginx/authsvc.conf) after
# max_fails errors: the next instance is rolled only once the last one is back in.
ROLL_PAUSE_S = 11.0  # a client retries a 502/503/504 or a lost connection
LONG_RUN_S = 1500.0
STEADY_SHARE = 0.5
# A fresh authsvc process grows for its first minutes and then stays flat (two 30-minute
# runs: +28 MiB per instance over 7 to 8 minutes, then under 1 MiB over the rest): the
# memory slopes are taken from this long after the steady part began (every instance has
# just been rolled then).
WARMUP_S = 540.0
# Long runs: the bounds asserted on the steady part (see check_memory for why these).
RSS_BOUND_MIB_PER_HOUR = 32.0
REDIS_BOUND_MIB_PER_HOUR = 8.0

ENV = {
    # Cheap argon2 (only for a soak!): the two cores go to the traffic, not to hashing.
    "AUTHSVC_ARGON2_TIME_COST": "1",
    "AUTHSVC_ARGON2_MEMORY_COST": "64",
    "AUTHSVC_ARGON2_PARALLELISM": "1",
    "AUTHSVC_WORKERS": "2",
    "AUTHSVC_REFRESH_REUSE_GRACE": str(GRACE_S),
    "AUTHSVC_SENSITIVE_MAX_AGE": "3600",
    "AUTHSVC_MAX_SESSIONS_PER_USER": "8",  # bounds what Redis holds: a steady state
    "AUTHSVC_LOGIN_RATE_LIMIT": "1000000/60",
    "AUTHSVC_REFRESH_RATE_LIMIT": "1000000/60",
    "AUTHSVC_REGISTRATION_RATE_LIMIT": "1000000/60",
    "AUTHSVC_ADMIN_CLIENTS": f"{ADMIN[0]}:{ADMIN[1]}",
    "AUTHSVC_TRUSTED_PROXIES": "127.0.0.1/32",
    "AUTHSVC_SHUTDOWN_TIMEOUT": "10",
    "AUTHSVC_LOG_LEVEL": "WARNING",
    "AUTHSVC_ACCESS_LOG": "false",
}

MAIN_CONF = """\
worker_processes 1;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {tmp}/client_body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    include {tmp}/authsvc.conf;
}}
"""


def now() -> float:
    return time.time()


def fingerprint(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()[:16]


def nginx_binary() -> str:
    found = shutil.which("nginx") or (
        "/usr/sbin/nginx" if os.access("/usr/sbin/nginx", os.X_OK) else None
    )
    if found is None:
        raise BenchError("nginx is not installed (apt-get install nginx)")
    return found


# -- processes ---------------------------------------------------------------------------


class Nginx(Process):
    def __init__(self, directory: Path, port: int, upstreams: Sequence[int]) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        text = NGINX_CONF.read_text()
        replacements = {
            "listen 8080;": f"listen {LOOPBACK}:{port};",
            "server authsvc-1:8080": f"server {LOOPBACK}:{upstreams[0]}",
            "server authsvc-2:8080": f"server {LOOPBACK}:{upstreams[1]}",
        }
        for example, actual in replacements.items():
            if text.count(example) != 1:
                raise BenchError(f"{NGINX_CONF.name} no longer has {example!r} once")
            text = text.replace(example, actual)
        self.directory = directory
        self.text = text
        self.upstreams = list(upstreams)
        (directory / "authsvc.conf").write_text(text)
        (directory / "nginx.conf").write_text(MAIN_CONF.format(tmp=directory))
        command = [nginx_binary(), "-p", str(directory), "-c", str(directory / "nginx.conf")]
        command += ["-g", f"daemon off; pid {directory}/nginx.pid; error_log stderr warn;"]
        super().__init__(command, port, directory / "nginx.log", os.environ)

    def take_out(self, upstream: int | None) -> None:
        """Mark ``upstream`` down (None: none), reload, and let the old workers go.

        A reload starts new workers with the new config; the old ones finish their
        requests and close their idle keep-alive connections themselves, so no request
        goes on a connection that the instance closes as it stops.
        """
        text = self.text
        if upstream is not None:
            text = text.replace(
                f"server {LOOPBACK}:{upstream} ", f"server {LOOPBACK}:{upstream} down "
            )
        (self.directory / "authsvc.conf").write_text(text)
        assert self.popen is not None
        before = set(process_tree(self.popen.pid)) - {self.popen.pid}
        self.popen.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 30
        while set(process_tree(self.popen.pid)) & before:  # the old workers are gone
            if time.monotonic() > deadline:
                raise BenchError("nginx's old workers did not exit after a reload")
            time.sleep(0.05)

    def ready(self) -> bool:
        try:
            socket.create_connection((LOOPBACK, self.port), timeout=1).close()
        except OSError:
            return False
        return True


def process_tree(pid: int) -> list[int]:
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        with contextlib.suppress(OSError):
            todo += [
                int(c) for c in Path(f"/proc/{current}/task/{current}/children").read_text().split()
            ]
    return found


def rss_bytes(pid: int) -> int:
    total = 0
    for member in process_tree(pid):
        with contextlib.suppress(OSError, ValueError, IndexError):
            for line in Path(f"/proc/{member}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
    return total


def workers_of(pid: int) -> list[int]:
    workers = []
    for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split():
        with contextlib.suppress(OSError):
            if b"spawn_main" in Path(f"/proc/{child}/cmdline").read_bytes():
                workers.append(int(child))
    return workers


class Instance(HttpServer):
    """One ``authsvc serve`` of two workers; ``incarnation`` counts its starts."""

    def __init__(
        self, name: str, command: Sequence[str], directory: Path, env: dict[str, str]
    ) -> None:
        port = free_port()
        env = {**env, "AUTHSVC_PORT": str(port), "AUTHSVC_HOST": LOOPBACK}
        super().__init__(command, port, directory / f"{name}.log", env, listening=2)
        self.name = name
        self.incarnation = 0

    def start(self) -> None:
        super().start()
        self.incarnation += 1

    def sigterm(self) -> int:
        """SIGTERM to the parent only, as ``docker stop`` sends it; its exit status."""
        assert self.popen is not None
        self.popen.send_signal(signal.SIGTERM)
        code = self.popen.wait(60)
        self.popen = None
        return code


# -- faults ------------------------------------------------------------------------------


class Faults:
    """The main thread's side: starts the stack, then runs the fault cycle and the samples."""

    def __init__(self, workdir: Path, authsvc: Sequence[str], *, drain: bool = True) -> None:
        self.workdir = workdir
        self.drain = drain
        self.redis = RedisServer(workdir / "redis", appendonly=True)
        keys = workdir / "keys"
        subprocess.run(
            [*authsvc, "keys", "generate", "--dir", str(keys)], check=True, capture_output=True
        )
        self.nginx_port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("AUTHSVC_")}
        env |= ENV | {
            "AUTHSVC_REDIS_URL": self.redis.url,
            "AUTHSVC_KEYS_DIR": str(keys),
            "AUTHSVC_ISSUER": f"http://{LOOPBACK}:{self.nginx_port}",
        }
        command = [*authsvc, "serve"]
        self.instances = [Instance(n, command, workdir, env) for n in ("a", "b")]
        self.nginx = Nginx(workdir / "nginx", self.nginx_port, [i.port for i in self.instances])
        self.log = (workdir / "faults.jsonl").open("a", buffering=1)
        self.samples = (workdir / "samples.jsonl").open("a", buffering=1)
        self.problems: list[str] = []
        self.planned: dict[str, int] = defaultdict(int)
        self.steady_from = now()

    def start(self) -> None:
        self.redis.start()
        for instance in self.instances:
            instance.start()
        self.nginx.start()

    def stop(self) -> None:
        self.nginx.stop()
        for instance in self.instances:
            instance.stop()
        self.redis.stop()

    def record(self, kind: str, start: float, **fields: Any) -> None:
        self.log.write(json.dumps({"kind": kind, "start": start, "end": now(), **fields}) + "\n")

    def restart_redis(self) -> None:
        start = now()
        assert self.redis.popen is not None
        self.redis.popen.send_signal(signal.SIGTERM)  # SHUTDOWN: the AOF is fsynced first
        self.redis.popen.wait(30)
        self.redis.popen = None
        time.sleep(REDIS_DOWN_S)
        self.redis.start()
        self.record("redis_restart", start)

    def kill_worker(self, instance: Instance) -> None:
        victim = random.choice(workers_of(instance.pid))
        start = now()  # at the kill itself: a request sent before it was in flight
        os.kill(victim, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while True:
            current = workers_of(instance.pid)
            if victim not in current and len(current) == 2 and listeners(instance.port) == 2:
                break
            if instance.popen is None or instance.popen.poll() is not None:
                self.problems.append(f"instance {instance.name} exited after its worker's SIGKILL")
                instance.popen = None
                instance.start()
                break
            if time.monotonic() > deadline:
                self.problems.append(f"instance {instance.name} did not replace worker {victim}")
                break
            time.sleep(0.05)
        self.record("worker_kill", start, instance=instance.name, pid=victim)

    def roll(self, instance: Instance) -> None:
        """SIGTERM, wait, start; with ``drain``, taken out of nginx first, put back after."""
        start = now()
        if self.drain:
            self.reload_nginx(instance.port)
        code = instance.sigterm()
        if code != 0:
            self.problems.append(f"instance {instance.name} exited {code} on SIGTERM")
        instance.start()
        if self.drain:
            self.reload_nginx(None)
        self.record("roll", start, instance=instance.name, exit_status=code, drained=self.drain)

    def reload_nginx(self, upstream: int | None) -> None:
        start = now()
        self.nginx.take_out(upstream)
        self.record("nginx_reload", start)

    def sample(self) -> None:
        row: dict[str, Any] = {"t": now()}
        for instance in self.instances:
            if instance.popen is not None:
                row[instance.name] = rss_bytes(instance.pid)
                row[f"{instance.name}_incarnation"] = instance.incarnation
        with (
            contextlib.suppress(redis.RedisError),
            redis.Redis(host=LOOPBACK, port=self.redis.port, socket_timeout=1) as client,
        ):
            row["redis"] = client.info("memory")["used_memory"]
            row["redis_keys"] = client.dbsize()
        self.samples.write(json.dumps(row) + "\n")

    def wait(
        self, seconds: float, began: float, next_sample: float, stopped: threading.Event
    ) -> None:
        """Sleep, sampling on time meanwhile."""
        until = time.monotonic() + seconds
        while time.monotonic() < until and not stopped.is_set():
            if time.monotonic() - began >= next_sample:
                self.sample()
                next_sample += SAMPLE_S
            time.sleep(0.05)
        self.next_sample = next_sample

    def run(self, duration: float, stopped: threading.Event) -> None:
        """The fault cycle until ``duration`` has passed (or the traffic stopped)."""
        began = time.monotonic()
        steady_from = duration * (1 - STEADY_SHARE) if duration >= LONG_RUN_S else duration
        self.steady_from = now() + steady_from  # wall time, as the samples have it
        plan: list[tuple[float, str]] = []
        cycle = 0.0
        while cycle < duration:
            for offset, kind in ((REDIS_AT, "redis"), (KILL_AT, "kill"), (ROLL_AT, "roll")):
                at = cycle + offset
                if at < duration - 5 and (kind == "redis" or at < steady_from):
                    plan.append((at, kind))
            cycle += CYCLE_S
        kinds = {"redis": "redis_restart", "kill": "worker_kill", "roll": "roll"}
        for _, kind in plan:
            self.planned[kinds[kind]] += 2 if kind == "roll" else 1
        next_sample = 0.0
        kills = 0
        while not stopped.is_set():
            elapsed = time.monotonic() - began
            if elapsed >= duration:
                break
            if elapsed >= next_sample:
                self.sample()
                next_sample += SAMPLE_S
            if plan and elapsed >= plan[0][0]:
                _, kind = plan.pop(0)
                if kind == "redis":
                    self.restart_redis()
                elif kind == "kill":
                    self.kill_worker(self.instances[kills % 2])
                    kills += 1
                else:
                    self.roll(self.instances[0])
                    self.wait(ROLL_PAUSE_S, began, next_sample, stopped)
                    next_sample = self.next_sample
                    self.roll(self.instances[1])
                continue
            time.sleep(0.05)
        self.sample()


# -- traffic -----------------------------------------------------------------------------


class Recorder:
    """Every request and its answer, a JSON line each, as they come."""

    def __init__(self, path: Path) -> None:
        self.file = path.open("a", buffering=1 << 16)

    def add(self, row: dict[str, Any]) -> None:
        self.file.write(json.dumps(row) + "\n")

    def close(self) -> None:
        self.file.close()


class Retry(Exception):
    pass


@dataclass
class Pair:
    uid: str
    sid: str
    access: str
    refresh: str


class Client:
    """One simulated app with accounts of its own; every request is recorded."""

    def __init__(
        self,
        index: int,
        urls: dict[str, str],
        recorder: Recorder,
        stop: asyncio.Event,
        think: float,
    ) -> None:
        self.index = index
        self.think = think
        self.urls = urls
        self.recorder = recorder
        self.stop = stop
        self.usernames = [f"soak-{index}-{i}" for i in range(4)]
        self.user_ids: dict[str, str] = {}
        self.random = random.Random(index)
        self.pending: set[asyncio.Task[None]] = set()

    async def call(
        self,
        session: aiohttp.ClientSession,
        kind: str,
        method: str,
        path: str,
        *,
        via: str = "nginx",
        json_body: Any = None,
        token: str | None = None,
        basic: bool = False,
        sid: str = "",
        uid: str = "",
        rt: str = "",
        tag: str = "",
        retry: bool = True,
    ) -> tuple[int, Any]:
        """One request, retried on a 502/503/504 or a lost connection: (status, body)."""
        headers = {}
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        if basic:
            headers["Authorization"] = BASIC
        for attempt in range(RETRIES if retry else 1):
            row: dict[str, Any] = {
                "t0": now(), "kind": kind, "method": method, "path": path.split("?")[0],
                "via": via, "sid": sid, "uid": uid, "rt": fingerprint(rt) if rt else "",
                "tag": tag, "attempt": attempt, "client": self.index,
            }  # fmt: skip
            body: Any = None
            try:
                async with session.request(
                    method, self.urls[via] + path, json=json_body, headers=headers
                ) as response:
                    raw = await response.read()
                    status = response.status
                    if raw and response.content_type == "application/json":
                        body = json.loads(raw)
            except (TimeoutError, aiohttp.ClientError) as exc:
                status, row["error"] = 0, type(exc).__name__
            row["t1"], row["status"] = now(), status
            if isinstance(body, dict):
                if "error" in body:
                    row["error"] = body["error"]
                if "refresh_token" in body:
                    row["rt_out"] = fingerprint(body["refresh_token"])
                    row["sid"] = body.get("session_id", sid)
            self.recorder.add(row)
            if via != "nginx" and status == 0:
                return 0, None  # an instance being rolled: not an answer, not retried
            if status in (0, 502, 503, 504) and retry:
                await asyncio.sleep(RETRY_S)
                continue
            return status, body
        return status, body

    async def login(self, http: aiohttp.ClientSession, username: str, tag: str = "") -> Pair | None:
        uid = self.user_ids[username]
        status, body = await self.call(
            http, "login", "POST", "/v1/auth/login",
            json_body={"username": username, "password": PASSWORD}, uid=uid, tag=tag,
        )  # fmt: skip
        if status != 200:
            return None
        return Pair(uid, body["session_id"], body["access_token"], body["refresh_token"])

    async def refresh(self, http: aiohttp.ClientSession, pair: Pair, tag: str = "") -> Pair | None:
        status, body = await self.call(
            http, "refresh", "POST", "/v1/auth/refresh",
            json_body={"refresh_token": pair.refresh}, sid=pair.sid, uid=pair.uid, rt=pair.refresh,
            tag=tag,
        )  # fmt: skip
        if status != 200:
            return None
        return Pair(pair.uid, pair.sid, body["access_token"], body["refresh_token"])

    async def read(
        self, http: aiohttp.ClientSession, pair: Pair, tag: str = "", via: str = "nginx"
    ) -> int:
        kind, path = self.random.choice((("me", "/v1/auth/me"), ("verify", "/v1/auth/verify")))
        status, _ = await self.call(
            http, kind, "GET", path, token=pair.access, sid=pair.sid, uid=pair.uid, tag=tag, via=via
        )
        return status

    async def probe_ended(self, http: aiohttp.ClientSession, pairs: Sequence[Pair]) -> None:
        """Each ended session's access token on nginx and on each instance directly."""
        for pair in pairs:
            for via in ("nginx", "a", "b"):
                await self.read(http, pair, tag="probe_after_end", via=via)

    async def setup(self, http: aiohttp.ClientSession) -> None:
        for username in self.usernames:
            status, body = await self.call(
                http,
                "register",
                "POST",
                "/v1/users",
                json_body={"username": username, "password": PASSWORD},
            )
            if status != 201:
                raise BenchError(f"registering {username}: {status} {body}")
            self.user_ids[username] = body["user_id"]

    # The scenarios: each a short life of one session or two, on one account.

    async def basic(self, http: aiohttp.ClientSession, username: str) -> None:
        pair = await self.login(http, username)
        if pair is None:
            return
        for _ in range(self.random.randint(1, 4)):
            await self.read(http, pair)
            pair = await self.refresh(http, pair) or pair
        await self.read(http, pair)
        status, _ = await self.call(
            http, "logout", "POST", "/v1/auth/logout", token=pair.access, sid=pair.sid, uid=pair.uid
        )
        if status == 204:
            await self.probe_ended(http, [pair])
            await self.refresh(http, pair, tag="after_end")

    async def grace(self, http: aiohttp.ClientSession, username: str) -> None:
        pair = await self.login(http, username)
        if pair is None:
            return
        first = await self.refresh(http, pair)
        again = await self.refresh(http, pair, tag="grace_retry")  # a retry after a lost reply
        if first is not None and again is not None:
            await self.read(http, again)
            await self.refresh(http, again)
        # The session stays: the cap (AUTHSVC_MAX_SESSIONS_PER_USER) evicts the oldest.

    async def replay(self, http: aiohttp.ClientSession, username: str) -> None:
        if len(self.pending) >= MAX_PENDING_REPLAYS:
            return await self.basic(http, username)
        pair = await self.login(http, username)
        if pair is None:
            return None
        successor = await self.refresh(http, pair)
        if successor is not None:
            # The replay waits out the grace in a task of its own: the client goes on.
            task = asyncio.create_task(self.replay_later(http, pair, successor))
            self.pending.add(task)
            task.add_done_callback(self.pending.discard)
        return None

    async def replay_later(self, http: aiohttp.ClientSession, pair: Pair, successor: Pair) -> None:
        await asyncio.sleep(GRACE_S + 1.0)
        status, _ = await self.call(
            http, "refresh", "POST", "/v1/auth/refresh", json_body={"refresh_token": pair.refresh},
            sid=pair.sid, uid=pair.uid, rt=pair.refresh, tag="replay",
        )  # fmt: skip
        if status == 401:
            await self.probe_ended(http, [successor])
            await self.refresh(http, successor, tag="after_end")

    async def logout_all(self, http: aiohttp.ClientSession, username: str) -> None:
        pairs = [
            p for p in [await self.login(http, username), await self.login(http, username)] if p
        ]
        if not pairs:
            return
        for pair in pairs:
            await self.read(http, pair)
        status, _ = await self.call(
            http, "logout_all", "POST", "/v1/auth/logout-all", token=pairs[0].access,
            sid=pairs[0].sid, uid=pairs[0].uid,
        )  # fmt: skip
        if status == 204:
            await self.probe_ended(http, pairs)

    async def operator(self, http: aiohttp.ClientSession, username: str) -> None:
        uid = self.user_ids[username]
        pair = await self.login(http, username)
        base = f"/v1/admin/users/{uid}"
        await self.call(
            http, "admin_find", "GET", f"/v1/admin/users?username={username}", basic=True, uid=uid
        )
        await self.call(http, "admin_get", "GET", base, basic=True, uid=uid)
        await self.call(http, "admin_sessions", "GET", f"{base}/sessions", basic=True, uid=uid)
        roles = self.random.choice(([], ["reader"], ["reader", "writer"]))
        await self.call(
            http,
            "admin_roles",
            "PUT",
            f"{base}/roles",
            json_body={"roles": roles},
            basic=True,
            uid=uid,
        )
        if pair is not None:
            pair = await self.refresh(http, pair) or pair
        kind, path, method = self.random.choice(
            (
                ("admin_revoke_all", f"{base}/sessions", "DELETE"),
                ("admin_disable", f"{base}/disable", "POST"),
            )
        )
        status, _ = await self.call(http, kind, method, path, basic=True, uid=uid)
        if status == 204 and pair is not None:
            await self.probe_ended(http, [pair])
        if kind == "admin_disable":
            await self.login(http, username, tag="while_disabled")
            await self.call(http, "admin_enable", "POST", f"{base}/enable", basic=True, uid=uid)
        await self.call(http, "admin_events", "GET", f"{base}/events", basic=True, uid=uid)

    async def run(self) -> None:
        scenarios = [
            self.basic,
            self.basic,
            self.grace,
            self.replay,
            self.logout_all,
            self.operator,
        ]
        timeout = aiohttp.ClientTimeout(total=60)
        async with aiohttp.ClientSession(timeout=timeout) as http:
            await self.setup(http)
            while not self.stop.is_set():
                username = self.random.choice(self.usernames)
                await self.random.choice(scenarios)(http, username)
                await asyncio.sleep(self.think)
            await asyncio.gather(*self.pending)


def run_traffic(
    urls: dict[str, str],
    clients: int,
    think: float,
    recorder: Recorder,
    stopped: threading.Event,
    failed: list[str],
) -> None:
    """The traffic thread: its own event loop, until ``stopped``."""

    async def main() -> None:
        stop = asyncio.Event()
        tasks = [
            asyncio.create_task(Client(i, urls, recorder, stop, think).run())
            for i in range(clients)
        ]

        async def watch() -> None:
            while not stopped.is_set() and not any(t.done() for t in tasks):
                await asyncio.sleep(0.1)
            stop.set()

        await watch()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                failed.append(f"a client failed: {result!r}")

    try:
        asyncio.run(main())
    except BaseException as exc:  # the run is void: say so, and stop the faults
        failed.append(f"the traffic failed: {exc!r}")
        raise
    finally:
        stopped.set()


# -- the checker -------------------------------------------------------------------------


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    with path.open() as lines:
        return [json.loads(line) for line in lines if line.strip()]


@dataclass
class Verdicts:
    failures: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    notes: list[str] = field(default_factory=list)

    def fail(self, check: str, message: str) -> None:
        self.failures[check].append(message)


CHECKS = (
    "5xx outside the documented windows",
    "access token accepted after its session ended",
    "two live chains for one session",
    "replay that did not end its session",
    "grace retry without the same successor",
)


def windows(faults: list[dict[str, Any]]) -> list[tuple[str, float, float, int]]:
    """(kind, from, until, the status allowed) for each fault."""
    found = []
    for fault in faults:
        if fault["kind"] == "redis_restart":
            found.append(("redis_restart", fault["start"], fault["end"] + REDIS_WINDOW_S, 503))
        elif fault["kind"] == "worker_kill":
            found.append(("worker_kill", fault["start"], fault["start"] + KILL_WINDOW_S, 502))
        elif fault["kind"] == "nginx_reload":
            found.append(("nginx_reload", fault["start"], fault["end"] + RELOAD_WINDOW_S, 0))
    return found


def check(rows: list[dict[str, Any]], faults: list[dict[str, Any]]) -> Verdicts:
    verdicts = Verdicts()
    allowed = windows(faults)
    in_window: dict[int, int] = defaultdict(int)
    for row in rows:
        status = row["status"]
        if row["via"] != "nginx" and status == 0:
            continue
        if status >= 500 or status == 0:
            hit = next(
                (
                    i for i, (kind, start, until, code) in enumerate(allowed)
                    if code == status and row["t1"] >= start and row["t1"] <= until
                    and (kind != "worker_kill" or row["t0"] <= start + KILL_SETTLE_S)
                    and (kind != "nginx_reload" or start <= row["t0"] <= until)
                ),
                None,
            )  # fmt: skip
            if hit is None:
                verdicts.fail(
                    CHECKS[0],
                    f"{row['method']} {row['path']} {status} {row.get('error', '')}"
                    f" at {row['t1']:.3f}",
                )
            else:
                in_window[hit] += 1
    # When each session ended, as the clients learnt it (the answer's arrival).
    logins: dict[str, list[tuple[str, float]]] = defaultdict(list)  # uid -> (sid, answered)
    for row in rows:
        if row["kind"] == "login" and row["status"] == 200:
            logins[row["uid"]].append((row["sid"], row["t1"]))
    ended: dict[str, float] = {}

    def end(sid: str, at: float) -> None:
        ended[sid] = min(ended.get(sid, at), at)

    for row in rows:
        if row["status"] == 204 and row["kind"] == "logout":
            end(row["sid"], row["t1"])
        elif row["status"] == 204 and row["kind"] in (
            "logout_all",
            "admin_revoke_all",
            "admin_disable",
        ):
            for sid, answered in logins[row["uid"]]:
                if answered < row["t0"]:
                    end(sid, row["t1"])
        elif row["tag"] == "replay":
            if row["status"] == 401:
                end(row["sid"], row["t1"])
            elif row["status"] == 200:
                verdicts.fail(CHECKS[3], f"replay of session {row['sid']} answered 200")
    for row in rows:
        sid = row["sid"]
        if sid in ended and row["t0"] > ended[sid] and 200 <= row["status"] < 300:
            if row["kind"] in ("me", "verify"):
                verdicts.fail(
                    CHECKS[1],
                    f"{row['path']} via {row['via']} accepted session {sid}"
                    f" {row['t0'] - ended[sid]:.3f}s after it ended",
                )
            elif row["kind"] == "refresh":
                verdicts.fail(
                    CHECKS[3] if row["tag"] == "after_end" else CHECKS[1],
                    f"refresh of ended session {sid} answered {row['status']}",
                )
    successors: dict[str, set[str]] = defaultdict(set)
    for row in rows:
        if row["kind"] == "refresh" and row["status"] == 200:
            successors[row["rt"]].add(row["rt_out"])
    for token, found in successors.items():
        if len(found) > 1:
            verdicts.fail(CHECKS[2], f"refresh token {token} had {len(found)} successors")
    for row in rows:
        if row["tag"] == "grace_retry" and row["status"] not in (200, 0, 502, 503, 504):
            verdicts.fail(
                CHECKS[4],
                f"grace retry of session {row['sid']} answered {row['status']} {row.get('error')}",
            )
    verdicts.notes.append(
        f"5xx inside the documented windows: {sum(in_window.values())}"
        f" in {len(in_window)} of {len(allowed)} windows"
    )
    return verdicts


def slope_per_hour(points: Sequence[tuple[float, float]]) -> float | None:
    """Least-squares slope of (seconds, bytes), in MiB per hour."""
    if len(points) < 3:
        return None
    n = len(points)
    mx = sum(t for t, _ in points) / n
    my = sum(v for _, v in points) / n
    var = sum((t - mx) ** 2 for t, _ in points)
    if var == 0:
        return None
    slope = sum((t - mx) * (v - my) for t, v in points) / var
    return slope * 3600 / (1 << 20)


def memory(samples: list[dict[str, Any]], since: float) -> dict[str, float | None]:
    """Slopes (MiB/h) of Redis and of each instance's incarnation that lived from ``since``."""
    steady = [s for s in samples if s["t"] >= since]
    result: dict[str, float | None] = {
        "redis": slope_per_hour([(s["t"], s["redis"]) for s in steady if "redis" in s])
    }
    for name in ("a", "b"):
        points = [s for s in steady if name in s]
        if points:
            last = points[-1][f"{name}_incarnation"]
            result[name] = slope_per_hour(
                [(s["t"], s[name]) for s in points if s[f"{name}_incarnation"] == last]
            )
    return result


def check_memory(
    samples: list[dict[str, Any]], since: float, assert_bounds: bool, verdicts: Verdicts
) -> dict[str, float | None]:
    """Print the slopes; on a long run, assert them on the steady part (no rolls there).

    The bounds: the state in Redis is bounded by design (sessions per user capped, events
    per user capped, one record per session whatever its refreshes), so once every account
    is at its cap Redis must stop growing; 8 MiB/h is far above the noise of a few MiB
    that jemalloc and the AOF rewrite buffer move, and far below what keeping anything per
    request would cost (a 100-byte record per request at the soak's rate is > 15 MiB/h).
    A process of authsvc warms up in its first minutes (caches, pymalloc arenas: the first
    30-minute run saw +28 MiB per instance over 7 minutes, then none); after it,
    32 MiB/h per instance (two workers) is what a leak of ~50 bytes per request at the
    soak's rate would show, and a flat process stays well below it.
    """
    slopes = memory(samples, since)
    for name, bound in (
        ("redis", REDIS_BOUND_MIB_PER_HOUR),
        ("a", RSS_BOUND_MIB_PER_HOUR),
        ("b", RSS_BOUND_MIB_PER_HOUR),
    ):
        value = slopes.get(name)
        if assert_bounds and value is not None and value > bound:
            verdicts.fail("memory not flat", f"{name}: {value:+.1f} MiB/h > {bound} MiB/h")
    return slopes


# -- main --------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/soak", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--duration", type=float, default=60.0, help="seconds of traffic (default 60)"
    )
    parser.add_argument("--clients", type=int, default=6, help="concurrent clients (default 6)")
    parser.add_argument(
        "--think",
        type=float,
        default=THINK_S,
        help=f"seconds between a client's scenarios ({THINK_S})",
    )
    parser.add_argument(
        "--workdir",
        type=Path,
        help="where the records and logs go (default: a new temporary directory)",
    )
    parser.add_argument(
        "--authsvc", default=f"{sys.executable} -m authsvc", help="the authsvc command"
    )
    parser.add_argument(
        "--no-drain",
        action="store_true",
        help="roll without taking the instance out of nginx first (shows the keep-alive race)",
    )
    parser.add_argument(
        "--recheck",
        type=Path,
        metavar="DIR",
        help="run no traffic: check the records an earlier run left in DIR again",
    )
    args = parser.parse_args(argv)
    if args.recheck:
        return recheck(args.recheck)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="authsvc-soak-"))
    workdir.mkdir(parents=True, exist_ok=True)
    print(f"soak: {args.duration:.0f}s, {args.clients} clients, records in {workdir}", flush=True)
    faults = Faults(workdir, args.authsvc.split(), drain=not args.no_drain)
    recorder = Recorder(workdir / "requests.jsonl")
    stopped = threading.Event()
    client_failures: list[str] = []
    began = now()
    try:
        faults.start()
        urls = {
            "nginx": f"http://{LOOPBACK}:{faults.nginx_port}",
            "a": faults.instances[0].base_url,
            "b": faults.instances[1].base_url,
        }
        traffic = threading.Thread(
            target=run_traffic,
            args=(urls, args.clients, args.think, recorder, stopped, client_failures),
        )
        traffic.start()
        try:
            faults.run(args.duration, stopped)
        finally:
            stopped.set()
            traffic.join(120)
    finally:
        faults.stop()
        recorder.close()
        faults.log.close()
        faults.samples.close()
    elapsed = now() - began
    rows = read_jsonl(workdir / "requests.jsonl")
    fault_rows = read_jsonl(workdir / "faults.jsonl")
    verdicts = check(rows, fault_rows)
    for problem in faults.problems + client_failures:
        verdicts.fail("faults survived", problem)
    # A run that did not do what it says proves nothing: every planned fault happened,
    # and traffic went on until the end.
    for kind, count in faults.planned.items():
        done = sum(1 for f in fault_rows if f["kind"] == kind)
        if done != count:
            verdicts.fail("faults survived", f"{kind}: {done} of the {count} planned")
    if not rows or rows[-1]["t0"] < began + args.duration - 10:
        verdicts.fail("faults survived", "the traffic stopped before the end")
    long_run = args.duration >= LONG_RUN_S
    since = faults.steady_from + WARMUP_S if long_run else began
    slopes = check_memory(read_jsonl(workdir / "samples.jsonl"), since, long_run, verdicts)
    report(rows, fault_rows, verdicts, slopes, elapsed, long_run)
    return 1 if verdicts.failures else 0


def recheck(workdir: Path) -> int:
    """The checks again on the records of an earlier run (the faults it planned aside)."""
    rows = read_jsonl(workdir / "requests.jsonl")
    fault_rows = read_jsonl(workdir / "faults.jsonl")
    began, elapsed = rows[0]["t0"], rows[-1]["t1"] - rows[0]["t0"]
    verdicts = check(rows, fault_rows)
    long_run = elapsed >= LONG_RUN_S
    # The steady part began as the last kill or roll ended.
    disruptive = [f["end"] for f in fault_rows if f["kind"] in ("worker_kill", "roll")]
    since = max(disruptive, default=began) + WARMUP_S if long_run else began
    slopes = check_memory(read_jsonl(workdir / "samples.jsonl"), since, long_run, verdicts)
    report(rows, fault_rows, verdicts, slopes, elapsed, long_run)
    return 1 if verdicts.failures else 0


def report(
    rows: list[dict[str, Any]],
    faults: list[dict[str, Any]],
    verdicts: Verdicts,
    slopes: dict[str, float | None],
    elapsed: float,
    long_run: bool,
) -> None:
    statuses: dict[int, int] = defaultdict(int)
    kinds: dict[str, int] = defaultdict(int)
    for row in rows:
        statuses[row["status"]] += 1
        kinds[row["kind"]] += 1
    print(f"requests: {len(rows)} in {elapsed:.0f}s ({len(rows) / max(elapsed, 1):.0f}/s)")
    print("  by kind: " + ", ".join(f"{k} {v}" for k, v in sorted(kinds.items())))
    print("  by status: " + ", ".join(f"{k} {v}" for k, v in sorted(statuses.items())))
    by_kind: dict[str, list[float]] = defaultdict(list)
    for fault in faults:
        by_kind[fault["kind"]].append(fault["end"] - fault["start"])
    for kind, durations in sorted(by_kind.items()):
        print(
            f"faults: {kind} x{len(durations)} (took {min(durations):.2f} to {max(durations):.2f}s)"
        )
    # The 503 windows as clients saw them: from the first 503 to the last of each restart.
    for fault in (f for f in faults if f["kind"] == "redis_restart"):
        seen = [
            r["t1"]
            for r in rows
            if r["status"] == 503 and fault["start"] <= r["t1"] <= fault["end"] + REDIS_WINDOW_S
        ]
        span = f"{max(seen) - min(seen):.2f}s, {len(seen)} answers" if seen else "none"
        print(
            f"  503 window of the Redis restart at +{fault['start'] - rows[0]['t0']:.0f}s: {span}"
            if rows
            else ""
        )
    for note in verdicts.notes:
        print(note)
    what = "asserted" if long_run else "printed only"
    print(
        "memory slopes (MiB/h, "
        + what
        + "): "
        + ", ".join(f"{k} {'n/a' if v is None else f'{v:+.2f}'}" for k, v in slopes.items())
    )
    for name in (*CHECKS, "memory not flat", "faults survived"):
        found = verdicts.failures.get(name, [])
        print(f"check: {name}: {'FAIL (' + str(len(found)) + ')' if found else 'ok'}")
        for message in found[:10]:
            print(f"    {message}")
    print("verdict: " + ("FAIL" if verdicts.failures else "PASS"), flush=True)


if __name__ == "__main__":
    sys.exit(main())
