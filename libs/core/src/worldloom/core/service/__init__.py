"""Service kit: every Worldloom HTTP service is built by create_app and gets the same cross-cutting parts."""

from worldloom.core.service.app import create_app, serve
from worldloom.core.service.errors import ApiError

__all__ = ["ApiError", "create_app", "serve"]
