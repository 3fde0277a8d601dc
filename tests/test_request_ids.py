"""X-Request-Id and Server on every response, and the request id on the request's log lines."""

from __future__ import annotations

import logging
import re
from typing import Any

import pytest
from support import bearer, free_port, login, register

from authsvc.telemetry.logs import RequestIdFilter

NEW_ID = re.compile(r"[0-9a-f]{32}")


@pytest.mark.parametrize(
    "given",
    [
        "abc-123",
        "x",
        "A" * 128,
        "!~visible-ascii:/=+_.?#",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-01",
    ],
)
async def test_a_usable_request_id_from_the_caller_comes_back(client: Any, given: str) -> None:
    response = await client.get("/healthz", headers={"X-Request-Id": given})
    assert response.headers["X-Request-Id"] == given


@pytest.mark.parametrize(
    "given",
    ["", "A" * 129, "has space", "tab\there", "caf\u00e9"],
    ids=["empty", "129 chars", "space", "tab", "non-ascii"],
)
async def test_an_unusable_request_id_is_replaced_by_a_new_one(client: Any, given: str) -> None:
    response = await client.get("/healthz", headers={"X-Request-Id": given})
    assert NEW_ID.fullmatch(response.headers["X-Request-Id"])


async def test_each_request_without_an_id_gets_a_new_one(client: Any) -> None:
    ids = {(await client.get("/healthz")).headers["X-Request-Id"] for _ in range(5)}
    assert len(ids) == 5
    assert all(NEW_ID.fullmatch(request_id) for request_id in ids)


async def test_every_response_carries_a_request_id_and_no_version_banner(
    make_client: Any,
) -> None:
    client = await make_client(max_body_size=1024)
    await register(client)
    pair = await login(client)
    down = await make_client(redis_url=f"redis://127.0.0.1:{free_port()}/0", store_timeout=0.5)
    json_body = {"Content-Type": "application/json"}
    login_body = {"username": "alice", "password": "correct horse battery staple"}
    responses = [
        (200, await client.get("/v1/auth/me", headers=bearer(pair))),
        (204, await client.post("/v1/auth/logout", headers=bearer(pair))),
        (400, await client.post("/v1/auth/login", data=b"{", headers=json_body)),
        (401, await client.get("/v1/auth/me")),
        (404, await client.get("/nowhere")),
        (405, await client.delete("/healthz")),
        (413, await client.post("/v1/auth/login", data=b"x" * 4096, headers=json_body)),
        (415, await client.post("/v1/auth/login", data=b"{}")),
        (503, await down.get("/readyz")),  # rendered by the handler
        (503, await down.post("/v1/auth/login", json=login_body)),  # by the error middleware
    ]
    for status, response in responses:
        assert response.status == status
        assert NEW_ID.fullmatch(response.headers.get("X-Request-Id", "")), status
        assert response.headers["Server"] == "authsvc"
        assert "Python" not in str(response.headers) and "aiohttp" not in str(response.headers)


async def test_log_lines_written_for_a_request_carry_its_id(
    client: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """The service's own lines, not only the access log: the id rides a context variable."""
    caplog.handler.addFilter(RequestIdFilter())
    caplog.set_level(logging.INFO)
    response = await client.post(
        "/v1/users",
        json={"username": "alice", "password": "correct horse battery staple"},
        headers={"X-Request-Id": "trace-me-1"},
    )
    assert response.status == 201
    (registered,) = [r for r in caplog.records if r.getMessage().startswith("user registered")]
    assert getattr(registered, "request_id", None) == "trace-me-1"
    caplog.clear()
    await client.get("/healthz")
    logging.getLogger("authsvc.test").info("outside any request")
    (outside,) = [r for r in caplog.records if r.name == "authsvc.test"]
    assert not hasattr(outside, "request_id")
