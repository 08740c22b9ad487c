"""The media workload's errors, under Conveyor's one hierarchy.

``MediaError`` is what a correction raises when the file itself is the
problem (corrupt, unreadable, too long); the task ends FAILURE with its
message, which names the decoder's complaint. The HTTP-facing ones are
subclasses of the core classes so the one handler maps them::

    RequestError            400
    ├── OutsideStorage      400  a path that leaves the tenant's storage
    ├── MediaTooLarge       413  too long, too many pixels, too many bytes
    └── UnsupportedMedia    415  not audio, image or video we can read
    TaskNotFound            404
    └── CorrectionNotFound  404  (also another tenant's correction)
"""

from __future__ import annotations

from typing import Any

from conveyor.errors import ConveyorError, PayloadTooLarge, RequestError, TaskNotFound, UnsupportedMediaType

__all__ = ["CorrectionNotFound", "MediaError", "MediaTooLarge", "OutsideStorage", "UnsupportedMedia"]


class MediaError(Exception):
    """A file that cannot be corrected: its message is the correction's ``error_message``."""


class OutsideStorage(RequestError):
    code = "path_outside_storage"


class MediaTooLarge(PayloadTooLarge):
    code = "media_too_large"


class UnsupportedMedia(UnsupportedMediaType):
    code = "unsupported_media"


class CorrectionNotFound(TaskNotFound):
    code = "correction_not_found"

    def __init__(self, task_id: str, details: Any = None) -> None:
        ConveyorError.__init__(self, f"No correction task with id {task_id!r}", details={"task_id": task_id})
