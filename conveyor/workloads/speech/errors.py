"""The speech workload's errors, under Conveyor's one hierarchy.

    TaskNotFound (404)
    ├── ResourceNotFound     no such resource (or another tenant's)
    ├── AttemptNotFound      no such attempt
    └── AudioNotFound        the resource has no reference audio (yet)
    ConveyorError
    └── SpeechUnavailable (503)   the workload needs a SQL store

``UnknownResource`` is raised inside a task: it ends FAILURE with its message.
"""

from __future__ import annotations

from conveyor.errors import ConveyorError, TaskNotFound, Unavailable

__all__ = ["AttemptNotFound", "AudioNotFound", "ResourceNotFound", "SpeechUnavailable", "UnknownResource"]


class ResourceNotFound(TaskNotFound):
    code = "resource_not_found"

    def __init__(self, resource_id: str) -> None:
        ConveyorError.__init__(self, f"No resource with id {resource_id!r}", details={"resource_id": resource_id})


class AttemptNotFound(TaskNotFound):
    code = "attempt_not_found"

    def __init__(self, attempt_id: str) -> None:
        ConveyorError.__init__(self, f"No attempt with id {attempt_id!r}", details={"attempt_id": attempt_id})


class AudioNotFound(TaskNotFound):
    code = "audio_not_found"

    def __init__(self, resource_id: str) -> None:
        ConveyorError.__init__(
            self,
            f"resource {resource_id!r} has no reference audio yet (its speech.synthesize task has not finished)",
            details={"resource_id": resource_id},
        )


class SpeechUnavailable(Unavailable):
    """Its tables need a SQL store: 503 naming the database, as every outage answers."""

    code = "speech_unavailable"
    dependency = "database"


class UnknownResource(LookupError):
    """A task was given a resource id that does not exist for its tenant."""
