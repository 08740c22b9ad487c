"""``documents.process``: a stored upload becomes token chunks with pages, language and metadata files.

Progress follows seed 001's steps: 10 % reading (up to 20 % as PDF pages
are read), 20–80 % encoding (chunking, then each chunk's language, reported
as they advance), 80 % saving, 100 % complete.

Tasks run in worker processes and reach the database through
``ctx.resources``, which each worker process builds from its own app's
settings (a forked local worker in ``Conveyor._worker_started``, a Celery
worker when it builds its Conveyor).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import time
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from pydantic import BaseModel, ConfigDict, Field, model_validator

from conveyor.context import TaskContext
from conveyor.errors import SoftTimeLimitExceeded, TaskCancelled
from conveyor.registry import task
from conveyor.workloads.documents import db
from conveyor.workloads.documents.config import DocumentsSettings
from conveyor.workloads.documents.tables import chunks_table, documents_table

__all__ = [
    "ENCODER_VERSION",
    "CleanupDocuments",
    "ProcessDocument",
    "cleanup_documents",
    "delete_document_files",
    "process_document",
]

log = logging.getLogger("conveyor.documents")

ENCODER_VERSION = "conveyor-tiktoken-cl100k/2"
#: an upload folder with no document row is an interrupted upload once it is this old
ORPHAN_AGE = 3600.0


class ProcessDocument(BaseModel):
    model_config = ConfigDict(extra="forbid")
    document_id: str = Field(min_length=1, max_length=36)
    chunk_size: int = Field(default=1200, ge=100, le=8192, description="tokens per chunk")
    overlap: int = Field(default=200, ge=0, le=4096, description="tokens shared by neighbours (at most half a chunk)")

    @model_validator(mode="after")
    def _overlap_below_size(self) -> ProcessDocument:
        if self.overlap * 2 > self.chunk_size:
            raise ValueError("overlap must be at most half of chunk_size")
        return self


class CleanupDocuments(BaseModel):
    model_config = ConfigDict(extra="forbid")
    retention_days: float | None = Field(default=None, gt=0, description="default: the settings' retention")


# Only infrastructure errors are retried: a corrupt or encrypted file fails the same way every time.
TRANSIENT = (sa.exc.OperationalError, sa.exc.InterfaceError, ConnectionError, TimeoutError)


@task(
    "documents.process",
    queue="documents",
    params=ProcessDocument,
    max_retries=2,
    retry_backoff=2,
    retry_on=TRANSIENT,
    time_limit=3600,
    soft_time_limit=3500,
)
def process_document(ctx: TaskContext, document_id: str, chunk_size: int = 1200, overlap: int = 200) -> dict[str, Any]:
    """Extract, chunk (1,200 tokens, 200 overlap), detect language, and save an uploaded document."""
    engine = ctx.resources.engine
    doc = db.find(engine, document_id, ctx.tenant)
    if doc is None:
        # Deleted before it ran, or named by another tenant: nothing here to mark.
        raise LookupError(f"no document {document_id} for tenant {ctx.tenant!r}")
    meta = dict(doc.doc_metadata or {}, task_id=ctx.task_id)
    db.update(
        engine,
        document_id,
        status="processing",
        processing_progress=0.0,
        processing_started_at=time.time(),
        processing_completed_at=None,
        error_message=None,
        task_id=ctx.task_id,  # the document follows whichever task processes it now
        doc_metadata=meta,
    )
    try:
        return _process(ctx, engine, doc, chunk_size, overlap)
    except TRANSIENT:
        # Retried; if the retries run out, the task's FAILURE marks the document
        # (the status route and the cleanup job reconcile it).
        raise
    except Exception as e:
        with contextlib.suppress(Exception):  # the task's own error is the one to report
            db.mark_failed(engine, document_id, _describe(e))
        raise


def _describe(e: BaseException) -> str:
    from conveyor.workloads.documents.errors import DocumentError

    if isinstance(e, DocumentError):
        return str(e)
    if isinstance(e, TaskCancelled):
        return "processing was cancelled"
    if isinstance(e, SoftTimeLimitExceeded):
        return f"processing took too long: {e}"
    return f"processing failed: {type(e).__name__}: {e}"


def _process(ctx: TaskContext, engine: sa.Engine, doc: sa.Row[Any], chunk_size: int, overlap: int) -> dict[str, Any]:
    from conveyor.workloads.documents.chunking import chunk_text
    from conveyor.workloads.documents.extract import ExtractLimits, OutputNotWritten, extract
    from conveyor.workloads.documents.language import detect_language

    started = time.time()
    path = Path(doc.stored_path)

    def phase(percent: float, message: str) -> None:
        # The row's own progress moves at each phase (seed 001's monitoring
        # reads processing_progress); the task's moves at every step.
        ctx.progress(percent, message)
        db.update(engine, doc.id, processing_progress=percent)

    phase(10, "Reading file")

    def reading(fraction: float) -> None:
        ctx.raise_if_cancelled()
        ctx.progress(10 + 10 * fraction, "Reading file")

    config: DocumentsSettings = ctx.resources.workload_settings("documents")
    limits = ExtractLimits(
        pdf_max_content_bytes=int(config.pdf_max_content_mb * 1024 * 1024),
        pdf_max_pages=config.pdf_max_pages,
        seconds=config.extract_seconds,
    )
    extracted = extract(path, doc.filename, progress=reading, limits=limits)
    phase(20, "Running encoder")

    def chunking(fraction: float) -> None:
        ctx.raise_if_cancelled()
        ctx.progress(20 + 40 * fraction, "Running encoder")

    chunks = chunk_text(extracted.text, extracted.pages, chunk_size=chunk_size, overlap=overlap, progress=chunking)
    languages: list[str | None] = []
    for i, c in enumerate(chunks, 1):
        languages.append(detect_language(c.text))
        if i % 8 == 0 or i == len(chunks):
            ctx.raise_if_cancelled()
            ctx.progress(60 + 20 * i / len(chunks), "Running encoder")
    language = detect_language(extracted.text)
    tokens = chunks[-1].token_end if chunks else 0
    phase(80, "Saving metadata")
    stem = path.with_suffix("")
    metadata_file = Path(f"{stem}_sections_metadata.json")
    index_file = Path(f"{stem}_index.json")
    sections = [
        {
            "index": c.index,
            "tokens": c.tokens,
            "token_start": c.token_start,
            "token_end": c.token_end,
            "char_start": c.char_start,
            "char_end": c.char_end,
            "pages": c.pages,
            "language": lang,
        }
        for c, lang in zip(chunks, languages, strict=True)
    ]
    summary = {
        "document_id": doc.id,
        "filename": doc.filename,
        "kind": extracted.kind,
        "encoding": extracted.encoding,
        "language": language,
        "total_chunks": len(chunks),
        "total_tokens": tokens,
        "pages": len(extracted.pages),
        "unreadable_pages": extracted.unreadable_pages,
        "chunk_size": chunk_size,
        "overlap": overlap,
        "encoder_version": ENCODER_VERSION,
    }
    try:
        _write_json(metadata_file, {**summary, "sections": sections})
        _write_json(
            index_file,
            {"document_id": doc.id, "chunks": [{"index": c.index, "text": c.text, "pages": c.pages} for c in chunks]},
        )
    except OSError as e:
        raise OutputNotWritten(f"output not written: {e.strerror or e} ({Path(e.filename or stem).name})") from None
    if not metadata_file.is_file() or not index_file.is_file():
        raise OutputNotWritten("output not written: the metadata files are missing after saving")
    finished = time.time()
    doc_metadata = {
        "task_id": ctx.task_id,
        "metadata_file": str(metadata_file),
        "index_file": str(index_file),
        "processed_at": finished,
        "encoder_version": ENCODER_VERSION,
        "chunk_size": chunk_size,
        "overlap": overlap,
        "pages": len(extracted.pages),
        "unreadable_pages": extracted.unreadable_pages,
        "kind": extracted.kind,
        "encoding": extracted.encoding,
    }
    with engine.begin() as conn:
        # The row first: it holds a concurrent delete off until the chunks are in, and
        # tells us if the document was deleted meanwhile (then nothing is written).
        marked = conn.execute(
            documents_table.update()
            .where(documents_table.c.id == doc.id)
            .values(
                status="ready",
                processing_progress=100.0,
                total_chunks=len(chunks),
                total_tokens=tokens,
                language=language,
                doc_metadata=doc_metadata,
                processing_completed_at=finished,
                updated_at=finished,
                error_message=None,
            )
        ).rowcount
        if not marked:
            raise LookupError(f"document {doc.id} was deleted while it was processed")
        # A retried run replaces what an interrupted one may have written.
        conn.execute(chunks_table.delete().where(chunks_table.c.document_id == doc.id))
        if chunks:
            conn.execute(
                chunks_table.insert(),
                [
                    {
                        "document_id": doc.id,
                        "idx": c.index,
                        "tenant": doc.tenant,
                        "text": c.text,
                        "tokens": c.tokens,
                        "char_start": c.char_start,
                        "char_end": c.char_end,
                        "pages": c.pages,
                        "language": lang,
                    }
                    for c, lang in zip(chunks, languages, strict=True)
                ],
            )
    ctx.progress(100, "Complete")
    return {
        **summary,
        "metadata_file": str(metadata_file),
        "index_file": str(index_file),
        "tokens": tokens,
        "seconds": round(finished - started, 3),
    }


def _write_json(path: Path, data: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(data, f, ensure_ascii=False)
    os.replace(tmp, path)  # readers never see half a file


def delete_document_files(stored_path: str) -> None:
    """The document's own folder (upload, metadata and index files), whatever is in it."""
    folder = Path(stored_path).parent
    if folder.is_dir():
        shutil.rmtree(folder, ignore_errors=True)


@task("documents.cleanup", queue="maintenance", params=CleanupDocuments, visibility="internal")
def cleanup_documents(ctx: TaskContext, retention_days: float | None = None) -> dict[str, int]:
    """Delete documents older than the retention period with their chunks and files; settle stuck ones.

    Also marks ``failed`` any ``processing`` document whose task can no longer
    finish it, and removes upload folders that no document row owns (an upload
    interrupted between the file and the row).
    """
    res = ctx.resources
    config: DocumentsSettings = res.workload_settings("documents")
    days = retention_days if retention_days is not None else config.retention_days
    cutoff = time.time() - days * 86400
    engine = res.engine
    d = documents_table.c
    with engine.connect() as conn:
        old = conn.execute(sa.select(d.id, d.stored_path).where(d.created_at < cutoff)).all()
    for i, (document_id, stored_path) in enumerate(old, 1):
        db.delete(engine, document_id)
        delete_document_files(stored_path)
        ctx.progress(80 * i / len(old), f"Deleted {i} of {len(old)}")
    stuck = db.processing(engine)
    tasks = {t.id: t for t in res.store.get_many([r.task_id for r in stuck if r.task_id])}
    settled = 0
    for row in stuck:
        message = db.failure_of(row, tasks.get(row.task_id))
        if row.task_id is None and time.time() - row.created_at > ORPHAN_AGE:
            message = "processing failed: the upload was never queued (the server stopped while accepting it)"
        if message is not None and db.mark_failed(engine, row.id, message, only_if_processing=True):
            settled += 1
    ctx.progress(90, "Removing interrupted uploads")
    orphans = _remove_orphans(engine, res.settings.data_dir / "documents")
    return {"deleted": len(old), "settled": settled, "orphans_removed": orphans}


def _remove_orphans(engine: sa.Engine, root: Path) -> int:
    if not root.is_dir():
        return 0
    folders = [f for tenant in root.iterdir() if tenant.is_dir() for f in tenant.iterdir() if f.is_dir()]
    t = time.time()
    removed = 0
    for start in range(0, len(folders), 500):
        batch = folders[start : start + 500]
        with engine.connect() as conn:
            known = set(
                conn.execute(sa.select(documents_table.c.id).where(documents_table.c.id.in_([f.name for f in batch])))
                .scalars()
                .all()
            )
        for folder in batch:
            with contextlib.suppress(OSError):
                if folder.name not in known and t - folder.stat().st_mtime > ORPHAN_AGE:
                    shutil.rmtree(folder)
                    removed += 1
    if removed:
        log.info("removed %d upload folders that no document owns", removed)
    return removed
