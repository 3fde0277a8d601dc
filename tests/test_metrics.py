"""GET /metrics: the names and labels of API.md, counted where each outcome is decided."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families
from servers import Servers
from support import TEST_PASSWORD, FakeClock, bearer, free_port, login, refresh, register

from authsvc.config import RateLimit

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


async def scrape(client: Any) -> Samples:
    response = await client.get("/metrics")
    assert response.status == 200
    assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    samples: Samples = {}
    for family in text_string_to_metric_families(await response.text()):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def logins(samples: Samples, outcome: str) -> float:
    return value(samples, "authsvc_logins_total", outcome=outcome)


def refreshes(samples: Samples, outcome: str) -> float:
    return value(samples, "authsvc_refreshes_total", outcome=outcome)


def revoked(samples: Samples, reason: str) -> float:
    return value(samples, "authsvc_sessions_revoked_total", reason=reason)


async def test_every_outcome_and_reason_is_a_series_from_the_start(client: Any) -> None:
    samples = await scrape(client)
    for outcome in ("ok", "invalid_credentials", "rate_limited"):
        assert ("authsvc_logins_total", frozenset({("outcome", outcome)})) in samples
    for outcome in ("rotated", "grace", "replay", "invalid"):
        assert ("authsvc_refreshes_total", frozenset({("outcome", outcome)})) in samples
    for reason in ("logout", "logout_all", "delete", "replay", "revoke", "evicted"):
        assert ("authsvc_sessions_revoked_total", frozenset({("reason", reason)})) in samples
    assert ("authsvc_store_errors_total", frozenset()) in samples


async def test_requests_are_counted_by_route_template_method_and_status(client: Any) -> None:
    await register(client)
    pair = await login(client)
    for session_id in ("one", "two"):
        response = await client.delete(f"/v1/auth/sessions/{session_id}", headers=bearer(pair))
        assert response.status == 404
    assert (await client.get("/no/such/path")).status == 404
    assert (await client.get("/another/unknown")).status == 404
    assert (await client.put("/healthz")).status == 405

    samples = await scrape(client)
    requests = "authsvc_http_requests_total"
    assert value(samples, requests, route="/v1/users", method="POST", status="201") == 1
    assert value(samples, requests, route="/v1/auth/login", method="POST", status="200") == 1
    # The template, never the raw path: both ids land in one series.
    sessions_route = "/v1/auth/sessions/{session_id}"
    assert value(samples, requests, route=sessions_route, method="DELETE", status="404") == 2
    assert not any("one" in dict(labels).get("route", "") for _, labels in samples)
    # Paths that match no route share one label, whatever they are.
    assert value(samples, requests, route="unmatched", method="GET", status="404") == 2
    assert value(samples, requests, route="unmatched", method="PUT", status="405") == 1
    duration = "authsvc_http_request_duration_seconds_count"
    assert value(samples, duration, route=sessions_route) == 2
    assert value(samples, duration, route="/v1/auth/login") == 1
    assert value(samples, duration, route="unmatched") == 3
    # Every request above was answered, errors included; the scrape is in flight itself.
    assert value(samples, "authsvc_http_requests_in_flight") == 1


async def test_logins_are_counted_by_outcome(make_client: Any) -> None:
    client = await make_client(login_rate_limit=RateLimit(3, 60))
    await register(client)
    await login(client)
    for username, password in (("alice", "wrong password!!"), ("nobody", TEST_PASSWORD)):
        response = await client.post(
            "/v1/auth/login", json={"username": username, "password": password}
        )
        assert response.status == 401
    # The fourth attempt for alice within the window.
    response = await client.post(
        "/v1/auth/login", json={"username": "alice", "password": TEST_PASSWORD}
    )
    assert response.status == 429

    samples = await scrape(client)
    assert logins(samples, "ok") == 1
    assert logins(samples, "invalid_credentials") == 2
    assert logins(samples, "rate_limited") == 1


async def test_refreshes_are_counted_by_outcome_and_a_replay_revokes_one_session(
    client: Any, clock: FakeClock
) -> None:
    await register(client)
    pair = await login(client)
    first = await refresh(client, pair["refresh_token"])
    assert first.status == 200
    retry = await refresh(client, pair["refresh_token"])  # within the grace
    assert retry.status == 200
    assert (await refresh(client, "not-a-refresh-token")).status == 401
    clock.advance(60)  # past the grace: the old token is a replay
    assert (await refresh(client, pair["refresh_token"])).status == 401
    # The session is revoked now, so its successor is unknown: invalid.
    assert (await refresh(client, (await first.json())["refresh_token"])).status == 401

    samples = await scrape(client)
    assert refreshes(samples, "rotated") == 1
    assert refreshes(samples, "grace") == 1
    assert refreshes(samples, "replay") == 1
    assert refreshes(samples, "invalid") == 2
    assert revoked(samples, "replay") == 1


async def test_sessions_revoked_are_counted_by_reason(make_client: Any) -> None:
    client = await make_client(max_sessions_per_user=3)
    await register(client)
    pairs = [await login(client) for _ in range(3)]
    assert (await client.post("/v1/auth/logout", headers=bearer(pairs[0]))).status == 204
    response = await client.delete(
        f"/v1/auth/sessions/{pairs[1]['session_id']}", headers=bearer(pairs[2])
    )
    assert response.status == 204
    pairs += [await login(client) for _ in range(3)]  # the third is one over the cap
    assert (await client.post("/v1/auth/logout-all", headers=bearer(pairs[-1]))).status == 204

    samples = await scrape(client)
    assert revoked(samples, "logout") == 1
    assert revoked(samples, "delete") == 1
    assert revoked(samples, "evicted") == 1
    assert revoked(samples, "logout_all") == 3
    assert revoked(samples, "replay") == 0


async def test_store_errors_are_counted(make_client: Any) -> None:
    client = await make_client(redis_url=f"redis://127.0.0.1:{free_port()}/0", store_timeout=0.5)
    before = value(await scrape(client), "authsvc_store_errors_total")
    response = await client.post(
        "/v1/auth/login", json={"username": "alice", "password": TEST_PASSWORD}
    )
    assert response.status == 503
    assert (await client.get("/readyz")).status == 503

    samples = await scrape(client)
    assert value(samples, "authsvc_store_errors_total") == before + 2
    assert logins(samples, "ok") + logins(samples, "invalid_credentials") == 0
    status = {"route": "/v1/auth/login", "method": "POST", "status": "503"}
    assert value(samples, "authsvc_http_requests_total", **status) == 1


async def test_two_apps_in_one_process_count_apart(make_client: Any) -> None:
    """Each app has its own registry: nothing global to collide or to leak between them."""
    first = await make_client()
    second = await make_client()
    await register(first)
    await login(first)
    assert logins(await scrape(first), "ok") == 1
    assert logins(await scrape(second), "ok") == 0


LOGINS = 40


def test_one_scrape_sums_the_logins_of_every_worker(
    servers: Servers, tmp_path: Path, keys_dir: Path, redis_url: str, redis_client: Any
) -> None:
    """40 logins, each on a connection of its own, so that SO_REUSEPORT spreads them over
    both workers; any one scrape, whichever worker answers it, reads all 40."""
    server = servers.start(
        tmp_path / "serve.log",
        {
            "AUTHSVC_REDIS_URL": redis_url,
            "AUTHSVC_KEYS_DIR": str(keys_dir),
            "AUTHSVC_LOG_LEVEL": "INFO",
            "AUTHSVC_LOGIN_RATE_LIMIT": "1000/60",
        },
        "--workers",
        "2",
    )
    assert server.register("alice").status == 201
    for _ in range(LOGINS):
        server.login("alice")

    for _ in range(6):
        reply = server.request("GET", "/metrics")
        assert reply.status == 200
        samples = {
            (sample.name, frozenset(sample.labels.items())): sample.value
            for family in text_string_to_metric_families(reply.body)
            for sample in family.samples
        }
        assert logins(samples, "ok") == LOGINS
        login_ok = {"route": "/v1/auth/login", "method": "POST", "status": "200"}
        assert value(samples, "authsvc_http_requests_total", **login_ok) == LOGINS
        assert (
            value(samples, "authsvc_http_request_duration_seconds_count", route="/v1/auth/login")
            == LOGINS
        )

    # Both workers served logins: the sums above are over two processes.
    login_pids = set(
        re.findall(r"authsvc\.access\[(\d+)\] \S+: \S+ \"POST /v1/auth/login\"", server.log())
    )
    assert len(login_pids) == 2
    assert server.terminate() == 0
