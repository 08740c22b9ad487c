"""Speech workload: speaking practice with ratings and impressions (seed 002).

Readings of a resource arrive as base64 audio chunks (over a WebSocket or
HTTP), are transcribed offline by pocketsphinx and scored against the
resource's reference text; ratings come from the attempts and the
impressions counted in Redis (or the SQL store) and synced exactly once.

Nothing heavy is imported here: pocketsphinx, soundfile and soxr are named
by the declaration and imported only inside the tasks.
"""

from __future__ import annotations

from pathlib import Path

from conveyor.scheduler import PeriodicJob
from conveyor.workload import Workload
from conveyor.workloads.speech.config import SpeechSettings

__all__ = ["workload"]

_here = Path(__file__).resolve().parent

workload = Workload(
    name="speech",
    description="Speaking practice: transcribe and score readings, ratings, impressions, sessions",
    extra="speech",
    requires=("pocketsphinx", "soundfile", "soxr", "numpy"),
    needs_sql=True,
    modules=("conveyor.workloads.speech.tasks",),
    router="conveyor.workloads.speech.routes:router",
    periodic_jobs=(
        # every minute: impressions reach SQL (and the ratings) within a minute of being counted
        PeriodicJob("speech-impressions-sync", "speech.sync_impressions_from_redis", every=60),
        PeriodicJob("speech-sessions-cleanup", "speech.cleanup_sessions", every=600),
    ),
    settings=SpeechSettings,
    migrations=_here / "migrations",
    dashboard=_here / "dashboard",
)
