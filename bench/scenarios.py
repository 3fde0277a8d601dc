"""The scenarios: what each one sends, and the tokens it needs for one wrk run.

Every scenario is one wrk script of ``bench/wrk/`` against one path. ``Workload`` prepares
the script's arguments for a run of a given length (a tokens file, credentials) and says
afterwards whether the run is valid beyond wrk's own error counts.
"""

from __future__ import annotations

import asyncio
import base64
import json
from dataclasses import dataclass
from pathlib import Path

from fixtures import Fixtures, Session
from harness import BenchError, WrkRun
from processes import HttpServer
from stack import BENCH_ORIGIN

SEEN_TOKENS = 32  # sessions whose access tokens verify, me and introspect cycle through
GRACE_TOKENS = 32  # used-once refresh tokens that refresh_grace cycles through
# verify_fresh signs this many tokens per second of run before it has measured its rate
# (then 1.5 times what it measured), so that none is presented twice.
FRESH_TOKENS_PER_SECOND = 6_000
# The DPoP scenarios sign this many proofs per second of run before they have measured their
# rate (then 1.5 times what they measured): a proof's jti is accepted once.
DPOP_PROOFS_PER_SECOND = 4_000
LOGIN_CONNECTIONS = 4  # argon2 runs HASH_CONCURRENCY (= cores) at a time; more only queue
REFRESH = "/v1/auth/refresh"


@dataclass(frozen=True, slots=True)
class Scenario:
    name: str
    summary: str
    script: str  # in bench/wrk/
    path: str
    on_ceiling: bool = False  # sent to the ceiling server, not authsvc
    ratio_target: bool = True  # login is argon2-bound by design: reported apart
    connections: int | None = None  # None: the run's --connections
    timeout_s: int = 5  # wrk's per-request timeout


SCENARIOS = (
    Scenario("ceiling", "bare aiohttp handler, one Redis GET", "get.lua", "/", on_ceiling=True),
    Scenario(
        "refresh",
        "POST /v1/auth/refresh, one chain per connection, a real rotation each",
        "refresh.lua",
        "/v1/auth/refresh",
    ),
    Scenario(
        "refresh_grace",
        "POST /v1/auth/refresh, a used token retried within the grace",
        "refresh_grace.lua",
        "/v1/auth/refresh",
    ),
    Scenario(
        "refresh_dpop",
        "POST /v1/auth/refresh of DPoP-bound sessions, a fresh proof each",
        "refresh_dpop.lua",
        "/v1/auth/refresh",
    ),
    Scenario("verify", "GET /v1/auth/verify, 32 tokens seen before", "get.lua", "/v1/auth/verify"),
    Scenario(
        "verify_dpop",
        "GET /v1/auth/verify, 32 DPoP-bound tokens seen before, a fresh proof each",
        "get_dpop.lua",
        "/v1/auth/verify",
    ),
    Scenario(
        "verify_origin",
        "GET /v1/auth/verify, 32 tokens seen before, from a listed Origin (CORS headers)",
        "get.lua",
        "/v1/auth/verify",
    ),
    Scenario(
        "verify_fresh",
        "GET /v1/auth/verify, a token never seen before each request",
        "get.lua",
        "/v1/auth/verify",
    ),
    Scenario("me", "GET /v1/auth/me, 32 tokens seen before", "get.lua", "/v1/auth/me"),
    Scenario(
        "introspect",
        "POST /oauth/introspect (Basic client), 32 tokens seen before",
        "introspect.lua",
        "/oauth/introspect",
    ),
    Scenario(
        "login",
        f"POST /v1/auth/login, default argon2id, {LOGIN_CONNECTIONS} connections",
        "login.lua",
        "/v1/auth/login",
        ratio_target=False,
        connections=LOGIN_CONNECTIONS,
        timeout_s=30,
    ),
)
BY_NAME = {scenario.name: scenario for scenario in SCENARIOS}


class Workload:
    """Tokens and credentials for each scenario's runs, made fresh where a run uses them up."""

    def __init__(
        self,
        fixtures: Fixtures,
        runner: asyncio.Runner,
        server: HttpServer,
        workdir: Path,
        *,
        login: tuple[str, str],
        introspection_client: tuple[str, str],
    ) -> None:
        self.fixtures = fixtures
        self.runner = runner
        self.server = server
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.login_body = json.dumps(
            {"username": login[0], "password": login[1], "device": "bench"}, separators=(",", ":")
        )
        client = f"{introspection_client[0]}:{introspection_client[1]}"
        self.basic = base64.b64encode(client.encode()).decode()
        self._seen: list[Session] = []
        self.fresh_rate = float(FRESH_TOKENS_PER_SECOND)
        self.fresh_count = 0
        self._seen_bound: list[Session] = []
        self.proof_rate = {"refresh_dpop": float(DPOP_PROOFS_PER_SECOND)}
        self.proof_rate["verify_dpop"] = float(DPOP_PROOFS_PER_SECOND)
        self.proof_count = {name: 0 for name in self.proof_rate}

    @property
    def seen(self) -> list[Session]:
        """The live sessions whose access tokens verify, me and introspect present."""
        if not self._seen:
            self._seen = self.runner.run(self.fixtures.new_sessions(SEEN_TOKENS))
        return self._seen

    def _file(self, name: str, lines: list[str]) -> str:
        path = self.workdir / f"{name}.tokens"
        path.write_text("\n".join(lines) + "\n")
        return str(path)

    def script_args(
        self, scenario: Scenario, seconds: int, connections: int
    ) -> tuple[str, list[str]]:
        """The tokens file and extra arguments of one run of ``seconds``; makes what it uses up."""
        name = scenario.name
        if name == "refresh":
            # A fresh chain per connection (a run leaves its chains wherever they got to),
            # and spares: wrk calls request() once per thread before any is sent, which
            # takes a token off the queue that no request carries.
            spares = max(4, connections // 8)
            chains = self.runner.run(self.fixtures.new_sessions(connections + spares))
            return self._file(name, [s.refresh_token for s in chains]), []
        if name == "refresh_dpop":
            spares = max(4, connections // 8)
            chains = self.runner.run(self.fixtures.new_sessions(connections + spares, bound=True))
            proofs = self._proofs(name, "POST", REFRESH, seconds)
            return self._file(name, [s.refresh_token for s in chains]), [proofs]
        if name == "verify_dpop":
            if not self._seen_bound:
                self._seen_bound = self.runner.run(
                    self.fixtures.new_sessions(SEEN_TOKENS, bound=True)
                )
            tokens = [s.access_token for s in self._seen_bound]
            return self._proofs(name, "GET", scenario.path, seconds, tokens), []
        if name == "refresh_grace":
            return self._file(name, self._used_once(GRACE_TOKENS)), []
        if name in ("verify", "me"):
            return self._file(name, [s.access_token for s in self.seen]), []
        if name == "verify_origin":
            self._check_cors(self.seen[0].access_token)
            return self._file(name, [s.access_token for s in self.seen]), [BENCH_ORIGIN]
        if name == "verify_fresh":
            self.fresh_count = int(seconds * self.fresh_rate) + 1_000
            return self._file(name, self.fixtures.sign_fresh(self.seen, self.fresh_count)), []
        if name == "introspect":
            return self._file(name, [s.access_token for s in self.seen]), [self.basic]
        if name == "login":
            return "-", [self.login_body]
        return "-", []

    def _proofs(
        self, name: str, method: str, path: str, seconds: int, tokens: list[str] | None = None
    ) -> str:
        """A file of proofs (with ``tokens``: token and proof a line) for one run, one a
        request, signed before it starts."""
        count = self.proof_count[name] = int(seconds * self.proof_rate[name]) + 1_000
        lines = self.fixtures.dpop_proofs(
            method, path, count, seconds=seconds, access_tokens=tokens
        )
        return self._file(f"{name}.proofs", lines)

    def check(self, scenario: Scenario, run: WrkRun) -> str | None:
        """Why a run that wrk saw no error in is still invalid, or None."""
        if scenario.name in self.proof_rate:
            name = scenario.name
            self.proof_rate[name] = max(self.proof_rate[name], 1.5 * run.rps)
            if run.requests > self.proof_count[name]:
                return f"{run.requests} requests for {self.proof_count[name]} proofs: some repeated"
        if scenario.name == "verify_fresh":
            self.fresh_rate = max(self.fresh_rate, 1.5 * run.rps)
            if run.requests > self.fresh_count:
                return f"{run.requests} requests for {self.fresh_count} fresh tokens: some repeated"
        return None

    def _check_cors(self, access_token: str) -> None:
        """verify_origin measures what it says: the server answers the Origin with CORS."""
        headers = {"Authorization": f"Bearer {access_token}", "Origin": BENCH_ORIGIN}
        status, answer = self.server.get_headers("/v1/auth/verify", headers)
        if status != 200 or answer.get("Access-Control-Allow-Origin") != BENCH_ORIGIN:
            raise BenchError(f"verify from {BENCH_ORIGIN} answered {status} without CORS headers")

    def _used_once(self, count: int) -> list[str]:
        """Refresh tokens rotated once by the server: presenting one again is a grace retry."""
        sessions: list[Session] = self.runner.run(self.fixtures.new_sessions(count))
        for session in sessions:
            reply = self.server.post(REFRESH, {"refresh_token": session.refresh_token})
            if reply.status != 200:
                raise BenchError(f"rotating a grace token answered {reply.status}: {reply.body}")
        # The retry must take the grace path: the same successor comes back.
        retried = {"refresh_token": sessions[0].refresh_token}
        first = self.server.post(REFRESH, retried)
        again = self.server.post(REFRESH, retried)
        if again.status != 200 or again.body["refresh_token"] != first.body["refresh_token"]:
            raise BenchError(f"a retry within the grace answered {again.status}: {again.body}")
        return [session.refresh_token for session in sessions]
