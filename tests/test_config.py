"""load_settings: the README's defaults, AUTHSVC_* over TOML, one-line errors naming a setting."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from authsvc.config import RateLimit, Settings, SettingsError, is_secret_bearing, load_settings

EXAMPLE_TOML = Path(__file__).resolve().parent.parent / "config" / "authsvc.example.toml"


def write_toml(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "authsvc.toml"
    path.write_text(text, encoding="utf-8")
    return path


def assert_names_setting(error: pytest.ExceptionInfo[SettingsError], name: str) -> None:
    message = str(error.value)
    assert name in message
    assert "\n" not in message


# Defaults


def test_defaults_match_the_contract_table() -> None:
    settings = load_settings(environ={})
    assert settings.host == "127.0.0.1"
    assert settings.port == 8080
    assert settings.redis_url is None  # the embedded store
    assert settings.data_dir == Path("./authsvc-data")
    assert settings.issuer is None
    assert settings.effective_issuer == "http://127.0.0.1:8080"
    assert settings.audience == "authsvc"
    assert settings.access_token_ttl == 900
    assert settings.refresh_token_ttl == 1_209_600
    assert settings.session_max_age == 2_592_000
    assert settings.refresh_reuse_grace == 10
    assert settings.keys_dir is None
    assert settings.registration == "open"
    assert settings.introspection_clients == ()
    assert settings.password_min_length == 12
    assert settings.password_max_length == 128
    assert settings.password_grant is False
    assert settings.login_rate_limit == RateLimit(10, 60)
    assert settings.signing_alg == "EdDSA"


def test_hardening_defaults() -> None:
    """ASVS 2.2.1: at most 100 failed logins per account an hour; the other limits are ours."""
    settings = load_settings(environ={})
    assert settings.login_failure_limit == RateLimit(100, 3600)
    assert settings.registration_rate_limit == RateLimit(20, 3600)
    assert settings.refresh_rate_limit == RateLimit(600, 60)
    assert settings.sensitive_max_age == 300
    assert settings.hash_queue_limit == 64


def test_hardening_settings_come_from_the_environment() -> None:
    settings = load_settings(
        environ={
            "AUTHSVC_LOGIN_FAILURE_LIMIT": "20/600",
            "AUTHSVC_REGISTRATION_RATE_LIMIT": "5/60",
            "AUTHSVC_REFRESH_RATE_LIMIT": "100/10",
            "AUTHSVC_SENSITIVE_MAX_AGE": "60",
            "AUTHSVC_HASH_QUEUE_LIMIT": "0",
        }
    )
    assert settings.login_failure_limit == RateLimit(20, 600)
    assert settings.registration_rate_limit == RateLimit(5, 60)
    assert settings.refresh_rate_limit == RateLimit(100, 10)
    assert settings.sensitive_max_age == 60
    assert settings.hash_queue_limit == 0


def test_defaults_are_the_settings_dataclass_defaults() -> None:
    assert load_settings(environ={}) == Settings()


def test_issuer_defaults_to_host_and_port() -> None:
    settings = load_settings(environ={"AUTHSVC_HOST": "auth.internal", "AUTHSVC_PORT": "9000"})
    assert settings.effective_issuer == "http://auth.internal:9000"
    settings = load_settings(environ={"AUTHSVC_ISSUER": "https://auth.example.com"})
    assert settings.effective_issuer == "https://auth.example.com"


def test_argon2_defaults_are_rfc_9106_second_option() -> None:
    settings = load_settings(environ={})
    assert settings.argon2_memory_cost == 65_536
    assert settings.argon2_time_cost == 3
    assert settings.argon2_parallelism == 4


def test_example_config_file_loads_with_the_defaults(tmp_path: Path) -> None:
    assert load_settings(environ={}, toml_path=EXAMPLE_TOML) == Settings()


# Environment


def test_environment_values_are_cast_to_their_types(tmp_path: Path) -> None:
    settings = load_settings(
        environ={
            "AUTHSVC_HOST": "0.0.0.0",
            "AUTHSVC_PORT": "9000",
            "AUTHSVC_REDIS_URL": "redis://127.0.0.1:6379/2",
            "AUTHSVC_DATA_DIR": str(tmp_path / "data"),
            "AUTHSVC_ISSUER": "https://auth.example.com",
            "AUTHSVC_AUDIENCE": "api",
            "AUTHSVC_ACCESS_TOKEN_TTL": "300",
            "AUTHSVC_REFRESH_TOKEN_TTL": "3600",
            "AUTHSVC_SESSION_MAX_AGE": "86400",
            "AUTHSVC_REFRESH_REUSE_GRACE": "0",
            "AUTHSVC_KEYS_DIR": str(tmp_path / "keys"),
            "AUTHSVC_REGISTRATION": "closed",
            "AUTHSVC_INTROSPECTION_CLIENTS": "gateway:s3cret,audit:other",
            "AUTHSVC_PASSWORD_MIN_LENGTH": "16",
            "AUTHSVC_PASSWORD_GRANT": "true",
            "AUTHSVC_LOGIN_RATE_LIMIT": "5/30",
            "AUTHSVC_STORE_TIMEOUT": "0.5",
        }
    )
    assert settings.host == "0.0.0.0"
    assert settings.port == 9000
    assert settings.redis_url == "redis://127.0.0.1:6379/2"
    assert settings.data_dir == tmp_path / "data"
    assert settings.issuer == "https://auth.example.com"
    assert settings.audience == "api"
    assert settings.access_token_ttl == 300
    assert settings.refresh_token_ttl == 3600
    assert settings.session_max_age == 86400
    assert settings.refresh_reuse_grace == 0
    assert settings.keys_dir == tmp_path / "keys"
    assert settings.registration == "closed"
    assert settings.introspection_clients == (("gateway", "s3cret"), ("audit", "other"))
    assert settings.password_min_length == 16
    assert settings.password_grant is True
    assert settings.login_rate_limit == RateLimit(5, 30)
    assert settings.store_timeout == 0.5


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("true", True), ("1", True), ("yes", True), ("false", False), ("0", False), ("off", False)],
)
def test_boolean_settings_accept_the_usual_spellings(raw: str, expected: bool) -> None:
    assert load_settings(environ={"AUTHSVC_PASSWORD_GRANT": raw}).password_grant is expected


@pytest.mark.parametrize(
    "url",
    [
        "redis://localhost:6379/0",
        "rediss://u:p@redis.example:6380/1",
        "unix:///run/redis.sock",
        "memory://",
        "redis+sentinel://s1:26379,s2:26379,s3:26379/mymaster",
        "rediss+sentinel://user:pw@s1:26379/mymaster/2",
        "redis+cluster://n1:7000,n2:7001",
        "rediss+cluster://user:pw@n1:7000",
    ],
)
def test_redis_url_accepts_every_topology(url: str) -> None:
    assert load_settings(environ={"AUTHSVC_REDIS_URL": url}).redis_url == url


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("redis+sentinel://s1:26379", "service_name"),
        ("redis+sentinel://s1:26379/mymaster/x", "database"),
        ("redis+cluster://n1:7000/1", "db 0"),
        ("redis+cluster://n1:notaport", "host:port"),
        ("redis+cluster://n1:7000,,n2:7001", "host:port"),
        ("redis+sentinel://s1:70000/m", "host:port"),
        ("valkey://x", "unknown scheme"),
    ],
)
def test_malformed_topology_urls_stop_the_start_with_one_line(url: str, reason: str) -> None:
    with pytest.raises(SettingsError, match=f"AUTHSVC_REDIS_URL.*{reason}") as raised:
        load_settings(environ={"AUTHSVC_REDIS_URL": url})
    assert "\n" not in str(raised.value)


def test_unrelated_environment_variables_are_ignored() -> None:
    settings = load_settings(environ={"PORT": "1", "HOME": "/root", "AUTHSVC": "x"})
    assert settings == Settings()


def test_environment_overrides_toml(tmp_path: Path) -> None:
    path = write_toml(
        tmp_path,
        'port = 9000\naudience = "from-toml"\naccess_token_ttl = 600\nregistration = "closed"\n',
    )
    settings = load_settings(
        environ={"AUTHSVC_PORT": "9100", "AUTHSVC_REGISTRATION": "open"}, toml_path=path
    )
    assert settings.port == 9100
    assert settings.registration == "open"
    # What the environment does not set still comes from the file.
    assert settings.audience == "from-toml"
    assert settings.access_token_ttl == 600


def test_explicit_overrides_beat_environment(tmp_path: Path) -> None:
    """CLI flags (--host, --port) win over AUTHSVC_*; a flag left out changes nothing."""
    settings = load_settings(
        environ={"AUTHSVC_PORT": "9100", "AUTHSVC_HOST": "10.0.0.1"}, port=9200, host=None
    )
    assert settings.port == 9200
    assert settings.host == "10.0.0.1"


def test_toml_values_keep_their_native_types(tmp_path: Path) -> None:
    path = write_toml(
        tmp_path,
        "password_grant = true\n"
        'login_rate_limit = "3/10"\n'
        "store_timeout = 1\n"
        'introspection_clients = "gw:secret"\n'
        f'keys_dir = "{tmp_path / "keys"}"\n',
    )
    settings = load_settings(environ={}, toml_path=path)
    assert settings.password_grant is True
    assert settings.login_rate_limit == RateLimit(3, 10)
    assert settings.store_timeout == 1.0
    assert settings.introspection_clients == (("gw", "secret"),)
    assert settings.keys_dir == tmp_path / "keys"


# Bad values: SettingsError, one line, naming the setting


@pytest.mark.parametrize(
    ("name", "raw"),
    [
        ("AUTHSVC_PORT", "abc"),
        ("AUTHSVC_PORT", "0"),
        ("AUTHSVC_PORT", "70000"),
        ("AUTHSVC_PORT", "80.5"),
        ("AUTHSVC_REGISTRATION", "maybe"),
        ("AUTHSVC_REGISTRATION", "OPEN "),
        ("AUTHSVC_LOGIN_RATE_LIMIT", "10"),
        ("AUTHSVC_LOGIN_RATE_LIMIT", "10/"),
        ("AUTHSVC_LOGIN_RATE_LIMIT", "0/60"),
        ("AUTHSVC_LOGIN_RATE_LIMIT", "ten/60"),
        ("AUTHSVC_REDIS_URL", "http://x"),
        ("AUTHSVC_REDIS_URL", "localhost:6379"),
        ("AUTHSVC_ACCESS_TOKEN_TTL", "-5"),
        ("AUTHSVC_ACCESS_TOKEN_TTL", "0"),
        ("AUTHSVC_ACCESS_TOKEN_TTL", "15m"),
        ("AUTHSVC_REFRESH_TOKEN_TTL", "0"),
        ("AUTHSVC_SESSION_MAX_AGE", "-1"),
        ("AUTHSVC_REFRESH_REUSE_GRACE", "-1"),
        ("AUTHSVC_PASSWORD_MIN_LENGTH", "0"),
        ("AUTHSVC_PASSWORD_MIN_LENGTH", "200"),
        ("AUTHSVC_PASSWORD_GRANT", "perhaps"),
        ("AUTHSVC_INTROSPECTION_CLIENTS", "gateway"),
        ("AUTHSVC_INTROSPECTION_CLIENTS", "gateway:"),
        ("AUTHSVC_SIGNING_ALG", "HS256"),
        ("AUTHSVC_STORE_TIMEOUT", "soon"),
        ("AUTHSVC_STORE_TIMEOUT", "0"),
        ("AUTHSVC_LOGIN_FAILURE_LIMIT", "100"),
        ("AUTHSVC_REGISTRATION_RATE_LIMIT", "0/3600"),
        ("AUTHSVC_REFRESH_RATE_LIMIT", "600/"),
        ("AUTHSVC_SENSITIVE_MAX_AGE", "0"),
        ("AUTHSVC_HASH_QUEUE_LIMIT", "-1"),
        ("AUTHSVC_SHUTDOWN_TIMEOUT", "0"),
        ("AUTHSVC_SHUTDOWN_TIMEOUT", "-1"),
        ("AUTHSVC_SHUTDOWN_TIMEOUT", "never"),
        ("AUTHSVC_LOG_LEVEL", "LOUD"),
        ("AUTHSVC_LOG_LEVEL", "10"),
        ("AUTHSVC_LOG_FORMAT", "xml"),
        ("AUTHSVC_ACCESS_LOG", "perhaps"),
        ("AUTHSVC_WORKERS", "0"),
        ("AUTHSVC_TRUSTED_PROXIES", "the-load-balancer"),
        ("AUTHSVC_MAX_SESSIONS_PER_USER", "0"),
        ("AUTHSVC_MAX_BODY_SIZE", "16k"),
        ("AUTHSVC_HASH_CONCURRENCY", "-1"),
        ("AUTHSVC_JWKS_MAX_AGE", "-1"),
        ("AUTHSVC_STORE_RETRY_AFTER", "0"),
        ("AUTHSVC_ARGON2_MEMORY_COST", "4"),
    ],
)
def test_bad_environment_value_names_the_setting(name: str, raw: str) -> None:
    with pytest.raises(SettingsError) as error:
        load_settings(environ={name: raw})
    assert_names_setting(error, name)


# Secret-bearing settings: named, never echoed

SECRET = "hunter2-Zq7vLm2p"


@pytest.mark.parametrize(
    ("name", "raw"),
    [
        ("AUTHSVC_INTROSPECTION_CLIENTS", f"gw:{SECRET},broken"),
        ("AUTHSVC_INTROSPECTION_CLIENTS", f"gw:{SECRET},:x"),
        # A password with an unencoded "/" or "@" splits where the host list is read.
        ("AUTHSVC_REDIS_URL", f"redis+sentinel://app:{SECRET[:7]}/{SECRET[8:]}@s1:26379"),
        ("AUTHSVC_REDIS_URL", f"redis+sentinel://app:{SECRET}@s1:26379/m/{SECRET}"),
        ("AUTHSVC_REDIS_URL", f"redis+cluster://app:{SECRET}@n1:7000/1"),
        ("AUTHSVC_REDIS_URL", f"{SECRET}://x"),
    ],
)
def test_a_bad_secret_bearing_setting_is_named_without_its_value(
    tmp_path: Path, name: str, raw: str
) -> None:
    """``invalid setting NAME=VALUE`` once printed an introspection secret, or a Redis
    password, to the terminal and the orchestrator's log of a failed start."""
    with pytest.raises(SettingsError) as from_env:
        load_settings(environ={name: raw})
    key = name.removeprefix("AUTHSVC_").lower()
    with pytest.raises(SettingsError) as from_toml:
        load_settings(environ={}, toml_path=write_toml(tmp_path, f"{key} = {raw!r}\n"))
    for error in (from_env, from_toml):
        message = str(error.value)
        assert "\n" not in message and (name in message or key in message), message
        pieces = {SECRET[i : i + 6] for i in range(len(SECRET) - 5)}
        assert not any(piece in message for piece in pieces), message


def test_settings_that_hold_credentials_are_secret_bearing_by_their_name() -> None:
    """The rule is the name: client lists (``*_CLIENTS``, id:secret), URLs (a password in
    them), and anything named a secret, a password or a token; so a later ``*_CLIENTS``
    setting is covered without being listed."""
    credential_lists = [
        f.name for f in dataclasses.fields(Settings) if f.type == "tuple[tuple[str, str], ...]"
    ]
    assert credential_lists
    assert all(is_secret_bearing(name) for name in credential_lists)
    for name in ("AUTHSVC_REDIS_URL", "AUTHSVC_ADMIN_CLIENTS", "webhook_secret", "smtp_password"):
        assert is_secret_bearing(name)
    for name in ("AUTHSVC_PASSWORD_MIN_LENGTH", "password_grant", "issuer", "AUTHSVC_PORT"):
        assert not is_secret_bearing(name)


def test_the_repr_of_settings_shows_no_secret() -> None:
    settings = load_settings(
        environ={
            "AUTHSVC_INTROSPECTION_CLIENTS": f"gw:{SECRET}",
            "AUTHSVC_REDIS_URL": f"redis://app:{SECRET}@db:6379/0",
        }
    )
    assert SECRET not in repr(settings)
    assert "redis_url=<hidden>" in repr(settings) and "port=8080" in repr(settings)


@pytest.mark.parametrize(("raw", "level"), [("debug", "DEBUG"), (" Warning ", "WARNING")])
def test_log_level_is_read_in_any_case(raw: str, level: str) -> None:
    assert load_settings(environ={"AUTHSVC_LOG_LEVEL": raw}).log_level == level


def test_shutdown_timeout_defaults_to_30_seconds() -> None:
    assert load_settings(environ={}).shutdown_timeout == 30.0
    assert load_settings(environ={"AUTHSVC_SHUTDOWN_TIMEOUT": "2.5"}).shutdown_timeout == 2.5


def test_settings_error_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="AUTHSVC_PORT"):
        load_settings(environ={"AUTHSVC_PORT": "abc"})


@pytest.mark.parametrize(
    ("text", "name"),
    [
        ('port = "abc"\n', "port"),
        ("port = true\n", "port"),
        ("access_token_ttl = 1.5\n", "access_token_ttl"),
        ("access_token_ttl = -5\n", "ACCESS_TOKEN_TTL"),
        ('registration = "maybe"\n', "registration"),
        ('login_rate_limit = "10"\n', "login_rate_limit"),
        ('redis_url = "http://x"\n', "REDIS_URL"),
        ("audience = 7\n", "audience"),
    ],
)
def test_bad_toml_value_names_the_setting(tmp_path: Path, text: str, name: str) -> None:
    with pytest.raises(SettingsError) as error:
        load_settings(environ={}, toml_path=write_toml(tmp_path, text))
    assert_names_setting(error, name)


def test_unknown_toml_key_is_rejected(tmp_path: Path) -> None:
    path = write_toml(tmp_path, "port = 8080\naccess_token_tll = 900\n")
    with pytest.raises(SettingsError) as error:
        load_settings(environ={}, toml_path=path)
    assert_names_setting(error, "access_token_tll")


def test_toml_table_is_rejected_as_unknown_key(tmp_path: Path) -> None:
    path = write_toml(tmp_path, "[server]\nport = 8080\n")
    with pytest.raises(SettingsError) as error:
        load_settings(environ={}, toml_path=path)
    assert_names_setting(error, "server")


def test_missing_config_file_is_a_settings_error(tmp_path: Path) -> None:
    path = tmp_path / "nowhere.toml"
    with pytest.raises(SettingsError) as error:
        load_settings(environ={}, toml_path=path)
    assert_names_setting(error, str(path))


def test_malformed_toml_is_a_settings_error(tmp_path: Path) -> None:
    path = write_toml(tmp_path, "port = \n[[[")
    with pytest.raises(SettingsError) as error:
        load_settings(environ={}, toml_path=path)
    assert_names_setting(error, str(path))


def test_bad_environment_value_is_reported_even_over_a_good_toml(tmp_path: Path) -> None:
    path = write_toml(tmp_path, "port = 9000\n")
    with pytest.raises(SettingsError) as error:
        load_settings(environ={"AUTHSVC_PORT": "abc"}, toml_path=path)
    assert_names_setting(error, "AUTHSVC_PORT")


def test_settings_are_frozen() -> None:
    settings = load_settings(environ={})
    with pytest.raises(AttributeError):
        settings.port = 1  # type: ignore[misc]


# The settings the HTTP tests run with


async def test_settings_fixture_is_the_default_contract(settings: Settings) -> None:
    """The HTTP tests compare against the defaults that docs/api.md gives."""
    defaults = Settings()
    names = [
        "access_token_ttl",
        "refresh_token_ttl",
        "session_max_age",
        "refresh_reuse_grace",
        "audience",
        "password_min_length",
    ]
    for name in names:
        assert getattr(settings, name) == getattr(defaults, name)
