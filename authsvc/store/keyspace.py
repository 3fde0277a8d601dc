"""Every Redis key name authsvc uses, built here and nowhere else.

Every key of one user's state carries the hash tag ``{<uid>}``, so the scripts that touch
several of them run on Redis Cluster too (all their keys hash to one slot):

    authsvc:{<uid>}:user          hash  username, password_hash, created_at, epoch, and
                                        when set: roles (comma-separated), disabled ("1")
    authsvc:{<uid>}:sessions      zset  session id -> last used at: the user's live sessions,
                                        least recently used first
    authsvc:{<uid>}:s:<sid>       hash  one session: n (position of the chain's current
                                        token), h (its hash), c (created_at), d (device),
                                        a (user agent), i (ip), and for a session bound
                                        to a DPoP key k (its RFC 7638 thumbprint)
    authsvc:{<uid>}:g:<sid>       str   the last rotation's successor (its refresh token, its
                                        access token's iat and jti), sealed with the token
                                        it replaced; kept only through the grace window
    authsvc:{<uid>}:events        list  the user's security events, newest first, each a
                                        MessagePack array (``eventcodec``): the newest
                                        EVENTS_PER_USER, the key kept EVENTS_TTL after the
                                        newest; readers leave out events older than that
    authsvc:username:<sha256(name)>
                                  str   normalised username -> user id
    authsvc:ratelimit:<scope>:<sha256(value)>
                                  str   a token bucket: when it is full again (ms); scopes
                                        login-user, login-ip, registration-ip, refresh-ip,
                                        client-auth-ip
    authsvc:dpop:<digest of jkt and jti>
                                  str   a DPoP proof's jti, seen once (SET NX), empty: kept
                                        for the proof's window, so the keys are bounded by
                                        the proofs of the last two minutes
    authsvc:ratelimit:login-failures:<sha256(name)>
                                  zset  attempt id -> time: an account's login attempts
                                        since its last success, within the failure window

The rate-limit keys lie outside any user's hash tag: each script touches one of them.

Deleting an account deletes every key of its tag: ``user_keys`` and, for each session the
index lists, ``session_keys`` name them all. A key added under the tag later goes in one of
those two lists, or tests/test_account_deletion.py fails (it calls every function here).

A session is live while it has an index entry, its hash exists, and neither its idle
lifetime (from its last use) nor its maximum age (from created_at) has run out. So a
session costs the same after 3,000 refreshes as after one: the refresh token's MAC proves
its position in the chain (``authsvc.tokens``), and no used token is remembered.

``epoch`` counts the user's logout-alls; a login whose password check read an older epoch
than the one its script finds was overtaken by a logout-all and does not start a session.

Every key of a user's hash tag is the user's: deleting them all (an account's deletion)
leaves nothing of the user, events included.

Session hashes expire with the session, the index with the user's last use plus the idle
lifetime, sealed successors after the grace, and rate-limit keys once their bucket is full
or their window has passed. Expiry is decided by the scripts comparing stored times with
``now``: the TTLs only collect garbage.
"""

from __future__ import annotations

import base64
import hashlib

PREFIX = "authsvc"
# The scope of the login bucket per username (``ratelimit``): deleting an account deletes it.
LOGIN_USER_SCOPE = "login-user"


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def user(user_id: str) -> str:
    return f"{PREFIX}:{{{user_id}}}:user"


def sessions(user_id: str) -> str:
    return f"{PREFIX}:{{{user_id}}}:sessions"


def session(user_id: str, session_id: str) -> str:
    return f"{PREFIX}:{{{user_id}}}:s:{session_id}"


def successor(user_id: str, session_id: str) -> str:
    return f"{PREFIX}:{{{user_id}}}:g:{session_id}"


def events(user_id: str) -> str:
    return f"{PREFIX}:{{{user_id}}}:events"


def username(normalized_username: str) -> str:
    # Hashed so that a username holding "{...}" cannot choose its own hash slot.
    return f"{PREFIX}:username:{_digest(normalized_username)}"


def rate_limit(scope: str, value: str) -> str:
    return f"{PREFIX}:ratelimit:{scope}:{_digest(value)}"


def dpop_proof(jkt: str, jti: str) -> str:
    # A jti is unique per key (RFC 9449 §11.1): the pair, hashed to 128 bits, names one
    # small key of fixed size whatever the client chose (a jti has up to 128 characters).
    # One key per command, so no hash tag is needed on Cluster.
    digest = hashlib.sha256(f"{jkt}.{jti}".encode()).digest()[:16]
    return f"{PREFIX}:dpop:{base64.urlsafe_b64encode(digest).rstrip(b'=').decode()}"


def login_failures(normalized_username: str) -> str:
    return f"{PREFIX}:ratelimit:login-failures:{_digest(normalized_username)}"


def user_keys(user_id: str) -> list[str]:
    """Every key of a user's hash tag that is not one session's: what deletion deletes."""
    return [user(user_id), sessions(user_id), events(user_id)]


def session_keys(user_id: str, session_id: str) -> list[str]:
    """Every key of one session of a user."""
    return [session(user_id, session_id), successor(user_id, session_id)]
