"""authsvc: a token service with rotating refresh tokens and revocable access tokens.

The server's names load on first use, so that ``authsvc.client`` can be imported by an
app without the server's dependencies (Redis, argon2, the embedded store).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from authsvc.config import Settings, load_settings
    from authsvc.server.app import create_app

from authsvc.version import VERSION

__all__ = ["Settings", "create_app", "load_settings"]
__version__ = VERSION


def __getattr__(name: str) -> Any:
    if name == "create_app":
        from authsvc.server.app import create_app

        return create_app
    if name in ("Settings", "load_settings"):
        from authsvc import config

        return getattr(config, name)
    raise AttributeError(f"module 'authsvc' has no attribute {name!r}")
