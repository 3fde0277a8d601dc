"""Every Redis key name authsvc uses, built here and nowhere else.

Every key of one user's state carries the hash tag ``{<user_id>}``, so the scripts that
touch several of them run on Redis Cluster too (all their keys hash to one slot):

    authsvc:{<uid>}:user              hash  username, password_hash, created_at, epoch
    authsvc:{<uid>}:sessions          zset  session id -> expires_at; pruned of the past
    authsvc:{<uid>}:session:<sid>     hash  one session: the chain's current and previous
                                            token hashes, the sealed successor, times,
                                            device, user_agent, ip, epoch at login
    authsvc:{<uid>}:chain:<sid>       set   hashes of the session's used refresh tokens,
                                            so a replay of any of them is recognised
    authsvc:username:<sha256(name)>   str   normalised username -> user id
    authsvc:ratelimit:login:<scope>:<sha256(value)>:<window start>
                                      str   login attempts in that window

``epoch`` counts the user's logout-alls: a session is live only while the epoch it was
created in is still the user's, which ends every session at once in O(1), including one
whose login script runs while the logout-all is under way.

Session and chain keys expire with the session; the user's session index expires with its
longest-lived session; rate-limit counters with their window. Expiry is decided by the
scripts comparing stored times with ``now``: the TTLs only collect garbage.
"""

from __future__ import annotations

import hashlib

PREFIX = "authsvc"


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def user(user_id: str) -> str:
    return f"{PREFIX}:{{{user_id}}}:user"


def sessions(user_id: str) -> str:
    return f"{PREFIX}:{{{user_id}}}:sessions"


def session(user_id: str, session_id: str) -> str:
    return f"{PREFIX}:{{{user_id}}}:session:{session_id}"


def chain(user_id: str, session_id: str) -> str:
    return f"{PREFIX}:{{{user_id}}}:chain:{session_id}"


def username(normalized_username: str) -> str:
    # Hashed so that a username holding "{...}" cannot choose its own hash slot.
    return f"{PREFIX}:username:{_digest(normalized_username)}"


def login_attempts(scope: str, value: str, window_start: int) -> str:
    return f"{PREFIX}:ratelimit:login:{scope}:{_digest(value)}:{window_start}"
