"""Attacks on the token surface, one test each, named for what the attacker tries.

RFC 8725 (JWT best current practices) for access tokens, confusion between the two kinds
of token, bytes in headers that once reached a 500, and a hypothesis state machine that
interleaves logins, refreshes, replays, logouts and revocations against a model of the
sessions. Every request goes through HTTP to an app on the suite's Redis.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import hashlib
import hmac
import ipaddress
import json
import threading
from collections.abc import Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import hypothesis
import hypothesis.strategies as st
import jwt
import pytest
import redis
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from cryptography.hazmat.primitives import serialization
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from support import TEST_PASSWORD, FakeClock, bearer, fast_settings, login, register
from support import refresh as refresh_request

from authsvc.app import create_app
from authsvc.config import Settings
from authsvc.keys import KeyRing, SigningKey, generate_private_key, write_key_file

T = TypeVar("T")

BEARER_ROUTES = [
    ("GET", "/v1/auth/me"),
    ("GET", "/v1/auth/verify"),
    ("GET", "/v1/auth/sessions"),
    ("POST", "/v1/auth/logout"),
    ("POST", "/v1/auth/logout-all"),
    ("DELETE", "/v1/auth/sessions/AAAAAAAAAAAAAAAAAAAAAA"),
]


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _craft(header: dict[str, Any], claims: dict[str, Any], signature: str = "") -> str:
    """A JWS compact serialisation with any header, as an attacker writes one by hand."""
    return ".".join(
        [_b64(json.dumps(header).encode()), _b64(json.dumps(claims).encode()), signature]
    )


def _signed(claims: dict[str, Any], key_ring: KeyRing) -> str:
    """Claims signed with the app's own key, as a real access token would be."""
    key = key_ring.current
    return jwt.encode(
        claims, key.private_key, algorithm="EdDSA", headers={"kid": key.kid, "typ": "at+jwt"}
    )


async def _assert_invalid_token(response: Any) -> None:
    assert response.status == 401, await response.text()
    assert (await response.json())["error"] == "invalid_token"
    assert response.headers["WWW-Authenticate"] == 'Bearer error="invalid_token"'


async def _me(client: Any, token: str) -> Any:
    return await client.get("/v1/auth/me", headers={"Authorization": f"Bearer {token}"})


async def _session(client: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """Register alice and log her in; return her login pair and its verified claims."""
    await register(client)
    pair = await login(client)
    claims = jwt.decode(pair["access_token"], options={"verify_signature": False})
    return pair, claims


async def _raw_request(client: Any, request: bytes) -> bytes:
    """Send bytes no HTTP client library would send, and return the raw response."""
    reader, writer = await asyncio.open_connection(client.host, client.port)
    try:
        writer.write(request)
        await writer.drain()
        return await reader.read()
    finally:
        writer.close()
        await writer.wait_closed()


# -- RFC 8725 §2.1, §3.1: the algorithm ---------------------------------------------------


async def test_alg_none_token_is_refused(client: Any, key_ring: KeyRing) -> None:
    _, claims = await _session(client)
    for alg in ["none", "None", "NONE"]:
        token = _craft({"alg": alg, "kid": key_ring.current.kid, "typ": "at+jwt"}, claims)
        await _assert_invalid_token(await _me(client, token))


async def test_hs256_signed_with_the_public_key_is_refused(client: Any, key_ring: KeyRing) -> None:
    """The classic confusion: the public key (PEM or JWK bytes) used as an HMAC secret."""
    _, claims = await _session(client)
    public_pem = key_ring.current.public_key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    public_raw = key_ring.current.public_key.public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    header = {"alg": "HS256", "kid": key_ring.current.kid, "typ": "at+jwt"}
    for secret in [public_pem, public_raw, json.dumps(key_ring.jwks["keys"][0]).encode()]:
        signing_input = _craft(header, claims).rstrip(".")
        mac = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
        await _assert_invalid_token(await _me(client, f"{signing_input}.{_b64(mac)}"))


async def test_token_naming_another_alg_of_a_mixed_key_ring_is_refused(
    client_for: Any, settings: Settings, aiohttp_client: Any, clock: FakeClock
) -> None:
    """A token is verified with the algorithm of the key its kid names (RFC 8725 §3.1).

    With an EdDSA and an RS256 key in one ring, a header naming RS256 with the EdDSA key's
    kid once made PyJWT try an RSA verification with an Ed25519 key: a 500.
    """
    # The EdDSA key was rotated in long enough ago to sign; the RSA key is still published.
    eddsa = SigningKey.create(generate_private_key("EdDSA"), created_at=clock.now - 600)
    rsa_key = SigningKey.create(generate_private_key("RS256"), created_at=0)
    ring = KeyRing([rsa_key, eddsa])
    client = await aiohttp_client(create_app(settings, clock=clock, key_ring=ring))
    pair, claims = await _session(client)
    assert jwt.get_unverified_header(pair["access_token"])["kid"] == eddsa.kid
    # Signed by the RSA key, but naming the EdDSA key's kid: each alg meets the other's key.
    for signer, kid in [(rsa_key, eddsa.kid), (eddsa, rsa_key.kid)]:
        token = jwt.encode(
            claims, signer.private_key, algorithm=signer.alg, headers={"kid": kid, "typ": "at+jwt"}
        )
        for method, path in BEARER_ROUTES:
            response = await client.request(
                method, path, headers={"Authorization": f"Bearer {token}"}
            )
            await _assert_invalid_token(response)
    # The rightful tokens of both keys still verify.
    legacy = jwt.encode(
        claims,
        rsa_key.private_key,
        algorithm="RS256",
        headers={"kid": rsa_key.kid, "typ": "at+jwt"},
    )
    assert (await _me(client, legacy)).status == 200
    assert (await client.get("/v1/auth/me", headers=bearer(pair))).status == 200


# -- RFC 8725 §3.10: the key -----------------------------------------------------------------


@pytest.mark.parametrize(
    "kid",
    [
        "../../../../dev/null",
        "/etc/passwd",
        "' OR '1'='1",
        "x' UNION SELECT 'secret",
        "",
        "unknown-kid",
        "*",
    ],
)
async def test_kid_injection_is_refused(client: Any, key_ring: KeyRing, kid: str) -> None:
    """A kid is looked up in the ring, never used as a path, a query or a pattern."""
    _, claims = await _session(client)
    for signer_key in [key_ring.current.private_key, generate_private_key("EdDSA")]:
        token = jwt.encode(
            claims, signer_key, algorithm="EdDSA", headers={"kid": kid, "typ": "at+jwt"}
        )
        await _assert_invalid_token(await _me(client, token))
    # HS256 with an empty secret, the usual companion of a /dev/null kid.
    signing_input = _craft({"alg": "HS256", "kid": kid, "typ": "at+jwt"}, claims).rstrip(".")
    mac = hmac.new(b"", signing_input.encode(), hashlib.sha256).digest()
    await _assert_invalid_token(await _me(client, f"{signing_input}.{_b64(mac)}"))


async def test_jku_and_x5u_headers_are_ignored(client: Any, key_ring: KeyRing) -> None:
    """Keys come from the ring only: a header pointing at the attacker's JWKS changes nothing."""
    _, claims = await _session(client)
    attacker = generate_private_key("EdDSA")
    for extra in [
        {"jku": "https://attacker.example/jwks.json"},
        {"x5u": "https://attacker.example/cert.pem"},
        {"jwk": {"kty": "OKP", "crv": "Ed25519", "x": _b64(b"\0" * 32)}},
    ]:
        headers = {"kid": key_ring.current.kid, "typ": "at+jwt", **extra}
        forged = jwt.encode(claims, attacker, algorithm="EdDSA", headers=headers)
        await _assert_invalid_token(await _me(client, forged))
    # A rightful signature with the same extra header verifies: the header is not used.
    headers = {"kid": key_ring.current.kid, "typ": "at+jwt", "jku": "https://attacker.example/"}
    signed = jwt.encode(claims, key_ring.current.private_key, algorithm="EdDSA", headers=headers)
    assert (await _me(client, signed)).status == 200


# -- RFC 8725 §3.8, §3.9, §3.11: what the token is for --------------------------------------


@pytest.mark.parametrize("typ", ["JWT", "jwt", "at+JWT ", "refresh+jwt", "id_token+jwt"])
async def test_token_of_another_typ_is_refused(client: Any, key_ring: KeyRing, typ: str) -> None:
    _, claims = await _session(client)
    token = jwt.encode(
        claims, key_ring.current.private_key, algorithm="EdDSA",
        headers={"kid": key_ring.current.kid, "typ": typ},
    )  # fmt: skip
    await _assert_invalid_token(await _me(client, token))


@pytest.mark.parametrize(
    "changes",
    [
        {"aud": "another-service"},
        {"aud": ["another-service"]},
        {"iss": "https://attacker.example"},
        {"iss": None},
    ],
)
async def test_token_for_another_audience_or_issuer_is_refused(
    client: Any, key_ring: KeyRing, changes: dict[str, Any]
) -> None:
    _, claims = await _session(client)
    claims = {k: v for k, v in {**claims, **changes}.items() if v is not None}
    token = _signed(claims, key_ring)
    await _assert_invalid_token(await _me(client, token))


async def test_expired_token_is_refused(client: Any, key_ring: KeyRing) -> None:
    _, claims = await _session(client)
    claims = {**claims, "exp": claims["iat"] - 5}
    token = _signed(claims, key_ring)
    await _assert_invalid_token(await _me(client, token))


async def test_not_yet_valid_token_is_refused(client: Any, key_ring: KeyRing) -> None:
    """An nbf in the future is honoured (PyJWT checks it when present)."""
    _, claims = await _session(client)
    claims = {**claims, "nbf": claims["iat"] + 3600}
    token = _signed(claims, key_ring)
    await _assert_invalid_token(await _me(client, token))


async def test_tampered_payload_is_refused(client: Any) -> None:
    """Another user's id, another session, a later exp: any edit breaks the signature."""
    pair, claims = await _session(client)
    bob = await register(client, "bob")
    bob_pair = await login(client, "bob")
    header, _, signature = pair["access_token"].split(".")
    for changes in [
        {"sub": bob["user_id"], "sid": bob_pair["session_id"]},
        {"exp": claims["exp"] + 86_400},
        {"client_id": "admin"},
    ]:
        payload = _b64(json.dumps({**claims, **changes}).encode())
        await _assert_invalid_token(await _me(client, f"{header}.{payload}.{signature}"))
    # Signature bytes changed, payload intact.
    flipped = signature[:-4] + ("AAAA" if not signature.endswith("AAAA") else "BBBB")
    await _assert_invalid_token(
        await _me(client, f"{header}.{pair['access_token'].split('.')[1]}.{flipped}")
    )


# -- a stolen signing key ---------------------------------------------------------------


async def test_a_token_lasting_longer_than_the_access_ttl_is_refused(
    client: Any, key_ring: KeyRing, settings: Settings
) -> None:
    """A stolen key signs whatever exp its thief likes: ten years is not one of ours."""
    _, claims = await _session(client)
    iat = claims["iat"]
    for lifetime in [10 * 365 * 86_400, settings.access_token_ttl + 2]:
        token = _signed({**claims, "exp": iat + lifetime}, key_ring)
        for method, path in BEARER_ROUTES:
            response = await client.request(
                method, path, headers={"Authorization": f"Bearer {token}"}
            )
            await _assert_invalid_token(response)
    # One second of leeway, as on exp.
    lasting = _signed({**claims, "exp": iat + settings.access_token_ttl + 1}, key_ring)
    assert (await _me(client, lasting)).status == 200


async def test_a_token_of_a_deleted_key_is_refused_though_it_verified_before(
    aiohttp_client: Any, settings: Settings, clock: FakeClock, tmp_path: Path
) -> None:
    """Deleting a stolen key's file ends its tokens on every route, also those the
    instance already verified and holds in its cache of verified tokens."""
    keys_dir = tmp_path / "keys"
    stolen = SigningKey.create(generate_private_key("EdDSA"), created_at=clock.now - 86_400)
    current = SigningKey.create(generate_private_key("EdDSA"), created_at=clock.now - 600)
    for key in (stolen, current):
        write_key_file(keys_dir, key)
    settings = dataclasses.replace(settings, keys_dir=keys_dir, keys_poll_interval=0.05)
    ring = KeyRing.from_directory(keys_dir)
    client = await aiohttp_client(create_app(settings, clock=clock, key_ring=ring))
    _, claims = await _session(client)
    forged = jwt.encode(
        claims, stolen.private_key, algorithm="EdDSA", headers={"kid": stolen.kid, "typ": "at+jwt"}
    )
    assert (await _me(client, forged)).status == 200  # still published: it signed recently
    (keys_dir / f"{stolen.kid}.pem").unlink()
    for _ in range(200):
        jwks = await (await client.get("/.well-known/jwks.json")).json()
        if stolen.kid not in {key["kid"] for key in jwks["keys"]}:
            break
        await asyncio.sleep(0.05)
    else:
        raise AssertionError("the deleted key stayed published")
    for method, path in BEARER_ROUTES:
        response = await client.request(method, path, headers={"Authorization": f"Bearer {forged}"})
        await _assert_invalid_token(response)


async def test_a_token_of_a_retired_key_is_refused_though_it_verified_before(
    aiohttp_client: Any, settings: Settings, clock: FakeClock
) -> None:
    """A key retired by the rotation schedule stops verifying when it retires, cached
    tokens included, whether or not anything was signed or fetched meanwhile."""
    old = SigningKey.create(generate_private_key("EdDSA"), created_at=clock.now - 86_400)
    current = SigningKey.create(generate_private_key("EdDSA"), created_at=clock.now - 600)
    client = await aiohttp_client(
        create_app(settings, clock=clock, key_ring=KeyRing([old, current]))
    )
    _, claims = await _session(client)
    token = jwt.encode(
        claims, old.private_key, algorithm="EdDSA", headers={"kid": old.kid, "typ": "at+jwt"}
    )
    assert (await _me(client, token)).status == 200
    # current signs since 600 - (JWKS_MAX_AGE + poll) s ago; old stays published for the
    # access-token lifetime plus margins after that.
    clock.advance(settings.access_token_ttl)
    await _assert_invalid_token(await _me(client, token))


# -- one kind of token where the other belongs -------------------------------------------


async def test_refresh_token_used_as_a_bearer_token_is_refused(client: Any) -> None:
    pair, _ = await _session(client)
    for method, path in BEARER_ROUTES:
        response = await client.request(
            method, path, headers={"Authorization": f"Bearer {pair['refresh_token']}"}
        )
        await _assert_invalid_token(response)
    assert (await refresh_request(client, pair["refresh_token"])).status == 200


async def test_access_token_used_as_a_refresh_token_is_refused(client: Any) -> None:
    pair, _ = await _session(client)
    response = await refresh_request(client, pair["access_token"])
    assert response.status == 401
    assert (await response.json())["error"] == "invalid_grant"
    assert (await client.get("/v1/auth/me", headers=bearer(pair))).status == 200


# -- bytes in headers ------------------------------------------------------------------------


@pytest.mark.parametrize(("method", "path"), BEARER_ROUTES)
async def test_non_utf8_bytes_in_a_bearer_header_are_refused(
    client: Any, method: str, path: str
) -> None:
    """aiohttp passes non-UTF-8 header bytes on as lone surrogates; they once gave a 500."""
    pair, _ = await _session(client)
    token = pair["access_token"].encode()
    for bad in [b"\xff\xfe" + token, token[:20] + b"\xc3\x28" + token[20:], b"\xe9t\xe9"]:
        raw = await _raw_request(
            client,
            f"{method} {path} HTTP/1.1\r\nHost: authsvc\r\nConnection: close\r\n".encode()
            + b"Authorization: Bearer " + bad + b"\r\nContent-Length: 0\r\n\r\n",
        )  # fmt: skip
        status_line, _, rest = raw.partition(b"\r\n")
        assert status_line.split()[1] == b"401", raw
        assert b'WWW-Authenticate: Bearer error="invalid_token"' in rest
        assert b'"error":"invalid_token"' in rest


def _raw_post(path: str, body: bytes, content_type: str, *header_lines: bytes) -> bytes:
    """A POST as bytes, with header lines no HTTP client library would send."""
    return (
        f"POST {path} HTTP/1.1\r\nHost: authsvc\r\nConnection: close\r\n"
        f"Content-Type: {content_type}\r\nContent-Length: {len(body)}\r\n".encode()
        + b"".join(line + b"\r\n" for line in header_lines)
        + b"\r\n"
        + body
    )


def _status_and_body(raw: bytes) -> tuple[int, Any]:
    head, _, body = raw.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body)


async def _sessions_of(client: Any, pair: dict[str, Any]) -> list[dict[str, Any]]:
    response = await client.get("/v1/auth/sessions", headers=bearer(pair))
    assert response.status == 200, await response.text()
    sessions: list[dict[str, Any]] = (await response.json())["sessions"]
    return sessions


async def test_a_latin1_user_agent_at_login_is_kept_with_replacement_characters(
    client: Any,
) -> None:
    """``café`` in ISO-8859-1 reaches aiohttp's handlers as a lone surrogate, which Redis's
    client cannot encode: it once gave a 500 once the password had checked out."""
    await register(client)
    credentials = json.dumps({"username": "alice", "password": TEST_PASSWORD}).encode()
    raw = await _raw_request(
        client,
        _raw_post("/v1/auth/login", credentials, "application/json", b"User-Agent: caf\xe9/1.0"),
    )
    status, pair = _status_and_body(raw)
    assert status == 200, raw
    assert [s["user_agent"] for s in await _sessions_of(client, pair)] == ["caf\ufffd/1.0"]


async def test_a_latin1_user_agent_on_the_password_grant_is_kept_with_replacement_characters(
    make_client: Any,
) -> None:
    client = await make_client(password_grant=True)
    await register(client)
    form = f"grant_type=password&username=alice&password={TEST_PASSWORD}".encode()
    raw = await _raw_request(
        client,
        _raw_post(
            "/oauth/token", form, "application/x-www-form-urlencoded", b"User-Agent: \xff\xfe"
        ),
    )
    status, pair = _status_and_body(raw)
    assert status == 200, raw
    assert [s["user_agent"] for s in await _sessions_of(client, pair)] == ["\ufffd\ufffd"]


@pytest.mark.parametrize(
    "forwarded",
    [b"fe80::1%caf\xe9", b"203.0.113.9\xff", b"fe80::1%eth0", b"\xe9"],
)
async def test_an_x_forwarded_for_that_is_no_plain_address_is_not_stored(
    make_client: Any, forwarded: bytes
) -> None:
    """Behind a trusted proxy the hop is stored with the session: not UTF-8, or an IPv6
    scope (any text after a %), it is no client address, and the peer's is kept."""
    client = await make_client(trusted_proxies=(ipaddress.ip_network("127.0.0.1/32"),))
    await register(client)
    credentials = json.dumps({"username": "alice", "password": TEST_PASSWORD}).encode()
    raw = await _raw_request(
        client,
        _raw_post(
            "/v1/auth/login", credentials, "application/json", b"X-Forwarded-For: " + forwarded
        ),
    )
    status, pair = _status_and_body(raw)
    assert status == 200, raw
    assert [s["ip"] for s in await _sessions_of(client, pair)] == ["127.0.0.1"]
    # A plain address from the same proxy is the client's.
    proxied = await client.post(
        "/v1/auth/login",
        json={"username": "alice", "password": TEST_PASSWORD},
        headers={"X-Forwarded-For": "203.0.113.9"},
    )
    assert proxied.status == 200
    assert "203.0.113.9" in [s["ip"] for s in await _sessions_of(client, pair)]


# -- a stateful model of sessions ----------------------------------------------------------


class AppDriver:
    """A real app on the suite's Redis, served from an event loop in a thread of its own,
    so that hypothesis's synchronous state machine can drive it request by request."""

    def __init__(self, settings: Settings, clock: FakeClock, key_ring: KeyRing) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self._client = self._run(self._start(create_app(settings, clock=clock, key_ring=key_ring)))

    @staticmethod
    async def _start(app: web.Application) -> TestClient[web.Request, web.Application]:
        client: TestClient[web.Request, web.Application] = TestClient(TestServer(app))
        await client.start_server()
        return client

    def _run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout=60)

    def request(self, method: str, path: str, **kwargs: Any) -> tuple[int, dict[str, Any]]:
        async def send() -> tuple[int, dict[str, Any]]:
            async with self._client.request(method, path, **kwargs) as response:
                body = await response.json() if response.content_type.endswith("json") else {}
                assert response.status < 500, body
                return response.status, body

        return self._run(send())

    def close(self) -> None:
        self._run(self._client.close())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()


@dataclass
class ModelSession:
    """What the model expects of one session."""

    access_token: str
    issued_at: int  # of the access token: sensitive actions need it recent
    refresh_token: str
    used: list[str] = field(default_factory=list)  # the chain's used refresh tokens
    rotated_at: int | None = None  # when `used[-1]` was rotated
    live: bool = True


def _session_machine(
    driver: AppDriver, clock: FakeClock, redis_url: str, settings: Settings
) -> type[RuleBasedStateMachine]:
    grace, max_age = settings.refresh_reuse_grace, settings.sensitive_max_age

    class Sessions(RuleBasedStateMachine):
        """Login, refresh, replays (in and after the grace), logout, logout-all and
        deleting sessions, in any order, against a model of which sessions live."""

        def __init__(self) -> None:
            super().__init__()
            flush = redis.Redis.from_url(redis_url)
            flush.flushdb()
            flush.close()
            status, _ = driver.request("POST", "/v1/users", json=CREDENTIALS)
            assert status == 201
            # In login order: session ids are random, and hypothesis must be able to
            # replay the same choices onto the same sessions.
            self.sessions: dict[str, ModelSession] = {}

        def _bearer(self, sid: str) -> dict[str, str]:
            return {"Authorization": f"Bearer {self.sessions[sid].access_token}"}

        def _fresh(self, sid: str) -> bool:
            return clock.now - self.sessions[sid].issued_at <= max_age

        @rule()
        def login(self) -> None:
            status, pair = driver.request("POST", "/v1/auth/login", json=CREDENTIALS)
            assert status == 200
            assert pair["session_id"] not in self.sessions
            self.sessions[pair["session_id"]] = ModelSession(
                pair["access_token"], clock.now, pair["refresh_token"]
            )

        @precondition(lambda self: self.sessions)
        @rule(data=st.data())
        def refresh(self, data: st.DataObject) -> None:
            sid = data.draw(st.sampled_from(list(self.sessions)))
            session = self.sessions[sid]
            status, pair = driver.request(
                "POST", "/v1/auth/refresh", json={"refresh_token": session.refresh_token}
            )
            if not session.live:
                assert (status, pair["error"]) == (401, "invalid_grant")
                return
            assert status == 200 and pair["session_id"] == sid
            session.used.append(session.refresh_token)
            session.refresh_token, session.rotated_at = pair["refresh_token"], clock.now
            session.access_token, session.issued_at = pair["access_token"], clock.now

        @precondition(lambda self: any(s.used for s in self.sessions.values()))
        @rule(data=st.data(), after_grace=st.booleans())
        def replay_a_used_refresh_token(self, data: st.DataObject, after_grace: bool) -> None:
            sid = data.draw(st.sampled_from([s for s, m in self.sessions.items() if m.used]))
            session = self.sessions[sid]
            token = data.draw(st.sampled_from(session.used))
            if after_grace:
                clock.advance(grace + 1)
            status, pair = driver.request("POST", "/v1/auth/refresh", json={"refresh_token": token})
            in_grace = (
                token == session.used[-1]
                and session.rotated_at is not None
                and clock.now - session.rotated_at <= grace
            )
            if session.live and in_grace:
                # A retry: the same successor again, and the session goes on.
                assert status == 200
                assert pair["refresh_token"] == session.refresh_token
                return
            assert (status, pair["error"]) == (401, "invalid_grant")
            session.live = False  # a replay ends that session (and only that one)

        @precondition(lambda self: self.sessions)
        @rule(data=st.data())
        def logout(self, data: st.DataObject) -> None:
            sid = data.draw(st.sampled_from(list(self.sessions)))
            status, _ = driver.request("POST", "/v1/auth/logout", headers=self._bearer(sid))
            assert status == (204 if self.sessions[sid].live else 401)
            self.sessions[sid].live = False

        @precondition(lambda self: self.sessions)
        @rule(data=st.data())
        def logout_all(self, data: st.DataObject) -> None:
            sid = data.draw(st.sampled_from(list(self.sessions)))
            status, _ = driver.request("POST", "/v1/auth/logout-all", headers=self._bearer(sid))
            if not self.sessions[sid].live or not self._fresh(sid):
                assert status == 401
                return
            assert status == 204
            for session in self.sessions.values():
                session.live = False

        @precondition(lambda self: self.sessions)
        @rule(data=st.data())
        def delete_a_session(self, data: st.DataObject) -> None:
            caller = data.draw(st.sampled_from(list(self.sessions)))
            target = data.draw(st.sampled_from(list(self.sessions)))
            status, _ = driver.request(
                "DELETE", f"/v1/auth/sessions/{target}", headers=self._bearer(caller)
            )
            if not self.sessions[caller].live or (target != caller and not self._fresh(caller)):
                assert status == 401
            elif not self.sessions[target].live:
                assert status == 404
            else:
                assert status == 204
                self.sessions[target].live = False

        # The edges: the last second of the grace and of a token's freshness, and the next.
        @rule(seconds=st.sampled_from([1, grace, grace + 1, max_age, max_age + 1]))
        def time_passes(self, seconds: int) -> None:
            clock.advance(seconds)

        @invariant()
        def exactly_the_models_live_sessions_are_live(self) -> None:
            for sid, session in self.sessions.items():
                status, body = driver.request("GET", "/v1/auth/me", headers=self._bearer(sid))
                if session.live:
                    assert (status, body["session_id"]) == (200, sid)
                else:
                    assert status == 401

    return Sessions


CREDENTIALS = {"username": "alice", "password": TEST_PASSWORD}


@pytest.mark.slow  # a hypothesis state machine: seconds
def test_sessions_follow_the_model_under_any_interleaving(
    redis_url: str, key_ring: KeyRing
) -> None:
    """A hypothesis state machine: bounded in CI (a few examples of some dozen steps)."""
    clock = FakeClock()
    settings = fast_settings(redis_url=redis_url)
    driver = AppDriver(settings, clock, key_ring)
    try:
        run_state_machine_as_test(
            _session_machine(driver, clock, redis_url, settings),
            settings=hypothesis.settings(
                max_examples=25,
                stateful_step_count=30,
                deadline=None,
                database=None,
                suppress_health_check=[hypothesis.HealthCheck.too_slow],
            ),
        )
    finally:
        driver.close()
