"""DPoP (RFC 9449): proofs, sessions bound to a key at login, refreshes and resource calls
that need the key, the modes; in-process on the suite's Redis.

API.md "Sender-constrained sessions (DPoP, RFC 9449)" line by line; the tests say which.
The app's issuer is ``http://127.0.0.1:8080`` (``fast_settings``): proofs name it as the
base of ``htu``, whatever port the test server listens on.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
from collections.abc import Mapping
from typing import Any

import jwt
import pytest
import redis.asyncio
from contract import assert_documented
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm
from support import TEST_PASSWORD, FakeClock, assert_error, assert_invalid_token, register
from test_access_token_refusals import BEARER_ROUTES

from authsvc.errors import InvalidDpopProof
from authsvc.store import keyspace
from authsvc.tokens.dpop import JTI_TTL, normalized_url, thumbprint, verify_proof

ISSUER = "http://127.0.0.1:8080"
LOGIN, REFRESH, TOKEN, ME, VERIFY = (
    "/v1/auth/login", "/v1/auth/refresh", "/oauth/token", "/v1/auth/me", "/v1/auth/verify",
)  # fmt: skip
DPOP_CHALLENGE = 'DPoP error="invalid_dpop_proof", algs="ES256 EdDSA"'

# RFC 9449 §4.1 (Figure 4): a proof for the token endpoint, and §7.1 (Figure 12): one for
# a resource with the ath of the access token beside it. Literal, signatures included.
RFC_JWK_HEADER = (
    "eyJ0eXAiOiJkcG9wK2p3dCIsImFsZyI6IkVTMjU2IiwiandrIjp7Imt0eSI6IkVDIiwieCI6Imw4dEZyaHgtMzR0"
    "VjNoUklDUkRZOXpDa0RscEJoRjQyVVFVZldWQVdCRnMiLCJ5IjoiOVZFNGpmX09rX282NHpiVFRsY3VOSmFqSG10"
    "NnY5VERWclUwQ2R2R1JEQSIsImNydiI6IlAtMjU2In19"
)
RFC_TOKEN_PROOF = (
    RFC_JWK_HEADER + ".eyJqdGkiOiItQndDM0VTYzZhY2MybFRjIiwiaHRtIjoiUE9TVCIsImh0dSI6Imh0dHBzOi8v"
    "c2VydmVyLmV4YW1wbGUuY29tL3Rva2VuIiwiaWF0IjoxNTYyMjYyNjE2fQ.2-GxA6T8lP4vfrg8v-FdWP0A0zdrj8ig"
    "iMLvqRMUvwnQg4PtFLbdLXiOSsX0x7NVY-FNyJK70nfbV37xRZT3Lg"
)
RFC_RESOURCE_PROOF = (
    RFC_JWK_HEADER + ".eyJqdGkiOiJlMWozVl9iS2ljOC1MQUVCIiwiaHRtIjoiR0VUIiwiaHR1IjoiaHR0cHM6Ly9y"
    "ZXNvdXJjZS5leGFtcGxlLm9yZy9wcm90ZWN0ZWRyZXNvdXJjZSIsImlhdCI6MTU2MjI2MjYxOCwiYXRoIjoiZlVIeU8y"
    "cjJaM0RaNTNFc05yV0JiMHhXWG9hTnk1OUlpS0NBcWtzbVFFbyJ9.2oW9RP35yRqzhrtNP86L-Ey71EOptxRimPPToA1"
    "plemAgR6pxHF8y6-yqyVnmcw6Fy1dqd-jfxSYoMxhAJpLjA"
)
RFC_ACCESS_TOKEN = "Kz~8mXK1EalYznwH-LC-1fBAo.4Ljp~zsPE_NeO.gxU"
RFC_THUMBPRINT = "0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I"  # RFC 9449 §6.1


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class Key:
    """A client's DPoP key, and proofs by it; ``clock`` gives their iat."""

    def __init__(self, clock: FakeClock, alg: str = "EdDSA") -> None:
        self.clock, self.alg = clock, alg
        if alg == "ES256":
            self.private: Any = ec.generate_private_key(ec.SECP256R1())
            self.jwk: dict[str, Any] = ECAlgorithm.to_jwk(self.private.public_key(), as_dict=True)
        else:
            self.private = ed25519.Ed25519PrivateKey.generate()
            self.jwk = OKPAlgorithm.to_jwk(self.private.public_key(), as_dict=True)

    @property
    def jkt(self) -> str:
        return thumbprint(self.jwk)

    def proof(
        self,
        method: str,
        path: str,
        *,
        access_token: str | None = None,
        iat_offset: int = 0,
        header: Mapping[str, Any] | None = None,
        claims: Mapping[str, Any] | None = None,
    ) -> str:
        body: dict[str, Any] = {
            "jti": secrets.token_urlsafe(16),
            "htm": method,
            "htu": path if "://" in path else ISSUER + path,
            "iat": self.clock() + iat_offset,
        }
        if access_token is not None:
            body["ath"] = _b64(hashlib.sha256(access_token.encode()).digest())
        body.update(claims or {})
        headers = {"typ": "dpop+jwt", "jwk": self.jwk, **(header or {})}
        return jwt.encode(body, self.private, algorithm=self.alg, headers=headers)

    def headers(self, method: str, path: str, token: str | None = None) -> dict[str, str]:
        """A resource call's headers: the bound token under the DPoP scheme, a fresh proof."""
        if token is None:
            return {"DPoP": self.proof(method, path)}
        return {
            "Authorization": f"DPoP {token}",
            "DPoP": self.proof(method, path, access_token=token),
        }


def _claims(token: str) -> dict[str, Any]:
    payload: dict[str, Any] = jwt.decode(token, options={"verify_signature": False})
    return payload


async def _login(client: Any, key: Key | None, **headers: str) -> Any:
    sent = dict(headers)
    if key is not None:
        sent.setdefault("DPoP", key.proof("POST", LOGIN))
    return await client.post(
        LOGIN, json={"username": "alice", "password": TEST_PASSWORD}, headers=sent
    )


async def _bound_login(client: Any, key: Key) -> dict[str, Any]:
    response = await _login(client, key)
    assert response.status == 200, await response.text()
    pair: dict[str, Any] = await response.json()
    assert pair["token_type"] == "DPoP"
    return pair


async def _refresh(
    client: Any, refresh_token: str, key: Key | None, proof: str | None = None
) -> Any:
    headers = {}
    if proof is not None:
        headers["DPoP"] = proof
    elif key is not None:
        headers["DPoP"] = key.proof("POST", REFRESH)
    return await client.post(REFRESH, json={"refresh_token": refresh_token}, headers=headers)


async def _session_hash(redis_client: redis.asyncio.Redis, access_token: str) -> dict[bytes, bytes]:
    claims = _claims(access_token)
    fields: dict[bytes, bytes] = await redis_client.hgetall(
        keyspace.session(claims["sub"], claims["sid"])
    )
    return fields


@pytest.fixture
async def alice(client: Any) -> Any:
    await register(client)
    return client


@pytest.fixture
def key(clock: FakeClock) -> Key:
    return Key(clock)


@pytest.fixture
def thief(clock: FakeClock) -> Key:
    return Key(clock)


# -- the proof itself (API.md: "A proof is the DPoP request header...") ------------------


def test_rfc9449_token_request_proof_parses_as_the_rfc_says() -> None:
    """§4.1's proof, signature checked, at the time it was made (a fixed clock)."""
    proof = verify_proof(
        RFC_TOKEN_PROOF, method="POST", url="https://server.example.com/token", now=1562262616
    )
    assert (proof.jti, proof.iat, proof.jkt) == ("-BwC3ESc6acc2lTc", 1562262616, RFC_THUMBPRINT)


def test_rfc9449_resource_proof_parses_with_the_ath_of_its_access_token() -> None:
    """§7.1's proof with the access token of that example: its ath matches."""
    proof = verify_proof(
        RFC_RESOURCE_PROOF,
        method="GET",
        url="https://resource.example.org/protectedresource",
        now=1562262618,
        access_token=RFC_ACCESS_TOKEN,
    )
    assert (proof.jti, proof.jkt) == ("e1j3V_bKic8-LAEB", RFC_THUMBPRINT)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"now": 1562262616 + 61}, "iat"),
        ({"now": 1562262616 - 61}, "iat"),
        ({"method": "GET"}, "htm"),
        ({"url": "https://server.example.com/other"}, "htu"),
        ({"url": "https://elsewhere.example.com/token"}, "htu"),
        ({"access_token": RFC_ACCESS_TOKEN}, "ath"),
    ],
)
def test_rfc9449_token_request_proof_is_refused_for_another_request(
    change: dict[str, Any], message: str
) -> None:
    args: dict[str, Any] = {
        "method": "POST", "url": "https://server.example.com/token", "now": 1562262616, **change
    }  # fmt: skip
    with pytest.raises(InvalidDpopProof, match=message):
        verify_proof(RFC_TOKEN_PROOF, **args)


def test_rfc9449_resource_proof_is_refused_with_another_access_token() -> None:
    with pytest.raises(InvalidDpopProof, match="ath"):
        verify_proof(
            RFC_RESOURCE_PROOF, method="GET", now=1562262618, access_token=RFC_ACCESS_TOKEN + "x",
            url="https://resource.example.org/protectedresource",
        )  # fmt: skip


@pytest.mark.parametrize(
    ("url", "same"),
    [
        ("HTTPS://Server.Example.COM/token", "https://server.example.com/token"),
        ("https://server.example.com:443/token", "https://server.example.com/token"),
        ("http://server.example.com:80/token", "http://server.example.com/token"),
        ("https://server.example.com/token?query=1#fragment", "https://server.example.com/token"),
        ("https://server.example.com", "https://server.example.com/"),
        ("http://[::1]:8080/x", "http://[::1]:8080/x"),
    ],
)
def test_htu_is_compared_normalised(url: str, same: str) -> None:
    assert normalized_url(url) == same


def test_htu_keeps_a_port_other_than_the_default_and_the_path_case() -> None:
    assert normalized_url("https://a.example:8443/T") != normalized_url("https://a.example/T")
    assert normalized_url("https://a.example/T") != normalized_url("https://a.example/t")


async def test_a_proof_for_a_normalised_form_of_the_url_is_accepted(alice: Any, key: Key) -> None:
    proof = key.proof("POST", "HTTP://127.0.0.1:8080/v1/auth/login?x=1#top")
    assert (await _login(alice, key, DPoP=proof)).status == 200


def _unsigned(header: dict[str, Any], claims: dict[str, Any]) -> str:
    return ".".join(_b64(json.dumps(part).encode()) for part in (header, claims)) + "."


def _refusals(key: Key, clock: FakeClock) -> dict[str, str]:
    """Proofs of a login that fail one check each (RFC 9449 §4.3)."""
    claims = {"jti": "j" * 16, "htm": "POST", "htu": ISSUER + LOGIN, "iat": clock()}
    hs_secret = key.jwk["x"].encode()  # HS256 keyed with the public key
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    es_key = Key(clock, "ES256")
    other = Key(clock)
    private_jwk = OKPAlgorithm.to_jwk(key.private, as_dict=True)
    return {
        "alg none": _unsigned({"typ": "dpop+jwt", "alg": "none", "jwk": key.jwk}, claims),
        "HS256": jwt.encode(claims, hs_secret, "HS256", {"typ": "dpop+jwt", "jwk": key.jwk}),
        "RS256": jwt.encode(
            claims,
            rsa_key,
            "RS256",
            {"typ": "dpop+jwt", "jwk": RSAAlgorithm.to_jwk(rsa_key.public_key(), as_dict=True)},
        ),
        "typ JWT": key.proof("POST", LOGIN, header={"typ": "JWT"}),
        "no typ": jwt.encode(claims, key.private, "EdDSA", {"jwk": key.jwk, "typ": None}),
        "no jwk": jwt.encode(claims, key.private, "EdDSA", {"typ": "dpop+jwt"}),
        "private key in jwk": key.proof("POST", LOGIN, header={"jwk": private_jwk}),
        "jwk of another alg": es_key.proof("POST", LOGIN, header={"jwk": key.jwk, "alg": "ES256"}),
        "signed by another key": other.proof("POST", LOGIN, header={"jwk": key.jwk}),
        "htm GET": key.proof("GET", LOGIN),
        "htu another path": key.proof("POST", REFRESH),
        "htu another host": key.proof("POST", "https://evil.example" + LOGIN),
        "htu another port": key.proof("POST", "http://127.0.0.1:8081" + LOGIN),
        "iat 61 s ago": key.proof("POST", LOGIN, iat_offset=-61),
        "iat 61 s ahead": key.proof("POST", LOGIN, iat_offset=61),
        "iat a string": key.proof("POST", LOGIN, claims={"iat": str(clock())}),
        "no jti": jwt.encode(
            {k: v for k, v in claims.items() if k != "jti"},
            key.private,
            "EdDSA",
            {"typ": "dpop+jwt", "jwk": key.jwk},
        ),
        "jti too long": key.proof("POST", LOGIN, claims={"jti": "j" * 129}),
        "garbage": "not-a-jwt",
        "tampered": key.proof("POST", LOGIN)[:-4] + "AAAA",
    }


async def test_a_login_proof_that_fails_any_check_is_refused_and_starts_no_session(
    alice: Any, key: Key, clock: FakeClock, redis_client: redis.asyncio.Redis
) -> None:
    """401 invalid_dpop_proof on /v1 for each; no session starts."""
    for name, proof in _refusals(key, clock).items():
        response = await _login(alice, key, DPoP=proof)
        await assert_error(response, 401, "invalid_dpop_proof")
        assert "WWW-Authenticate" not in response.headers, name
    user_id = (await (await _login(alice, None)).json())["access_token"]
    assert await redis_client.zcard(keyspace.sessions(_claims(user_id)["sub"])) == 1


async def test_a_proof_within_60_seconds_either_way_is_accepted(alice: Any, key: Key) -> None:
    for offset in (-60, 60):
        assert (
            await _login(alice, key, DPoP=key.proof("POST", LOGIN, iat_offset=offset))
        ).status == 200


async def test_es256_proofs_are_accepted(alice: Any, clock: FakeClock) -> None:
    es = Key(clock, "ES256")
    pair = await _bound_login(alice, es)
    assert _claims(pair["access_token"])["cnf"] == {"jkt": es.jkt}


async def test_two_dpop_headers_are_refused(alice: Any, key: Key) -> None:
    response = await alice.post(
        LOGIN,
        json={"username": "alice", "password": TEST_PASSWORD},
        headers=[("DPoP", key.proof("POST", LOGIN)), ("DPoP", key.proof("POST", LOGIN))],
    )
    await assert_error(response, 401, "invalid_dpop_proof")


async def test_a_proof_sent_again_is_refused_at_login_refresh_and_resources(
    alice: Any, key: Key
) -> None:
    """API.md: "A jti is accepted once: a proof sent again within the window is refused"."""
    proof = key.proof("POST", LOGIN)
    assert (await _login(alice, key, DPoP=proof)).status == 200
    await assert_error(await _login(alice, key, DPoP=proof), 401, "invalid_dpop_proof")

    pair = await _bound_login(alice, key)
    proof = key.proof("POST", REFRESH)
    refreshed = await _refresh(alice, pair["refresh_token"], key, proof)
    assert refreshed.status == 200
    pair = await refreshed.json()
    # The same proof with the successor: refused before the rotation, which stays unused.
    await assert_error(
        await _refresh(alice, pair["refresh_token"], key, proof), 401, "invalid_dpop_proof"
    )
    assert (await _refresh(alice, pair["refresh_token"], key)).status == 200

    pair = await _bound_login(alice, key)
    headers = key.headers("GET", ME, pair["access_token"])
    assert (await alice.get(ME, headers=headers)).status == 200
    again = await alice.get(ME, headers=headers)
    await assert_error(again, 401, "invalid_dpop_proof")
    assert again.headers["WWW-Authenticate"] == DPOP_CHALLENGE


async def test_a_jti_costs_one_small_key_for_the_proof_window(
    alice: Any, key: Key, redis_client: redis.asyncio.Redis
) -> None:
    """The bytes per proof, and that they go: one key, with the window's TTL."""
    before = set(await redis_client.keys("authsvc:dpop:*"))
    assert (await _login(alice, key)).status == 200
    [jti_key] = set(await redis_client.keys("authsvc:dpop:*")) - before
    assert 0 < await redis_client.ttl(jti_key) <= JTI_TTL == 121
    used = await redis_client.memory_usage(jti_key, samples=0)
    assert used is not None and used <= 128, used
    print(f"bytes per DPoP proof (jti key): {used}")


# -- binding at login (API.md: "A login ... with a valid proof binds the session") --------


async def test_a_login_with_a_proof_binds_the_session_to_the_keys_thumbprint(
    alice: Any, key: Key, redis_client: redis.asyncio.Redis
) -> None:
    pair = await _bound_login(alice, key)
    assert _claims(pair["access_token"])["cnf"] == {"jkt": key.jkt}
    fields = await _session_hash(redis_client, pair["access_token"])
    assert fields[b"k"] == key.jkt.encode()
    assert len(fields[b"k"]) == 43
    memory = await redis_client.memory_usage(
        keyspace.session(_claims(pair["access_token"])["sub"], pair["session_id"]), samples=0
    )
    print(f"bytes of a bound session's hash at login: {memory}")


async def test_a_login_without_a_proof_is_a_bearer_session(
    alice: Any, redis_client: redis.asyncio.Redis
) -> None:
    """AUTHSVC_DPOP=optional (the default): a session is bound only when its login has a proof."""
    response = await _login(alice, None)
    pair = await response.json()
    assert pair["token_type"] == "Bearer"
    assert "cnf" not in _claims(pair["access_token"])
    assert b"k" not in await _session_hash(redis_client, pair["access_token"])
    assert (
        await alice.get(ME, headers={"Authorization": f"Bearer {pair['access_token']}"})
    ).status == 200


async def test_the_password_grant_with_a_proof_binds_the_session(
    make_client: Any, key: Key
) -> None:
    client = await make_client(password_grant=True)
    await register(client)
    form = {"grant_type": "password", "username": "alice", "password": TEST_PASSWORD}
    response = await client.post(TOKEN, data=form, headers={"DPoP": key.proof("POST", TOKEN)})
    assert response.status == 200, await response.text()
    pair = await response.json()
    assert pair["token_type"] == "DPoP"
    assert _claims(pair["access_token"])["cnf"] == {"jkt": key.jkt}
    refused = await client.post(TOKEN, data=form, headers={"DPoP": key.proof("POST", LOGIN)})
    await assert_error(refused, 400, "invalid_dpop_proof")  # 400 on /oauth


# -- refresh of a bound session (API.md: "Refreshing a bound session ... needs a valid proof
#    by the same key ... nothing is rotated or revoked") -----------------------------------


async def test_a_bound_session_refreshes_with_its_key_as_before(alice: Any, key: Key) -> None:
    pair = await _bound_login(alice, key)
    response = await _refresh(alice, pair["refresh_token"], key)
    assert response.status == 200
    successor = await response.json()
    assert successor["session_id"] == pair["session_id"]
    assert successor["token_type"] == "DPoP"
    assert _claims(successor["access_token"])["cnf"] == {"jkt": key.jkt}
    assert (
        await alice.get(ME, headers=key.headers("GET", ME, successor["access_token"]))
    ).status == 200


async def test_a_copied_refresh_token_without_the_key_is_refused_and_nothing_changes(
    alice: Any, key: Key, thief: Key, redis_client: redis.asyncio.Redis
) -> None:
    pair = await _bound_login(alice, key)
    before = await _session_hash(redis_client, pair["access_token"])
    for proof_by in (None, thief):
        response = await _refresh(alice, pair["refresh_token"], proof_by)
        await assert_error(response, 401, "invalid_grant")
    # Bound to another key with a valid proof for the thief's own request: refused too.
    assert await _session_hash(redis_client, pair["access_token"]) == before
    # The owner's token was never used: it rotates now, once.
    assert (await _refresh(alice, pair["refresh_token"], key)).status == 200


async def test_a_copied_refresh_token_is_refused_on_oauth_token_with_400(
    alice: Any, key: Key, thief: Key
) -> None:
    pair = await _bound_login(alice, key)
    form = {"grant_type": "refresh_token", "refresh_token": pair["refresh_token"]}
    for headers in ({}, {"DPoP": thief.proof("POST", TOKEN)}):
        await assert_error(
            await alice.post(TOKEN, data=form, headers=headers), 400, "invalid_grant"
        )
    response = await alice.post(TOKEN, data=form, headers={"DPoP": key.proof("POST", TOKEN)})
    assert response.status == 200, await response.text()
    assert (await response.json())["token_type"] == "DPoP"


async def test_a_replayed_old_token_without_the_key_does_not_revoke_the_session(
    alice: Any, key: Key, thief: Key, clock: FakeClock
) -> None:
    """Who does not hold the key cannot even end the session by replaying its tokens."""
    pair = await _bound_login(alice, key)
    successor = await (await _refresh(alice, pair["refresh_token"], key)).json()
    clock.advance(30)  # past the grace: with the key this would be a replay
    for proof_by in (None, thief):
        await assert_error(
            await _refresh(alice, pair["refresh_token"], proof_by), 401, "invalid_grant"
        )
    assert (
        await alice.get(ME, headers=key.headers("GET", ME, successor["access_token"]))
    ).status == 200
    assert (await _refresh(alice, successor["refresh_token"], key)).status == 200


async def test_a_replay_with_the_key_revokes_the_session(
    alice: Any, key: Key, clock: FakeClock
) -> None:
    pair = await _bound_login(alice, key)
    successor = await (await _refresh(alice, pair["refresh_token"], key)).json()
    clock.advance(30)
    await assert_error(await _refresh(alice, pair["refresh_token"], key), 401, "invalid_grant")
    ended = await alice.get(ME, headers=key.headers("GET", ME, successor["access_token"]))
    await assert_error(ended, 401, "invalid_token")
    await assert_error(await _refresh(alice, successor["refresh_token"], key), 401, "invalid_grant")


async def test_a_grace_retry_with_its_own_fresh_proof_gets_the_same_successor(
    alice: Any, key: Key
) -> None:
    pair = await _bound_login(alice, key)
    first = await (await _refresh(alice, pair["refresh_token"], key)).json()
    retry = await _refresh(alice, pair["refresh_token"], key)  # a new proof, a new jti
    assert retry.status == 200
    assert (await retry.json()) == first
    # Within the grace, but without the key: refused, and the chain goes on.
    await assert_error(await _refresh(alice, pair["refresh_token"], None), 401, "invalid_grant")
    assert (await _refresh(alice, first["refresh_token"], key)).status == 200


async def test_a_cookie_mode_refresh_of_a_bound_session_needs_the_proof(
    alice: Any, key: Key
) -> None:
    response = await alice.post(
        LOGIN, json={"username": "alice", "password": TEST_PASSWORD, "cookie": True},
        headers={"DPoP": key.proof("POST", LOGIN)},
    )  # fmt: skip
    assert response.status == 200, await response.text()
    pair = await response.json()
    assert pair["token_type"] == "DPoP"
    cookie = response.cookies["__Host-authsvc-refresh"].value
    headers = {"X-CSRF-Token": pair["csrf_token"], "Cookie": f"__Host-authsvc-refresh={cookie}"}
    refused = await alice.post(REFRESH, headers=headers)
    await assert_error(refused, 401, "invalid_grant")
    accepted = await alice.post(REFRESH, headers={**headers, "DPoP": key.proof("POST", REFRESH)})
    assert accepted.status == 200, await accepted.text()
    assert (await accepted.json())["token_type"] == "DPoP"


# -- resource side (API.md: "A bound access token is used as Authorization: DPoP") --------


def _path(template: str, session_id: str) -> str:
    return template.replace("{session_id}", session_id)


async def test_a_bound_token_works_as_dpop_with_its_proof_on_every_bearer_route(
    alice: Any, key: Key
) -> None:
    """Each route answers as it does to a good token (no 401), then the next one logs in."""
    for method, template in BEARER_ROUTES:
        pair = await _bound_login(alice, key)
        path = _path(template, pair["session_id"])
        body = {"password": TEST_PASSWORD} if template == "/v1/users/me" else None
        if template == "/v1/auth/password":
            body = {"current_password": TEST_PASSWORD, "new_password": TEST_PASSWORD}
        response = await alice.request(
            method, path, json=body, headers=key.headers(method, path, pair["access_token"])
        )
        assert response.status in (200, 204), (method, path, await response.text())
        if template == "/v1/users/me":
            await register(alice)


async def test_a_copied_access_token_is_refused_everywhere_and_the_session_lives_on(
    alice: Any, key: Key, thief: Key
) -> None:
    """As Bearer, under DPoP without a proof, with a proof by another key, or one whose ath
    names another token: 401 on every Bearer route; the owner's calls go on."""
    pair = await _bound_login(alice, key)
    other = await _bound_login(alice, key)
    token = pair["access_token"]
    for method, template in BEARER_ROUTES:
        path = _path(template, pair["session_id"])
        bearer = await alice.request(method, path, headers={"Authorization": f"Bearer {token}"})
        await assert_invalid_token(bearer)
        no_proof = await alice.request(method, path, headers={"Authorization": f"DPoP {token}"})
        await assert_error(no_proof, 401, "invalid_token")
        assert no_proof.headers["WWW-Authenticate"].startswith('DPoP error="invalid_token"')
        stolen = await alice.request(method, path, headers=thief.headers(method, path, token))
        await assert_error(stolen, 401, "invalid_token")
        wrong_ath = {
            "Authorization": f"DPoP {token}",
            "DPoP": key.proof(method, path, access_token=other["access_token"]),
        }
        refused = await alice.request(method, path, headers=wrong_ath)
        await assert_error(refused, 401, "invalid_dpop_proof")
        assert refused.headers["WWW-Authenticate"] == DPOP_CHALLENGE
        no_ath = {"Authorization": f"DPoP {token}", "DPoP": key.proof(method, path)}
        await assert_error(
            await alice.request(method, path, headers=no_ath), 401, "invalid_dpop_proof"
        )
    me = await alice.get(ME, headers=key.headers("GET", ME, token))
    assert me.status == 200
    assert (await me.json())["session_id"] == pair["session_id"]


async def test_resource_proof_errors_carry_the_dpop_challenge(alice: Any, key: Key) -> None:
    pair = await _bound_login(alice, key)
    token = pair["access_token"]
    for proof in (
        key.proof("POST", ME, access_token=token),  # htm
        key.proof("GET", VERIFY, access_token=token),  # htu
        key.proof("GET", ME, access_token=token, iat_offset=-120),  # iat
        "garbage",
    ):
        response = await alice.get(ME, headers={"Authorization": f"DPoP {token}", "DPoP": proof})
        await assert_error(response, 401, "invalid_dpop_proof")
        assert response.headers["WWW-Authenticate"] == DPOP_CHALLENGE


async def test_a_bound_token_in_the_verified_cache_still_needs_its_proof(
    alice: Any, key: Key
) -> None:
    """The access-token cache keeps cnf: a token verified once is held to its key after."""
    pair = await _bound_login(alice, key)
    token = pair["access_token"]
    assert (await alice.get(ME, headers=key.headers("GET", ME, token))).status == 200
    await assert_invalid_token(await alice.get(ME, headers={"Authorization": f"Bearer {token}"}))
    await assert_error(
        await alice.get(ME, headers={"Authorization": f"DPoP {token}"}), 401, "invalid_token"
    )


async def test_a_bearer_token_under_the_dpop_scheme_is_refused(alice: Any, key: Key) -> None:
    pair = await (await _login(alice, None)).json()
    response = await alice.get(ME, headers=key.headers("GET", ME, pair["access_token"]))
    await assert_error(response, 401, "invalid_token")


async def test_verify_checks_the_proof_against_the_forwarded_request(alice: Any, key: Key) -> None:
    """X-Forwarded-Method/Uri/Proto/Host when present, else the verify request itself."""
    token = (await _bound_login(alice, key))["access_token"]
    api = "https://api.example.com/orders/7"
    forwarded = {
        "X-Forwarded-Method": "POST", "X-Forwarded-Proto": "https",
        "X-Forwarded-Host": "api.example.com", "X-Forwarded-Uri": "/orders/7?page=2",
    }  # fmt: skip
    proof = key.proof("POST", api, access_token=token)
    ok = await alice.get(
        VERIFY, headers={**forwarded, "Authorization": f"DPoP {token}", "DPoP": proof}
    )
    assert ok.status == 200, await ok.text()
    assert ok.headers["X-Auth-Session-Id"] == _claims(token)["sid"]
    # A proof of the verify call itself does not pass for the forwarded request.
    own = key.proof("GET", VERIFY, access_token=token)
    refused = await alice.get(
        VERIFY, headers={**forwarded, "Authorization": f"DPoP {token}", "DPoP": own}
    )
    await assert_error(refused, 401, "invalid_dpop_proof")
    # Another forwarded method than the proof's.
    proof = key.proof("POST", api, access_token=token)
    refused = await alice.get(
        VERIFY,
        headers={
            **forwarded,
            "X-Forwarded-Method": "DELETE",
            "Authorization": f"DPoP {token}",
            "DPoP": proof,
        },
    )
    await assert_error(refused, 401, "invalid_dpop_proof")
    # No forwarded headers: the proof names the verify request.
    assert (await alice.get(VERIFY, headers=key.headers("GET", VERIFY, token))).status == 200


async def test_introspection_of_a_bound_token_includes_cnf(make_client: Any, key: Key) -> None:
    client = await make_client(introspection_clients=(("gw", "s3cret"),))
    await register(client)
    pair = await _bound_login(client, key)
    basic = "Basic " + base64.b64encode(b"gw:s3cret").decode()
    response = await client.post(
        "/oauth/introspect", data={"token": pair["access_token"]}, headers={"Authorization": basic}
    )
    body = await response.json()
    assert body["active"] is True
    assert body["cnf"] == {"jkt": key.jkt}
    assert body["token_type"] == "DPoP"


async def test_metadata_lists_the_proof_algorithms(client: Any, make_client: Any) -> None:
    metadata = await (await client.get("/.well-known/oauth-authorization-server")).json()
    assert metadata["dpop_signing_alg_values_supported"] == ["ES256", "EdDSA"]
    off = await make_client(dpop="off")
    assert (
        "dpop_signing_alg_values_supported"
        not in await (await off.get("/.well-known/oauth-authorization-server")).json()
    )


# -- modes (API.md: "AUTHSVC_DPOP: optional ..., required ..., or off") ---------------------


async def test_required_mode_refuses_a_login_without_a_proof_with_400(
    make_client: Any, key: Key
) -> None:
    client = await make_client(dpop="required", password_grant=True)
    await register(client)
    await assert_error(await _login(client, None), 400, "invalid_dpop_proof")
    form = {"grant_type": "password", "username": "alice", "password": TEST_PASSWORD}
    await assert_error(await client.post(TOKEN, data=form), 400, "invalid_dpop_proof")
    await assert_error(
        await _login(client, key, DPoP=key.proof("GET", LOGIN)), 401, "invalid_dpop_proof"
    )
    assert (await _bound_login(client, key))["token_type"] == "DPoP"


async def test_off_mode_ignores_the_dpop_header(
    make_client: Any, key: Key, redis_client: redis.asyncio.Redis
) -> None:
    client = await make_client(dpop="off")
    await register(client)
    pair = await (await _login(client, key, DPoP="not even a jwt")).json()
    assert pair["token_type"] == "Bearer"
    assert "cnf" not in _claims(pair["access_token"])
    assert b"k" not in await _session_hash(redis_client, pair["access_token"])
    assert (
        await client.get(ME, headers={"Authorization": f"Bearer {pair['access_token']}"})
    ).status == 200
    # The DPoP scheme is not one this server takes: as another scheme (RFC 6750 §3.1).
    response = await client.get(ME, headers=key.headers("GET", ME, pair["access_token"]))
    await assert_error(response, 401, "invalid_token")
    assert response.headers["WWW-Authenticate"] == "Bearer"


# -- the OpenAPI document describes it ---------------------------------------------------


async def test_dpop_answers_are_as_documented(make_client: Any, key: Key, thief: Key) -> None:
    client = await make_client(introspection_clients=(("gw", "s3cret"),), password_grant=True)
    await register(client)
    response = await _login(client, key)
    await assert_documented(response, "POST", LOGIN, 200)
    pair = await response.json()
    await assert_documented(await _login(client, key, DPoP="garbage"), "POST", LOGIN, 401)
    await assert_documented(
        await _refresh(client, pair["refresh_token"], thief), "POST", REFRESH, 401
    )
    form = {"grant_type": "refresh_token", "refresh_token": pair["refresh_token"]}
    refused = await client.post(TOKEN, data=form, headers={"DPoP": "garbage"})
    await assert_documented(refused, "POST", TOKEN, 400)
    token = pair["access_token"]
    for headers in (
        {"Authorization": f"DPoP {token}"},
        {"Authorization": f"DPoP {token}", "DPoP": key.proof("GET", ME)},
        {"Authorization": f"Bearer {token}"},
    ):
        await assert_documented(await client.get(ME, headers=headers), "GET", ME, 401)
    await assert_documented(
        await client.get(ME, headers=key.headers("GET", ME, token)), "GET", ME, 200
    )
    basic = "Basic " + base64.b64encode(b"gw:s3cret").decode()
    introspected = await client.post(
        "/oauth/introspect", data={"token": token}, headers={"Authorization": basic}
    )
    await assert_documented(introspected, "POST", "/oauth/introspect", 200)
    metadata = await client.get("/.well-known/oauth-authorization-server")
    await assert_documented(metadata, "GET", "/.well-known/oauth-authorization-server", 200)
    required = await make_client(dpop="required")
    await assert_documented(await _login(required, None), "POST", LOGIN, 400)
