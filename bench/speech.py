"""Speech workload: transcription speed and memory, and where the hybrid executor's time goes.

    python -m bench.speech [--sentences 20] [--latency-runs 20]

Measures, on this machine:

* transcription alone, in a fresh process: flite-synthesised sentences
  decoded and transcribed by pocketsphinx; audio seconds per wall second
  (× real time; LIBRARIES.md says ~4×), the word error rate, and the
  process's peak resident memory before and after the recogniser loads;
* submit-to-start latency under the hybrid executor (seed 002's split): a
  light task (``calculate_rating``) run in-process by the local pool, beside
  a heavy one (``process_speak_audio``) sent through Celery on Redis to a
  worker process; both read from the records (``started_at - created_at``),
  one task at a time so that queueing does not count.

Services: PostgreSQL on 127.0.0.1:5432 (a scratch database is made and
dropped) and a private redis-server on port 16702 started here.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
REDIS_PORT = 16702
PG_ADMIN = os.environ.get("CONVEYOR_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres")
HEAVY = "process_speak_audio,calculate_all_ratings,sync_impressions_from_redis"


def _sentences(n: int) -> list[str]:
    sys.path.insert(0, str(REPO))
    from tests.workloads.speech.test_speech_stream import SENTENCES

    return (SENTENCES * (n // len(SENTENCES) + 1))[:n]


def transcription_child(n: int) -> dict[str, Any]:
    """Runs in its own process so that its peak memory is the recogniser's alone."""
    from conveyor.workloads.speech.audio import decode_audio
    from conveyor.workloads.speech.synth import synthesize_wav

    sentences = _sentences(n)
    pcms = [decode_audio(synthesize_wav(s)) for s in sentences]
    before_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    from conveyor.workloads.speech.recognize import get_recognizer
    from conveyor.workloads.speech.scoring import align, normalize

    t = time.perf_counter()
    recognizer = get_recognizer("pocketsphinx")
    load = time.perf_counter() - t
    audio = wall = 0.0
    errors = words = 0
    for text, pcm in zip(sentences, pcms, strict=True):
        t = time.perf_counter()
        hyp = recognizer.transcribe(pcm).text
        wall += time.perf_counter() - t
        audio += pcm.seconds
        a = align(normalize(text), normalize(hyp))
        errors += a.errors
        words += a.reference_words
    return {
        "sentences": n,
        "audio_seconds": round(audio, 2),
        "transcribe_seconds": round(wall, 2),
        "x_realtime": round(audio / wall, 2),
        "model_load_seconds": round(load, 2),
        "wer": round(errors / words, 4),
        "peak_rss_mb_before_model": round(before_mb, 1),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }


def transcription(n: int) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, "-m", "bench.speech", "--child", str(n)],
        cwd=REPO,
        capture_output=True,
        check=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    ).stdout
    result: dict[str, Any] = json.loads(out.decode().strip().splitlines()[-1])
    return result


def _wait_for(path: Path, text: bytes, proc: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while text not in path.read_bytes():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(path.read_text()[-2000:])
        time.sleep(0.1)


def latency(runs: int) -> dict[str, Any]:
    import redis
    import sqlalchemy as sa

    from conveyor import Conveyor, Settings
    from conveyor.workloads.speech import db
    from conveyor.workloads.speech.synth import synthesize_wav

    tmp = Path(tempfile.mkdtemp(prefix="bench-speech-"))
    name = f"bench_speech_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(PG_ADMIN.replace("postgresql://", "postgresql+psycopg://"), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    database_url = f"{PG_ADMIN.rsplit('/', 1)[0]}/{name}"
    redis_proc = subprocess.Popen(
        ["redis-server", "--port", str(REDIS_PORT), "--save", "", "--appendonly", "no", "--dir", str(tmp)],
        stdout=subprocess.DEVNULL,
    )
    broker = f"redis://127.0.0.1:{REDIS_PORT}/0"
    worker = None
    app = None
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                redis.Redis(port=REDIS_PORT).ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        settings = Settings(
            data_dir=tmp / "api",
            database_url=database_url,
            executor="hybrid",
            broker_url=broker,
            heavy_tasks=HEAVY,
            workloads=["system", "speech"],
            concurrency=2,
        )
        app = Conveyor(settings).start()  # migrates the speech tables before the worker starts
        env = {k: v for k, v in os.environ.items() if not k.startswith("CONVEYOR_")}
        env.update(
            PYTHONPATH=str(REPO),
            CONVEYOR_EXECUTOR="celery",
            CONVEYOR_BROKER_URL=broker,
            CONVEYOR_DATABASE_URL=database_url,
            CONVEYOR_WORKLOADS="system,speech",
            CONVEYOR_DATA_DIR=str(tmp / "worker"),
        )
        log = tmp / "worker.log"
        with open(log, "wb") as fh:
            worker = subprocess.Popen(
                [sys.executable, "-m", "celery", "-A", "conveyor.worker", "worker", "-P", "prefork", "-c", "1",
                 "-Q", "speech,default,maintenance", "--without-gossip", "--without-mingle", "-l", "INFO"],
                env=env, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        _wait_for(log, b"ready.", worker, 60)
        engine = app.engine
        db.create_resource(engine, id="bench-r", tenant="local", title="t", reference_text="hello world")
        chunks = [__import__("base64").b64encode(synthesize_wav("hello world")).decode()]

        def one(task_type: str, *args: Any) -> tuple[float, str]:
            task_id = app.manager.submit(task_type, *args)
            record = app.manager.wait(task_id, timeout=120)
            assert record.state.value == "SUCCESS", record.error
            assert record.started_at is not None
            return record.started_at - record.created_at, record.executor

        for _ in range(2):  # warm-up: the worker's recogniser and both pools' connections
            one("process_speak_audio", "bench-r", chunks, "bench")
            one("calculate_rating", "bench-r")
        light = [one("calculate_rating", "bench-r") for _ in range(runs)]
        heavy = [one("process_speak_audio", "bench-r", chunks, "bench") for _ in range(runs)]
        assert {e for _, e in light} == {"local"}
        assert {e for _, e in heavy} == {"celery"}

        def summary(xs: list[tuple[float, str]]) -> dict[str, float]:
            ms = sorted(x * 1000 for x, _ in xs)
            return {
                "median_ms": round(statistics.median(ms), 1),
                "p90_ms": round(ms[int(0.9 * (len(ms) - 1))], 1),
                "max_ms": round(ms[-1], 1),
            }

        return {
            "runs": runs,
            "light_in_process": summary(light),
            "heavy_via_celery": summary(heavy),
        }
    finally:
        if app is not None:
            app.stop(graceful=False)
        if worker is not None:
            os.killpg(worker.pid, 15)
            worker.wait(20)
        redis_proc.terminate()
        redis_proc.wait(10)
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sentences", type=int, default=20)
    parser.add_argument("--latency-runs", type=int, default=20)
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(transcription_child(args.child)))
        return
    t = transcription(args.sentences)
    print(
        f"transcription: {t['sentences']} flite sentences, {t['audio_seconds']} s of audio in "
        f"{t['transcribe_seconds']} s = {t['x_realtime']}x real time (LIBRARIES.md: ~4x); "
        f"WER {t['wer']:.1%}; model load {t['model_load_seconds']} s; peak RSS {t['peak_rss_mb']} MB "
        f"({t['peak_rss_mb_before_model']} MB before the model)"
    )
    lat = latency(args.latency_runs)
    light, heavy = lat["light_in_process"], lat["heavy_via_celery"]
    print(
        f"submit-to-start over {lat['runs']} runs each: light in-process median {light['median_ms']} ms "
        f"(p90 {light['p90_ms']}), heavy via Celery median {heavy['median_ms']} ms (p90 {heavy['p90_ms']}); "
        f"ratio heavy/light {heavy['median_ms'] / max(light['median_ms'], 0.001):.1f}x"
    )
    print(json.dumps({"transcription": t, "latency": lat}))


if __name__ == "__main__":
    main()
