"""AUTHSVC_REDIS_URL read: which topology, which nodes, which credentials.

Plain text work, no Redis client: settings check a URL with it before anything connects.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import unquote, urlsplit

Topology = Literal["single", "sentinel", "cluster", "memory"]

MEMORY_URL = "memory://"
_SINGLE_SCHEMES = ("redis", "rediss", "unix")
_SENTINEL_SCHEMES = ("redis+sentinel", "rediss+sentinel")
_CLUSTER_SCHEMES = ("redis+cluster", "rediss+cluster")
DEFAULT_PORT = 6379
DEFAULT_SENTINEL_PORT = 26379


class StoreUrlError(ValueError):
    """AUTHSVC_REDIS_URL is not a URL authsvc can connect to; the message says why, and
    quotes no part of the URL (any part may hold the password)."""


@dataclass(frozen=True, slots=True)
class StoreAddress:
    """Where the store is, read from AUTHSVC_REDIS_URL."""

    topology: Topology
    url: str = field(repr=False)  # may carry a password
    # Sentinels for "sentinel", seed nodes for "cluster"; empty otherwise.
    nodes: tuple[tuple[str, int], ...] = ()
    service_name: str = ""
    db: int = 0
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    tls: bool = False


def is_memory_url(url: str) -> bool:
    return url.startswith(MEMORY_URL)


def _nodes(netloc: str, default_port: int) -> tuple[tuple[str, int], ...]:
    hosts = netloc.rpartition("@")[2]
    nodes = []
    for item in hosts.split(","):
        host, sep, port = item.strip().rpartition(":")
        if not sep:
            host, port = item.strip(), str(default_port)
        host = host.strip("[]")  # an IPv6 address in brackets
        if not host or not port.isdigit() or not 0 < int(port) < 65_536:
            # Never the item itself: a password with an unencoded "/" or "@" ends up here.
            raise StoreUrlError(
                "expected host:port for every host (%-encode a '/', '@', ':' or ',' in a "
                "user name or password)"
            )
        nodes.append((host, int(port)))
    return tuple(nodes)


def _credentials(netloc: str) -> tuple[str | None, str | None]:
    userinfo, sep, _ = netloc.rpartition("@")
    if not sep:
        return None, None
    user, has_password, password = userinfo.partition(":")
    if not has_password:
        return None, unquote(user) or None  # redis://secret@host: a password alone
    return unquote(user) or None, unquote(password) or None


def parse_store_url(url: str) -> StoreAddress:
    """Read AUTHSVC_REDIS_URL.

    Raises:
        StoreUrlError: for an unknown scheme or a malformed host list, service or db.
    """
    if is_memory_url(url):
        return StoreAddress("memory", url)
    scheme, sep, rest = url.partition("://")
    if not sep:
        raise StoreUrlError("expected a URL such as redis://host:port")
    if scheme in _SINGLE_SCHEMES:
        return StoreAddress("single", url, tls=scheme == "rediss")
    if scheme not in _SENTINEL_SCHEMES + _CLUSTER_SCHEMES:
        raise StoreUrlError(
            "unknown scheme; expected redis://, rediss://, unix://, "
            "redis+sentinel://, redis+cluster:// (or rediss+...) or memory://"
        )
    netloc, _, path = rest.partition("/")
    path = urlsplit("//x/" + path).path.strip("/")  # without query or fragment
    username, password = _credentials(netloc)
    tls = scheme.startswith("rediss")
    if scheme in _CLUSTER_SCHEMES:
        if path:
            raise StoreUrlError("a Cluster URL names no database: Cluster has only db 0")
        return StoreAddress(
            "cluster", url, _nodes(netloc, DEFAULT_PORT),
            username=username, password=password, tls=tls,
        )  # fmt: skip
    service_name, _, db = path.partition("/")
    if not service_name:
        raise StoreUrlError("a Sentinel URL ends with /service_name[/db]")
    if db and not db.isdigit():
        raise StoreUrlError("the database must be a number")
    return StoreAddress(
        "sentinel", url, _nodes(netloc, DEFAULT_SENTINEL_PORT), service_name=service_name,
        db=int(db or 0), username=username, password=password, tls=tls,
    )  # fmt: skip
