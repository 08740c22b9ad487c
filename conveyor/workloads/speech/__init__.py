"""Speech workload: speaking practice with ratings and impressions (seed 002).

Readings of a resource arrive as base64 audio chunks (over a WebSocket or
HTTP), are transcribed offline by pocketsphinx and scored against the
resource's reference text; ratings come from the attempts and the
impressions counted in Redis (or the SQL store) and synced exactly once.

This module imports without the ``speech`` extra (pocketsphinx, soundfile,
soxr are imported inside the tasks).
"""

from __future__ import annotations

from conveyor.scheduler import PeriodicJob
from conveyor.workloads.speech.routes import router
from conveyor.workloads.speech.tasks import (
    calculate_all_ratings,
    calculate_rating,
    cleanup_sessions,
    process_speak_audio,
    sync_impressions_from_redis,
    synthesize,
)

__all__ = [
    "calculate_all_ratings",
    "calculate_rating",
    "cleanup_sessions",
    "periodic_jobs",
    "process_speak_audio",
    "router",
    "sync_impressions_from_redis",
    "synthesize",
]

periodic_jobs = [
    PeriodicJob("speech-impressions-sync", "sync_impressions_from_redis", every=60),
    PeriodicJob("speech-sessions-cleanup", "cleanup_sessions", every=600),
]
