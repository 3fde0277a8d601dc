#!/usr/bin/env python3
"""Logins per second with the real argon2id parameters: what sizes an authsvc fleet for logins.

Self-contained and bounded, like loadtest.py: a private redis-server, a fresh key,
``python -m authsvc serve`` with the default argon2id settings (t=3, m=64 MiB, p=4, one
hash at a time per CPU core) unless ``--argon2`` says otherwise, one registered user, then
``--connections`` clients logging in as fast as they can for ``--duration`` seconds. It
reports logins/s, p50/p99 latency and the server's CPU seconds per login (all its
processes, from /proc): a login is almost all argon2id, which is why it costs hundreds of
refreshes.

    python bench/logins.py --duration 10 --connections 8 [--workers 2]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _support import (
    LOOPBACK,
    RedisServer,
    cancel_hard_deadline,
    clean_env,
    die_with_parent,
    free_port,
    install_hard_deadline,
    machine_summary,
    stop_process,
)
from loadtest import cpu_seconds, group_pids

PASSWORD = "bench password that is long enough"


async def wait_ready(base: str, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    async with aiohttp.ClientSession() as http:
        while time.monotonic() < deadline and process.poll() is None:
            try:
                async with http.get(base + "/readyz") as response:
                    if response.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)
    raise RuntimeError("authsvc did not become ready")


async def login_loop(
    http: aiohttp.ClientSession, base: str, until: float, latencies: list[float]
) -> None:
    body = {"username": "bench", "password": PASSWORD}
    while time.monotonic() < until:
        started = time.monotonic()
        async with http.post(base + "/v1/auth/login", json=body) as response:
            await response.read()
            assert response.status == 200, response.status
        latencies.append(time.monotonic() - started)


async def measure(args: argparse.Namespace, base: str, pgid: int) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.post(
            base + "/v1/users", json={"username": "bench", "password": PASSWORD}
        ) as response:
            assert response.status == 201, await response.text()
        latencies: list[float] = []
        cpu_before = cpu_seconds(group_pids(pgid))
        started = time.monotonic()
        until = started + args.duration
        await asyncio.gather(
            *(login_loop(http, base, until, latencies) for _ in range(args.connections))
        )
        elapsed = time.monotonic() - started
        cpu = cpu_seconds(group_pids(pgid)) - cpu_before
    latencies.sort()
    p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
    print(
        f"logins/s {len(latencies) / elapsed:.1f}  p50 {statistics.median(latencies) * 1000:.0f} ms"
        f"  p99 {p99 * 1000:.0f} ms  server CPU {cpu / len(latencies) * 1000:.0f} ms/login"
        f"  ({len(latencies)} logins, {args.connections} connections, "
        f"{args.workers} worker(s))"
    )
    print(machine_summary())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument(
        "--argon2", metavar="T,M,P", help="time cost, memory KiB, lanes (default: authsvc's)"
    )
    args = parser.parse_args()
    install_hard_deadline(args.duration + 120)
    with tempfile.TemporaryDirectory(prefix="authsvc-bench-") as tmp:
        workdir = Path(tmp)
        redis = RedisServer(workdir / "redis")
        redis.start()
        port = free_port()
        env = {
            **clean_env(),
            "AUTHSVC_REDIS_URL": redis.url,
            "AUTHSVC_KEYS_DIR": str(workdir / "keys"),
            "AUTHSVC_LOGIN_RATE_LIMIT": "100000000/60",
            "AUTHSVC_MAX_SESSIONS_PER_USER": "100000000",
            "AUTHSVC_LOG_LEVEL": "WARNING",
        }
        if args.argon2:
            time_cost, memory_cost, parallelism = args.argon2.split(",")
            env |= {
                "AUTHSVC_ARGON2_TIME_COST": time_cost,
                "AUTHSVC_ARGON2_MEMORY_COST": memory_cost,
                "AUTHSVC_ARGON2_PARALLELISM": parallelism,
            }
        subprocess.run(
            [sys.executable, "-m", "authsvc", "keys", "generate", "--dir", env["AUTHSVC_KEYS_DIR"]],
            check=True,
            env=env,
            stdout=subprocess.DEVNULL,
        )
        process = subprocess.Popen(
            [sys.executable, "-m", "authsvc", "serve", "--host", LOOPBACK, "--port", str(port),
             "--workers", str(args.workers)],
            cwd=workdir,
            env=env,
            start_new_session=True,
            preexec_fn=die_with_parent,
        )  # fmt: skip
        try:
            base = f"http://{LOOPBACK}:{port}"
            asyncio.run(wait_ready(base, process))
            asyncio.run(measure(args, base, process.pid))
        finally:
            stop_process(process, group=True)
            redis.stop()
    cancel_hard_deadline()


if __name__ == "__main__":
    main()
