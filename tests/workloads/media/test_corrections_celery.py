"""Seed 000's deployment: corrections on Celery workers over RabbitMQ, and ``process_correction.delay(...).get()``.

The API and the workers share the tenant storage (one data folder, as one
PVC would be) and the PostgreSQL database; RabbitMQ carries the messages.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("cv2", reason="the media extra is not installed: pip install 'conveyor[media]'")

from fastapi.testclient import TestClient

from conveyor import Conveyor, Settings
from conveyor.api.main import create_app
from conveyor.workloads.media.storage import tenant_root
from tests.conftest import AppFactory, CeleryWorkers, broker_url
from tests.workloads.media import samples
from tests.workloads.media.test_corrections_api import poll, submit

REPO = Path(__file__).resolve().parents[3]

SEED_SNIPPET = """
import json, sys
from conveyor.workloads.media.tasks import process_correction
result = process_correction.delay(sys.argv[1], 'audio', sys.argv[2], sys.argv[3], {})
print(json.dumps(result.get(timeout=120)))  # This will block until the task completes
"""


@pytest.fixture
def on_rabbitmq(
    make_app: AppFactory, clean_postgres_url: str, celery_workers: CeleryWorkers
) -> Iterator[tuple[TestClient, Conveyor, dict[str, str]]]:
    """An API on the Celery executor, RabbitMQ broker, PostgreSQL store, beside media workers sharing its data dir."""
    broker = broker_url("amqp")
    celery_workers.start(broker, clean_postgres_url, name="media", workloads="system,media")
    env = celery_workers.env(broker, clean_postgres_url, "system,media")
    app = make_app(
        start=False,
        database_url=clean_postgres_url,
        executor="celery",
        broker_url=broker,
        data_dir=Path(env["CONVEYOR_DATA_DIR"]),
        workloads=["system", "media"],
    )
    with TestClient(create_app(app, scheduler=False)) as client:
        yield client, app, env


def test_an_upload_is_corrected_by_a_celery_worker_over_rabbitmq(
    on_rabbitmq: tuple[TestClient, Conveyor, dict[str, str]], tmp_path: Path
) -> None:
    """Submit over HTTP, a worker on the media queue corrects it, the front end polls and downloads the result."""
    client, _, _ = on_rabbitmq
    src = samples.noisy_quiet_speech(tmp_path / "call.wav")
    answer = submit(client, src, headers={})
    assert answer.status_code == 202, answer.text
    record = poll(client, answer.json()["task_id"], headers={})
    assert record["status"] == "SUCCESS", record["error_message"]
    job = client.get(record["links"]["task"]).json()
    assert job["queue"] == "media"
    assert job["type"] == "media.process_correction"
    got = tmp_path / "got.wav"
    got.write_bytes(client.get(record["result"]["outputs"][0]["url"]).content)
    meter = samples.ebur128(got)
    assert abs(meter["I"] + 16.0) <= 0.5
    assert meter["TP"] <= -1.0


def run_seed_snippet(env: dict[str, str], task_id: str, given: str, folder: str) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, "-c", SEED_SNIPPET, task_id, given, folder],
        env={**env, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def test_process_correction_delay_get_works_from_python_on_celery(
    on_rabbitmq: tuple[TestClient, Conveyor, dict[str, str]],
) -> None:
    """The seed's debugging recipe, verbatim in shape, against the Celery workers; the record then reads SUCCESS."""
    client, app, env = on_rabbitmq
    root = tenant_root(app.settings.data_dir, app.settings.local_tenant)
    samples.noisy_quiet_speech(root / "inbox" / "file.wav")
    result = run_seed_snippet(env, "seed-celery-1", "inbox/file.wav", "outputs/seed-celery-1")
    assert result["outputs"][0]["name"] == "file_corrected.wav"
    assert (root / "outputs" / "seed-celery-1" / "file_corrected.wav").is_file()
    record = client.get("/corr/tasks/seed-celery-1/").json()
    assert record["status"] == "SUCCESS"
    assert record["result"] == result


def test_process_correction_delay_get_works_from_python_with_the_local_executor(tmp_path: Path) -> None:
    """The same recipe with nothing but the defaults: local workers, SQLite, the record readable after."""
    data = tmp_path / "data"
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONVEYOR_")}
    env.update(CONVEYOR_DATA_DIR=str(data), CONVEYOR_WORKLOADS="system,media", CONVEYOR_CONCURRENCY="1")
    root = tenant_root(data, Settings().local_tenant)
    samples.noisy_quiet_speech(root / "in" / "voice.wav")
    result = run_seed_snippet(env, "seed-local-1", str(root / "in" / "voice.wav"), "out")
    assert result["media_type"] == "audio"
    assert result["output_file"] == "voice_corrected.wav"
    assert (root / "out" / "voice_corrected.wav").is_file()
    assert result["measurements"]["after"]["integrated_lufs"] == pytest.approx(-16.0, abs=0.3)
