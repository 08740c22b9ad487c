"""``conveyor logs check|sample|process``: seed 003's management command, on the embedded default and on Redis."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

from conveyor.workloads.movement_logs.cli import app
from tests.workloads.movement_logs.conftest import redis_url


def env_for(tmp_path: Path, **extra: str) -> dict[str, str]:
    return {
        "CONVEYOR_DATA_DIR": str(tmp_path / "data"),
        "CONVEYOR_WORKLOADS": "system,movement_logs",
        "CONVEYOR_CONCURRENCY": "1",
        **extra,
    }


def flat(output: str) -> str:
    """The output with the table's borders and line wrapping taken out."""
    return " ".join(output.replace("│", " ").replace("┃", " ").split())


def stored(tmp_path: Path) -> int:
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'data' / 'conveyor.db'}")
    with engine.connect() as conn:
        count = int(conn.execute(sa.text("SELECT count(*) FROM movement_logs")).scalar_one())
    engine.dispose()
    return count


def test_sample_then_process_stores_the_samples_and_check_passes(tmp_path: Path) -> None:
    """sample 25 queues 25; process moves them; check --all reports all three components ok (exit 0)."""
    runner = CliRunner()
    env = env_for(tmp_path)
    out = runner.invoke(app, ["sample", "25"], env=env)
    assert out.exit_code == 0, out.output
    assert "Queued 25 sample logs on the sql queue" in out.output
    out = runner.invoke(app, ["process", "--max-batches", "5"], env=env)
    assert out.exit_code == 0, out.output
    assert stored(tmp_path) == 25
    out = runner.invoke(app, ["check"], env=env)
    assert out.exit_code == 0, out.output
    assert "25 movement logs stored" in flat(out.output)
    assert "answered" in flat(out.output)


def test_process_submit_runs_the_batch_task_on_the_workers(tmp_path: Path) -> None:
    """--submit sends logs.process_batch to the executor and prints its result."""
    runner = CliRunner()
    env = env_for(tmp_path)
    assert runner.invoke(app, ["sample", "3"], env=env).exit_code == 0
    out = runner.invoke(app, ["process", "--submit", "--timeout", "60"], env=env)
    assert out.exit_code == 0, out.output
    assert stored(tmp_path) == 3


@pytest.mark.redis
def test_check_redis_names_the_queue_and_fails_when_redis_is_down(tmp_path: Path) -> None:
    """--redis on a live Redis shows the list and its length; on a closed port it exits 1 saying why."""
    runner = CliRunner()
    env = env_for(tmp_path, CONVEYOR_MOVEMENT_LOGS_REDIS_URL=redis_url())
    assert runner.invoke(app, ["sample", "4"], env=env).exit_code == 0
    out = runner.invoke(app, ["check", "--redis"], env=env)
    assert out.exit_code == 0, out.output
    assert "'movement_logs'" in flat(out.output)
    assert "4 waiting" in flat(out.output)
    down = env_for(tmp_path, CONVEYOR_MOVEMENT_LOGS_REDIS_URL="redis://127.0.0.1:1/0")
    out = runner.invoke(app, ["check", "--redis"], env=down)
    assert out.exit_code == 1
    assert "Redis at redis://127.0.0.1:1/0" in flat(out.output)
