"""``documents.process``: a stored upload becomes token chunks with pages, language and metadata files.

Progress follows seed 001's steps: 10 % reading, 20–80 % encoding (one step
per group of chunks), 80 % saving, 100 % complete.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from pydantic import BaseModel, ConfigDict, Field

from conveyor import resources
from conveyor.context import TaskContext
from conveyor.registry import task
from conveyor.workloads.documents.tables import chunks_table, documents_table

__all__ = ["ENCODER_VERSION", "ProcessDocument", "cleanup_documents", "mark_failed", "process_document"]

ENCODER_VERSION = "conveyor-tiktoken-cl100k/1"


class ProcessDocument(BaseModel):
    model_config = ConfigDict(extra="forbid")
    document_id: str = Field(min_length=1, max_length=36)
    chunk_size: int = Field(default=1200, ge=16, le=8192, description="tokens per chunk")
    overlap: int = Field(default=200, ge=0, le=4096, description="tokens shared by consecutive chunks")


class CleanupDocuments(BaseModel):
    model_config = ConfigDict(extra="forbid")
    retention_days: float | None = Field(default=None, gt=0, description="default: the settings' retention")


def _update(engine: sa.Engine, document_id: str, **values: Any) -> None:
    values["updated_at"] = time.time()
    with engine.begin() as conn:
        conn.execute(documents_table.update().where(documents_table.c.id == document_id).values(**values))


def mark_failed(engine: sa.Engine, document_id: str, message: str) -> None:
    _update(engine, document_id, status="failed", error_message=message, processing_completed_at=time.time())


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
    from conveyor.workloads.documents.chunking import chunk_text, count_tokens
    from conveyor.workloads.documents.extract import DocumentError, extract
    from conveyor.workloads.documents.language import detect_language, detect_many

    if overlap >= chunk_size:
        raise ValueError("overlap must be smaller than chunk_size")
    engine = resources.current().engine
    with engine.connect() as conn:
        doc = conn.execute(documents_table.select().where(documents_table.c.id == document_id)).first()
    if doc is None:
        raise LookupError(f"document {document_id} does not exist (deleted before it was processed?)")
    path = Path(doc.stored_path)
    started = time.time()
    _update(engine, document_id, status="processing", processing_started_at=started, error_message=None)
    ctx.progress(10, "Reading file")
    try:
        extracted = extract(path)
        ctx.progress(20, "Running encoder")

        def encoded(fraction: float) -> None:
            ctx.raise_if_cancelled()
            ctx.progress(20 + 60 * fraction, "Running encoder")

        chunks = chunk_text(extracted.text, extracted.pages, chunk_size=chunk_size, overlap=overlap, progress=encoded)
    except DocumentError as e:
        mark_failed(engine, document_id, str(e))
        raise
    ctx.progress(80, "Saving metadata")
    language = detect_language(extracted.text)
    languages = detect_many([c.text for c in chunks])
    tokens = count_tokens(extracted.text)
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
    _write_json(
        metadata_file,
        {
            "document_id": document_id,
            "filename": doc.filename,
            "kind": extracted.kind,
            "encoding": extracted.encoding,
            "language": language,
            "total_chunks": len(chunks),
            "total_tokens": tokens,
            "pages": len(extracted.pages),
            "chunk_size": chunk_size,
            "overlap": overlap,
            "encoder_version": ENCODER_VERSION,
            "sections": sections,
        },
    )
    _write_json(
        index_file,
        {
            "document_id": document_id,
            "chunks": [{"index": c.index, "text": c.text, "pages": c.pages} for c in chunks],
        },
    )
    if not metadata_file.exists() or not index_file.exists():
        mark_failed(engine, document_id, "output not written: the metadata files are missing after saving")
        raise OSError("output not written")
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
        "kind": extracted.kind,
        "encoding": extracted.encoding,
    }
    with engine.begin() as conn:
        # A retried run replaces what an interrupted one may have written.
        conn.execute(chunks_table.delete().where(chunks_table.c.document_id == document_id))
        if chunks:
            conn.execute(
                chunks_table.insert(),
                [
                    {
                        "document_id": document_id,
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
        conn.execute(
            documents_table.update()
            .where(documents_table.c.id == document_id)
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
        )
    ctx.progress(100, "Complete")
    return {
        "document_id": document_id,
        "total_chunks": len(chunks),
        "tokens": tokens,
        "language": language,
        "pages": len(extracted.pages),
        "metadata_file": str(metadata_file),
        "index_file": str(index_file),
        "seconds": round(finished - started, 3),
    }


def _write_json(path: Path, data: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(data, f, ensure_ascii=False)
    os.replace(tmp, path)  # readers never see half a file


def delete_document_files(stored_path: str) -> None:
    folder = Path(stored_path).parent
    if folder.is_dir():
        for child in folder.iterdir():
            child.unlink(missing_ok=True)
        folder.rmdir()


@task("documents.cleanup", queue="maintenance", params=CleanupDocuments)
def cleanup_documents(ctx: TaskContext, retention_days: float | None = None) -> dict[str, int]:
    """Delete documents older than the retention period, with their chunks and files."""
    res = resources.current()
    days = retention_days or res.settings.documents_retention_days
    cutoff = time.time() - days * 86400
    engine = res.engine
    d = documents_table.c
    with engine.connect() as conn:
        old = conn.execute(sa.select(d.id, d.stored_path).where(d.created_at < cutoff)).all()
    for i, (document_id, stored_path) in enumerate(old, 1):
        with engine.begin() as conn:
            conn.execute(chunks_table.delete().where(chunks_table.c.document_id == document_id))
            conn.execute(documents_table.delete().where(d.id == document_id))
        delete_document_files(stored_path)
        ctx.progress(100 * i / len(old), f"Deleted {i} of {len(old)}")
    return {"deleted": len(old)}
