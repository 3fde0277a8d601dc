"""The command line as real processes: keys generate, serve's start-up errors, users create."""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from servers import authsvc_command, child_env
from support import TEST_PASSWORD, bearer, free_port, login, register

from authsvc.tokens.keys import KeyRing, SigningKey, generate_private_key, write_key_file
from authsvc.tokens.rotation import ActiveKeys, RotationPolicy

pytestmark = pytest.mark.process

TIMEOUT = 60  # seconds; only a hung process gets near it

FAST_ARGON2 = {
    "AUTHSVC_ARGON2_TIME_COST": "1",
    "AUTHSVC_ARGON2_MEMORY_COST": "64",  # Only for testing!
    "AUTHSVC_ARGON2_PARALLELISM": "1",
}


def cli_env(**settings: str) -> dict[str, str]:
    """The test process's environment without any AUTHSVC_* of its own, plus ``settings``."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("AUTHSVC_")}
    env.update(settings)
    return env


def run_cli(
    *args: str, cwd: Path, env: dict[str, str] | None = None, stdin: str = ""
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*authsvc_command(), *args],
        input=stdin,
        capture_output=True,
        text=True,
        cwd=cwd,
        env=child_env(env if env is not None else cli_env()),
        timeout=TIMEOUT,
        check=False,
    )


def users_create(
    username: str, password: str, *, cwd: Path, env: dict[str, str]
) -> subprocess.CompletedProcess[str]:
    return run_cli(
        "users", "create", "--username", username, "--password-stdin",
        cwd=cwd, env=env, stdin=password + "\n",
    )  # fmt: skip


def assert_one_line_error(result: subprocess.CompletedProcess[str], name: str) -> None:
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert name in lines[0]


# keys generate


@pytest.mark.parametrize("alg", ["EdDSA", "ES256"])
def test_keys_generate_writes_a_pem_the_key_ring_loads(tmp_path: Path, alg: str) -> None:
    keys_dir = tmp_path / "keys"
    result = run_cli("keys", "generate", "--dir", str(keys_dir), "--alg", alg, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    (pem,) = keys_dir.glob("*.pem")
    assert pem.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    assert stat.S_IMODE(pem.stat().st_mode) == 0o600  # a private key, owner only
    ring = KeyRing.from_directory(keys_dir)
    assert ring.current.kid == pem.stem
    assert ring.current.alg == alg
    assert pem.stem in result.stdout
    assert [key["kid"] for key in ring.jwks["keys"]] == [pem.stem]
    # Beside it, the secret refresh tokens are MACed with, owner-only too.
    secret = keys_dir / "refresh-token.secret"
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600
    assert ring.refresh_secret == KeyRing.from_directory(keys_dir).refresh_secret


@pytest.mark.parametrize("umask", [0o022, 0o000])
def test_keys_generate_makes_its_directory_owner_only(tmp_path: Path, umask: int) -> None:
    """A new directory (and the parents it needs) whatever the umask: 0700 for the keys
    directory itself, 0600 for what it holds; a directory that exists keeps its mode."""
    keys_dir = tmp_path / "not" / "yet" / "keys"
    previous = os.umask(umask)  # the CLI's process inherits it
    try:
        result = run_cli("keys", "generate", "--dir", str(keys_dir), cwd=tmp_path)
    finally:
        os.umask(previous)
    assert result.returncode == 0, result.stderr
    assert stat.S_IMODE(keys_dir.stat().st_mode) == 0o700
    assert {stat.S_IMODE(path.stat().st_mode) for path in keys_dir.iterdir()} == {0o600}
    shared = tmp_path / "shared"  # e.g. a volume an operator made and owns
    shared.mkdir(mode=0o750)
    shared.chmod(0o750)
    assert run_cli("keys", "generate", "--dir", str(shared), cwd=tmp_path).returncode == 0
    assert stat.S_IMODE(shared.stat().st_mode) == 0o750


def test_keys_generate_defaults_to_eddsa(tmp_path: Path) -> None:
    result = run_cli("keys", "generate", "--dir", str(tmp_path), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert KeyRing.from_directory(tmp_path).current.alg == "EdDSA"


def test_keys_generate_refuses_a_directory_that_has_keys(tmp_path: Path) -> None:
    """A second first key would sign at once, before any gateway has seen it: rotate."""
    assert run_cli("keys", "generate", "--dir", str(tmp_path), cwd=tmp_path).returncode == 0
    assert_one_line_error(
        run_cli("keys", "generate", "--dir", str(tmp_path), cwd=tmp_path), "keys rotate"
    )
    assert len(list(tmp_path.glob("*.pem"))) == 1


def test_keys_rotate_adds_the_next_key_of_the_same_algorithm(tmp_path: Path) -> None:
    generated = run_cli("keys", "generate", "--dir", str(tmp_path), "--alg", "ES256", cwd=tmp_path)
    assert generated.returncode == 0
    first = KeyRing.from_directory(tmp_path)
    rotated = run_cli("keys", "rotate", "--dir", str(tmp_path), cwd=tmp_path)
    assert rotated.returncode == 0, rotated.stderr
    ring = KeyRing.from_directory(tmp_path)
    assert [key.kid for key in ring] == [first.current.kid, ring.current.kid]
    assert ring.current.alg == "ES256"
    assert ring.refresh_secret == first.refresh_secret
    assert "signing after JWKS_MAX_AGE" in rotated.stdout
    switched = run_cli("keys", "rotate", "--dir", str(tmp_path), "--alg", "RS256", cwd=tmp_path)
    assert switched.returncode == 0
    assert KeyRing.from_directory(tmp_path).current.alg == "RS256"


def test_keys_rotate_writes_when_it_published_the_key_whatever_its_kid_says(
    tmp_path: Path,
) -> None:
    """The schedule file is what every instance schedules the key by: it signs
    publish_before_signing after that time, not after the time in its kid."""
    current = SigningKey.create(generate_private_key("EdDSA"), created_at=time.time() - 86_400)
    write_key_file(tmp_path, current)
    before = time.time()
    rotated = run_cli("keys", "rotate", "--dir", str(tmp_path), cwd=tmp_path)
    after = time.time()
    assert rotated.returncode == 0, rotated.stderr
    ring = KeyRing.from_directory(tmp_path)
    new = ring.current
    assert new.kid != current.kid
    schedule = json.loads((tmp_path / f"{new.kid}.json").read_text())
    assert before <= schedule["published_at"] <= after
    assert new.published_at == schedule["published_at"]
    # A rotation's first key has no schedule file: it was there from the start.
    assert ring.get(current.kid).published_at is None  # type: ignore[union-attr]
    policy = RotationPolicy(publish_before_signing=300, keep_after_signing=900)
    keys = ActiveKeys(ring, policy, now=after)
    assert keys.signer.kid == current.kid
    assert keys.at(schedule["published_at"] + 300).signer.kid == new.kid


def test_keys_rotate_needs_a_first_key(tmp_path: Path) -> None:
    assert_one_line_error(
        run_cli("keys", "rotate", "--dir", str(tmp_path), cwd=tmp_path), "keys generate"
    )


# serve: a bad setting stops it at start, in one line


def test_serve_with_invalid_setting_exits_with_one_line(tmp_path: Path) -> None:
    result = run_cli("serve", cwd=tmp_path, env=cli_env(AUTHSVC_ACCESS_TOKEN_TTL="-5"))
    assert_one_line_error(result, "AUTHSVC_ACCESS_TOKEN_TTL")
    assert result.stdout == ""
    assert not (tmp_path / "authsvc-data").exists()  # no store was started


@pytest.mark.parametrize("host", ["0.0.0.0", "::"])
def test_serve_on_every_address_needs_an_explicit_issuer(tmp_path: Path, host: str) -> None:
    """The Dockerfile listens on 0.0.0.0: ``iss`` must never be http://0.0.0.0:8080."""
    result = run_cli("serve", cwd=tmp_path, env=cli_env(AUTHSVC_HOST=host))
    assert_one_line_error(result, "AUTHSVC_ISSUER")
    assert not (tmp_path / "authsvc-data").exists()


@pytest.mark.parametrize(
    ("name", "raw"),
    [
        ("AUTHSVC_PORT", "abc"),
        ("AUTHSVC_REGISTRATION", "maybe"),
        ("AUTHSVC_LOGIN_RATE_LIMIT", "10"),
        ("AUTHSVC_REDIS_URL", "http://x"),
        ("AUTHSVC_LOG_LEVEL", "LOUD"),  # once a traceback from the logging module
        ("AUTHSVC_SHUTDOWN_TIMEOUT", "0"),
    ],
)
def test_serve_names_the_bad_setting(tmp_path: Path, name: str, raw: str) -> None:
    assert_one_line_error(run_cli("serve", cwd=tmp_path, env=cli_env(**{name: raw})), name)


@pytest.mark.parametrize("workers", ["1", "2"])
def test_serve_on_a_port_in_use_exits_with_one_line(
    tmp_path: Path, workers: str, keys_dir: Path
) -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = str(taken.getsockname()[1])
        env = cli_env(
            AUTHSVC_PORT=port, AUTHSVC_WORKERS=workers, AUTHSVC_LOG_LEVEL="WARNING",
            AUTHSVC_REDIS_URL=f"redis://127.0.0.1:{free_port()}/0", AUTHSVC_KEYS_DIR=str(keys_dir),
        )  # fmt: skip
        result = run_cli("serve", cwd=tmp_path, env=env)
    assert_one_line_error(result, port)
    assert result.returncode == 2


def test_serve_with_unknown_config_key_exits_with_one_line(tmp_path: Path) -> None:
    config = tmp_path / "authsvc.toml"
    config.write_text("acess_token_ttl = 900\n", encoding="utf-8")
    result = run_cli("serve", "--config", str(config), cwd=tmp_path)
    assert_one_line_error(result, "acess_token_ttl")


def test_serve_with_empty_keys_dir_exits_with_one_line(tmp_path: Path) -> None:
    keys_dir = tmp_path / "keys"
    keys_dir.mkdir()
    result = run_cli(
        "serve", cwd=tmp_path, env=cli_env(AUTHSVC_KEYS_DIR=str(keys_dir), AUTHSVC_PORT="1")
    )
    assert_one_line_error(result, str(keys_dir))


# users create


async def test_users_create_makes_an_account_that_can_log_in(
    tmp_path: Path, redis_url: str, make_client: Any
) -> None:
    client = await make_client()  # flushes the suite's Redis first
    env = cli_env(AUTHSVC_REDIS_URL=redis_url, **FAST_ARGON2)
    result = users_create("  Carol ", TEST_PASSWORD, cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr
    assert "carol" in result.stdout
    pair = await login(client, "carol")
    me = await (await client.get("/v1/auth/me", headers=bearer(pair))).json()
    assert me["username"] == "carol"
    assert me["user_id"] in result.stdout


async def test_users_create_works_when_registration_is_closed(
    tmp_path: Path, redis_url: str, make_client: Any
) -> None:
    client = await make_client(registration="closed")
    env = cli_env(AUTHSVC_REDIS_URL=redis_url, AUTHSVC_REGISTRATION="closed", **FAST_ARGON2)
    result = users_create("dave", TEST_PASSWORD, cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr
    await login(client, "dave")


async def test_users_create_refuses_a_taken_username_and_a_weak_password(
    tmp_path: Path, redis_url: str, make_client: Any
) -> None:
    await make_client()
    env = cli_env(AUTHSVC_REDIS_URL=redis_url, **FAST_ARGON2)
    assert users_create("erin", TEST_PASSWORD, cwd=tmp_path, env=env).returncode == 0
    assert_one_line_error(users_create("ERIN", TEST_PASSWORD, cwd=tmp_path, env=env), "taken")
    assert_one_line_error(users_create("frank", "short", cwd=tmp_path, env=env), "password")


def test_a_keys_dir_with_an_empty_refresh_secret_stops_the_start(tmp_path: Path) -> None:
    """An empty secret file (a crash while writing it) is never used as a secret."""
    keys_dir = tmp_path / "keys"
    assert run_cli("keys", "generate", "--dir", str(keys_dir), cwd=tmp_path).returncode == 0
    (keys_dir / "refresh-token.secret").write_text("")
    result = run_cli(
        "serve", cwd=tmp_path, env=cli_env(AUTHSVC_KEYS_DIR=str(keys_dir), AUTHSVC_PORT="1")
    )
    assert_one_line_error(result, "refresh-token.secret")


# users show | revoke | disable | enable | set-password | roles | delete


def users(
    command: str, *args: str, cwd: Path, env: dict[str, str], stdin: str = ""
) -> subprocess.CompletedProcess[str]:
    return run_cli("users", command, *args, cwd=cwd, env=env, stdin=stdin)


async def test_users_show_prints_the_account_as_json(
    tmp_path: Path, redis_url: str, make_client: Any
) -> None:
    client = await make_client()
    user = await register(client, "grace")
    await login(client, "grace")
    env = cli_env(AUTHSVC_REDIS_URL=redis_url, **FAST_ARGON2)
    result = users("show", "--username", " GRACE ", cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr
    shown = json.loads(result.stdout)
    assert shown == {
        "user_id": user["user_id"], "username": "grace", "created_at": shown["created_at"],
        "disabled": False, "roles": [], "session_count": 1,
    }  # fmt: skip
    assert isinstance(shown["created_at"], int)


async def test_users_commands_change_the_account_as_the_operator_api_does(
    tmp_path: Path, redis_url: str, make_client: Any
) -> None:
    """With the settings of serve from a --config file, as well as the environment."""
    client = await make_client()
    await register(client, "heidi")
    config = tmp_path / "authsvc.toml"
    config.write_text(f'redis_url = "{redis_url}"\nargon2_time_cost = 1\nargon2_memory_cost = 64\n')
    env = cli_env()
    by_name = ("--username", "heidi", "--config", str(config))

    def show() -> dict[str, Any]:
        shown: dict[str, Any] = json.loads(users("show", *by_name, cwd=tmp_path, env=env).stdout)
        return shown

    pair = await login(client, "heidi")
    assert users("revoke", *by_name, cwd=tmp_path, env=env).returncode == 0
    assert (await client.get("/v1/auth/me", headers=bearer(pair))).status == 401

    pair = await login(client, "heidi")
    assert users("disable", *by_name, cwd=tmp_path, env=env).returncode == 0
    assert (await client.get("/v1/auth/me", headers=bearer(pair))).status == 401
    body = {"username": "heidi", "password": TEST_PASSWORD}
    assert (await client.post("/v1/auth/login", json=body)).status == 403
    assert show()["disabled"] is True
    assert users("enable", *by_name, cwd=tmp_path, env=env).returncode == 0
    pair = await login(client, "heidi")

    new_password = "the cli set this passphrase"
    set_password = users("set-password", *by_name, cwd=tmp_path, env=env, stdin=new_password + "\n")
    assert set_password.returncode == 0, set_password.stderr
    assert (await client.get("/v1/auth/me", headers=bearer(pair))).status == 401
    assert (await client.post("/v1/auth/login", json=body)).status == 401
    body["password"] = new_password
    assert (await client.post("/v1/auth/login", json=body)).status == 200
    weak = users("set-password", *by_name, cwd=tmp_path, env=env, stdin="short\n")
    assert weak.returncode == 2
    assert_one_line_error(weak, "password")

    roles = users("roles", *by_name, "--role", "support", "--role", "a:b", cwd=tmp_path, env=env)
    assert roles.returncode == 0, roles.stderr
    assert show()["roles"] == ["support", "a:b"]
    bad = users("roles", *by_name, "--role", "no spaces", cwd=tmp_path, env=env)
    assert bad.returncode == 2
    assert_one_line_error(bad, "role")
    assert users("roles", *by_name, cwd=tmp_path, env=env).returncode == 0
    assert show()["roles"] == []

    # Each change is a security event of the account, with no client: no request made it.
    listed = await client.get(
        "/v1/auth/events", headers=bearer(await login(client, "heidi", password=new_password))
    )
    by_cli = [e for e in (await listed.json())["events"] if e["type"] != "login"]
    assert [e["type"] for e in by_cli if e["ip"] == ""] == [
        "roles_changed", "roles_changed", "password_changed", "account_enabled",
        "account_disabled", "logout_all",
    ]  # fmt: skip
    assert all(e["session_id"] is None and e["user_agent"] == "" for e in by_cli if e["ip"] == "")

    assert users("delete", *by_name, cwd=tmp_path, env=env).returncode == 0
    assert (await client.post("/v1/auth/login", json=body)).status == 401
    gone = users("show", *by_name, cwd=tmp_path, env=env)
    assert gone.returncode == 1
    assert_one_line_error(gone, "heidi")


@pytest.mark.parametrize(
    "command", ["show", "revoke", "disable", "enable", "set-password", "roles", "delete"]
)
async def test_users_commands_exit_1_for_an_unknown_user_and_2_for_a_usage_error(
    tmp_path: Path, redis_url: str, make_client: Any, command: str
) -> None:
    await make_client()
    env = cli_env(AUTHSVC_REDIS_URL=redis_url, **FAST_ARGON2)
    unknown = users(command, "--username", "nobody", cwd=tmp_path, env=env, stdin="x\n")
    assert unknown.returncode == 1
    assert_one_line_error(unknown, "nobody")
    assert users(command, cwd=tmp_path, env=env).returncode == 2  # no --username
    assert users(command, "--username", "x", "--bogus", cwd=tmp_path, env=env).returncode == 2
