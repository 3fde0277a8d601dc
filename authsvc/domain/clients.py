"""ClientInfo: what a request tells of its client, for sessions and security events."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ClientInfo:
    """The client of a request, all plain strings ("" when it did not say).

    ``device`` is what a login's body names; other requests name none.
    """

    device: str = ""
    user_agent: str = ""
    ip: str = ""


# A call made by no request (the CLI, an operator's script): nothing to record of a client.
NO_CLIENT = ClientInfo()
