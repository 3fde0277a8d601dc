"""/oauth/token, /oauth/revoke, /oauth/introspect and the RFC 8414 metadata.

One service, two surfaces: a chain rotates the same way through /v1 and /oauth, and an
unchanged standard client (authlib) refreshes and revokes against authsvc.
"""

from __future__ import annotations

import base64
import urllib.parse
from typing import Any

import pytest
from authlib.integrations.httpx_client import AsyncOAuth2Client
from authlib.oauth2.rfc8414 import AuthorizationServerMetadata
from support import FakeClock, bearer, login, register
from support import refresh as v1_refresh

FORM = "application/x-www-form-urlencoded"
INTROSPECTION = {"introspection_clients": (("gateway", "s3cret"), ("other", "pw"))}


# Ids and secrets with every character that form-urlencoding may or may not escape.
SPECIAL = {"introspection_clients": (("gw-client_1.x~y", "gw-secret_1.2~3"), ("sp", "a b+c/d"))}


def basic(client_id: str, secret: str) -> dict[str, str]:
    """Basic credentials as `curl -u` sends them: the id and secret as they are."""
    raw = base64.b64encode(f"{client_id}:{secret}".encode()).decode()
    return {"Authorization": f"Basic {raw}"}


def percent_all(text: str) -> str:
    """Every byte %-escaped, as openid-client sends `gw%2Dsecret` for `gw-secret`."""
    return "".join(f"%{byte:02X}" for byte in text.encode())


def form_basic(client_id: str, secret: str) -> dict[str, str]:
    """Basic credentials as RFC 6749 §2.3.1 says: each form-urlencoded, then Base64."""
    return basic(urllib.parse.quote_plus(client_id), urllib.parse.quote_plus(secret))


async def token_request(client: Any, **form: str) -> Any:
    return await client.post("/oauth/token", data=form)


async def assert_oauth_error(response: Any, status: int, code: str) -> dict[str, Any]:
    assert response.status == status, await response.text()
    body: dict[str, Any] = await response.json()
    assert body["error"] == code
    assert isinstance(body["error_description"], str)
    return body


# POST /oauth/token


async def test_refresh_grant_returns_an_rfc_6749_token_response(client: Any) -> None:
    await register(client)
    pair = await login(client)
    response = await token_request(
        client, grant_type="refresh_token", refresh_token=pair["refresh_token"]
    )
    assert response.status == 200
    assert response.headers["Cache-Control"] == "no-store"
    assert response.headers["Pragma"] == "no-cache"
    body = await response.json()
    assert body["token_type"] == "Bearer"
    assert body["session_id"] == pair["session_id"]
    assert body["refresh_token"] != pair["refresh_token"]
    assert body["expires_in"] > 0
    assert body["refresh_expires_in"] > 0
    assert (await client.get("/v1/auth/me", headers=bearer(body))).status == 200


async def test_a_chain_rotates_across_both_surfaces(client: Any, clock: FakeClock) -> None:
    """Started on /v1, continued on /oauth, back on /v1: one chain, one grace, one replay."""
    await register(client)
    pair = await login(client)
    on_oauth = await (
        await token_request(client, grant_type="refresh_token", refresh_token=pair["refresh_token"])
    ).json()
    # The same token again on /v1, within the grace: the successor issued on /oauth.
    again = await (await v1_refresh(client, pair["refresh_token"])).json()
    assert again["refresh_token"] == on_oauth["refresh_token"]
    on_v1 = await (await v1_refresh(client, on_oauth["refresh_token"])).json()
    clock.advance(11)
    # A replay on /oauth ends the session whose chain went on through /v1.
    replay = await token_request(
        client, grant_type="refresh_token", refresh_token=on_oauth["refresh_token"]
    )
    await assert_oauth_error(replay, 400, "invalid_grant")
    await assert_oauth_error(
        await token_request(
            client, grant_type="refresh_token", refresh_token=on_v1["refresh_token"]
        ),
        400,
        "invalid_grant",
    )


async def test_invalid_grant_is_400_on_oauth_and_401_on_v1(client: Any) -> None:
    await assert_oauth_error(
        await token_request(client, grant_type="refresh_token", refresh_token="nope"),
        400,
        "invalid_grant",
    )
    assert (await v1_refresh(client, "nope")).status == 401


async def test_token_requests_missing_a_parameter_are_invalid_requests(client: Any) -> None:
    await assert_oauth_error(
        await token_request(client, grant_type="refresh_token"), 400, "invalid_request"
    )
    await assert_oauth_error(await token_request(client), 400, "invalid_request")
    # RFC 6749 §3.2: a parameter without a value counts as omitted.
    empty = await token_request(client, grant_type="refresh_token", refresh_token="")
    await assert_oauth_error(empty, 400, "invalid_request")


async def test_unknown_grant_types_are_unsupported(client: Any) -> None:
    for grant in ("authorization_code", "client_credentials", "password", "x"):
        response = await token_request(client, grant_type=grant, username="a", password="b")
        await assert_oauth_error(response, 400, "unsupported_grant_type")


async def test_password_grant_works_only_when_enabled(make_client: Any) -> None:
    client = await make_client(password_grant=True)
    await register(client)
    from support import TEST_PASSWORD

    response = await token_request(
        client, grant_type="password", username="alice", password=TEST_PASSWORD
    )
    assert response.status == 200
    assert response.headers["Cache-Control"] == "no-store"
    assert (await client.get("/v1/auth/me", headers=bearer(await response.json()))).status == 200
    wrong = await token_request(client, grant_type="password", username="alice", password="x" * 12)
    await assert_oauth_error(wrong, 400, "invalid_grant")
    missing = await token_request(client, grant_type="password", username="alice")
    await assert_oauth_error(missing, 400, "invalid_request")


async def test_unknown_parameters_are_ignored_and_repeated_ones_refused(client: Any) -> None:
    await register(client)
    pair = await login(client)
    ok = await token_request(
        client, grant_type="refresh_token", refresh_token=pair["refresh_token"], client_id="app",
        scope="openid",
    )  # fmt: skip
    assert ok.status == 200
    repeated = await client.post(
        "/oauth/token",
        data=b"grant_type=refresh_token&grant_type=password&refresh_token=x",
        headers={"Content-Type": FORM},
    )
    await assert_oauth_error(repeated, 400, "invalid_request")


async def test_oauth_endpoints_take_forms_only(client: Any) -> None:
    for path in ("/oauth/token", "/oauth/revoke"):
        response = await client.post(path, json={"grant_type": "refresh_token", "token": "x"})
        await assert_oauth_error(response, 415, "unsupported_media_type")


# POST /oauth/revoke


async def test_revoking_a_refresh_token_ends_its_session(client: Any) -> None:
    await register(client)
    pair = await login(client)
    other = await login(client)
    response = await client.post(
        "/oauth/revoke", data={"token": pair["refresh_token"], "token_type_hint": "refresh_token"}
    )
    assert response.status == 200
    assert await response.read() == b""
    assert (await client.get("/v1/auth/me", headers=bearer(pair))).status == 401
    assert (await v1_refresh(client, pair["refresh_token"])).status == 401
    assert (await client.get("/v1/auth/me", headers=bearer(other))).status == 200


async def test_revoking_an_access_token_ends_its_session_whatever_the_hint(client: Any) -> None:
    await register(client)
    pair = await login(client)
    response = await client.post(
        "/oauth/revoke", data={"token": pair["access_token"], "token_type_hint": "refresh_token"}
    )
    assert response.status == 200
    assert (await v1_refresh(client, pair["refresh_token"])).status == 401


async def test_revoking_an_unknown_token_is_200_and_changes_nothing(client: Any) -> None:
    await register(client)
    pair = await login(client)
    forged = pair["refresh_token"][:-4] + "AAAA"
    for token in ("garbage", forged, pair["access_token"][:-4] + "AAAA"):
        assert (await client.post("/oauth/revoke", data={"token": token})).status == 200
    assert (await client.get("/v1/auth/me", headers=bearer(pair))).status == 200


async def test_revoke_without_a_token_is_an_invalid_request(client: Any) -> None:
    await assert_oauth_error(
        await client.post("/oauth/revoke", data={"token_type_hint": "access_token"}),
        400,
        "invalid_request",
    )


# POST /oauth/introspect


async def test_introspection_needs_the_credentials_of_a_configured_client(
    make_client: Any,
) -> None:
    client = await make_client(**INTROSPECTION)
    for headers in (
        {},
        basic("gateway", "wrong"),
        basic("nobody", "s3cret"),
        {"Authorization": "Basic !!"},
    ):
        response = await client.post("/oauth/introspect", data={"token": "x"}, headers=headers)
        body = await assert_oauth_error(response, 401, "invalid_client")
        assert body["error"] == "invalid_client"
        assert response.headers["WWW-Authenticate"] == 'Basic realm="authsvc"'
    ok = await client.post("/oauth/introspect", data={"token": "x"}, headers=basic("other", "pw"))
    assert ok.status == 200


async def test_basic_credentials_are_form_urldecoded_as_rfc_6749_says(make_client: Any) -> None:
    """§2.3.1: `gw%2Dsecret` is `gw-secret`; `-_.~` need no escape, so raw works too."""
    client = await make_client(**SPECIAL)
    client_id, secret = SPECIAL["introspection_clients"][0]
    for headers in (
        basic(client_id, secret),  # curl -u: nothing escaped
        form_basic(client_id, secret),  # quote_plus leaves -_.~ as they are
        basic(percent_all(client_id), percent_all(secret)),  # openid-client: all escaped
        basic(client_id, percent_all(secret)),
        {"Authorization": "basic " + basic(client_id, secret)["Authorization"][6:]},
    ):
        response = await client.post("/oauth/introspect", data={"token": "x"}, headers=headers)
        assert response.status == 200, (headers, await response.text())
    # A space is `+` or `%20` once encoded; `+` itself is `%2B`, `/` `%2F`.
    for headers in (form_basic("sp", "a b+c/d"), basic("sp", "a%20b%2Bc%2Fd")):
        response = await client.post("/oauth/introspect", data={"token": "x"}, headers=headers)
        assert response.status == 200, (headers, await response.text())


async def test_form_decoding_never_turns_a_wrong_secret_into_a_right_one(
    make_client: Any,
) -> None:
    client = await make_client(**SPECIAL)
    for headers in (
        basic("sp", "a b+c/d"),  # a raw `+` is a space once decoded: "a b c/d"
        basic(percent_all("gw-client_1.x~y"), percent_all("gw-secret_1.2~4")),
        basic("gw-client_1.x~y", "gw%2Dsecret%5F1%2E2%7E"),  # a prefix of the secret
        basic("gw-client_1.x~y", "gw-secret_1.2~3%"),
        basic("gw-client_1.x~y", "%FF"),  # not UTF-8 once decoded
        basic("sp", "gw-secret_1.2~3"),  # another client's secret
        {"Authorization": "Bearer " + basic("sp", "a b+c/d")["Authorization"][6:]},
        {"Authorization": "Basic " + base64.b64encode(b"no colon").decode()},
        {"Authorization": "Basic " + base64.b64encode(b"sp:\xff").decode()},
    ):
        response = await client.post("/oauth/introspect", data={"token": "x"}, headers=headers)
        await assert_oauth_error(response, 401, "invalid_client")
        assert response.headers["WWW-Authenticate"] == 'Basic realm="authsvc"'


async def test_introspection_refuses_everyone_when_no_client_is_configured(client: Any) -> None:
    response = await client.post(
        "/oauth/introspect", data={"token": "x"}, headers=basic("gateway", "s3cret")
    )
    await assert_oauth_error(response, 401, "invalid_client")


async def test_an_active_access_token_is_described(make_client: Any) -> None:
    client = await make_client(**INTROSPECTION)
    user = await register(client)
    pair = await login(client)
    response = await client.post(
        "/oauth/introspect",
        data={"token": pair["access_token"]},
        headers=basic("gateway", "s3cret"),
    )
    assert response.status == 200
    assert response.headers["Cache-Control"] == "no-store"
    body = await response.json()
    assert body["active"] is True
    assert body["sub"] == user["user_id"]
    assert body["username"] == "alice"
    assert body["sid"] == pair["session_id"]
    assert body["client_id"] == "authsvc"
    assert body["token_type"] == "Bearer"
    assert body["exp"] - body["iat"] == 900


async def test_a_revoked_or_foreign_token_is_inactive_and_says_nothing_more(
    make_client: Any,
) -> None:
    client = await make_client(**INTROSPECTION)
    await register(client)
    pair = await login(client)
    assert (await client.post("/v1/auth/logout", headers=bearer(pair))).status == 204
    for token in (pair["access_token"], pair["refresh_token"], "garbage"):
        response = await client.post(
            "/oauth/introspect", data={"token": token}, headers=basic("gateway", "s3cret")
        )
        assert response.status == 200
        assert await response.json() == {"active": False}


# GET /.well-known/oauth-authorization-server


async def test_metadata_names_every_endpoint_under_the_issuer(make_client: Any) -> None:
    client = await make_client(issuer="https://auth.example.com/")
    response = await client.get("/.well-known/oauth-authorization-server")
    assert response.status == 200
    body = await response.json()
    assert body["issuer"] == "https://auth.example.com"
    assert body["token_endpoint"] == "https://auth.example.com/oauth/token"
    assert body["revocation_endpoint"] == "https://auth.example.com/oauth/revoke"
    assert body["introspection_endpoint"] == "https://auth.example.com/oauth/introspect"
    assert body["jwks_uri"] == "https://auth.example.com/.well-known/jwks.json"
    assert body["grant_types_supported"] == ["refresh_token"]
    assert body["response_types_supported"] == ["none"]
    assert body["token_endpoint_auth_methods_supported"] == ["none"]
    enabled = await make_client(password_grant=True)
    metadata = await (await enabled.get("/.well-known/oauth-authorization-server")).json()
    assert metadata["grant_types_supported"] == ["refresh_token", "password"]


async def test_authlib_validates_the_metadata_of_an_https_issuer(
    make_client: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """RFC 8414 as authlib checks it, https strictly required (no insecure transport)."""
    monkeypatch.delenv("AUTHLIB_INSECURE_TRANSPORT", raising=False)
    for overrides in ({}, {"password_grant": True}):
        client = await make_client(issuer="https://auth.example.com", **overrides)
        body = await (await client.get("/.well-known/oauth-authorization-server")).json()
        AuthorizationServerMetadata(body).validate()
    # What it refuses: an http issuer off loopback, and the `[]` authsvc used to publish.
    with pytest.raises(ValueError, match="https"):
        AuthorizationServerMetadata(dict(body, issuer="http://auth.example.com")).validate()
    with pytest.raises(ValueError, match="response_types_supported"):
        AuthorizationServerMetadata(dict(body, response_types_supported=[])).validate()


async def test_authlib_validates_the_metadata_of_the_default_loopback_issuer(
    client: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The default issuer is http://HOST:PORT. RFC 8414 wants https; recent authlib lets
    http through on loopback (RFC 8252 §7.3), older only with AUTHLIB_INSECURE_TRANSPORT,
    which turns off the scheme checks alone: every other check stays."""
    monkeypatch.setenv("AUTHLIB_INSECURE_TRANSPORT", "1")
    body = await (await client.get("/.well-known/oauth-authorization-server")).json()
    assert body["issuer"].startswith("http://")
    AuthorizationServerMetadata(body).validate()


# A standard OAuth client, unchanged


async def test_authlib_oauth2_client_refreshes_and_revokes_unchanged(client: Any) -> None:
    await register(client)
    pair = await login(client)
    base = str(client.make_url("")).rstrip("/")
    async with AsyncOAuth2Client(
        client_id="mobile-app", token_endpoint_auth_method="none", token=dict(pair)
    ) as oauth:
        token = await oauth.refresh_token(
            f"{base}/oauth/token", refresh_token=pair["refresh_token"]
        )
        assert token["refresh_token"] != pair["refresh_token"]
        me = await oauth.get(f"{base}/v1/auth/me")
        assert me.status_code == 200
        assert me.json()["session_id"] == pair["session_id"]
        revoked = await oauth.revoke_token(
            f"{base}/oauth/revoke", token=token["refresh_token"], token_type_hint="refresh_token"
        )
        assert revoked.status_code == 200
    assert (await v1_refresh(client, token["refresh_token"])).status == 401
    assert (await client.get("/v1/auth/me", headers=bearer(token))).status == 401


async def test_authlib_introspects_with_client_secret_basic_unchanged(make_client: Any) -> None:
    """authlib sends the id and secret as they are (openid-client encodes them: see
    tests/test_openid_client.py); with `-_.~` both are accepted."""
    client = await make_client(**SPECIAL)
    await register(client)
    pair = await login(client)
    base = str(client.make_url("")).rstrip("/")
    client_id, secret = SPECIAL["introspection_clients"][0]
    async with AsyncOAuth2Client(
        client_id=client_id, client_secret=secret, token_endpoint_auth_method="client_secret_basic"
    ) as oauth:
        response = await oauth.introspect_token(
            f"{base}/oauth/introspect", token=pair["access_token"]
        )
        assert response.status_code == 200, response.text
        assert response.json()["active"] is True
        assert response.json()["sid"] == pair["session_id"]
    async with AsyncOAuth2Client(
        client_id=client_id,
        client_secret=secret + "x",
        token_endpoint_auth_method="client_secret_basic",
    ) as wrong:
        refused = await wrong.introspect_token(
            f"{base}/oauth/introspect", token=pair["access_token"]
        )
        assert refused.status_code == 401
        assert refused.headers["WWW-Authenticate"] == 'Basic realm="authsvc"'
