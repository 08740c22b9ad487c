"""Seed 004 as it runs: the Redis-only store (no SQL anywhere), a Celery worker, the cpu and gpu queues.

Each test starts its own ``conveyor worker`` (``tests/cli_process.py``) on a
Redis broker database of its own, and the API in this process submits to it.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
import redis
from fastapi.testclient import TestClient

pytest.importorskip("cv2")
pytest.importorskip("dlib")

from conveyor import Status
from conveyor.api.main import create_app
from tests.cli_process import CliProcess, ops_env, wait_until
from tests.conftest import AppFactory, empty_redis_db
from tests.workloads.images import samples
from tests.workloads.images.test_api import poll, seed_cancellation, seed_image_generation, seed_input_validation

pytestmark = [pytest.mark.redis, pytest.mark.slow]

#: this module's Redis databases: the broker, and the store (emptied per test)
BROKER_DB, STORE_DB = 10, 11


@pytest.fixture
def urls() -> Iterator[tuple[str, str]]:
    broker, store = empty_redis_db(BROKER_DB), empty_redis_db(STORE_DB)
    yield broker, store
    for url in (broker, store):
        client = redis.Redis.from_url(url)
        client.flushdb()
        client.close()


@pytest.fixture
def processes() -> Iterator[list[CliProcess]]:
    started: list[CliProcess] = []
    yield started
    for p in reversed(started):
        p.stop()


def _worker(broker: str, store: str, data: Path, queues: str, gpu: bool, processes: list[CliProcess]) -> CliProcess:
    env = ops_env(
        broker,
        store,
        data,
        CONVEYOR_EXECUTOR="celery",
        CONVEYOR_WORKLOADS="system,images",
        CONVEYOR_IMAGES_GPU_WORKERS="true" if gpu else "false",
    )
    args = [
        "worker",
        "-Q",
        queues,
        "-c",
        "2",
        "-n",
        f"{queues.replace(',', '-')}@%h",
        "--without-mingle",
        "--without-gossip",
    ]
    worker = CliProcess(args, env, data.parent / f"worker-{queues}.log").start(ready=b" ready.", timeout=90)
    processes.append(worker)
    return worker


def _pid(worker: str | None) -> int:
    """The process id in a record's worker field (``celery:<host>:<pid>:<tag>``)."""
    assert worker is not None
    return int(worker.split(":")[2])


def _pool(worker: CliProcess) -> set[int]:
    return {p.pid for p in psutil.Process(worker.pid).children(recursive=True)}


def _sql_files(*roots: Path) -> list[Path]:
    return [p for root in roots if root.exists() for p in root.rglob("*") if p.suffix in (".db", ".sqlite", ".sqlite3")]


def test_the_seed_test_suite_passes_on_the_redis_only_store_with_a_celery_worker(
    make_app: AppFactory, tmp_path: Path, urls: tuple[str, str], processes: list[CliProcess]
) -> None:
    """Validation, cancellation, generation on Redis + Celery; Redis expires results in an hour; no SQL file."""
    broker, store = urls
    _worker(broker, store, tmp_path / "worker", "cpu,gpu", False, processes)
    app = make_app(
        start=False, database_url=store, executor="celery", broker_url=broker, workloads=["system", "images"]
    )
    assert app.store.kind == "redis"
    assert app.store.engine is None
    with TestClient(create_app(app, scheduler=False)) as c:
        seed_input_validation(c)
        seed_cancellation(c)
        seed_image_generation(c)
        page = c.get("/api/v1/tasks", params={"status": "SUCCESS"}).json()
        task_id = page["data"][0]["task_id"]
        record = app.manager.get(task_id)
        assert record.queue == "cpu"
        assert record.executor == "celery"
        client = redis.Redis.from_url(store)
        ttl = client.ttl(f"conveyor:t:{task_id}")
        client.close()
        assert 3500 < ttl <= 3601, ttl  # EXPIREAT rounds the expiry up to a whole second

        # A photo without a face is a FAILURE naming it; the worker goes on serving.
        r = c.post(
            "/api/v1/tasks/submit/",
            json={
                "task_type": "face_swap",
                "source_image": samples.b64(samples.png_bytes(samples.coffee())),
                "target_image": samples.b64(samples.png_bytes(samples.astronaut())),
            },
        )
        assert poll(c, r.json()["task_id"])[-1]["status"] == "FAILURE"
        res = c.get(f"/api/v1/tasks/{r.json()['task_id']}/result/").json()
        assert res["error"]["message"] == "no face found in source_image"
        seed_image_generation(c)
    assert _sql_files(tmp_path) == []


def test_a_gpu_worker_serves_the_heavy_types_and_a_cpu_task_waits_for_a_cpu_worker(
    make_app: AppFactory, tmp_path: Path, urls: tuple[str, str], processes: list[CliProcess]
) -> None:
    """GPU workers configured: `conveyor worker -Q gpu` runs generation; object removal waits for a cpu worker."""
    broker, store = urls
    gpu_worker = _worker(broker, store, tmp_path / "gpu", "gpu", True, processes)
    app = make_app(
        start=False,
        database_url=store,
        executor="celery",
        broker_url=broker,
        workloads=["system", "images"],
        workload_settings={"images": {"gpu_workers": True}},
    )
    with TestClient(create_app(app, scheduler=False)) as c:
        cpu = c.post(
            "/api/v1/tasks/submit/",
            json={
                "task_type": "object_removal",
                "image": samples.b64(samples.png_bytes(samples.chelsea())),
                "box": [5, 5, 20, 20],
            },
        ).json()
        gpu = c.post(
            "/api/v1/tasks/submit/",
            json={"task_type": "image_generation", "prompt": "gpu", "parameters": {"width": 128, "height": 128}},
        ).json()
        assert (cpu["queue"], gpu["queue"]) == ("cpu", "gpu")
        assert poll(c, gpu["task_id"])[-1]["status"] == "SUCCESS"
        assert _pid(app.manager.get(gpu["task_id"]).worker) in _pool(gpu_worker)
        # Submitted first, yet still waiting: no worker serves cpu.
        assert app.manager.get(cpu["task_id"]).state is Status.PENDING
        cpu_worker = _worker(broker, store, tmp_path / "cpu", "cpu", True, processes)
        wait_until(lambda: app.manager.get(cpu["task_id"]).state is Status.SUCCESS, 60, "the cpu worker to run it")
        assert _pid(app.manager.get(cpu["task_id"]).worker) in _pool(cpu_worker)
