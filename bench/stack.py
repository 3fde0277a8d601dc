"""The services under test: private Redis servers, ``authsvc serve`` and the ceiling.

All on loopback, on free ports, started by the runners of ``processes.py`` and
registered on the caller's ExitStack, so every one is stopped however the run ends.
authsvc runs with its defaults (argon2id, the access log) but for what the scenarios
need: a long reuse grace (every retry of a run falls inside it), login and refresh rate
limits per address that no run reaches, and an introspection client.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import redis
from ceiling import KEY as CEILING_KEY
from processes import LOOPBACK, HttpServer, RedisServer, free_port

from authsvc.config import Settings, load_settings

CEILING = Path(__file__).resolve().with_name("ceiling.py")
# What the ceiling reads and answers: about the size of a /v1/auth/me body.
CEILING_VALUE = b'{"user_id":"' + b"0" * 32 + b'","session_id":"' + b"s" * 22 + b'"}'
REUSE_GRACE = 3600  # longer than any run: a retry is always within the grace


@dataclass(frozen=True, slots=True)
class Authsvc:
    """A running ``authsvc serve`` and what the fixtures need to make its tokens."""

    redis: RedisServer
    server: HttpServer
    settings: Settings  # what the server runs with, read from its own environment
    keys_dir: Path
    introspection_client: tuple[str, str]
    workdir: Path


def start_redis(directory: Path, stack: contextlib.ExitStack) -> RedisServer:
    process = RedisServer(directory)
    stack.callback(process.stop)
    process.start()
    return process


BENCH_ORIGIN = "https://app.bench.example"


def start_authsvc(
    store: RedisServer,
    workdir: Path,
    stack: contextlib.ExitStack,
    *,
    workers: int,
    extra_env: dict[str, str],
) -> Authsvc:
    """Generate a signing key in ``workdir`` and serve on ``store``."""
    workdir.mkdir(parents=True, exist_ok=True)
    keys_dir = workdir / "keys"
    subprocess.run(
        [sys.executable, "-m", "authsvc", "keys", "generate", "--dir", str(keys_dir)],
        check=True,
        capture_output=True,
        timeout=60,
    )
    client = ("bench", secrets.token_urlsafe(16))
    port = free_port()
    env = {
        # The product's defaults but for what follows: no AUTHSVC_* of the caller's.
        **{name: value for name, value in os.environ.items() if not name.startswith("AUTHSVC_")},
        "AUTHSVC_HOST": LOOPBACK,
        "AUTHSVC_PORT": str(port),
        "AUTHSVC_REDIS_URL": store.url,
        "AUTHSVC_KEYS_DIR": str(keys_dir),
        "AUTHSVC_REFRESH_REUSE_GRACE": str(REUSE_GRACE),
        # The per-address limits would stop wrk's one address at once; the check itself
        # still runs on every request, as in production.
        "AUTHSVC_LOGIN_RATE_LIMIT": "1000000/60",
        "AUTHSVC_REFRESH_RATE_LIMIT": "1000000/60",
        "AUTHSVC_INTROSPECTION_CLIENTS": f"{client[0]}:{client[1]}",
        # verify_origin's page: listed, so every other scenario also runs with CORS on, as
        # a deployment with browsers does (--server-env AUTHSVC_CORS_ORIGINS= turns it off).
        "AUTHSVC_CORS_ORIGINS": BENCH_ORIGIN,
        **extra_env,
    }
    command = [sys.executable, "-m", "authsvc", "serve", "--workers", str(workers)]
    server = HttpServer(command, port, workdir / "authsvc.log", env, listening=workers)
    stack.callback(server.stop)
    server.start()
    return Authsvc(store, server, load_settings(server.env), keys_dir, client, workdir)


def start_ceiling(
    store: RedisServer, workdir: Path, stack: contextlib.ExitStack, *, workers: int
) -> list[HttpServer]:
    """The ceiling as ``workers`` processes on one port, as authsvc runs its workers."""
    with redis.Redis.from_url(store.url) as client:
        client.set(CEILING_KEY, CEILING_VALUE)
    port = free_port()
    ceilings = []
    for index in range(workers):
        command = [sys.executable, str(CEILING), "--port", str(port), "--redis-url", store.url]
        command += ["--reuse-port"] if workers > 1 else []
        log = workdir / f"ceiling-{index}.log"
        ceiling = HttpServer(command, port, log, os.environ, listening=index + 1)
        stack.callback(ceiling.stop)
        ceiling.start()
        ceilings.append(ceiling)
    return ceilings
