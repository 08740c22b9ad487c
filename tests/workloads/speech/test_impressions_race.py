"""Impressions: concurrent posts and syncs racing, syncs SIGKILLed midway, and not one count lost or doubled."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from conveyor import Conveyor
from conveyor.api.main import create_app
from conveyor.workloads.speech import db
from conveyor.workloads.speech.impressions import counter_for
from tests.conftest import AppFactory, die_with_parent
from tests.workloads.speech.conftest import ALPHA, BETA, ROOT, create_resource, fresh_redis_db, speech_app

POSTS = 10_000
THREADS = 8


@pytest.fixture
def redis_speech(
    make_app: AppFactory, clean_postgres_url: str, private_redis: str
) -> Iterator[tuple[TestClient, Conveyor, str]]:
    """PostgreSQL for the tables and totals, the tests' own Redis for the counters."""
    redis_url = fresh_redis_db(private_redis, 2)
    # tenant_rate=0: the subject is counting, and 10,000 posts pass the default 200 requests/s
    app = speech_app(
        make_app,
        clean_postgres_url,
        concurrency=1,
        tenant_rate=0,
        workload_settings={"speech": {"redis_url": redis_url}},
    )
    with TestClient(create_app(app, scheduler=False)) as client:
        yield client, app, redis_url


def start_syncer(database_url: str, redis_url: str, point: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "tests.workloads.speech.sync_and_die", database_url, redis_url, point],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE,
        preexec_fn=die_with_parent,
    )


def run_syncer(database_url: str, redis_url: str, point: str) -> int:
    """A syncer run to its own kill point; its exit code."""
    proc = start_syncer(database_url, redis_url, point)
    assert proc.stdout is not None
    with proc.stdout:
        code = proc.wait(30)
    return code


def post_all(client: TestClient, targets: list[tuple[str, dict[str, str]]], failures: list[str]) -> None:
    """Each post until it is accepted: a 503 (the database past its deadline on a loaded machine) is
    tried again, as a client honouring Retry-After would; anything else is a failure."""
    try:
        for resource_id, headers in targets:
            for _ in range(20):
                r = client.post(f"/api/resources/{resource_id}/impressions", headers=headers)
                if r.status_code != 503:
                    break
                time.sleep(0.2)
            if r.status_code != 202:
                failures.append(r.text)
    except Exception as e:  # a thread's exception would otherwise vanish and its posts with it
        failures.append(repr(e))
        raise


@pytest.mark.slow
@pytest.mark.postgres
@pytest.mark.redis
def test_ten_thousand_posts_racing_syncs_that_are_killed_midway_lose_and_double_nothing(
    redis_speech: tuple[TestClient, Conveyor, str], clean_postgres_url: str
) -> None:
    """10,000 concurrent posts; syncs in-process and in processes SIGKILLed after the move, after the
    commit and at random moments; the SQL totals equal the posts exactly."""
    client, app, redis_url = redis_speech
    engine: sa.Engine = app.engine
    resources = [(create_resource(client, f"text {i}", synthesize=False), ALPHA) for i in range(4)]
    resources.append((create_resource(client, "beta's", headers=BETA, synthesize=False), BETA))
    rng = random.Random(2)
    targets = [rng.choice(resources) for _ in range(POSTS)]
    posted = Counter(resource_id for resource_id, _ in targets)
    failures: list[str] = []
    posters = [threading.Thread(target=post_all, args=(client, targets[i::THREADS], failures)) for i in range(THREADS)]
    done = threading.Event()
    in_process_syncs = 0

    def sync_in_process() -> None:
        nonlocal in_process_syncs
        counter = counter_for(engine, redis_url)
        while not done.wait(0.01):  # a sync every few posts, leaving the cores to the posts
            counter.sync()
            in_process_syncs += 1

    syncer = threading.Thread(target=sync_in_process)
    for t in [*posters, syncer]:
        t.start()
    kills: list[tuple[str, int]] = []
    deadline = time.monotonic() + 240
    points = ["after_move", "after_commit", "after_move", "after_commit", "loop", "loop"]
    # Each kind of death twice, while the posts run (a process start costs a core-second here).
    for point in points:
        if not any(t.is_alive() for t in posters):
            break
        assert time.monotonic() < deadline, "posts did not finish"
        proc = start_syncer(clean_postgres_url, redis_url, point)
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == b"ready"
        if point == "loop":
            time.sleep(rng.uniform(0.05, 0.3))  # let it run a while, then kill it wherever it is
            proc.send_signal(signal.SIGKILL)
        proc.wait(30)
        proc.stdout.close()
        kills.append((point, proc.returncode))
    for t in posters:
        t.join(max(1.0, deadline - time.monotonic()))
    done.set()
    assert not any(t.is_alive() for t in posters), "posts did not finish"
    syncer.join(60)
    assert failures == []
    # Once more after the storm, twice: the second finds nothing left.
    counter = counter_for(engine, redis_url)
    final = counter.sync()
    assert counter.sync().moved == 0
    totals = {resource_id: db.impressions_of(engine, resource_id) for resource_id, _ in resources}
    assert totals == dict(posted)
    assert sum(totals.values()) == POSTS
    killed = [point for point, code in kills if code == -signal.SIGKILL]
    assert {"after_commit", "after_move"} <= set(killed), kills
    print(f"{len(kills)} syncer processes ({len(killed)} SIGKILLed: {Counter(killed)}), "
          f"{in_process_syncs} in-process syncs, last sync {final.to_dict()}")  # fmt: skip
    # nothing left behind in Redis: no live counter, no listed batch
    import redis

    r = redis.Redis.from_url(redis_url)
    assert r.keys("conveyor:speech:impressions*") == []
    r.close()


def test_a_batch_committed_by_a_killed_sync_is_recognised_and_not_counted_again(
    redis_speech: tuple[TestClient, Conveyor, str], clean_postgres_url: str
) -> None:
    """Killed right after its SQL commit: the batch stays listed; the next sync deletes it and adds nothing."""
    client, app, redis_url = redis_speech
    resource_id = create_resource(client, "hello", synthesize=False)
    for _ in range(5):
        client.post(f"/api/resources/{resource_id}/impressions", headers=ALPHA)
    assert run_syncer(clean_postgres_url, redis_url, "after_commit") == -signal.SIGKILL
    assert db.impressions_of(app.engine, resource_id) == 5
    assert client.get(f"/api/resources/{resource_id}", headers=ALPHA).json()["impressions_pending"] == 5
    report = counter_for(app.engine, redis_url).sync()
    assert (report.moved, report.already_applied) == (0, 1)
    shown = client.get(f"/api/resources/{resource_id}", headers=ALPHA).json()
    assert (shown["impressions"], shown["impressions_pending"]) == (5, 0)


def test_a_sync_killed_after_the_move_leaves_a_batch_the_next_one_applies(
    redis_speech: tuple[TestClient, Conveyor, str], clean_postgres_url: str
) -> None:
    """Killed after renaming the live counters, before SQL: the next sync applies that batch."""
    client, app, redis_url = redis_speech
    resource_id = create_resource(client, "hello", synthesize=False)
    client.post(f"/api/resources/{resource_id}/impressions", json={"count": 3}, headers=ALPHA)
    assert run_syncer(clean_postgres_url, redis_url, "after_move") == -signal.SIGKILL
    client.post(f"/api/resources/{resource_id}/impressions", headers=ALPHA)  # a new live counter meanwhile
    assert db.impressions_of(app.engine, resource_id) == 0
    report = counter_for(app.engine, redis_url).sync()
    assert (report.moved, report.batches) == (4, 2)
    assert db.impressions_of(app.engine, resource_id) == 4


@pytest.mark.postgres
def test_the_embedded_counter_under_concurrent_posts_and_syncs_counts_exactly(
    make_app: AppFactory, clean_postgres_url: str, tmp_path: Path
) -> None:
    """No Redis: the pending table and its one-transaction flush, racing on PostgreSQL."""
    app = speech_app(make_app, clean_postgres_url, concurrency=1, tenant_rate=0)
    with TestClient(create_app(app, scheduler=False)) as client:
        resource_id = create_resource(client, "hello", synthesize=False)
        failures: list[str] = []
        posters = [
            threading.Thread(target=post_all, args=(client, [(resource_id, ALPHA)] * 250, failures)) for _ in range(4)
        ]
        for t in posters:
            t.start()
        counter = counter_for(app.engine, "")
        while any(t.is_alive() for t in posters):
            counter.sync()
        for t in posters:
            t.join()
        counter.sync()
        assert failures == []
        assert db.impressions_of(app.engine, resource_id) == 1000
