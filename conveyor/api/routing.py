"""An APIRouter that answers with and without the trailing slash.

Seed clients call ``/status/`` (Django style) and newer ones ``/status``.
Starlette's redirect_slashes answers the other form with a 307, which
``curl -X POST`` does not follow; registering both paths answers both.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import APIRouter

__all__ = ["SlashRouter"]


class SlashRouter(APIRouter):
    def add_api_route(self, path: str, endpoint: Callable[..., Any], **kwargs: Any) -> None:
        super().add_api_route(path, endpoint, **kwargs)
        other = path[:-1] if path.endswith("/") else path + "/"
        if other and other != path and (self.prefix + other) not in ("", "/"):
            kwargs = {**kwargs, "include_in_schema": False}
            kwargs.pop("operation_id", None)
            super().add_api_route(other, endpoint, **kwargs)
