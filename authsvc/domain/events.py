"""What the session service reports as it decides: each login's and refresh's outcome,
every session it ends with the reason why, and every security event it records.

``SessionService`` (and ``SecurityEvents``) call a ``SessionEvents``; ``metrics.Metrics``
counts them. The label values are the contract's (API.md, Operations and Security
events), so they are spelt here once.
"""

from __future__ import annotations

from typing import Literal, Protocol

LoginOutcome = Literal["ok", "invalid_credentials", "rate_limited"]
RefreshOutcome = Literal["rotated", "grace", "replay", "invalid"]
RevokeReason = Literal["logout", "logout_all", "delete", "replay", "revoke", "evicted"]
# What ``GET /v1/auth/events`` lists and ``authsvc_security_events_total{type}`` counts.
SecurityEventType = Literal[
    "login", "login_failed", "refresh_replay", "session_evicted", "logout", "logout_all",
    "session_revoked", "password_changed", "account_disabled", "account_enabled",
    "roles_changed",
]  # fmt: skip
# What changed an account (``AccountService``): by its owner or by an operator.
AccountAction = Literal[
    "password_changed", "account_deleted", "account_disabled", "account_enabled",
    "roles_changed", "sessions_revoked",
]  # fmt: skip


class SessionEvents(Protocol):
    def login_finished(self, outcome: LoginOutcome) -> None: ...

    def refresh_finished(self, outcome: RefreshOutcome) -> None: ...

    def sessions_revoked(self, reason: RevokeReason, count: int = 1) -> None: ...

    def security_event(self, event_type: SecurityEventType) -> None: ...

    # Where a security event of the account is to be recorded (API.md, Security events):
    # ``session_id`` is the session whose request caused it, when one did.
    def account_changed(
        self, action: AccountAction, user_id: str, *, session_id: str | None = None
    ) -> None: ...


class NoEvents:
    """Ignores every event: for callers that count nothing."""

    def login_finished(self, outcome: LoginOutcome) -> None:
        pass

    def refresh_finished(self, outcome: RefreshOutcome) -> None:
        pass

    def sessions_revoked(self, reason: RevokeReason, count: int = 1) -> None:
        pass

    def security_event(self, event_type: SecurityEventType) -> None:
        pass

    def account_changed(
        self, action: AccountAction, user_id: str, *, session_id: str | None = None
    ) -> None:
        pass
