"""/api/documents: seed 001's routes — upload, status, details, list, chunks, delete — plus search."""

from __future__ import annotations

import time
from typing import Annotated, Any

import anyio.to_thread
import sqlalchemy as sa
from fastapi import Query, Request, Response
from fastapi.responses import JSONResponse

from conveyor import resources
from conveyor.api.deps import App, Tenant
from conveyor.api.routing import SlashRouter
from conveyor.api.schemas import iso
from conveyor.errors import ConveyorError, PayloadTooLarge, TaskNotFound, UnsupportedMediaType
from conveyor.records import Status, TaskRecord, new_task_id
from conveyor.workloads.documents import storage
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


class DocumentNotFound(TaskNotFound):
    code = "document_not_found"

    def __init__(self, document_id: str) -> None:
        ConveyorError.__init__(self, f"No document with id {document_id!r}", details={"document_id": document_id})


def _engine() -> sa.Engine:
    return resources.current().engine


def _load(document_id: str, tenant: str) -> sa.Row[Any]:
    with _engine().connect() as conn:
        row = conn.execute(
            documents_table.select().where(documents_table.c.id == document_id, documents_table.c.tenant == tenant)
        ).first()
    if row is None:
        raise DocumentNotFound(document_id)
    return row


def _usage(tenant: str) -> int:
    d = documents_table.c
    with _engine().connect() as conn:
        used = conn.execute(sa.select(sa.func.coalesce(sa.func.sum(d.size_bytes), 0)).where(d.tenant == tenant))
        return int(used.scalar_one())


@router.post("/upload", status_code=202, summary="Upload a document and queue it for processing")
async def upload(request: Request, app: App, tenant: Tenant) -> JSONResponse:
    """Multipart field ``file``. Answers at once with the document id; poll ``/status`` or follow the task."""
    settings = app.settings
    max_bytes = int(settings.documents_max_upload_mb * 1024 * 1024)
    quota = int(settings.documents_quota_mb * 1024 * 1024)
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > max_bytes + MULTIPART_SLACK:
        raise PayloadTooLarge(
            f"the upload is larger than the upload limit of {settings.documents_max_upload_mb:g} MiB",
            details={"max_bytes": max_bytes, "limit": "upload limit"},
        )
    used = await anyio.to_thread.run_sync(_usage, tenant)
    if used >= quota:
        raise PayloadTooLarge(
            f"tenant {tenant!r} has used its quota of {settings.documents_quota_mb:g} MiB",
            details={"quota_bytes": quota, "used_bytes": used, "limit": "tenant quota"},
        )
    document_id = new_task_id()
    folder = storage.tenant_dir(settings.data_dir, tenant) / document_id
    incoming = folder / f"{document_id}.upload"
    saved = await storage.receive_upload(
        request.headers.get("content-type", ""),
        request.stream(),
        incoming,
        max_bytes=max_bytes,
        quota_left=quota - used,
    )
    try:
        return await anyio.to_thread.run_sync(_accept, app, tenant, document_id, saved)
    except BaseException:
        await anyio.to_thread.run_sync(delete_document_files, str(incoming))
        raise


def _accept(app: Any, tenant: str, document_id: str, saved: storage.SavedUpload) -> JSONResponse:
    """Check the type by content, store the record, submit the task."""
    from conveyor.workloads.documents.extract import DocumentError, sniff_file

    if saved.size == 0:
        raise UnsupportedMediaType("the file is empty", details={"filename": saved.filename})
    try:
        kind = sniff_file(saved.path)
    except DocumentError as e:
        raise UnsupportedMediaType(
            f"unsupported document type: {e}; send a PDF, DOCX, HTML, Markdown or text file",
            details={"filename": saved.filename},
        ) from None
    final = saved.path.with_suffix(storage.extension_for(kind))
    saved.path.rename(final)
    t = time.time()
    with _engine().begin() as conn:
        conn.execute(
            documents_table.insert().values(
                id=document_id,
                tenant=tenant,
                filename=saved.filename,
                stored_path=str(final),
                kind=kind,
                size_bytes=saved.size,
                sha256=saved.sha256,
                status="processing",
                processing_progress=0.0,
                created_at=t,
                updated_at=t,
                doc_metadata={},
            )
        )
    try:
        record = app.manager.submit_task("documents.process", {"document_id": document_id}, tenant=tenant)
    except ConveyorError:
        with _engine().begin() as conn:
            conn.execute(documents_table.delete().where(documents_table.c.id == document_id))
        raise
    with _engine().begin() as conn:
        conn.execute(
            documents_table.update()
            .where(documents_table.c.id == document_id)
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


def _task(app: Any, row: sa.Row[Any]) -> TaskRecord | None:
    return app.store.get(row.task_id) if row.task_id else None


def _status(row: sa.Row[Any], task: TaskRecord | None) -> dict[str, Any]:
    """Seed 001's status: the document's own state, reconciled with its task's."""
    status = row.status
    message = row.error_message or ""
    progress = float(row.processing_progress or 0)
    task_state = "PENDING"
    if task is not None:
        task_state = _TASK_STATE[task.state]
        if status == "processing":
            progress = task.progress
            message = task.message
            if task.state in (Status.FAILURE, Status.CANCELLED):
                # The worker died or the task was cancelled before it could mark the document.
                status = "failed"
                message = (task.error or {}).get("message") or task.message or "processing failed"
    if status == "ready":
        progress, message = 100.0, message or "Complete"
    # The document row is written by the task just before the task's own
    # outcome is flushed: a finished document speaks for its task meanwhile.
    if status in ("ready", "failed"):
        task_state = "SUCCESS" if status == "ready" else "FAILURE"
    return {
        "document_id": row.id,
        "status": status,
        "progress": round(progress, 2),
        "task_state": task_state,
        "message": message,
        "total_chunks": row.total_chunks or 0,
        "ready": status == "ready",
    }


@router.get("/{document_id}/status", summary="Light status for polling (seed 001)")
async def document_status(document_id: str, app: App, tenant: Tenant) -> dict[str, Any]:
    def read() -> dict[str, Any]:
        row = _load(document_id, tenant)
        return _status(row, _task(app, row))

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
        "task_info": {"progress": task.progress, "message": task.message, "attempts": task.attempts} if task else None,
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
    offset: Annotated[int, Query(ge=0)] = 0,
    status: Annotated[str | None, Query(pattern="^(processing|ready|failed)$")] = None,
) -> dict[str, Any]:
    def read() -> dict[str, Any]:
        d = documents_table.c
        cond = [d.tenant == tenant] + ([d.status == status] if status else [])
        with _engine().connect() as conn:
            total = conn.execute(sa.select(sa.func.count()).select_from(documents_table).where(*cond)).scalar_one()
            rows = conn.execute(
                documents_table.select().where(*cond).order_by(d.created_at.desc()).limit(limit).offset(offset)
            ).all()
        tasks = {t.id: t for t in app.store.get_many([r.task_id for r in rows if r.task_id])}
        return {
            "data": [_public(r, tasks.get(r.task_id)) for r in rows],
            "count": total,
            "limit": limit,
            "offset": offset,
        }

    return await anyio.to_thread.run_sync(read)


def _search(tenant: str, q: str, limit: int, document_id: str | None) -> dict[str, Any]:
    from conveyor.workloads.documents.search import rank

    c = chunks_table.c
    cond = [c.tenant == tenant] + ([c.document_id == document_id] if document_id else [])
    with _engine().connect() as conn:
        rows = conn.execute(sa.select(c.document_id, c.idx, c.text, c.pages).where(*cond)).all()
    hits = rank(q, [r.text for r in rows], limit=limit)
    return {
        "query": q,
        "data": [
            {
                "document_id": rows[i].document_id,
                "index": rows[i].idx,
                "score": round(score, 4),
                "pages": rows[i].pages,
                "text": rows[i].text,
            }
            for i, score in hits
        ],
        "count": len(hits),
    }


@router.get("/search", summary="Rank the tenant's chunks for a query (BM25)")
async def search_all(
    tenant: Tenant,
    q: Annotated[str, Query(min_length=1, max_length=500)],
    limit: Annotated[int, Query(ge=1, le=100)] = 10,
) -> dict[str, Any]:
    return await anyio.to_thread.run_sync(_search, tenant, q, limit, None)


@router.get("/{document_id}", summary="A document's details")
async def get_document(document_id: str, app: App, tenant: Tenant) -> dict[str, Any]:
    def read() -> dict[str, Any]:
        row = _load(document_id, tenant)
        return _public(row, _task(app, row))

    return await anyio.to_thread.run_sync(read)


@router.get("/{document_id}/chunks", summary="A document's chunks, in order")
async def get_chunks(
    document_id: str,
    tenant: Tenant,
    limit: Annotated[int, Query(ge=1, le=200)] = 20,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> dict[str, Any]:
    def read() -> dict[str, Any]:
        _load(document_id, tenant)
        c = chunks_table.c
        with _engine().connect() as conn:
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


@router.get("/{document_id}/search", summary="Rank one document's chunks for a query (BM25)")
async def search_one(
    document_id: str,
    tenant: Tenant,
    q: Annotated[str, Query(min_length=1, max_length=500)],
    limit: Annotated[int, Query(ge=1, le=100)] = 10,
) -> dict[str, Any]:
    def run() -> dict[str, Any]:
        _load(document_id, tenant)
        return _search(tenant, q, limit, document_id)

    return await anyio.to_thread.run_sync(run)


@router.delete("/{document_id}", status_code=204, summary="Delete a document, its chunks and files")
async def delete_document(document_id: str, app: App, tenant: Tenant) -> Response:
    def run() -> None:
        row = _load(document_id, tenant)
        task = _task(app, row)
        if task is not None and not task.finished:
            app.manager.cancel(task.id, tenant=tenant)
        with _engine().begin() as conn:
            conn.execute(chunks_table.delete().where(chunks_table.c.document_id == document_id))
            conn.execute(documents_table.delete().where(documents_table.c.id == document_id))
        delete_document_files(row.stored_path)

    await anyio.to_thread.run_sync(run)
    return Response(status_code=204)
