"""The request id: the caller's X-Request-Id when it is usable, else a new one.

It is kept in a context variable while the request is handled, so every log line written
on its behalf carries it (``logs.RequestIdFilter``) without being passed around.
"""

from __future__ import annotations

import re
import secrets
from contextvars import ContextVar

HEADER = "X-Request-Id"
# 1 to 128 visible ASCII characters: nothing that could break a header or a log line.
_ACCEPTED = re.compile(r"[\x21-\x7e]{1,128}")

current_request_id: ContextVar[str | None] = ContextVar("authsvc_request_id", default=None)


def new_request_id() -> str:
    """128 random bits in hex, as long as a uuid4 and a third of its cost."""
    return secrets.token_hex(16)


def request_id_for(given: str | None) -> str:
    """The caller's id when it is 1 to 128 visible ASCII characters, else a new one."""
    if given is not None and _ACCEPTED.fullmatch(given):
        return given
    return new_request_id()
