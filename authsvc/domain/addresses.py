"""Client addresses: read from what peers and proxies write, and grouped per client.

``parse_address`` reads one address as proxies write it into ``X-Forwarded-For`` (or as
the socket gives it): ``203.0.113.9``, ``203.0.113.9:5678``, ``2001:db8::1``,
``[2001:db8::1]`` and ``[2001:db8::1]:443``. An IPv4-mapped IPv6 address
(``::ffff:203.0.113.9``, what a dual-stack socket reports for an IPv4 peer) is the IPv4
address it maps. The port is no part of a client's address: NAT and proxies pick one per
connection.

``client_network`` is what the rate limits count per: an IPv4 address is one client, an
IPv6 address belongs to the network of its first ``ipv6_prefix`` bits (a /64 by default,
the smallest subnet a site is given, RFC 6177; within it a host picks any of 2^64
addresses at will).
"""

from __future__ import annotations

import ipaddress

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

DEFAULT_IPV6_PREFIX = 64


def parse_address(text: str) -> IPAddress | None:
    """The address ``text`` names, without port or brackets; None when it names none."""
    text = text.strip()
    if text.startswith("["):
        # [v6] or [v6]:port, as RFC 3986 writes an IPv6 host with a port.
        host, bracket, rest = text[1:].partition("]")
        if not bracket or (rest and not _is_port_suffix(rest)):
            return None
        return _unmapped(_ip(host), version=6)
    if text.count(":") == 1:
        # v4:port. A bare IPv6 address has at least two colons; one with a port and no
        # brackets cannot be told apart from an address and is read as one.
        host, _, port = text.partition(":")
        return _unmapped(_ip(host), version=4) if port.isdigit() and len(port) <= 5 else None
    return _unmapped(_ip(text), version=None)


def normalized_address(text: str) -> str:
    """``text`` as ``parse_address`` reads it, written the usual way (``str`` of it); the
    text itself when it names no address."""
    ip = parse_address(text)
    return text if ip is None else str(ip)


def client_network(address: str, ipv6_prefix: int = DEFAULT_IPV6_PREFIX) -> str:
    """The client an address counts as for rate limits: the IPv4 address itself, or the
    IPv6 network of its first ``ipv6_prefix`` bits (``2001:db8:1:2::/64``). Text that
    names no address counts as itself."""
    ip = parse_address(address)
    if ip is None:
        return address
    if isinstance(ip, ipaddress.IPv4Address):
        return str(ip)
    # From the integer: a scoped address (fe80::1%eth0) names no scope in its network.
    return str(ipaddress.IPv6Network((int(ip), ipv6_prefix), strict=False))


def _is_port_suffix(text: str) -> bool:
    port = text[1:]
    return text.startswith(":") and port.isdigit() and len(port) <= 5


def _ip(text: str) -> IPAddress | None:
    """The address, or None; also None for a scoped IPv6 address (``fe80::1%eth0``): the
    scope is any text at all, and an address from a header is stored with the session."""
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        return None
    return None if getattr(ip, "scope_id", None) is not None else ip


def _unmapped(ip: IPAddress | None, *, version: int | None) -> IPAddress | None:
    if ip is None or (version is not None and ip.version != version):
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip
