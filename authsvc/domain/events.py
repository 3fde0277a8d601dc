"""What the session service reports as it decides: each login's and refresh's outcome, and
every session it ends with the reason why.

``SessionService`` calls a ``SessionEvents``; ``metrics.Metrics`` counts them. The label
values are the contract's (API.md, Operations), so they are spelt here once.
"""

from __future__ import annotations

from typing import Literal, Protocol

LoginOutcome = Literal["ok", "invalid_credentials", "rate_limited"]
RefreshOutcome = Literal["rotated", "grace", "replay", "invalid"]
RevokeReason = Literal["logout", "logout_all", "delete", "replay", "revoke", "evicted"]


class SessionEvents(Protocol):
    def login_finished(self, outcome: LoginOutcome) -> None: ...

    def refresh_finished(self, outcome: RefreshOutcome) -> None: ...

    def sessions_revoked(self, reason: RevokeReason, count: int = 1) -> None: ...


class NoEvents:
    """Ignores every event: for callers that count nothing."""

    def login_finished(self, outcome: LoginOutcome) -> None:
        pass

    def refresh_finished(self, outcome: RefreshOutcome) -> None:
        pass

    def sessions_revoked(self, reason: RevokeReason, count: int = 1) -> None:
        pass
