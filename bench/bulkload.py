"""Start up to millions of live sessions in Redis quickly, with the real login script.

A real ``Store`` runs over a recorder that answers at once; the commands it would have
sent (HSET and SET NX of ``create_user``, EVALSHA of the login script with ``login``'s own
KEYS and ARGV) go to Redis as one pipelined RESP stream over a raw socket, as
``redis-cli --pipe`` does, while a reader thread takes the replies. Redis runs the very
script a login runs, so the sessions are what logins would have left.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import socket
import threading
import time
from collections.abc import Coroutine, Iterator
from typing import Any, TypeVar

import hiredis
from fixtures import PASSWORD_HASH, limits_of, phone_login

from authsvc.config import Settings
from authsvc.store.records import UserRecord
from authsvc.store.redis_store import Store
from authsvc.tokens.refresh import new_session_id, new_user_id

T = TypeVar("T")
SESSIONS_PER_USER = 4  # a phone, a laptop, a tablet, a TV


class _Recorder:
    """Stands in for the Redis client under a real Store: records what it would send."""

    def __init__(self) -> None:
        self.scripts: list[str] = []
        self.commands: list[tuple[Any, ...]] = []

    async def script_load(self, text: str) -> str:
        self.scripts.append(text)
        return hashlib.sha1(text.encode()).hexdigest()

    async def execute_command(self, *args: Any) -> list[bytes]:
        self.commands.append(args)  # EVALSHA of the login script: the store's only one here
        # login.lua's answer for a session that started: its expiry, no roles, nothing evicted
        return [b"ok", b"0", b""]

    async def hset(self, name: str, mapping: dict[str, Any]) -> int:
        self.commands.append(("HSET", name, *itertools.chain(*mapping.items())))
        return len(mapping)

    async def set(self, name: str, value: str, nx: bool = False) -> bool:
        self.commands.append(("SET", name, value, *(["NX"] if nx else [])))
        return True


def _now(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine that never suspends (the recorder answers at once)."""
    try:
        coroutine.send(None)
    except StopIteration as stop:
        return stop.value  # type: ignore[no-any-return]
    coroutine.close()
    raise RuntimeError("the store awaited real I/O under the recorder")


def _bulk_commands(store: Store, recorder: _Recorder, count: int) -> Iterator[bytes]:
    """RESP of ``count`` sessions, SESSIONS_PER_USER per user, in chunks of a few MB."""
    now = int(time.time())
    user = UserRecord("", "", "", "0")
    for index in range(count):
        if index % SESSIONS_PER_USER == 0:
            user = UserRecord(new_user_id(), f"bulk-{new_user_id()}", PASSWORD_HASH, "0")
            _now(store.create_user(user.user_id, user.username, user.password_hash, now=now))
        _now(phone_login(store, user, new_session_id(), os.urandom(16), now))
        if len(recorder.commands) >= 10_000 or index == count - 1:
            yield b"".join(map(hiredis.pack_command, recorder.commands))
            recorder.commands.clear()


def bulk_load(host: str, port: int, settings: Settings, count: int, timeout: float = 300) -> None:
    """Start ``count`` live sessions (new users, SESSIONS_PER_USER each) by the login script.

    Raises:
        RuntimeError: Redis answered an error, or did not answer everything in ``timeout``.
    """
    recorder = _Recorder()
    store = Store(recorder, limits_of(settings))  # type: ignore[arg-type]
    _now(store.load_scripts())
    users = -(-count // SESSIONS_PER_USER)
    # SCRIPT LOAD of each script, an HSET and a SET NX per user, an EVALSHA per session.
    expected = len(recorder.scripts) + 2 * users + count
    replies, errors = 0, []

    def read(sock: socket.socket) -> None:
        nonlocal replies
        reader = hiredis.Reader()
        while replies < expected:
            data = sock.recv(1 << 20)
            if not data:
                return
            reader.feed(data)
            while (reply := reader.gets()) is not False:
                replies += 1
                if isinstance(reply, hiredis.ReplyError):
                    errors.append(str(reply))

    with socket.create_connection((host, port), timeout=timeout) as sock:
        # Redis answers while we send: a reader keeps its replies from filling the socket.
        reader = threading.Thread(target=read, args=(sock,), daemon=True)
        reader.start()
        for text in recorder.scripts:
            sock.sendall(hiredis.pack_command(("SCRIPT", "LOAD", text)))
        for chunk in _bulk_commands(store, recorder, count):
            sock.sendall(chunk)
        reader.join(timeout)
    if errors:
        raise RuntimeError(f"Redis refused {len(errors)} bulk-load commands: {errors[0]}")
    if replies < expected:
        raise RuntimeError(f"Redis answered {replies} of {expected} bulk-load commands")
