"""config/traefik/forward-auth.yml asks the endpoint authsvc serves for forward-auth and
copies the identity headers it really answers with. Traefik itself is not run here."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from aiohttp import web
from aiohttp.test_utils import TestClient
from support import TEST_PASSWORD, bearer, login, register
from yarl import URL

from authsvc.client import DpopKey

RECIPE = Path(__file__).resolve().parent.parent / "config" / "traefik" / "forward-auth.yml"


def load_recipe() -> dict[str, Any]:
    config: dict[str, Any] = yaml.safe_load(RECIPE.read_text())["http"]
    return config


async def test_forward_auth_address_is_authsvcs_verify_endpoint(
    client: TestClient[web.Request, web.Application],
) -> None:
    forward_auth = load_recipe()["middlewares"]["authsvc"]["forwardAuth"]
    address = URL(forward_auth["address"])
    await register(client)
    pair = await login(client)

    # Traefik's forward-auth request is a GET carrying the client's Authorization.
    assert "Authorization" in forward_auth["authRequestHeaders"]
    verified = await client.get(address.path, headers=bearer(pair))
    refused = await client.get(address.path)

    assert address.port == 8080  # AUTHSVC_PORT's default
    assert verified.status == 200
    assert refused.status == 401


async def test_forward_auth_copies_every_identity_header_verify_answers_with(
    client: TestClient[web.Request, web.Application],
) -> None:
    forward_auth = load_recipe()["middlewares"]["authsvc"]["forwardAuth"]
    await register(client)
    pair = await login(client)

    verified = await client.get(URL(forward_auth["address"]).path, headers=bearer(pair))
    identity = {name for name in verified.headers if name.lower().startswith("x-auth-")}

    assert identity == {"X-Auth-User-Id", "X-Auth-Session-Id", "X-Auth-Roles"}
    assert set(forward_auth["authResponseHeaders"]) == identity
    assert forward_auth.get("trustForwardHeader", False) is False


def test_every_router_goes_through_the_forward_auth_middleware() -> None:
    config = load_recipe()

    assert config["routers"]
    for router in config["routers"].values():
        assert "authsvc" in router["middlewares"]


async def test_forward_auth_passes_the_dpop_proof_and_the_request_it_names(
    client: TestClient[web.Request, web.Application],
) -> None:
    """Traefik sends the DPoP header (authRequestHeaders) and X-Forwarded-Method, -Proto,
    -Host and -Uri of its own: verify checks the proof against that forwarded request."""
    forward_auth = load_recipe()["middlewares"]["authsvc"]["forwardAuth"]
    assert "DPoP" in forward_auth["authRequestHeaders"]
    await register(client)
    key = DpopKey()
    response = await client.post(
        "/v1/auth/login",
        json={"username": "alice", "password": TEST_PASSWORD},
        headers={"DPoP": key.proof("POST", "http://127.0.0.1:8080/v1/auth/login")},
    )
    token = (await response.json())["access_token"]
    forwarded = {
        "X-Forwarded-Method": "DELETE",
        "X-Forwarded-Proto": "https",
        "X-Forwarded-Host": "api.example.com",
        "X-Forwarded-Uri": "/orders/7",
    }
    proof = key.proof("DELETE", "https://api.example.com/orders/7", token)
    verified = await client.get(
        URL(forward_auth["address"]).path,
        headers={**forwarded, "Authorization": f"DPoP {token}", "DPoP": proof},
    )
    assert verified.status == 200
