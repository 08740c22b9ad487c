"""The speech workload's tables (created by its migration ``speech_0001``).

resources (what a user reads aloud), attempts (one per reading: transcript,
word timings, score), impressions (how often each resource was shown, as
synced from the counters), sessions (one per practice stream), and the
bookkeeping that makes the impressions sync exactly-once.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB

__all__ = [
    "attempts_table",
    "impression_batches_table",
    "impressions_pending_table",
    "impressions_table",
    "metadata",
    "resources_table",
    "sessions_table",
]

metadata = sa.MetaData()
JSONType = sa.JSON().with_variant(JSONB(), "postgresql")

resources_table = sa.Table(
    "conveyor_speech_resources",
    metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("tenant", sa.String(200), nullable=False, index=True),
    sa.Column("title", sa.String(300), nullable=False),
    sa.Column("reference_text", sa.Text, nullable=False),
    #: the reference reading made by ``speech.synthesize`` (a WAV under the data folder)
    sa.Column("audio_path", sa.Text),
    sa.Column("audio_task_id", sa.String(36)),
    sa.Column("voice", sa.String(40)),
    #: written by calculate_rating; None until the first run
    sa.Column("rating", sa.Float),
    sa.Column("average_score", sa.Float),
    sa.Column("attempts_count", sa.Integer, nullable=False, server_default="0"),
    sa.Column("rating_impressions", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("rating_updated_at", sa.Float),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("updated_at", sa.Float, nullable=False),
)

attempts_table = sa.Table(
    "conveyor_speech_attempts",
    metadata,
    #: the id of the process_speak_audio task that made it: a rerun of that task rewrites the same row
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("tenant", sa.String(200), nullable=False),
    sa.Column("resource_id", sa.String(36), nullable=False, index=True),
    sa.Column("user_name", sa.String(200), nullable=False),
    #: processing | done | failed
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("transcript", sa.Text),
    #: [{"word", "start", "end", "confidence"}], seconds from the start of the audio
    sa.Column("words", JSONType),
    sa.Column("wer", sa.Float),
    sa.Column("score", sa.Float),
    sa.Column("audio_seconds", sa.Float),
    sa.Column("recognizer", sa.String(40)),
    sa.Column("error_message", sa.Text),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("updated_at", sa.Float, nullable=False),
)

impressions_table = sa.Table(
    "conveyor_speech_impressions",
    metadata,
    sa.Column("resource_id", sa.String(36), primary_key=True),
    sa.Column("tenant", sa.String(200), nullable=False),
    #: impressions synced into SQL so far
    sa.Column("count", sa.BigInteger, nullable=False),
    sa.Column("updated_at", sa.Float, nullable=False),
)

impressions_pending_table = sa.Table(
    "conveyor_speech_impressions_pending",
    metadata,
    #: the counters themselves when no Redis is configured (the embedded default)
    sa.Column("resource_id", sa.String(36), primary_key=True),
    sa.Column("count", sa.BigInteger, nullable=False),
)

impression_batches_table = sa.Table(
    "conveyor_speech_impression_batches",
    metadata,
    #: one row per Redis batch applied: a batch seen again (a sync that died after
    #: committing, two syncs at once) is recognised here and not counted twice
    sa.Column("batch_id", sa.String(100), primary_key=True),
    sa.Column("total", sa.BigInteger, nullable=False),
    sa.Column("applied_at", sa.Float, nullable=False),
)

sessions_table = sa.Table(
    "conveyor_speech_sessions",
    metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("tenant", sa.String(200), nullable=False),
    sa.Column("resource_id", sa.String(36)),
    sa.Column("user_name", sa.String(200)),
    #: open | closed
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("last_seen_at", sa.Float, nullable=False),
    sa.Column("expires_at", sa.Float, nullable=False, index=True),
)
