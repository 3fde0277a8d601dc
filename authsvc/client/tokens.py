"""TokenPair: what login and refresh return, with lifetimes turned into Unix times."""

from __future__ import annotations

from dataclasses import dataclass, field

import msgspec


class TokenPairBody(msgspec.Struct):
    """The TokenPair response body (API.md, Tokens); fields added later are ignored."""

    access_token: str
    expires_in: int
    refresh_token: str
    refresh_expires_in: int
    session_id: str
    token_type: str = "Bearer"


@dataclass(frozen=True, slots=True)
class TokenPair:
    """The tokens of one session. Times are Unix seconds by the client's own clock.

    The tokens are left out of ``repr`` so that logging a TokenPair leaks nothing.
    """

    access_token: str = field(repr=False)
    refresh_token: str = field(repr=False)
    session_id: str
    expires_at: int
    refresh_expires_at: int
    # "DPoP" when the session is bound to the client's key: its access token is sent as
    # ``Authorization: DPoP`` with a proof (RFC 9449 §7.1).
    token_type: str = "Bearer"

    @classmethod
    def from_body(cls, body: TokenPairBody, *, now: int) -> TokenPair:
        """Anchor the body's lifetimes at ``now``, when the response arrived.

        That is a little after authsvc issued it, so ``expires_at`` errs late by the
        response's travel time; AuthSession's refresh margin covers it.
        """
        return cls(
            access_token=body.access_token,
            refresh_token=body.refresh_token,
            session_id=body.session_id,
            expires_at=now + body.expires_in,
            refresh_expires_at=now + body.refresh_expires_in,
            token_type=body.token_type,
        )
