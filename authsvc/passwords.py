"""argon2id password hashing off the event loop, the password policy and username rules."""

from __future__ import annotations

import asyncio
import secrets
import unicodedata
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from authsvc.errors import InvalidRequest, WeakPassword

USERNAME_MAX_LENGTH = 64


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
    """Length bounds only, no composition rules (OWASP ASVS 4.0.3 §2.1.1, §2.1.2, §2.1.9)."""

    min_length: int
    max_length: int

    def check(self, password: str) -> None:
        """Raises: WeakPassword when the password is outside the bounds."""
        # ASVS counts characters after combining spaces, so count code points of NFC.
        length = len(unicodedata.normalize("NFC", password))
        if length < self.min_length:
            raise WeakPassword(f"password must be at least {self.min_length} characters")
        if length > self.max_length:
            raise WeakPassword(f"password must be at most {self.max_length} characters")


@dataclass(frozen=True, slots=True)
class Verification:
    """The outcome of a successful verification; ``new_hash`` is set when it was upgraded."""

    new_hash: str | None


class Hasher:
    """argon2id hashing in a bounded thread pool, so the event loop never waits on it.

    argon2-cffi releases the GIL while hashing, so threads run hashes in parallel; the
    pool size bounds both CPU and memory (each hash holds ``memory_cost`` KiB).
    """

    def __init__(
        self, *, time_cost: int, memory_cost: int, parallelism: int, concurrency: int
    ) -> None:
        self._hasher = PasswordHasher(
            time_cost=time_cost, memory_cost=memory_cost, parallelism=parallelism
        )
        self._pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="argon2")
        self._dummy_hash = self._hasher.hash(secrets.token_urlsafe(32))
        self.calls = 0  # verifications and hashes started; tests read it

    async def hash(self, password: str) -> str:
        self.calls += 1
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, self._hasher.hash, password)

    async def verify(self, password_hash: str, password: str) -> Verification | None:
        """Check a password; return None on mismatch, upgrading the hash when parameters changed."""
        self.calls += 1
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, self._verify, password_hash, password)

    async def verify_dummy(self, password: str) -> None:
        """Spend what a real verification costs, for a username that does not exist."""
        # Without it an unknown username answers in microseconds and a wrong password in
        # tens of milliseconds, which tells an attacker which usernames exist.
        await self.verify(self._dummy_hash, password)

    def _verify(self, password_hash: str, password: str) -> Verification | None:
        try:
            self._hasher.verify(password_hash, password)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return None
        if self._hasher.check_needs_rehash(password_hash):
            return Verification(new_hash=self._hasher.hash(password))
        return Verification(new_hash=None)

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
