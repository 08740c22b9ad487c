"""Seed 002's task types: speech attempts, reference audio, ratings, impressions, sessions.

Heavy (Celery under the hybrid executor): ``process_speak_audio``,
``calculate_all_ratings``, ``sync_impressions_from_redis``. Light (in-process):
``calculate_rating``, ``cleanup_sessions``, ``speech.synthesize``.

pocketsphinx, soundfile and soxr are imported inside the task bodies: this
module imports without the ``speech`` extra.
"""

from __future__ import annotations

import base64
import time
from typing import Any

import sqlalchemy as sa
from pydantic import BaseModel, ConfigDict, Field

from conveyor.context import TaskContext
from conveyor.registry import task
from conveyor.workloads.speech import db
from conveyor.workloads.speech.config import SpeechSettings
from conveyor.workloads.speech.errors import UnknownResource
from conveyor.workloads.speech.ratings import Rating, compute_rating

__all__ = [
    "calculate_all_ratings",
    "calculate_rating",
    "cleanup_sessions",
    "process_speak_audio",
    "rate",
    "sync_impressions_from_redis",
    "synthesize",
]


def _engine(ctx: TaskContext) -> sa.Engine:
    return ctx.resources.engine


def _settings(ctx: TaskContext) -> SpeechSettings:
    settings: SpeechSettings = ctx.resources.workload_settings("speech")
    return settings


# -- speech --------------------------------------------------------------------


class ProcessSpeakAudio(BaseModel):
    model_config = ConfigDict(extra="forbid")
    resource_id: str = Field(min_length=1, max_length=64, description="the resource read aloud")
    audio_chunks: list[str] = Field(
        min_length=1, max_length=100_000, description="base64 pieces of one audio file (wav, webm, ogg, mp3)"
    )
    user_name: str = Field(default="anonymous", min_length=1, max_length=200, description="who read it")


@task(
    "speech.process_speak_audio",
    aliases=("process_speak_audio",),
    queue="speech",
    params=ProcessSpeakAudio,
    heavy=True,
    time_limit=1800,
)
def process_speak_audio(
    ctx: TaskContext, resource_id: str, audio_chunks: list[str], user_name: str = "anonymous"
) -> dict[str, Any]:
    """Transcribe a user's reading of a resource, score it against the reference text, store the attempt."""
    from conveyor.workloads.speech.audio import AudioDecodeError, decode_audio, join_chunks
    from conveyor.workloads.speech.recognize import get_recognizer
    from conveyor.workloads.speech.scoring import align, normalize, score_of

    engine = _engine(ctx)
    settings = _settings(ctx)
    print(f"Processing resource {resource_id}")  # the seed's log lines (task logs)
    ctx.progress(2, "Loading resource")
    resource = db.find_resource(engine, resource_id, ctx.tenant)
    if resource is None:
        raise UnknownResource(f"resource {resource_id} does not exist")
    db.save_attempt(
        engine,
        ctx.task_id,
        tenant=ctx.tenant,
        resource_id=resource_id,
        user_name=user_name,
        status="processing",
        error_message=None,
    )
    try:
        ctx.progress(10, "Decoding audio")
        if len(audio_chunks) > settings.max_chunks:
            raise AudioDecodeError(f"{len(audio_chunks)} chunks; at most {settings.max_chunks} are accepted")
        data = join_chunks(audio_chunks, max_bytes=int(settings.max_audio_mb * 1024 * 1024))
        pcm = decode_audio(data)
        if pcm.seconds > settings.max_audio_seconds:
            raise AudioDecodeError(
                f"the audio lasts {pcm.seconds:.0f} s; at most {settings.max_audio_seconds:.0f} s are transcribed"
            )
        if pcm.seconds < 0.05:
            raise AudioDecodeError("the audio holds no samples")
        ctx.raise_if_cancelled()
        ctx.progress(25, f"Transcribing {pcm.seconds:.1f} s of audio")
        recognizer = get_recognizer(settings.recognizer)
        started = time.monotonic()
        transcript = recognizer.transcribe(pcm)
        elapsed = time.monotonic() - started
        ctx.raise_if_cancelled()
        ctx.progress(85, "Scoring")
        alignment = align(normalize(resource.reference_text), normalize(transcript.text))
        score = score_of(alignment.wer)
        ctx.progress(95, "Saving attempt")
        db.save_attempt(
            engine,
            ctx.task_id,
            tenant=ctx.tenant,
            resource_id=resource_id,
            user_name=user_name,
            status="done",
            transcript=transcript.text,
            words=[w.to_dict() for w in transcript.words],
            wer=round(alignment.wer, 4),
            score=score,
            audio_seconds=round(pcm.seconds, 3),
            recognizer=transcript.recognizer,
            error_message=None,
        )
    except Exception as e:
        db.save_attempt(
            engine,
            ctx.task_id,
            tenant=ctx.tenant,
            resource_id=resource_id,
            user_name=user_name,
            status="failed",
            error_message=str(e)[:2000],
        )
        print(f"Error processing resource: {e}")
        raise
    print(f"Successfully processed resource {resource_id}")
    return {
        "attempt_id": ctx.task_id,
        "resource_id": resource_id,
        "user_name": user_name,
        "transcript": transcript.text,
        "words": [w.to_dict() for w in transcript.words],
        "reference_text": resource.reference_text,
        "wer": round(alignment.wer, 4),
        "errors": {
            "substitutions": alignment.substitutions,
            "deletions": alignment.deletions,
            "insertions": alignment.insertions,
        },
        "score": score,
        "audio_seconds": round(pcm.seconds, 3),
        "decoder": pcm.decoder,
        "recognizer": transcript.recognizer,
        "realtime_factor": round(pcm.seconds / elapsed, 2) if elapsed > 0 else None,
    }


class Synthesize(BaseModel):
    model_config = ConfigDict(extra="forbid")
    text: str = Field(min_length=1, max_length=5000)
    voice: str | None = Field(default=None, max_length=40, description="the engine's voice (flite: kal, slt, ...)")
    engine: str | None = Field(default=None, description="flite or espeak-ng; default CONVEYOR_SPEECH_TTS_ENGINE")
    #: when given, the WAV becomes that resource's reference audio
    resource_id: str | None = Field(default=None, max_length=64)


@task("speech.synthesize", queue="speech", params=Synthesize, time_limit=300)
def synthesize(
    ctx: TaskContext, text: str, voice: str | None = None, engine: str | None = None, resource_id: str | None = None
) -> dict[str, Any]:
    """Speak a text with flite or espeak-ng: a resource's reference audio, or a WAV in the result."""
    import soundfile as sf

    from conveyor.workloads.speech.synth import synthesize_wav

    settings = _settings(ctx)
    tts = engine or settings.tts_engine
    ctx.progress(10, f"Synthesising with {tts}")
    wav = synthesize_wav(text, engine=tts, voice=voice)
    import io

    info = sf.info(io.BytesIO(wav))
    out: dict[str, Any] = {
        "engine": tts,
        "voice": voice,
        "bytes": len(wav),
        "seconds": round(info.frames / info.samplerate, 3),
        "sample_rate": info.samplerate,
    }
    if resource_id is None:
        out["audio_base64"] = base64.b64encode(wav).decode()
        return out
    sql = _engine(ctx)
    if db.find_resource(sql, resource_id, ctx.tenant) is None:
        raise UnknownResource(f"resource {resource_id} does not exist")
    folder = ctx.resources.data_dir / "speech" / "audio"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{resource_id}.wav"
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(wav)
    tmp.replace(path)  # a reader never sees half a file
    db.update_resource(sql, resource_id, audio_path=str(path), voice=voice)
    ctx.progress(100, "Reference audio saved")
    return {**out, "resource_id": resource_id}


# -- ratings ---------------------------------------------------------------------


def rate(engine: sa.Engine, resource_id: str) -> Rating:
    """Recompute and store one resource's rating from its attempts and synced impressions."""
    scores, impressions = db.rating_inputs(engine, resource_id)
    rating = compute_rating(scores, impressions)
    db.write_rating(engine, resource_id, rating)
    return rating


@task("speech.calculate_rating", aliases=("calculate_rating",), queue="default", time_limit=120)
def calculate_rating(ctx: TaskContext, resource_id: str) -> dict[str, Any]:
    """Recompute one resource's rating (light: runs in-process)."""
    engine = _engine(ctx)
    if db.find_resource(engine, resource_id, ctx.tenant) is None:
        raise UnknownResource(f"resource {resource_id} does not exist")
    return {"resource_id": resource_id, **rate(engine, resource_id).to_dict()}


@task(
    "speech.calculate_all_ratings", aliases=("calculate_all_ratings",), queue="maintenance", heavy=True, time_limit=3600
)
def calculate_all_ratings(ctx: TaskContext) -> dict[str, Any]:
    """Recompute the rating of every resource of the caller's tenant (heavy: Celery when there)."""
    engine = _engine(ctx)
    ids = db.resource_ids(engine, ctx.tenant)
    ratings: dict[str, float] = {}
    for i, resource_id in enumerate(ids, 1):
        ratings[resource_id] = rate(engine, resource_id).rating
        if i % 50 == 0 or i == len(ids):
            ctx.raise_if_cancelled()
            ctx.progress(100 * i / len(ids), f"Rated {i} of {len(ids)} resources")
    return {"resources": len(ids), "ratings": ratings}


# -- impressions and sessions ----------------------------------------------------------


@task(
    "speech.sync_impressions_from_redis",
    aliases=("sync_impressions_from_redis",),
    queue="maintenance",
    heavy=True,
    time_limit=600,
    visibility="internal",
)
def sync_impressions_from_redis(ctx: TaskContext) -> dict[str, Any]:
    """Move the impression counters into SQL, exactly once (heavy: Celery when there; every tenant's)."""
    from conveyor.workloads.speech.impressions import counter_for

    settings = _settings(ctx)
    ctx.progress(10, "Moving impression counters")
    report = counter_for(_engine(ctx), settings.redis_url).sync()
    return report.to_dict()


@task(
    "speech.cleanup_sessions", aliases=("cleanup_sessions",), queue="maintenance", time_limit=300, visibility="internal"
)
def cleanup_sessions(ctx: TaskContext) -> dict[str, Any]:
    """Delete practice sessions past their expiry, every tenant's (light: runs in-process)."""
    deleted = db.delete_expired_sessions(_engine(ctx), time.time())
    return {"deleted": deleted}
