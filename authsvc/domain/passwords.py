"""argon2id password hashing off the event loop, the password policy and username rules."""

from __future__ import annotations

import asyncio
import secrets
import threading
import unicodedata
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from zxcvbn import zxcvbn

from authsvc.errors import InvalidRequest, Overloaded, WeakPassword

USERNAME_MAX_LENGTH = 64
# zxcvbn's scale: 3 is "safely unguessable" (an estimated 10^8 guesses or more), what
# Dropbox, who wrote it, asks of new passwords; below it an online attack may succeed.
MIN_STRENGTH_SCORE = 3
# zxcvbn's run time grows with length, and it refuses more than this; the first
# characters of a longer password are what an attacker's guesses start with anyway.
STRENGTH_CHECKED_LENGTH = 72
# A name shorter than this says little when found inside a password ("al" in "always").
_MIN_NAME_LENGTH = 3
OVERLOADED_RETRY_AFTER = 1

T = TypeVar("T")


def normalize_password(raw: str) -> str:
    """NFKC, as NIST SP 800-63B §5.1.1.2 asks: the same password typed on two keyboards
    (composed or decomposed accents, full-width letters) is one password."""
    return unicodedata.normalize("NFKC", raw)


def normalize_username(raw: str) -> str:
    """Return the canonical form of a username: NFKC, trimmed, case-folded.

    Raises:
        InvalidRequest: when the result is empty, too long or has control characters.
    """
    name = unicodedata.normalize("NFKC", raw).strip().casefold()
    # casefold can change the length and composition ("ß" -> "ss"), so normalise again.
    name = unicodedata.normalize("NFKC", name)
    if not 1 <= len(name) <= USERNAME_MAX_LENGTH:
        raise InvalidRequest(f"username must be 1 to {USERNAME_MAX_LENGTH} characters")
    if any(unicodedata.category(ch).startswith("C") for ch in name):
        raise InvalidRequest("username must not contain control or unassigned characters")
    return name


@dataclass(frozen=True, slots=True)
class PasswordPolicy:
    """Length bounds and guessability, no composition rules (ASVS 4.0.3 §2.1, NIST 800-63B).

    ``service_names`` are words an attacker tries first on this service (its name, its
    audience), like the username.
    """

    min_length: int
    max_length: int
    service_names: tuple[str, ...] = ("authsvc",)

    def check(self, password: str, username: str) -> None:
        """Accept a new password, or say why not.

        CPU-bound for up to tens of milliseconds (zxcvbn): call it off the event loop.

        Raises:
            WeakPassword: too short, too long, common, a pattern, or built from the
                username or the service's name.
        """
        normalized = normalize_password(password)
        length = len(normalized)
        if length < self.min_length:
            raise WeakPassword(f"password must be at least {self.min_length} characters")
        if length > self.max_length:
            raise WeakPassword(f"password must be at most {self.max_length} characters")
        names = [
            name
            for name in {username.casefold(), *(n.casefold() for n in self.service_names)}
            if len(name) >= _MIN_NAME_LENGTH
        ]
        checked = normalized[:STRENGTH_CHECKED_LENGTH]
        result = zxcvbn(checked, user_inputs=names)
        if result["score"] < MIN_STRENGTH_SCORE:
            if any(m.get("dictionary_name") == "user_inputs" for m in result["sequence"]):
                raise WeakPassword("password is built from the username or the service's name")
            warning = result["feedback"]["warning"] or "it is a common password or pattern"
            raise WeakPassword(f"password is too easy to guess: {warning.rstrip('.')}")
        # zxcvbn may still rate "alice-pa55word-alice" by its other parts: what is left
        # once the names are taken out must be strong on its own.
        rest = checked.casefold()
        for name in names:
            rest = rest.replace(name, "")
        if rest != checked.casefold() and zxcvbn(rest)["score"] < MIN_STRENGTH_SCORE:
            raise WeakPassword("password is built from the username or the service's name")


@dataclass(frozen=True, slots=True)
class Verification:
    """The outcome of a successful verification; ``new_hash`` is set when it was upgraded."""

    new_hash: str | None


class Hasher:
    """argon2id hashing in a bounded thread pool, so the event loop never waits on it.

    argon2-cffi releases the GIL while hashing, so threads run hashes in parallel; the
    pool size bounds both CPU and memory (each hash holds ``memory_cost`` KiB), and
    ``queue_limit`` bounds the hashes waiting for a thread: past it, a burst of logins or
    registrations is answered at once with ``Overloaded`` instead of queueing for ever.

    Passwords are normalised (NFKC) before hashing and verifying, and a verification is
    one argon2 run. ``legacy_raw_form`` (AUTHSVC_LEGACY_PASSWORD_HASHES) is for a store
    with accounts made before authsvc normalised passwords, whose hashes hold the form as
    typed: a password whose NFKC form differs is then also tried as typed, a second run
    for every such login, known user or not, so the time still tells nothing.
    """

    def __init__(
        self,
        *,
        time_cost: int,
        memory_cost: int,
        parallelism: int,
        concurrency: int,
        queue_limit: int = 64,
        legacy_raw_form: bool = False,
    ) -> None:
        self._hasher = PasswordHasher(
            time_cost=time_cost, memory_cost=memory_cost, parallelism=parallelism
        )
        self._pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="argon2")
        self._max_pending = concurrency + queue_limit
        self._pending = 0  # running or waiting; guarded by _lock (threads finish them)
        self._lock = threading.Lock()
        self._legacy_raw_form = legacy_raw_form
        self._dummy_hash = self._hasher.hash(secrets.token_urlsafe(32))
        self.calls = 0  # verifications and hashes started; tests read it

    @property
    def pending(self) -> int:
        """Hashes and verifications running or waiting for a thread."""
        return self._pending

    async def hash(self, password: str) -> str:
        """Raises: Overloaded when the queue is full."""
        return await self._submit(self._hasher.hash, normalize_password(password))

    async def verify(self, password_hash: str, password: str) -> Verification | None:
        """Check a password; return None on mismatch, upgrading the hash when needed.

        Raises:
            Overloaded: when the queue is full.
        """
        return await self._submit(self._verify, password_hash, password)

    async def verify_dummy(self, password: str) -> None:
        """Spend what a real verification costs, for a username that does not exist."""
        # Without it an unknown username answers in microseconds and a wrong password in
        # tens of milliseconds, which tells an attacker which usernames exist.
        await self.verify(self._dummy_hash, password)

    async def _submit(self, function: Callable[..., T], *args: str) -> T:
        with self._lock:
            if self._pending >= self._max_pending:
                raise Overloaded(retry_after=OVERLOADED_RETRY_AFTER)
            self._pending += 1
        self.calls += 1
        future = self._pool.submit(function, *args)
        # Released when the work is done, not when the caller stops waiting: a request
        # that went away leaves its hash running, and that hash still holds a thread.
        future.add_done_callback(self._release)
        return await asyncio.wrap_future(future)

    def _release(self, _: Future[Any]) -> None:
        with self._lock:
            self._pending -= 1

    def _matches(self, password_hash: str, password: str) -> bool:
        try:
            return self._hasher.verify(password_hash, password)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False

    def _verify(self, password_hash: str, password: str) -> Verification | None:
        normalized = normalize_password(password)
        if self._matches(password_hash, normalized):
            if self._hasher.check_needs_rehash(password_hash):
                return Verification(new_hash=self._hasher.hash(normalized))
            return Verification(new_hash=None)
        # A hash made before passwords were normalised holds the raw form: with the
        # legacy setting it still verifies, and is replaced by one of the normalised form.
        if (
            self._legacy_raw_form
            and normalized != password
            and self._matches(password_hash, password)
        ):
            return Verification(new_hash=self._hasher.hash(normalized))
        return None

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
