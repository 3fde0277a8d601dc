"""What every route shares: /healthz and /readyz answer, and an unknown path or a wrong
method gets the contract's JSON error.
"""

from __future__ import annotations

from typing import Any

import pytest
from support import assert_error


async def test_healthz_and_readyz_answer_200(client: Any) -> None:
    assert (await client.get("/healthz")).status == 200
    assert (await client.get("/readyz")).status == 200


@pytest.mark.parametrize("path", ["/nope", "/v1/auth/nope", "/v1", "/v1/users/123"])
async def test_unknown_path_is_not_found_json(client: Any, path: str) -> None:
    await assert_error(await client.get(path), 404, "not_found")


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/v1/users"),
        ("GET", "/v1/auth/login"),
        ("PUT", "/v1/auth/refresh"),
        ("POST", "/v1/auth/me"),
        ("DELETE", "/v1/auth/sessions"),
        ("POST", "/.well-known/jwks.json"),
    ],
)
async def test_wrong_method_is_405_with_json_body(client: Any, method: str, path: str) -> None:
    response = await client.request(method, path)
    assert response.status == 405
    body = await assert_error(response, 405, (await response.json())["error"])
    assert body["error"] == "method_not_allowed"
    assert response.headers["Allow"]
