"""The KEYS of each Lua script, in the order its header names them.

One function per script, beside ``keyspace``, so a script and its callers cannot disagree
on the order; every list stays within one user's hash tag, hence one Cluster slot.
"""

from __future__ import annotations

from authsvc.store import keyspace


def login(user_id: str, session_id: str) -> list[str]:
    return [
        keyspace.user(user_id),
        keyspace.session(user_id, session_id),
        keyspace.sessions(user_id),
    ]


def rotate(user_id: str, session_id: str) -> list[str]:
    return [
        keyspace.session(user_id, session_id),
        keyspace.sessions(user_id),
        keyspace.successor(user_id, session_id),
    ]


def session_live(user_id: str, session_id: str) -> list[str]:
    return [
        keyspace.user(user_id),
        keyspace.session(user_id, session_id),
        keyspace.sessions(user_id),
    ]


def revoke_session(user_id: str, session_id: str) -> list[str]:
    return [
        keyspace.session(user_id, session_id),
        keyspace.sessions(user_id),
        keyspace.successor(user_id, session_id),
    ]


def revoke_user(user_id: str, listed_session_ids: list[str]) -> list[str]:
    keys = [keyspace.user(user_id), keyspace.sessions(user_id)]
    for session_id in listed_session_ids:
        keys += [keyspace.session(user_id, session_id), keyspace.successor(user_id, session_id)]
    return keys


def count_attempt(scope: str, value: str, window_start: int) -> list[str]:
    return [keyspace.login_attempts(scope, value, window_start)]
