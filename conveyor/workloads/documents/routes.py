"""/api/documents: seed 001's routes — upload, status, details, list, chunks, delete — plus search.

Every route reaches the database through the engine of the app that serves
the request (``request.app.state.conveyor``), never a process-wide handle, and
every route answers another tenant's document with 404.
"""

from __future__ import annotations

from typing import Annotated, Any

import anyio.to_thread
import sqlalchemy as sa
from fastapi import Query, Request, Response
from fastapi.responses import JSONResponse

from conveyor.api.deps import App, Tenant
from conveyor.api.routing import SlashRouter
from conveyor.api.schemas import iso
from conveyor.app import Conveyor
from conveyor.errors import InvalidParams, PayloadTooLarge, UnsupportedMediaType
from conveyor.records import Status, TaskRecord, new_task_id
from conveyor.uploads import Upload
from conveyor.workloads.documents import db, storage
from conveyor.workloads.documents.config import DocumentsSettings
from conveyor.workloads.documents.errors import DocumentError, DocumentNotFound, DocumentsUnavailable
from conveyor.workloads.documents.tables import chunks_table, documents_table
from conveyor.workloads.documents.tasks import delete_document_files

__all__ = ["router"]

router = SlashRouter(prefix="/api/documents", tags=["documents"])

#: multipart framing around the file: headers and boundaries, allowed on top of the limit
MULTIPART_SLACK = 64 * 1024
_TASK_STATE = {
    Status.PENDING: "PENDING",
    Status.RETRY: "PENDING",
    Status.PROCESSING: "PROCESSING",
    Status.SUCCESS: "SUCCESS",
    Status.FAILURE: "FAILURE",
    Status.CANCELLED: "FAILURE",
}
_UPLOAD_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "properties": {"file": {"type": "string", "format": "binary"}},
                }
            }
        },
    }
}


def _engine(app: Conveyor) -> sa.Engine:
    engine = app.store.engine
    if engine is None:
        raise DocumentsUnavailable(
            f"the documents workload keeps its tables in SQL; this server's store is {app.store.kind} "
            "(set CONVEYOR_DATABASE_URL to a SQLite or PostgreSQL URL)"
        )
    return engine


def _load(app: Conveyor, document_id: str, tenant: str) -> tuple[sa.Row[Any], TaskRecord | None]:
    """The tenant's document (404 otherwise) and its task, reconciled with each other."""
    engine = _engine(app)
    row = db.find(engine, document_id, tenant)
    if row is None:
        raise DocumentNotFound(document_id)
    task = app.store.get(row.task_id) if row.task_id else None
    return db.reconcile(engine, row, task), task


@router.post(
    "/upload",
    status_code=202,
    summary="Upload a document and queue it for processing",
    openapi_extra=_UPLOAD_BODY,
)
async def upload(
    request: Request,
    app: App,
    tenant: Tenant,
    chunk_size: Annotated[int, Query(ge=100, le=8192, description="tokens per chunk")] = 1200,
    overlap: Annotated[
        int, Query(ge=0, le=4096, description="tokens shared by neighbours (at most half a chunk)")
    ] = 200,
) -> JSONResponse:
    """Multipart field ``file``. Answers at once with the document id; poll ``/status`` or follow the task.

    The body streams to disk and is refused with 413 as soon as it passes the
    upload limit or the tenant's quota; the type is read from the content (415).
    """
    # Bounded so that a document makes at most ~2 chunks per chunk_size tokens:
    # chunk_size=16&overlap=15 once made a 1 MiB text into half a million chunks.
    if overlap * 2 > chunk_size:
        raise InvalidParams.for_field("overlap", "must be at most half of chunk_size")
    settings = app.settings
    config: DocumentsSettings = app.workload_settings("documents")
    engine = _engine(app)
    max_bytes = int(config.max_upload_mb * 1024 * 1024)
    quota = int(config.quota_mb * 1024 * 1024)
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > max_bytes + MULTIPART_SLACK:
        raise PayloadTooLarge(
            f"the upload is larger than the upload limit of {config.max_upload_mb:g} MiB",
            details={"max_bytes": max_bytes, "limit": "upload limit"},
        )
    used = await anyio.to_thread.run_sync(db.usage, engine, tenant)
    if used >= quota:
        raise PayloadTooLarge(
            f"tenant {tenant!r} has used its quota of {config.quota_mb:g} MiB",
            details={"quota_bytes": quota, "used_bytes": used, "limit": "tenant quota"},
        )
    document_id = new_task_id()
    folder = storage.tenant_dir(settings.data_dir, tenant) / document_id
    incoming = folder / f"{document_id}.upload"
    saved = await storage.receive_document(
        request.headers.get("content-type", ""),
        request.stream(),
        incoming,
        max_bytes=max_bytes,
        quota_left=quota - used,
    )
    params = {"document_id": document_id, "chunk_size": chunk_size, "overlap": overlap}
    try:
        return await anyio.to_thread.run_sync(_accept, app, engine, tenant, saved, params)
    except BaseException:
        await anyio.to_thread.run_sync(delete_document_files, str(incoming))
        raise


def _accept(app: Conveyor, engine: sa.Engine, tenant: str, saved: Upload, params: dict[str, Any]) -> JSONResponse:
    """Check the type by content and the quota again, store the record, submit the task."""
    from conveyor.workloads.documents.extract import sniff_file

    document_id = params["document_id"]
    path = saved.path
    assert path is not None  # receive_document requires the file
    if saved.size == 0:
        raise UnsupportedMediaType("the file is empty", details={"filename": saved.filename})
    try:
        kind = sniff_file(path, saved.filename)
    except DocumentError as e:
        raise UnsupportedMediaType(
            f"unsupported document type: {e}; send a PDF, DOCX, HTML, Markdown or text file",
            details={"filename": saved.filename},
        ) from None
    # Uploads running side by side each passed the first check; the sum must fit too.
    config: DocumentsSettings = app.workload_settings("documents")
    quota = int(config.quota_mb * 1024 * 1024)
    used = db.usage(engine, tenant)
    if used + saved.size > quota:
        raise PayloadTooLarge(
            f"tenant {tenant!r} would pass its quota of {config.quota_mb:g} MiB",
            details={"quota_bytes": quota, "used_bytes": used, "limit": "tenant quota"},
        )
    final = path.with_suffix(storage.extension_for(kind))
    path.rename(final)
    db.insert(
        engine,
        id=document_id,
        tenant=tenant,
        filename=saved.filename,
        stored_path=str(final),
        kind=kind,
        size_bytes=saved.size,
        sha256=saved.sha256,
        status="processing",
        processing_progress=0.0,
        doc_metadata={},
    )
    try:
        record = app.manager.submit_task("documents.process", params, tenant=tenant)
    except BaseException:
        db.delete(engine, document_id)
        raise
    with engine.begin() as conn:
        # Unless the task has already started and named itself (it can be that quick).
        conn.execute(
            documents_table.update()
            .where(documents_table.c.id == document_id, documents_table.c.task_id.is_(None))
            .values(task_id=record.id, doc_metadata={"task_id": record.id})
        )
    return JSONResponse(
        {
            "success": True,
            "document_id": document_id,
            "status": "processing",
            "message": "Document uploaded and queued for processing",
            "task_id": record.id,
            "filename": saved.filename,
            "size_bytes": saved.size,
            "kind": kind,
        },
        status_code=202,
    )


def _status(row: sa.Row[Any], task: TaskRecord | None) -> dict[str, Any]:
    """Seed 001's status: the document's own state, with its task's progress while it runs."""
    status = row.status
    if status == "processing":
        task_state = _TASK_STATE[task.state] if task is not None else "PENDING"
        progress = task.progress if task is not None else 0.0
        message = task.message if task is not None else "Queued"
    elif status == "ready":
        # The row is written just before the task's own outcome is flushed: it speaks for the task meanwhile.
        task_state, progress, message = "SUCCESS", 100.0, "Complete"
    else:
        task_state = "FAILURE"
        progress = float(task.progress if task is not None else row.processing_progress or 0)
        message = row.error_message or "processing failed"
    return {
        "document_id": row.id,
        "status": status,
        "progress": round(progress, 2),
        "task_state": task_state,
        "message": message,
        "total_chunks": row.total_chunks or 0,
        "ready": status == "ready",
    }


@router.get("/{document_id}/status", summary="Light status for polling")
async def document_status(document_id: str, app: App, tenant: Tenant) -> dict[str, Any]:
    def read() -> dict[str, Any]:
        return _status(*_load(app, document_id, tenant))

    return await anyio.to_thread.run_sync(read)


def _public(row: sa.Row[Any], task: TaskRecord | None) -> dict[str, Any]:
    meta = row.doc_metadata or {}
    return {
        **_status(row, task),
        "filename": row.filename,
        "kind": row.kind,
        "size_bytes": row.size_bytes,
        "sha256": row.sha256,
        "tokens": row.total_tokens,
        "language": row.language,
        "error_message": row.error_message,
        "task_id": row.task_id,
        "task_status": task.state.value if task else None,
        "task_info": (
            {"progress": task.progress, "message": task.message, "attempts": task.attempts, "error": task.error}
            if task
            else None
        ),
        "created_at": iso(row.created_at),
        "processing_started_at": iso(row.processing_started_at),
        "processing_completed_at": iso(row.processing_completed_at),
        "metadata_file": meta.get("metadata_file"),
        "index_file": meta.get("index_file"),
        "doc_metadata": meta,
    }


@router.get("", summary="The tenant's documents, newest first")
async def list_documents(
    app: App,
    tenant: Tenant,
    limit: Annotated[int, Query(ge=1, le=200)] = 20,
    offset: Annotated[int, Query(ge=0, le=2**62)] = 0,  # past it a database integer overflows (a 500)
    status: Annotated[str | None, Query(pattern="^(processing|ready|failed)$")] = None,
) -> dict[str, Any]:
    def read() -> dict[str, Any]:
        engine = _engine(app)
        d = documents_table.c
        cond = [d.tenant == tenant] + ([d.status == status] if status else [])
        with engine.connect() as conn:
            total = conn.execute(sa.select(sa.func.count()).select_from(documents_table).where(*cond)).scalar_one()
            rows = conn.execute(
                documents_table.select().where(*cond).order_by(d.created_at.desc(), d.id).limit(limit).offset(offset)
            ).all()
        tasks = {t.id: t for t in app.store.get_many([r.task_id for r in rows if r.task_id])}
        data = []
        for r in rows:
            task = tasks.get(r.task_id)
            data.append(_public(db.reconcile(engine, r, task), task))
        return {"data": data, "count": total, "limit": limit, "offset": offset}

    return await anyio.to_thread.run_sync(read)


def _search(engine: sa.Engine, tenant: str, q: str, limit: int, document_id: str | None) -> dict[str, Any]:
    # Joined with ready documents: a document being deleted or re-processed has no results.
    rows = db.search(engine, tenant, q, limit, document_id)
    return {
        "query": q,
        "data": [
            {
                "document_id": r.document_id,
                "filename": r.filename,
                "index": r.idx,
                "score": round(float(r.score), 4),
                "pages": r.pages,
                "text": r.text,
            }
            for r in rows
        ],
        "count": len(rows),
    }


@router.get("/search", summary="Rank the tenant's chunks for a query (full-text index)")
async def search_all(
    app: App,
    tenant: Tenant,
    q: Annotated[str, Query(min_length=1, max_length=500)],
    limit: Annotated[int, Query(ge=1, le=100)] = 10,
) -> dict[str, Any]:
    return await anyio.to_thread.run_sync(_search, _engine(app), tenant, q, limit, None)


@router.get("/{document_id}", summary="A document's details")
async def get_document(document_id: str, app: App, tenant: Tenant) -> dict[str, Any]:
    def read() -> dict[str, Any]:
        return _public(*_load(app, document_id, tenant))

    return await anyio.to_thread.run_sync(read)


@router.get("/{document_id}/chunks", summary="A document's chunks, in order")
async def get_chunks(
    document_id: str,
    app: App,
    tenant: Tenant,
    limit: Annotated[int, Query(ge=1, le=200)] = 20,
    offset: Annotated[int, Query(ge=0, le=2**62)] = 0,  # past it a database integer overflows (a 500)
) -> dict[str, Any]:
    def read() -> dict[str, Any]:
        engine = _engine(app)
        if db.find(engine, document_id, tenant) is None:
            raise DocumentNotFound(document_id)
        c = chunks_table.c
        with engine.connect() as conn:
            total = conn.execute(
                sa.select(sa.func.count()).select_from(chunks_table).where(c.document_id == document_id)
            ).scalar_one()
            rows = conn.execute(
                chunks_table.select().where(c.document_id == document_id).order_by(c.idx).limit(limit).offset(offset)
            ).all()
        return {
            "document_id": document_id,
            "data": [
                {
                    "index": r.idx,
                    "text": r.text,
                    "tokens": r.tokens,
                    "pages": r.pages,
                    "language": r.language,
                    "char_start": r.char_start,
                    "char_end": r.char_end,
                }
                for r in rows
            ],
            "count": total,
            "limit": limit,
            "offset": offset,
        }

    return await anyio.to_thread.run_sync(read)


@router.get("/{document_id}/search", summary="Rank one document's chunks for a query (full-text index)")
async def search_one(
    document_id: str,
    app: App,
    tenant: Tenant,
    q: Annotated[str, Query(min_length=1, max_length=500)],
    limit: Annotated[int, Query(ge=1, le=100)] = 10,
) -> dict[str, Any]:
    def run() -> dict[str, Any]:
        engine = _engine(app)
        if db.find(engine, document_id, tenant) is None:
            raise DocumentNotFound(document_id)
        return _search(engine, tenant, q, limit, document_id)

    return await anyio.to_thread.run_sync(run)


@router.delete("/{document_id}", status_code=204, summary="Delete a document, its chunks and files")
async def delete_document(document_id: str, app: App, tenant: Tenant) -> Response:
    def run() -> None:
        engine = _engine(app)
        row = db.find(engine, document_id, tenant)
        if row is None:
            raise DocumentNotFound(document_id)
        app.manager.cancel_if_unfinished(row.task_id, tenant=tenant)
        db.delete(engine, document_id)
        delete_document_files(row.stored_path)

    await anyio.to_thread.run_sync(run)
    return Response(status_code=204)
