"""authsvc's Lua scripts: their sources, and calling them by EVALSHA.

A script may start with ``-- include: NAME`` lines: the named files of ``lua/lib/`` go in
front of it, so one piece of Lua (a token bucket) serves several scripts. Redis knows
scripts by the SHA-1 of the whole text, included parts and all.

``Script`` calls EVALSHA itself rather than through redis-py's ``Script`` object, whose
``isinstance`` check against a runtime Protocol cost more per call than the rest of the
client's Python (py-spy, bench refresh); on NOSCRIPT (a restarted or failed-over Redis) it
loads the script and calls again, as redis-py's does.
"""

from __future__ import annotations

import hashlib
import importlib.resources
import re
from collections.abc import Awaitable, Callable
from typing import Any

from redis.exceptions import NoScriptError

from authsvc.store.connect import RedisClient

_INCLUDE = re.compile(r"^-- include: ([a-z_]+)$", re.MULTILINE)


def _lua(path: str) -> str:
    return importlib.resources.files("authsvc.store").joinpath("lua", path).read_text("utf-8")


def source(name: str) -> str:
    """The full text of script ``name``: its includes, then itself."""
    text = _lua(f"{name}.lua")
    parts = [_lua(f"lib/{included}.lua") for included in _INCLUDE.findall(text)]
    return "\n".join([*parts, text])


class Script:
    """One script on one client: ``await script(keys, args)``.

    ``execute`` sends a command: the client's own ``execute_command``, or a
    ``CommandBatcher``'s, which sends it in a pipeline with others of its loop turn.
    """

    __slots__ = ("_execute", "_redis", "sha", "text")

    def __init__(
        self, redis: RedisClient, name: str, execute: Callable[..., Awaitable[Any]]
    ) -> None:
        self._redis = redis
        self._execute = execute
        self.text = source(name)
        self.sha = hashlib.sha1(self.text.encode(), usedforsecurity=False).hexdigest()

    async def __call__(self, keys: list[str], args: list[Any]) -> Any:
        try:
            return await self._execute("EVALSHA", self.sha, len(keys), *keys, *args)
        except NoScriptError:
            await self._redis.script_load(self.text)
            return await self._execute("EVALSHA", self.sha, len(keys), *keys, *args)
