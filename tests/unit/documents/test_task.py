"""``documents.process`` and ``documents.cleanup`` run as a worker runs them, on a real SQLite store.

The context's sink records every progress report (the seed's steps are
checked one by one, which the API's rate-limited timeline cannot show for a
fast document), and can answer "cancelled" from a given step on, as a cancel
request arriving mid-run does.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from conveyor.errors import TaskCancelled
from conveyor.records import Status, TaskRecord, new_task_id
from conveyor.resources import Resources
from conveyor.settings import Settings
from conveyor.stores.sql import SqlStore
from conveyor.testing import RecordingSink, task_context
from conveyor.workloads.documents import db, storage, workload
from conveyor.workloads.documents.config import DocumentsSettings
from conveyor.workloads.documents.errors import DocumentError
from conveyor.workloads.documents.tables import chunks_table
from conveyor.workloads.documents.tasks import cleanup_documents, process_document
from tests.documents_samples import ENGLISH, ITALIAN, make_pdf


@dataclass
class Env:
    settings: Settings
    store: SqlStore
    resources: Resources

    @property
    def engine(self) -> sa.Engine:
        return self.store.engine

    def stage(self, content: bytes, ext: str = ".txt", tenant: str = "alpha", created_at: float | None = None) -> str:
        """An upload as the route leaves it: the file in its folder and a ``processing`` row."""
        document_id = new_task_id()
        folder = storage.tenant_dir(self.settings.data_dir, tenant) / document_id
        folder.mkdir(parents=True)
        path = folder / f"{document_id}{ext}"
        path.write_bytes(content)
        db.insert(
            self.engine,
            id=document_id,
            tenant=tenant,
            filename=f"upload{ext}",
            stored_path=str(path),
            kind=ext.lstrip("."),
            size_bytes=len(content),
            sha256="0" * 64,
            status="processing",
            processing_progress=0.0,
            doc_metadata={},
            **({"created_at": created_at} if created_at is not None else {}),
        )
        return document_id

    def run(self, document_id: str, sink: RecordingSink | None = None, tenant: str = "alpha", **params: Any) -> Any:
        ctx = task_context(
            task_type="documents.process", tenant=tenant, queue="documents", sink=sink, resources=self.resources
        )
        return process_document(ctx, document_id=document_id, **params)

    def row(self, document_id: str) -> sa.Row[Any]:
        row = db.find(self.engine, document_id)
        assert row is not None
        return row


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    settings = Settings(data_dir=tmp_path / "data", database_url=f"sqlite:///{tmp_path / 'c.db'}")
    store = SqlStore(settings.resolved_database_url, migrations={"documents": workload.migrations})
    store.open()
    # What a worker process has: resources built from its own app's settings.
    res = Resources(settings, store=store, workload_settings={"documents": DocumentsSettings(retention_days=2)})
    try:
        yield Env(settings, store, res)
    finally:
        store.close()


def test_progress_follows_the_seeds_steps(env: Env, tmp_path: Path) -> None:
    """10 % reading (page by page to 20 %), 20–80 % encoding in real steps, 80 % saving, 100 % complete."""
    document_id = env.stage(make_pdf(tmp_path / "b.pdf", 40).read_bytes(), ".pdf")
    sink = RecordingSink()
    result = env.run(document_id, sink)
    values = [p for p, _ in sink.steps]
    assert values == sorted(values)
    assert sink.steps[0] == (10, "Reading file")
    reading = [p for p, m in sink.steps if m == "Reading file"]
    assert len(reading) == 41  # the start, then one per page
    assert reading[-1] == 20
    encoding = [p for p, m in sink.steps if m == "Running encoder"]
    assert encoding[0] == 20
    assert len({p for p in encoding if 20 < p < 80}) >= 4
    assert sink.steps[-2:] == [(80, "Saving metadata"), (100, "Complete")]
    row = env.row(document_id)
    assert (row.status, row.processing_progress, row.error_message) == ("ready", 100.0, None)
    assert row.total_chunks == result["total_chunks"] > 1
    assert row.total_tokens == result["tokens"]
    assert row.language == "en"
    assert row.processing_started_at <= row.processing_completed_at
    meta = row.doc_metadata
    assert meta["task_id"] == row.task_id
    assert Path(meta["metadata_file"]).name == f"{document_id}_sections_metadata.json"
    assert Path(meta["index_file"]).name == f"{document_id}_index.json"
    assert Path(meta["metadata_file"]).parent == Path(row.stored_path).parent
    sections = json.loads(Path(meta["metadata_file"]).read_text())["sections"]
    assert [s["index"] for s in sections] == list(range(row.total_chunks))
    assert sections[-1]["pages"][-1] == 40
    index = json.loads(Path(meta["index_file"]).read_text())["chunks"]
    assert len(index) == row.total_chunks
    with env.engine.connect() as conn:
        stored = conn.execute(sa.select(sa.func.count()).select_from(chunks_table)).scalar_one()
    assert stored == row.total_chunks


def test_language_is_kept_per_document_and_per_chunk(env: Env) -> None:
    document_id = env.stage((ITALIAN + ENGLISH * 3).encode())
    env.run(document_id, chunk_size=400, overlap=50)
    with env.engine.connect() as conn:
        languages = conn.execute(sa.select(chunks_table.c.language).order_by(chunks_table.c.idx)).scalars().all()
    assert languages[0] == "it"
    assert languages[-1] == "en"
    assert env.row(document_id).language in {"it", "en"}


def _missing(env: Env) -> str:
    document_id = env.stage(b"some words " * 50)
    os.remove(env.row(document_id).stored_path)
    return document_id


def _late_bad_bytes(env: Env) -> str:
    # Past the 8 KiB the upload's type check reads: only the full decode finds them.
    return env.stage(b"plain words " * 1000 + b"caf\xe9 \x81\x8d\x8f\x90\x9d")


def _blank(env: Env) -> str:
    return env.stage(b" \n\t " * 10)


def _output_blocked(env: Env) -> str:
    document_id = env.stage(b"words to save " * 100)
    stem = Path(env.row(document_id).stored_path).with_suffix("")
    Path(f"{stem}_sections_metadata.json.tmp").mkdir()  # a directory where the file must go
    return document_id


def _encrypted(env: Env) -> str:
    from tests.documents_samples import make_encrypted_pdf

    folder = env.settings.data_dir / "made"
    folder.mkdir(parents=True, exist_ok=True)
    return env.stage(make_encrypted_pdf(folder / "locked.pdf").read_bytes(), ".pdf")


@pytest.mark.parametrize(
    ("make", "words"),
    [
        (_missing, "missing on disk"),
        (_late_bad_bytes, "neither UTF-8 nor Windows-1252"),
        (_blank, "no text could be extracted"),
        (_output_blocked, "output not written"),
        (_encrypted, "encrypted"),
    ],
    ids=["file-missing", "bad-encoding", "empty-text", "output-not-written", "encrypted-pdf"],
)
def test_a_failure_marks_the_document_failed_with_its_cause(env: Env, make: Any, words: str) -> None:
    document_id = make(env)
    with pytest.raises(DocumentError, match=words):
        env.run(document_id)
    row = env.row(document_id)
    assert row.status == "failed"
    assert words in row.error_message
    assert row.processing_completed_at is not None
    # The row keeps the phase it failed in: reading (10) or saving (80).
    assert row.processing_progress == (80 if "output" in words else 10)


def test_another_tenants_document_is_left_alone(env: Env) -> None:
    """A task submitted by tenant beta naming alpha's document finds nothing and changes nothing."""
    document_id = env.stage(b"alpha's words " * 40)
    with pytest.raises(LookupError, match="no document"):
        env.run(document_id, tenant="beta")
    row = env.row(document_id)
    assert (row.status, row.error_message, row.task_id) == ("processing", None, None)


def test_a_cancel_mid_run_marks_the_document_failed(env: Env) -> None:
    document_id = env.stage(ENGLISH.encode() * 5)
    with pytest.raises(TaskCancelled):
        env.run(document_id, RecordingSink(cancel_at="Running encoder"))
    assert env.row(document_id).status == "failed"
    assert env.row(document_id).error_message == "processing was cancelled"


def test_a_rerun_replaces_the_chunks_of_the_earlier_run(env: Env) -> None:
    document_id = env.stage(ENGLISH.encode() * 3)
    first = env.run(document_id, chunk_size=1200, overlap=200)["total_chunks"]
    second = env.run(document_id, chunk_size=300, overlap=30)["total_chunks"]
    assert second > first
    with env.engine.connect() as conn:
        stored = conn.execute(sa.select(sa.func.count()).select_from(chunks_table)).scalar_one()
    assert stored == second == env.row(document_id).total_chunks
    assert env.row(document_id).doc_metadata["chunk_size"] == 300


def test_a_document_deleted_during_its_run_gets_no_chunks(env: Env) -> None:
    """The final write finds no row and writes nothing: no orphan chunks turn up in search."""
    document_id = env.stage(ENGLISH.encode() * 3)

    class DeleteOnSave(RecordingSink):
        def report(self, task_id: str, progress: float, message: str, meta: dict[str, Any]) -> None:
            if message == "Saving metadata":
                db.delete(env.engine, document_id)
            super().report(task_id, progress, message, meta)

    with pytest.raises(LookupError, match="deleted while it was processed"):
        env.run(document_id, DeleteOnSave())
    with env.engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(chunks_table)).scalar_one() == 0


def _cleanup(env: Env, **params: Any) -> dict[str, int]:
    ctx = task_context(task_type="documents.cleanup", tenant="system", queue="maintenance", resources=env.resources)
    return cleanup_documents(ctx, **params)


def test_cleanup_honours_the_retention_setting(env: Env) -> None:
    """``documents_retention_days`` is 2 here: a 3-day-old document goes with its chunks and files."""
    day = 86400.0
    old = env.stage(b"old words " * 50, created_at=time.time() - 3 * day)
    recent = env.stage(b"recent words " * 50, created_at=time.time() - 1 * day)
    env.run(old)
    env.run(recent)
    old_folder = Path(env.row(old).stored_path).parent
    assert _cleanup(env)["deleted"] == 1
    assert db.find(env.engine, old) is None
    assert not old_folder.exists()
    assert env.row(recent).status == "ready"
    with env.engine.connect() as conn:
        left = set(conn.execute(sa.select(chunks_table.c.document_id)).scalars())
    assert left == {recent}
    # An explicit retention wins over the setting.
    assert _cleanup(env, retention_days=0.5)["deleted"] == 1
    assert db.find(env.engine, recent) is None


def test_cleanup_settles_documents_whose_task_can_no_longer_finish(env: Env) -> None:
    """A document still "processing" whose task died past its retries, or whose task is gone, ends failed."""
    died, vanished, running = (env.stage(b"words " * 30) for _ in range(3))
    t = time.time()
    records = {
        died: TaskRecord(
            id=new_task_id(),
            type="documents.process",
            tenant="alpha",
            state=Status.FAILURE,
            error={"type": "WorkerLost", "message": "worker process died (exit code -9) while running this task"},
            finished_at=t,
        ),
        running: TaskRecord(id=new_task_id(), type="documents.process", tenant="alpha", state=Status.PROCESSING),
    }
    env.store.insert(list(records.values()))
    for document_id, task_id in [(died, records[died].id), (vanished, new_task_id()), (running, records[running].id)]:
        db.update(env.engine, document_id, task_id=task_id)
    assert _cleanup(env)["settled"] == 2
    assert env.row(died).status == "failed"
    assert "worker process died" in env.row(died).error_message
    assert env.row(vanished).status == "failed"
    assert "no longer exists" in env.row(vanished).error_message
    assert env.row(running).status == "processing"


def test_cleanup_removes_old_upload_folders_that_no_document_owns(env: Env) -> None:
    tenant = storage.tenant_dir(env.settings.data_dir, "alpha")
    stale, fresh = tenant / new_task_id(), tenant / new_task_id()
    for folder in (stale, fresh):
        folder.mkdir(parents=True)
        (folder / "x.upload").write_bytes(b"half an upload")
    two_hours_ago = time.time() - 7200
    os.utime(stale, (two_hours_ago, two_hours_ago))
    kept = env.stage(b"a real document " * 20)
    os.utime(Path(env.row(kept).stored_path).parent, (two_hours_ago, two_hours_ago))
    assert _cleanup(env)["orphans_removed"] == 1
    assert not stale.exists()
    assert fresh.exists()  # may be an upload in progress
    assert Path(env.row(kept).stored_path).exists()
