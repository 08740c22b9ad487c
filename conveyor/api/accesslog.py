"""Credentials never reach the access log: ``api_key=`` and ``stream_token=`` values are masked."""

from __future__ import annotations

import logging
import re

__all__ = ["RedactCredentials", "install"]

_CREDENTIAL = re.compile(r"((?:api_key|stream_token)=)[^&\s\"]*", re.IGNORECASE)


class RedactCredentials(logging.Filter):
    """Rewrites a record's message arguments (uvicorn passes the path with its query as one of them)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(_CREDENTIAL.sub(r"\1***", a) if isinstance(a, str) else a for a in record.args)
        elif isinstance(record.msg, str):
            record.msg = _CREDENTIAL.sub(r"\1***", record.msg)
        return True


def install(logger_names: tuple[str, ...] = ("uvicorn.access", "uvicorn.error")) -> None:
    """On uvicorn's access log, and its error log (where WebSocket handshakes are logged with their query)."""
    for name in logger_names:
        logger = logging.getLogger(name)
        if not any(isinstance(f, RedactCredentials) for f in logger.filters):
            logger.addFilter(RedactCredentials())
