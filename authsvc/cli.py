"""authsvc serve | keys generate | keys rotate | users ...: parse arguments, build Settings,
call in.

``users show | revoke | disable | enable | set-password | roles | delete --username NAME`` do
what the operator API does, through the same ``AccountService``, without HTTP: exit 0 on
success, 1 (one line on stderr) when no account has the name, 2 for a usage error.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from aiohttp import web

from authsvc.config import Settings, SettingsError, load_settings
from authsvc.domain.accounts import Account, AccountService
from authsvc.errors import AuthsvcError, NotFound
from authsvc.http.appkeys import ACCOUNTS, CLOCK, SESSIONS
from authsvc.server.app import create_app
from authsvc.server.serve import serve
from authsvc.store.embedded import EmbeddedStoreError
from authsvc.telemetry.logs import configure_logging
from authsvc.tokens.keys import (
    KeyRing,
    KeyRingError,
    SigningAlgorithm,
    SigningKey,
    generate_private_key,
    load_refresh_secret,
    write_key_file,
    write_schedule_file,
)
from authsvc.version import VERSION


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="authsvc", description="authsvc token service")
    parser.add_argument("--version", action="version", version=f"authsvc {VERSION}")
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("serve", help="run the HTTP server")
    run.add_argument("--host")
    run.add_argument("--port", type=int)
    run.add_argument("--workers", type=int)
    run.add_argument("--config", type=Path, help="TOML file of settings")

    keys = commands.add_parser("keys", help="manage signing keys")
    keys_commands = keys.add_subparsers(dest="keys_command", required=True)
    generate = keys_commands.add_parser("generate", help="write the first signing key")
    generate.add_argument("--dir", type=Path, required=True)
    generate.add_argument("--alg", choices=["EdDSA", "ES256", "RS256"], default="EdDSA")
    rotate = keys_commands.add_parser(
        "rotate", help="add the next signing key: published at once, signing after JWKS_MAX_AGE"
    )
    rotate.add_argument("--dir", type=Path, required=True)
    rotate.add_argument(
        "--alg", choices=["EdDSA", "ES256", "RS256"], help="default: the current key's"
    )

    users = commands.add_parser("users", help="manage accounts")
    users_commands = users.add_subparsers(dest="users_command", required=True)
    create = users_commands.add_parser("create", help="create an account (also when closed)")
    create.add_argument("--username", required=True)
    create.add_argument(
        "--password-stdin", action="store_true", help="read the password from stdin"
    )
    create.add_argument("--config", type=Path, help="TOML file of settings")
    for name, text in _USER_COMMANDS.items():
        command = users_commands.add_parser(name, help=text)
        command.add_argument("--username", required=True)
        command.add_argument("--config", type=Path, help="TOML file of settings")
        if name == "roles":
            command.add_argument(
                "--role", action="append", default=[], help="a role (repeated; none clears them)"
            )
    return parser


# The operator's actions, as `authsvc users NAME --username ...`; the CLI's operator id in
# the logs is "cli".
_USER_COMMANDS = {
    "show": "print the account as JSON (the User of the operator API)",
    "revoke": "end every session of the account at once",
    "disable": "disable the account: every session ends, logins are refused",
    "enable": "enable the account again",
    "set-password": "set the password, read from stdin; every session ends",
    "roles": "set the roles that access tokens issued from now on carry",
    "delete": "delete the account and everything the store holds of it",
}
CLI_OPERATOR = "cli"


def _account_json(account: Account) -> str:
    return json.dumps(account.fields())


async def _user_command(settings: Settings, args: argparse.Namespace, password: str) -> str:
    """Run one ``users`` action on the account named ``args.username``; its output line.

    Raises:
        NotFound: no account has the name.
        WeakPassword, InvalidRequest: a password or roles the rules refuse.
    """
    app = create_app(settings, key_ring=KeyRing.generated(settings.signing_alg))
    runner = web.AppRunner(app)
    await runner.setup()
    try:
        accounts, now = app[ACCOUNTS], app[CLOCK]()
        account = await accounts.find(args.username, now=now)
        uid, by = account.user_id, CLI_OPERATOR
        # Each change is a security event of the account, with no client: no request
        # caused it (the event's ip, user_agent and device are "").
        actions: dict[str, Callable[[AccountService], Awaitable[None]]] = {
            "revoke": lambda a: a.revoke_sessions(uid, operator=by, now=now),
            "disable": lambda a: a.set_disabled(uid, True, operator=by, now=now),
            "enable": lambda a: a.set_disabled(uid, False, operator=by, now=now),
            "set-password": lambda a: a.set_password(uid, password, operator=by, now=now),
            "roles": lambda a: a.set_roles(uid, args.role, operator=by, now=now),
            "delete": lambda a: a.delete(uid, operator=by),
        }
        if args.users_command == "show":
            return _account_json(account)
        await actions[args.users_command](accounts)
        return f"{args.users_command}: user {account.username} ({uid})"
    finally:
        await runner.cleanup()


def _read_password(from_stdin: bool) -> str:
    if from_stdin:
        return sys.stdin.readline().rstrip("\n")
    password = getpass.getpass("password: ")
    if getpass.getpass("again: ") != password:
        raise SystemExit("authsvc: the passwords differ")
    return password


async def _create_user(settings: Settings, username: str, password: str) -> str:
    # The same services as the server, started without a listening socket.
    app = create_app(settings, key_ring=KeyRing.generated(settings.signing_alg))
    runner = web.AppRunner(app)
    await runner.setup()
    try:
        user = await app[SESSIONS].register(username, password, now=app[CLOCK]())
    finally:
        await runner.cleanup()
    return f"created user {user.username} ({user.user_id})"


def _write_key(directory: Path, command: str, alg: SigningAlgorithm | None) -> str:
    """Write the first key (generate) or the next one (rotate) into a keys directory.

    Raises:
        KeyRingError: generate on a directory that has keys, rotate on one without.
    """
    existing = sorted(directory.glob("*.pem")) if directory.is_dir() else []
    if command == "generate" and existing:
        raise KeyRingError(
            f"{directory} already holds signing keys; add the next one with "
            f"'authsvc keys rotate --dir {directory}'"
        )
    if command == "rotate":
        current = KeyRing.from_directory(directory).current
        alg = alg or current.alg
    published_at = time.time()
    key = SigningKey.create(generate_private_key(alg or "EdDSA"), created_at=published_at)
    if command == "rotate":
        # Before the key itself: no instance finds the key without the time it was
        # published, which every instance schedules it by, whatever its kid says.
        write_schedule_file(directory, key.kid, published_at)
    path = write_key_file(directory, key)
    # Refresh tokens are MACed with a secret of the same directory: made once.
    load_refresh_secret(directory)
    if command == "rotate":
        return (
            f"wrote {path} (kid {key.kid}): published now, signing after JWKS_MAX_AGE; "
            f"{current.kid} stays published until the tokens it signed have expired"
        )
    return f"wrote {path} (kid {key.kid})"


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "keys":
            print(_write_key(args.dir, args.keys_command, args.alg))
            return 0
        settings = load_settings(
            toml_path=args.config,
            **(
                {"host": args.host, "port": args.port, "workers": args.workers}
                if args.command == "serve"
                else {}
            ),
        )
        configure_logging(settings.log_level, settings.log_format)
        if args.command == "serve":
            return serve(settings)
        if args.users_command == "create":
            password = _read_password(args.password_stdin)
            print(asyncio.run(_create_user(settings, args.username, password)))
            return 0
        new_password = _read_password(True) if args.users_command == "set-password" else ""
        print(asyncio.run(_user_command(settings, args, new_password)))
        return 0
    except NotFound as exc:
        print(f"authsvc: {exc}: {args.username}", file=sys.stderr)
        return 1
    except (SettingsError, KeyRingError, EmbeddedStoreError, AuthsvcError, OSError) as exc:
        print(f"authsvc: {exc}", file=sys.stderr)
        return 2
