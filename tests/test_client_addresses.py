"""Client addresses behind a trusted proxy: the forms proxies write into X-Forwarded-For,
and the client each rate-limit bucket counts (an IPv4 address, an IPv6 /64)."""

from __future__ import annotations

import ipaddress
from typing import Any

import pytest
from support import TEST_PASSWORD, bearer, login, register

from authsvc.config import RateLimit, SettingsError, load_settings
from authsvc.domain.addresses import client_network, parse_address

# The test client's peer is 127.0.0.1; 10.0.0.0/8 stands for a second proxy tier.
PROXIES = (ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("10.0.0.0/8"))


def _forwarded(hop: str) -> dict[str, str]:
    return {"X-Forwarded-For": hop}


@pytest.mark.parametrize(
    ("text", "address"),
    [
        ("203.0.113.9", "203.0.113.9"),
        (" 203.0.113.9 ", "203.0.113.9"),
        ("203.0.113.9:5678", "203.0.113.9"),
        ("2001:db8::1", "2001:db8::1"),
        ("2001:DB8:0:0::1", "2001:db8::1"),
        ("[2001:db8::1]", "2001:db8::1"),
        ("[2001:db8::1]:443", "2001:db8::1"),
        ("::ffff:203.0.113.9", "203.0.113.9"),
        ("[::ffff:203.0.113.9]:80", "203.0.113.9"),
    ],
)
def test_forms_proxies_write_name_the_address(text: str, address: str) -> None:
    assert str(parse_address(text)) == address


@pytest.mark.parametrize(
    "text",
    ["", "unknown", "_hidden", "203.0.113.9:", "203.0.113.9:port", "203.0.113.9:123456",
     "[2001:db8::1", "[2001:db8::1]x", "[2001:db8::1]:", "[203.0.113.9]:80", "2001:db8::g",
     # A scope is any text at all, and an address from a header is stored with the session.
     "fe80::1%eth0", "[fe80::1%eth0]:443"],
)  # fmt: skip
def test_text_that_names_no_address_is_refused(text: str) -> None:
    assert parse_address(text) is None


def test_ipv4_counts_per_address_and_ipv6_per_network() -> None:
    assert client_network("203.0.113.9:1") == "203.0.113.9"
    assert client_network("::ffff:203.0.113.9") == "203.0.113.9"
    assert client_network("2001:db8:1:2:aaaa::1") == "2001:db8:1:2::/64"
    assert client_network("[2001:db8:1:2::1]:443") == "2001:db8:1:2::/64"
    assert client_network("fe80::1%eth0") == "fe80::1%eth0"  # no address: counts as itself
    assert client_network("2001:db8:1:2::1", 48) == "2001:db8:1::/48"
    assert client_network("2001:db8:1:2::1", 128) == "2001:db8:1:2::1/128"


def test_the_ipv6_prefix_is_a_setting_of_1_to_128() -> None:
    assert load_settings({}).rate_limit_ipv6_prefix == 64
    assert load_settings({"AUTHSVC_RATE_LIMIT_IPV6_PREFIX": "56"}).rate_limit_ipv6_prefix == 56
    for bad in ("0", "129", "x"):
        with pytest.raises(SettingsError, match="AUTHSVC_RATE_LIMIT_IPV6_PREFIX"):
            load_settings({"AUTHSVC_RATE_LIMIT_IPV6_PREFIX": bad})


# -- through HTTP, behind a trusted proxy -------------------------------------------------


async def _login(client: Any, username: str, hop: str) -> Any:
    return await client.post(
        "/v1/auth/login",
        json={"username": username, "password": TEST_PASSWORD},
        headers=_forwarded(hop),
    )


async def _register(client: Any, username: str, hop: str) -> Any:
    return await client.post(
        "/v1/users", json={"username": username, "password": TEST_PASSWORD}, headers=_forwarded(hop)
    )


async def _refresh(client: Any, token: str, hop: str) -> Any:
    return await client.post(
        "/v1/auth/refresh", json={"refresh_token": token}, headers=_forwarded(hop)
    )


async def _recorded_ip(client: Any, pair: dict[str, Any]) -> str:
    sessions = (await (await client.get("/v1/auth/sessions", headers=bearer(pair))).json())[
        "sessions"
    ]
    (session,) = [s for s in sessions if s["session_id"] == pair["session_id"]]
    address: str = session["ip"]
    return address


async def test_two_addresses_of_one_ipv6_64_share_a_login_bucket(make_client: Any) -> None:
    client = await make_client(trusted_proxies=PROXIES, login_rate_limit=RateLimit(2, 60))
    for username in ("alice", "bob", "carol"):
        await register(client, username)
    assert (await _login(client, "alice", "2001:db8:1:2::1")).status == 200
    assert (await _login(client, "bob", "2001:db8:1:2:ffff:ffff:ffff:fffe")).status == 200
    # A third address of the same /64 (another user, so not the username's bucket).
    assert (await _login(client, "carol", "[2001:db8:1:2::7]:443")).status == 429
    # The next /64 is another client.
    assert (await _login(client, "carol", "2001:db8:1:3::1")).status == 200


async def test_two_addresses_of_one_ipv6_64_share_a_registration_bucket(make_client: Any) -> None:
    client = await make_client(trusted_proxies=PROXIES, registration_rate_limit=RateLimit(2, 3600))
    assert (await _register(client, "alice", "2001:db8:1:2::1")).status == 201
    assert (await _register(client, "bob", "2001:db8:1:2::2")).status == 201
    assert (await _register(client, "carol", "2001:db8:1:2:abcd::3")).status == 429
    assert (await _register(client, "carol", "2001:db8:1:3::3")).status == 201


async def test_two_addresses_of_one_ipv6_64_share_a_refresh_bucket(make_client: Any) -> None:
    client = await make_client(trusted_proxies=PROXIES, refresh_rate_limit=RateLimit(2, 60))
    await register(client)
    token = (await login(client))["refresh_token"]
    for hop in ("2001:db8:1:2::1", "2001:db8:1:2::2"):
        response = await _refresh(client, token, hop)
        assert response.status == 200, await response.text()
        token = (await response.json())["refresh_token"]
    assert (await _refresh(client, token, "2001:db8:1:2::3")).status == 429
    assert (await _refresh(client, token, "2001:db8:1:3::3")).status == 200


async def test_the_ipv6_prefix_setting_sets_the_network_size(make_client: Any) -> None:
    per_address = await make_client(
        trusted_proxies=PROXIES, login_rate_limit=RateLimit(1, 60), rate_limit_ipv6_prefix=128
    )
    for username in ("alice", "bob"):
        await register(per_address, username)
    assert (await _login(per_address, "alice", "2001:db8:1:2::1")).status == 200
    assert (await _login(per_address, "bob", "2001:db8:1:2::2")).status == 200
    assert (await _login(per_address, "bob", "2001:db8:1:2::2")).status == 429


async def test_ip_port_hops_of_different_clients_do_not_share_a_bucket(make_client: Any) -> None:
    """A proxy that writes ``ip:port`` must not put every client into the proxy's bucket."""
    client = await make_client(trusted_proxies=PROXIES, login_rate_limit=RateLimit(1, 60))
    for username in ("alice", "bob", "carol"):
        await register(client, username)
    assert (await _login(client, "alice", "203.0.113.9:40001")).status == 200
    assert (await _login(client, "bob", "203.0.113.10:40001")).status == 200
    assert (await _login(client, "carol", "[2001:db8:1:2::1]:40001")).status == 200


async def test_a_hop_with_a_port_counts_as_that_client(make_client: Any) -> None:
    client = await make_client(trusted_proxies=PROXIES, login_rate_limit=RateLimit(3, 60))
    for username in ("alice", "bob", "carol", "dave"):
        await register(client, username)
    first = await _login(client, "alice", "203.0.113.9:40001")
    assert first.status == 200
    # The session records the client's full address, without the port.
    assert await _recorded_ip(client, await first.json()) == "203.0.113.9"
    assert (await _login(client, "bob", "203.0.113.9:40002")).status == 200
    # The IPv4-mapped form a dual-stack proxy may write is the same client too.
    assert (await _login(client, "carol", "::ffff:203.0.113.9")).status == 200
    assert (await _login(client, "dave", "203.0.113.9")).status == 429


async def test_sessions_record_the_full_ipv6_address(make_client: Any) -> None:
    client = await make_client(trusted_proxies=PROXIES)
    await register(client)
    response = await _login(client, "alice", "[2001:db8:1:2:aaaa:bbbb:cccc:dddd]:443")
    assert response.status == 200
    assert await _recorded_ip(client, await response.json()) == "2001:db8:1:2:aaaa:bbbb:cccc:dddd"


async def test_a_trusted_proxy_hop_with_a_port_is_skipped(make_client: Any) -> None:
    """Two tiers: the inner proxy (trusted, 10.0.0.5) wrote itself with its port."""
    client = await make_client(trusted_proxies=PROXIES)
    await register(client)
    response = await _login(client, "alice", "198.51.100.7:5000, 10.0.0.5:8080")
    assert response.status == 200
    assert await _recorded_ip(client, await response.json()) == "198.51.100.7"
