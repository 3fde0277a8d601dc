"""authsvc: a token service with rotating refresh tokens and revocable access tokens."""

from authsvc.app import create_app
from authsvc.config import Settings, load_settings
from authsvc.version import VERSION

__all__ = ["Settings", "create_app", "load_settings"]
__version__ = VERSION
