"""Settings: one frozen dataclass, built once from defaults, a TOML file and AUTHSVC_* variables.

Precedence, lowest first: the defaults below, the TOML file (keys are the setting names in
lower case, without the prefix: ``access_token_ttl = 900``), then the environment
(``AUTHSVC_ACCESS_TOKEN_TTL=900``). Nothing else in authsvc reads ``os.environ``.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import logging
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args
from urllib.parse import urlsplit

from authsvc.store.urls import StoreUrlError, parse_store_url
from authsvc.tokens.keys import SigningAlgorithm

logger = logging.getLogger(__name__)

ENV_PREFIX = "AUTHSVC_"
# Read by the scripts and the test suite, not by authsvc: no "misspelt?" warning for them.
_TOOL_VARIABLES = {
    "AUTHSVC_TEST_REDIS_URL",
    "AUTHSVC_TEST_AUTHSVC",
    "AUTHSVC_VENV",
    "AUTHSVC_EXTRAS",
    "AUTHSVC_INSTALL",
    "AUTHSVC_TEST_CHROMIUM",
}

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

Registration = Literal["open", "closed"]
LogFormat = Literal["text", "json"]
LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]
DpopMode = Literal["optional", "required", "off"]
CookieSameSite = Literal["Strict", "Lax", "None"]


class SettingsError(ValueError):
    """A setting is missing, malformed or out of range; the message names it, and shows
    its value unless the setting may hold a secret (``is_secret_bearing``)."""


# Settings whose value may hold a secret, known by their names: lists of clients
# (``id:secret``), URLs (``redis://user:password@host``), and whatever is named a secret,
# a password or a token. Their values are never printed, in errors or in a repr.
_SECRET_BEARING_SUFFIXES = ("_clients", "_url", "_secret", "_password", "_token")


def is_secret_bearing(name: str) -> bool:
    """Whether setting ``name`` (``AUTHSVC_REDIS_URL`` or ``redis_url``) may hold a secret."""
    return name.lower().removeprefix(ENV_PREFIX.lower()).endswith(_SECRET_BEARING_SUFFIXES)


@dataclass(frozen=True, slots=True)
class RateLimit:
    """``attempts`` allowed per ``window`` seconds."""

    attempts: int
    window: int

    @classmethod
    def parse(cls, text: str) -> RateLimit:
        attempts, sep, window = text.partition("/")
        if not sep or not attempts.strip().isdigit() or not window.strip().isdigit():
            raise ValueError("expected ATTEMPTS/SECONDS, e.g. 10/60")
        limit = cls(int(attempts), int(window))
        if limit.attempts < 1 or limit.window < 1:
            raise ValueError("attempts and seconds must be at least 1")
        return limit

    def __str__(self) -> str:
        return f"{self.attempts}/{self.window}"


@dataclass(frozen=True, slots=True)
class Settings:
    """Every setting of authsvc; see the table in README.md and config/authsvc.example.toml."""

    host: str = "127.0.0.1"
    port: int = 8080
    workers: int = 1
    redis_url: str | None = None
    data_dir: Path = Path("./authsvc-data")
    issuer: str | None = None
    audience: str = "authsvc"
    client_id: str = "authsvc"
    access_token_ttl: int = 900
    refresh_token_ttl: int = 1_209_600  # 14 days idle
    session_max_age: int = 2_592_000  # 30 days absolute
    refresh_reuse_grace: int = 10
    max_sessions_per_user: int = 100
    keys_dir: Path | None = None
    signing_alg: SigningAlgorithm = "EdDSA"
    registration: Registration = "open"
    introspection_clients: tuple[tuple[str, str], ...] = ()
    admin_clients: tuple[tuple[str, str], ...] = ()
    password_min_length: int = 12
    password_max_length: int = 128
    password_grant: bool = False
    # DPoP (RFC 9449): a login with a proof binds its session to the key (optional), every
    # login needs one (required), or the DPoP header is ignored (off).
    dpop: DpopMode = "optional"
    # A store with accounts made before passwords were NFKC-normalised (authsvc before
    # 2026-12-01): their hashes may hold a password as typed, tried at a second argon2 run.
    legacy_password_hashes: bool = False
    # Token buckets: ATTEMPTS at once, then ATTEMPTS per WINDOW, so no double burst at a
    # window's edge. Login counts per username and per client address.
    login_rate_limit: RateLimit = field(default_factory=lambda: RateLimit(10, 60))
    # Failed logins per account in any WINDOW, until a success clears them: ASVS 4.0.3
    # §2.2.1 and NIST 800-63B §5.2.2 allow at most 100 an hour.
    login_failure_limit: RateLimit = field(default_factory=lambda: RateLimit(100, 3600))
    # Per client address: registrations cost an argon2 hash and a stored account; a
    # refresh costs a signature. An office behind one NAT still fits in both.
    registration_rate_limit: RateLimit = field(default_factory=lambda: RateLimit(20, 3600))
    refresh_rate_limit: RateLimit = field(default_factory=lambda: RateLimit(600, 60))
    # The address limits count per IPv4 address and per IPv6 network of this many bits:
    # a host given a /64 may use any address in it.
    rate_limit_ipv6_prefix: int = 64
    # Per client address, failures only: introspection clients are services with fixed
    # secrets, so a run of failures is a misconfiguration or a scan; 20, then one every 30 s.
    client_auth_failure_limit: RateLimit = field(default_factory=lambda: RateLimit(20, 600))
    # logout-all, listing sessions and ending another session take only access tokens
    # issued (by a login or a refresh) this recently.
    sensitive_max_age: int = 300
    # Security events (GET /v1/auth/events) kept per user: the newest, for at most 90 days.
    events_per_user: int = 50
    events_ttl: int = 7_776_000
    # Browsers (docs/browsers.md): the origins allowed to call with credentials, exact as a
    # browser sends them in Origin; and the SameSite attribute of the refresh cookie.
    cors_origins: tuple[str, ...] = ()
    cookie_samesite: CookieSameSite = "Strict"
    # Peers whose X-Forwarded-For is believed (load balancers, reverse proxies), as CIDRs.
    trusted_proxies: tuple[Network, ...] = ()
    # RFC 9106 §4, second recommended option (64 MiB, 3 passes, 4 lanes).
    argon2_time_cost: int = 3
    argon2_memory_cost: int = 65_536  # KiB
    argon2_parallelism: int = 4
    hash_concurrency: int = 0  # 0: one per CPU core
    # Hashes waiting for a thread beyond those running; more get 503 with Retry-After.
    hash_queue_limit: int = 64
    store_timeout: float = 2.0
    store_retry_after: int = 1
    # Seconds a stop (SIGTERM, SIGINT) waits for the requests in flight before cutting them.
    shutdown_timeout: float = 30.0
    max_body_size: int = 16_384
    jwks_max_age: int = 300
    # How often each instance looks for new keys in keys_dir.
    keys_poll_interval: float = 5.0
    # The account page (/account): sign in, sessions, password, security events.
    account_page: bool = True
    log_level: LogLevel = "INFO"
    access_log: bool = True
    log_format: LogFormat = "text"

    def __repr__(self) -> str:
        fields = ", ".join(
            f"{f.name}=<hidden>"
            if is_secret_bearing(f.name)
            else f"{f.name}={getattr(self, f.name)!r}"
            for f in dataclasses.fields(self)
        )
        return f"Settings({fields})"

    @property
    def effective_issuer(self) -> str:
        return self.issuer or f"http://{self.host}:{self.port}"

    @property
    def signing_keys_dir(self) -> Path | None:
        """Where the signing keys live: ``keys_dir``, or the embedded store's data directory
        (so a restart keeps access tokens valid, as the store keeps their sessions)."""
        if self.keys_dir is not None:
            return self.keys_dir
        return self.data_dir if self.redis_url is None else None

    @property
    def effective_hash_concurrency(self) -> int:
        return self.hash_concurrency or (os.cpu_count() or 1)


def _parse_bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError("expected true or false")


def _parse_networks(text: str) -> tuple[Network, ...]:
    try:
        return tuple(
            ipaddress.ip_network(item.strip(), strict=False)
            for item in text.split(",")
            if item.strip()
        )
    except ValueError:
        raise ValueError("expected IP addresses or CIDR networks, comma-separated") from None


def _parse_clients(text: str) -> tuple[tuple[str, str], ...]:
    clients = []
    for item in text.split(","):
        if not item.strip():
            continue
        client_id, sep, secret = item.strip().partition(":")
        if not sep or not client_id or not secret:
            raise ValueError("expected id:secret[,id:secret...]")
        clients.append((client_id, secret))
    return tuple(clients)


def _parse_origins(text: str) -> tuple[str, ...]:
    """Exact origins, each as a browser writes it in ``Origin`` (RFC 6454 §6.1): a lower-case
    scheme and host, a port only when not the scheme's default, nothing after it."""
    origins = []
    for item in text.split(","):
        origin = item.strip()
        if not origin:
            continue
        if origin == "*" or origin == "null":
            # A wildcard cannot go with credentials (Fetch §3.2.5), and "null" is any
            # sandboxed frame or file: neither names a site.
            raise ValueError(f"{origin!r} is not an origin; list each origin exactly")
        if origin != origin_of(origin):
            raise ValueError(
                f"{origin!r} is not an origin as browsers send it "
                f"(scheme://host[:port], lower case, no path): {origin_of(origin)!r}?"
            )
        origins.append(origin)
    return tuple(origins)


def origin_of(url: str) -> str:
    """The origin of an http(s) URL as browsers serialise it (``""`` if it has none)."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:
        return ""
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https") or not parts.hostname:
        return ""
    host = parts.hostname  # lower case, IPv6 without its brackets
    if ":" in host:
        host = f"[{host}]"
    if port is not None and port != {"http": 80, "https": 443}[scheme]:
        host = f"{host}:{port}"
    return f"{scheme}://{host}"


_FIELD_TYPES: dict[str, Any] = {f.name: f.type for f in dataclasses.fields(Settings)}
_LITERALS: dict[str, tuple[str, ...]] = {
    "signing_alg": get_args(SigningAlgorithm),
    "registration": get_args(Registration),
    "log_format": get_args(LogFormat),
    "log_level": get_args(LogLevel),
    "dpop": get_args(DpopMode),
    "cookie_samesite": get_args(CookieSameSite),
}
_POSITIVE = {
    "port", "workers", "access_token_ttl", "refresh_token_ttl", "session_max_age",
    "password_min_length", "password_max_length", "argon2_time_cost", "argon2_memory_cost",
    "argon2_parallelism", "store_retry_after", "max_body_size", "max_sessions_per_user",
    "sensitive_max_age", "rate_limit_ipv6_prefix", "events_per_user", "events_ttl",
}  # fmt: skip
_NON_NEGATIVE = {"refresh_reuse_grace", "hash_concurrency", "hash_queue_limit", "jwks_max_age"}


def _cast(name: str, raw: object) -> object:
    """Turn a TOML value or an environment string into the field's type."""
    kind = _FIELD_TYPES[name]
    if name == "log_level" and isinstance(raw, str):
        raw = raw.strip().upper()  # as the logging module spells its levels
    if name == "cookie_samesite" and isinstance(raw, str):
        raw = raw.strip().capitalize()  # as RFC 6265bis spells the values
    if name in _LITERALS:
        if raw not in _LITERALS[name]:
            raise ValueError(f"expected one of {', '.join(_LITERALS[name])}")
        return raw
    if kind == "RateLimit":
        return RateLimit.parse(str(raw))
    if name in ("introspection_clients", "admin_clients"):
        return _parse_clients(str(raw))
    if name == "cors_origins":
        return _parse_origins(",".join(map(str, raw)) if isinstance(raw, list) else str(raw))
    if name == "trusted_proxies":
        return _parse_networks(",".join(raw) if isinstance(raw, list) else str(raw))
    if kind == "bool":
        return raw if isinstance(raw, bool) else _parse_bool(str(raw))
    if kind == "int":
        if isinstance(raw, bool) or not isinstance(raw, int | str):
            raise ValueError("expected an integer")
        return int(str(raw).strip())
    if kind == "float":
        if isinstance(raw, bool) or not isinstance(raw, int | float | str):
            raise ValueError("expected a number")
        return float(str(raw).strip())
    if kind in ("Path", "Path | None"):
        return Path(str(raw)) if str(raw) else None
    if kind == "str | None":
        return str(raw) or None
    if not isinstance(raw, str):
        raise ValueError("expected a string")
    return raw


def _validate(settings: Settings) -> None:
    for name in _POSITIVE:
        if getattr(settings, name) < 1:
            raise SettingsError(f"invalid setting {_env_name(name)}: must be at least 1")
    for name in _NON_NEGATIVE:
        if getattr(settings, name) < 0:
            raise SettingsError(f"invalid setting {_env_name(name)}: must not be negative")
    if settings.port > 65_535:
        raise SettingsError("invalid setting AUTHSVC_PORT: must be at most 65535")
    if settings.rate_limit_ipv6_prefix > 128:
        raise SettingsError("invalid setting AUTHSVC_RATE_LIMIT_IPV6_PREFIX: must be at most 128")
    if settings.password_min_length > settings.password_max_length:
        raise SettingsError(
            "invalid setting AUTHSVC_PASSWORD_MIN_LENGTH: exceeds AUTHSVC_PASSWORD_MAX_LENGTH"
        )
    if settings.argon2_memory_cost < 8 * settings.argon2_parallelism:
        raise SettingsError(
            "invalid setting AUTHSVC_ARGON2_MEMORY_COST: must be at least 8 KiB per lane"
        )
    for name in ("store_timeout", "shutdown_timeout", "keys_poll_interval"):
        if getattr(settings, name) <= 0:
            raise SettingsError(f"invalid setting {_env_name(name)}: must be positive")
    if settings.redis_url is not None:
        try:
            parse_store_url(settings.redis_url)
        except StoreUrlError as exc:
            raise SettingsError(f"invalid setting AUTHSVC_REDIS_URL: {exc}") from None


def _env_name(name: str) -> str:
    return ENV_PREFIX + name.upper()


def load_settings(
    environ: Mapping[str, str] | None = None,
    toml_path: Path | None = None,
    **overrides: object,
) -> Settings:
    """Build Settings from the TOML file, the environment and explicit overrides (CLI flags).

    Raises:
        SettingsError: naming the first bad setting, in one line.
    """
    values: dict[str, object] = {}
    if toml_path is not None:
        try:
            with toml_path.open("rb") as fh:
                document = tomllib.load(fh)
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise SettingsError(f"cannot read config file {toml_path}: {exc}") from None
        for key, raw in document.items():
            name = key.lower()
            if name not in _FIELD_TYPES:
                raise SettingsError(f"unknown setting {key!r} in {toml_path}")
            try:
                values[name] = _cast(name, raw)
            except ValueError as exc:
                raise SettingsError(f"invalid setting {key} in {toml_path}: {exc}") from None

    env = os.environ if environ is None else environ
    for variable in sorted(env):
        if (
            variable.startswith(ENV_PREFIX)
            and variable not in _TOOL_VARIABLES
            and variable[len(ENV_PREFIX) :].lower() not in _FIELD_TYPES
        ):
            logger.warning("ignoring unknown setting %s (misspelt?)", variable)
    for name in _FIELD_TYPES:
        raw_env = env.get(_env_name(name))
        if raw_env is None:
            continue
        try:
            values[name] = _cast(name, raw_env)
        except ValueError as exc:
            shown = "" if is_secret_bearing(name) else f"={raw_env!r}"
            raise SettingsError(f"invalid setting {_env_name(name)}{shown}: {exc}") from None

    values.update({k: v for k, v in overrides.items() if v is not None})
    settings = Settings(**values)  # type: ignore[arg-type]
    _validate(settings)
    return settings
