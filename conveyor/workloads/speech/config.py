"""The speech workload's settings: ``CONVEYOR_SPEECH_*`` environment variables."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["SpeechSettings"]


class SpeechSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CONVEYOR_SPEECH_", extra="ignore")

    #: where impression counters live between syncs: a ``redis://`` URL, or empty for the
    #: SQL store (the embedded default, which needs nothing else running)
    redis_url: str = ""
    #: largest audio one attempt may send, once its base64 chunks are decoded (MiB)
    max_audio_mb: float = Field(default=20.0, gt=0)
    #: most chunks one attempt may send
    max_chunks: int = Field(default=10_000, ge=1)
    #: longest audio transcribed, in seconds (pocketsphinx runs at a few times real time)
    max_audio_seconds: float = Field(default=300.0, gt=0)
    #: speech recogniser: ``pocketsphinx`` (English model in its wheel) or a registered provider
    recognizer: str = "pocketsphinx"
    #: text-to-speech engine for reference audio: ``flite`` or ``espeak-ng``
    tts_engine: str = "flite"
    #: a practice session (one WebSocket stream) expires this long after its last message
    session_ttl_seconds: float = Field(default=3600.0, gt=0)
    #: longest reference text of a resource, in characters
    max_reference_chars: int = Field(default=5000, ge=1)
    #: how often the periodic jobs run (seconds)
    impressions_sync_every: float = Field(default=60.0, gt=0)
    sessions_cleanup_every: float = Field(default=600.0, gt=0)
