"""What the speech routes and the practice stream share: the workload's SQL engine and its settings."""

from __future__ import annotations

import sqlalchemy as sa

from conveyor.app import Conveyor
from conveyor.workloads.speech.config import SpeechSettings
from conveyor.workloads.speech.errors import SpeechUnavailable

__all__ = ["speech_engine", "speech_settings"]


def speech_engine(app: Conveyor) -> sa.Engine:
    engine: sa.Engine | None = app.store.engine
    if engine is None:
        raise SpeechUnavailable(
            f"the speech workload keeps its tables in SQL; this server's store is {app.store.kind} "
            "(set CONVEYOR_DATABASE_URL to a SQLite or PostgreSQL URL)"
        )
    return engine


def speech_settings(app: Conveyor) -> SpeechSettings:
    settings: SpeechSettings = app.workload_settings("speech")
    return settings
