"""The KEYS of each Lua script, in the order its header names them.

One function per script, beside ``keyspace``, so a script and its callers cannot disagree
on the order; every list stays within one user's hash tag, hence one Cluster slot, or is one key.
"""

from __future__ import annotations

from authsvc.store import keyspace


def login(user_id: str, session_id: str) -> list[str]:
    return [
        keyspace.user(user_id),
        keyspace.session(user_id, session_id),
        keyspace.sessions(user_id),
        keyspace.events(user_id),
    ]


def rotate(user_id: str, session_id: str) -> list[str]:
    return [
        keyspace.session(user_id, session_id),
        keyspace.sessions(user_id),
        keyspace.successor(user_id, session_id),
        keyspace.user(user_id),
        keyspace.events(user_id),
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
        keyspace.events(user_id),
    ]


def revoke_user(user_id: str, listed_session_ids: list[str]) -> list[str]:
    keys = [keyspace.user(user_id), keyspace.sessions(user_id), keyspace.events(user_id)]
    for session_id in listed_session_ids:
        keys += [keyspace.session(user_id, session_id), keyspace.successor(user_id, session_id)]
    return keys


def record_event(user_id: str) -> list[str]:
    return [keyspace.events(user_id)]


def take_token(scope: str, value: str) -> list[str]:
    return [keyspace.rate_limit(scope, value)]


def count_failure(normalized_username: str) -> list[str]:
    return [keyspace.login_failures(normalized_username)]


def change_password(user_id: str) -> list[str]:
    return [keyspace.user(user_id), keyspace.sessions(user_id), keyspace.events(user_id)]


def set_disabled(user_id: str) -> list[str]:
    return [keyspace.user(user_id), keyspace.sessions(user_id), keyspace.events(user_id)]


def set_roles(user_id: str) -> list[str]:
    return [keyspace.user(user_id), keyspace.events(user_id)]


def delete_user(user_id: str, listed_session_ids: list[str]) -> list[str]:
    # user_keys first: the script takes KEYS[1] for the user hash and KEYS[2] for the index.
    keys = keyspace.user_keys(user_id)
    for session_id in listed_session_ids:
        keys += keyspace.session_keys(user_id, session_id)
    return keys


def release_username(normalized_username: str) -> list[str]:
    return [keyspace.username(normalized_username)]
