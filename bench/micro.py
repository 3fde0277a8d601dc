#!/usr/bin/env python3
"""Microbenchmarks of authsvc's hot paths without HTTP, each as a ratio to a baseline.

CPU (no I/O): every operation is compared with the bare primitive it is built on, so the
ratio says what authsvc's layer costs on top of it:

    AccessTokens.sign              vs  a bare Ed25519 sign of the same signing input
    AccessTokens.verify            vs  a bare Ed25519 verify of it, twice: the same token
                                       again (what a gateway sends; authsvc may cache it)
                                       and distinct tokens (a signature check every call)
    RefreshToken mint+hash         vs  secrets.token_urlsafe(32)
    RefreshToken parse+hash        vs  secrets.token_urlsafe(32)
    seal_successor                 vs  AES-GCM encrypt of the same size, key prepared
    open_successor                 vs  AES-GCM decrypt of it

Store (a private redis-server on a free loopback port, the server's own client settings
from authsvc.store.open_redis, uvloop as the server runs): every call is compared with a bare
PING on that client, one at a time ("seq": latency-bound) and with ``--concurrency`` in
flight ("xN": bound by the client's CPU, as a loaded server is):

    PING socket_timeout=None       the same PING without redis-py's per-command timeouts
    EVALSHA "return 1"             the floor of any script call
    Store.session_live             the Redis half of /v1/auth/me and /v1/auth/verify
    Store.rotate                   the Redis half of /v1/auth/refresh (a real rotation)
    SessionService.authenticate    verify + session_live, me/verify minus HTTP: the same
                                   token again, and distinct tokens
    SessionService.refresh         sign + seal + rotate, refresh minus HTTP (chained)

Ratios are ops/s of the operation divided by ops/s of its baseline (1.0: as fast as the
baseline; 0.5: twice its cost). Each operation is timed ``--repeat`` times, each run
paired with a run of its baseline right before it; the ratio is the median of those
paired ratios (robust to other load on the machine), ops/s the median of the runs. Every
run is bounded by ``--seconds`` and ``--max-ops``; the whole script has a hard limit.

    python bench/micro.py --seconds 0.4 --repeat 3 --json micro.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from redis.asyncio import Redis

from authsvc.config import RateLimit
from authsvc.keys import KeyRing
from authsvc.passwords import Hasher, PasswordPolicy
from authsvc.ratelimit import Limits, Throttle
from authsvc.sessions import ClientInfo, SessionService
from authsvc.store import LoginOutcome, RotationOutcome, SessionLimits, Store, open_redis
from authsvc.tokens import (
    AccessTokens,
    RefreshTokens,
    Successor,
    new_session_id,
    new_user_id,
    open_successor,
    seal_successor,
)

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _support import (
    DeadlineExceeded,
    RedisServer,
    cancel_hard_deadline,
    install_hard_deadline,
    machine_summary,
)

ISSUER = "http://127.0.0.1:8080"
STORE_TIMEOUT = 2.0  # the server's default AUTHSVC_STORE_TIMEOUT
IDLE_TTL, MAX_AGE, GRACE = 1_209_600, 2_592_000, 10
# Well above the sessions the setup logs in (the default of 100 would evict the ones in use).
MAX_SESSIONS = 1_000_000
PASSWORD = "bench password that is long enough"

SyncOp = Callable[[], object]
AsyncOp = Callable[[], Awaitable[object]]


@dataclass
class Row:
    section: str
    name: str
    baseline: str
    ops_per_s: float
    us_per_op: float
    ratio: float | None = None
    runs: list[float] = field(default_factory=list)
    ratios: list[float] = field(default_factory=list)


# -- timing ------------------------------------------------------------------------------------


def run_sync(op: SyncOp, seconds: float, max_ops: int) -> float:
    """ops/s of one run, bounded by ``seconds`` and ``max_ops``."""
    batch = 25
    ops = 0
    started = time.perf_counter()
    stop_at = started + seconds
    while ops < max_ops:
        n = min(batch, max_ops - ops)
        for _ in range(n):
            op()
        ops += n
        if time.perf_counter() >= stop_at:
            break
    return ops / (time.perf_counter() - started)


async def run_async(ops: list[AsyncOp], seconds: float, max_ops: int) -> float:
    """ops/s of one run with one worker per op (the concurrency), bounded in time and count."""
    done = 0
    stop_at = time.perf_counter() + seconds

    async def worker(op: AsyncOp) -> None:
        nonlocal done
        while done < max_ops and time.perf_counter() < stop_at:
            done += 1
            await op()

    started = time.perf_counter()
    await asyncio.wait_for(asyncio.gather(*(worker(op) for op in ops)), seconds + 30)
    return done / (time.perf_counter() - started)


class Table:
    """Rows, with baselines collected from every paired run."""

    def __init__(self, section: str) -> None:
        self.section = section
        self.rows: list[Row] = []
        self._baseline_runs: dict[str, list[float]] = {}

    def add(
        self, name: str, baseline: str | None, runs: list[float], base_runs: list[float]
    ) -> None:
        rate = statistics.median(runs)
        if baseline is None:
            self.rows.append(Row(self.section, name, "-", rate, 1e6 / rate, None, runs))
            return
        self._baseline_runs.setdefault(baseline, []).extend(base_runs)
        ratios = [r / b for r, b in zip(runs, base_runs, strict=True)]
        self.rows.append(
            Row(
                self.section,
                name,
                baseline,
                rate,
                1e6 / rate,
                statistics.median(ratios),
                runs,
                ratios,
            )
        )

    def finish(self) -> list[Row]:
        """Baseline rows first (median of all their runs), each before its operations."""
        out: list[Row] = []
        for name, runs in self._baseline_runs.items():
            rate = statistics.median(runs)
            out.append(Row(self.section, name, "-", rate, 1e6 / rate, None, runs))
            out.extend(row for row in self.rows if row.baseline == name)
        out.extend(row for row in self.rows if row.baseline == "-")
        return out


# -- CPU ---------------------------------------------------------------------------------------


def cpu_rows(args: argparse.Namespace) -> list[Row]:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import (
        Ed25519PrivateKey,
        Ed25519PublicKey,
    )
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    ring = KeyRing.generated(args.alg)

    def new_access() -> AccessTokens:
        return AccessTokens(ring, issuer=ISSUER, audience="authsvc", client_id="authsvc", ttl=900)

    access = new_access()
    now = int(time.time())
    user_id, session_id = new_user_id(), new_session_id()
    token, _ = access.sign(user_id=user_id, session_id=session_id, now=now)
    signing_input = token.rsplit(".", 1)[0].encode()  # what the JWT signature covers
    key, public = ring.current.private_key, ring.current.public_key
    # The bare baselines are Ed25519, authsvc's default algorithm.
    assert isinstance(key, Ed25519PrivateKey) and isinstance(public, Ed25519PublicKey)
    raw_sig = key.sign(signing_input)

    refresh_tokens = RefreshTokens(ring.refresh_secret)
    refresh = refresh_tokens.mint(user_id, session_id)
    successor = Successor(token, refresh_tokens.mint(user_id, session_id).value, now + 900)
    sealed = seal_successor(refresh, successor)
    plain = b"x" * (len(sealed) - 28)  # same plaintext size as a real successor
    aes = AESGCM(secrets.token_bytes(32))
    nonce, aad = secrets.token_bytes(12), session_id.encode()
    encrypted = aes.encrypt(nonce, plain, aad)

    # A pool of distinct tokens: each timed run of "distinct" verifies each at most once,
    # with a fresh AccessTokens, so every call checks a signature.
    pool = [
        access.sign(user_id=user_id, session_id=session_id, now=now)[0]
        for _ in range(max(1000, int(args.seconds * 12_000)))
    ]

    def distinct_verify() -> tuple[SyncOp, int]:
        cold, tokens = new_access(), iter(pool)
        return (lambda: cold.verify(next(tokens))), len(pool)

    def fixed(op: SyncOp) -> Callable[[], tuple[SyncOp, int]]:
        return lambda: (op, args.max_ops)

    bare_sign = "ed25519 sign (bare)"
    bare_verify = "ed25519 verify (bare)"
    baselines: dict[str, Callable[[], tuple[SyncOp, int]]] = {
        bare_sign: fixed(lambda: key.sign(signing_input)),
        bare_verify: fixed(lambda: public.verify(raw_sig, signing_input)),
        "secrets.token_urlsafe(32)": fixed(lambda: secrets.token_urlsafe(32)),
        "AES-GCM encrypt (bare)": fixed(lambda: aes.encrypt(nonce, plain, aad)),
        "AES-GCM decrypt (bare)": fixed(lambda: aes.decrypt(nonce, encrypted, aad)),
    }
    operations: list[tuple[str, str, Callable[[], tuple[SyncOp, int]]]] = [
        (
            "AccessTokens.sign",
            bare_sign,
            fixed(lambda: access.sign(user_id=user_id, session_id=session_id, now=now)),
        ),
        ("AccessTokens.verify same token", bare_verify, fixed(lambda: access.verify(token))),
        ("AccessTokens.verify distinct tokens", bare_verify, distinct_verify),
        (
            "RefreshToken mint+hash",
            "secrets.token_urlsafe(32)",
            fixed(lambda: refresh_tokens.mint(user_id, session_id).hash),
        ),
        (
            "RefreshToken parse+hash",
            "secrets.token_urlsafe(32)",
            fixed(lambda: refresh_tokens.parse(refresh.value).hash),
        ),
        (
            "seal_successor",
            "AES-GCM encrypt (bare)",
            fixed(lambda: seal_successor(refresh, successor)),
        ),
        (
            "open_successor",
            "AES-GCM decrypt (bare)",
            fixed(lambda: open_successor(refresh, sealed)),
        ),
    ]

    table = Table("cpu")
    for name, baseline, prepare in operations:
        runs, base_runs = [], []
        for _ in range(args.repeat):
            base_op, base_cap = baselines[baseline]()
            base_runs.append(run_sync(base_op, args.seconds, min(base_cap, args.max_ops)))
            op, cap = prepare()
            runs.append(run_sync(op, args.seconds, min(cap, args.max_ops)))
        table.add(name, baseline, runs, base_runs)
    return table.finish()


# -- store -------------------------------------------------------------------------------------


async def store_rows(redis_url: str, args: argparse.Namespace) -> list[Row]:
    async with (
        open_redis(redis_url, socket_timeout=STORE_TIMEOUT) as redis,  # the server's client
        open_redis(redis_url, socket_timeout=STORE_TIMEOUT) as untimed,
    ):
        assert isinstance(redis, Redis) and isinstance(untimed, Redis)  # one server
        return await _store_rows(redis, untimed, args)


async def _store_rows(redis: Redis, untimed: Redis, args: argparse.Namespace) -> list[Row]:
    untimed.connection_pool.connection_kwargs["socket_timeout"] = None
    store = await Store.open(redis, SessionLimits(IDLE_TTL, MAX_AGE, MAX_SESSIONS))
    trivial = redis.register_script("return 1")
    await trivial(keys=[], args=[])  # loaded: later calls are plain EVALSHA
    now = int(time.time())

    ring = KeyRing.generated(args.alg)
    refresh_tokens = RefreshTokens(ring.refresh_secret)
    hasher = await asyncio.to_thread(
        Hasher, time_cost=1, memory_cost=64, parallelism=1, concurrency=2
    )

    def new_service() -> SessionService:
        access = AccessTokens(ring, issuer=ISSUER, audience="authsvc", client_id="authsvc", ttl=900)
        return SessionService(
            store,
            hasher,
            access,
            refresh_tokens,
            PasswordPolicy(12, 128),
            Throttle(store, Limits(*[RateLimit(1_000_000, 60)] * 4)),
            reuse_grace=GRACE,
            sensitive_max_age=900,
        )

    service = new_service()
    user = await service.register("bench-user", PASSWORD, now=now)
    record = await store.find_user("bench-user")
    assert record is not None
    sealed = seal_successor(
        refresh_tokens.mint(user.user_id, "x" * 22),
        Successor("a" * 400, refresh_tokens.mint(user.user_id, "x" * 22).value, now + 900),
    )
    first = await service.login("bench-user", PASSWORD, ClientInfo(), now=now)
    live_sid, access_token = first.session_id, first.access_token
    signer = AccessTokens(ring, issuer=ISSUER, audience="authsvc", client_id="authsvc", ttl=900)

    async def store_session() -> list[Any]:
        """[session id, current token hash, its position] of a session made by the store."""
        sid, token_hash = new_session_id(), secrets.token_bytes(16)  # a RefreshToken.hash
        login = await store.login(
            record,
            sid,
            token_hash,
            now=now,
            device="",
            user_agent="",
            ip="",
            upgraded_password_hash=None,
        )
        assert login.outcome is LoginOutcome.OK, login
        return [sid, token_hash, 0]

    # Each prepare(n) returns n ops (one per worker) and the cap of one run.
    async def ping(n: int) -> tuple[list[AsyncOp], int]:
        return [redis.ping] * n, args.max_ops

    async def ping_untimed(n: int) -> tuple[list[AsyncOp], int]:
        return [untimed.ping] * n, args.max_ops

    async def evalsha(n: int) -> tuple[list[AsyncOp], int]:
        return [lambda: trivial(keys=[], args=[])] * n, args.max_ops

    async def session_live(n: int) -> tuple[list[AsyncOp], int]:
        async def op() -> None:
            assert await store.session_live(user.user_id, live_sid, now=now) is not None

        return [op] * n, args.max_ops

    async def rotate(n: int) -> tuple[list[AsyncOp], int]:
        def chain(state: list[Any]) -> AsyncOp:
            async def op() -> None:
                successor = secrets.token_bytes(16)  # ~1 us, noise next to a round trip
                rotation = await store.rotate(
                    user.user_id,
                    state[0],
                    state[2],
                    state[1],
                    successor,
                    sealed,
                    now=now,
                    grace=GRACE,
                )
                assert rotation.outcome is RotationOutcome.OK, rotation
                state[1], state[2] = successor, state[2] + 1

            return op

        return [chain(await store_session()) for _ in range(n)], args.max_ops

    async def authenticate(n: int) -> tuple[list[AsyncOp], int]:
        return [lambda: service.authenticate(access_token, now=now)] * n, args.max_ops

    async def authenticate_distinct(n: int) -> tuple[list[AsyncOp], int]:
        count = max(1000, int(args.seconds * 8_000))
        tokens = iter(
            [
                signer.sign(user_id=user.user_id, session_id=live_sid, now=now)[0]
                for _ in range(count)
            ]
        )
        cold = new_service()  # nothing verified yet
        return [lambda: cold.authenticate(next(tokens), now=now)] * n, count - n

    async def refresh(n: int) -> tuple[list[AsyncOp], int]:
        def chain(state: list[str]) -> AsyncOp:
            async def op() -> None:
                state[0] = (await service.refresh(state[0], now=now)).refresh_token

            return op

        pairs = [
            await service.login("bench-user", PASSWORD, ClientInfo(), now=now) for _ in range(n)
        ]
        return [chain([pair.refresh_token]) for pair in pairs], args.max_ops

    operations = [
        ("PING socket_timeout=None", ping_untimed),
        ("EVALSHA return 1", evalsha),
        ("Store.session_live", session_live),
        ("Store.rotate", rotate),
        ("SessionService.authenticate same token", authenticate),
        ("SessionService.authenticate distinct", authenticate_distinct),
        ("SessionService.refresh", refresh),
    ]
    rows: list[Row] = []
    for concurrency in (1, args.concurrency):
        label = "seq" if concurrency == 1 else f"x{concurrency}"
        table = Table("store " + label)
        baseline = f"PING [{label}]"
        for name, prepare in operations:
            runs, base_runs = [], []
            for _ in range(args.repeat):
                base_ops, base_cap = await ping(concurrency)
                ops, cap = await prepare(concurrency)  # setup outside the timing
                base_runs.append(await run_async(base_ops, args.seconds, base_cap))
                runs.append(await run_async(ops, args.seconds, min(cap, args.max_ops)))
            table.add(f"{name} [{label}]", baseline, runs, base_runs)
        rows += table.finish()

    await asyncio.to_thread(hasher.close)
    return rows


def run_store(redis_url: str, args: argparse.Namespace) -> list[Row]:
    try:
        import uvloop
    except ImportError:
        return asyncio.run(store_rows(redis_url, args))
    return uvloop.run(store_rows(redis_url, args))


# -- main --------------------------------------------------------------------------------------


def print_rows(rows: list[Row]) -> None:
    print(f"{'operation':<50}{'ops/s':>10}{'us/op':>9}{'x baseline':>12}")
    section = None
    for row in rows:
        if row.section != section:
            section = row.section
            print(f"-- {section}")
        if row.ratio is None:
            print(f"{row.name:<50}{row.ops_per_s:>10.0f}{row.us_per_op:>9.1f}{'(baseline)':>12}")
        else:
            print(f"  {row.name:<48}{row.ops_per_s:>10.0f}{row.us_per_op:>9.1f}{row.ratio:>12.3f}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=0.4, help="per timed run (default 0.4)")
    parser.add_argument(
        "--repeat",
        type=int,
        default=3,
        help="paired runs per operation; medians reported (default 3)",
    )
    parser.add_argument("--max-ops", type=int, default=500_000, help="cap per timed run")
    parser.add_argument(
        "--concurrency",
        type=int,
        default=16,
        help="in-flight store calls for the xN rows (default 16)",
    )
    parser.add_argument("--only", choices=["cpu", "store"], help="run one section")
    parser.add_argument("--json", metavar="PATH", help="write the results as JSON")
    args = parser.parse_args(argv)
    args.alg = "EdDSA"  # the default signing algorithm; the bare baselines are Ed25519
    if not 0 < args.seconds <= 5 or not 1 <= args.repeat <= 10 or not 2 <= args.concurrency <= 256:
        parser.error("--seconds in (0, 5], --repeat 1..10, --concurrency 2..256")

    # 7 CPU + 14 store operations, each 2 x repeat runs of `seconds`, plus setup.
    install_hard_deadline(120 + 21 * 2 * args.repeat * (args.seconds + 0.5))
    rows: list[Row] = []
    workdir = Path(tempfile.mkdtemp(prefix="authsvc-micro-"))
    redis = RedisServer(workdir / "redis")
    try:
        if args.only != "store":
            rows += cpu_rows(args)
        if args.only != "cpu":
            redis.start()
            rows += run_store(redis.url, args)
    except DeadlineExceeded as exc:
        print(f"micro: {exc}", file=sys.stderr)
        return 3
    finally:
        cancel_hard_deadline()
        redis.stop()
        shutil.rmtree(workdir, ignore_errors=True)

    print(
        f"authsvc micro: {args.alg}, {args.repeat} paired runs x {args.seconds:g} s, "
        f"ratio = median of op/baseline pairs"
    )
    print_rows(rows)
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {
                    "machine": machine_summary(),
                    "config": vars(args) | {"json": None},
                    "rows": [asdict(r) for r in rows],
                },
                indent=2,
            )
            + "\n"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
