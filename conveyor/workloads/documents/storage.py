"""Where documents are stored, and how an upload of one is received.

The client's file name is never used as a path. Each upload is written to
``<data_dir>/documents/<tenant folder>/<document id>/<document id><ext>``;
the name the client sent is cleaned and kept only as metadata. The
streaming itself is the core's (``conveyor.uploads``); what is the
documents' own is the tenant's quota as a second limit.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import AsyncIterator
from pathlib import Path

from conveyor.uploads import Upload, receive_upload

__all__ = ["extension_for", "receive_document", "tenant_dir"]

_EXT = {"pdf": ".pdf", "docx": ".docx", "html": ".html", "markdown": ".md", "text": ".txt"}


def tenant_dir(data_dir: Path, tenant: str) -> Path:
    """The tenant's folder: a readable slug plus a hash, so no tenant name can escape or collide."""
    slug = re.sub(r"[^A-Za-z0-9_-]+", "-", tenant)[:40].strip("-") or "tenant"
    digest = hashlib.sha256(tenant.encode()).hexdigest()[:12]
    return data_dir / "documents" / f"{slug}-{digest}"


def extension_for(kind: str) -> str:
    return _EXT.get(kind, ".bin")


async def receive_document(
    content_type: str, body: AsyncIterator[bytes], dest: Path, *, max_bytes: int, quota_left: int
) -> Upload:
    """The form's ``file`` streamed into ``dest``; 413 naming whichever limit is smaller, the upload
    limit or what is left of the tenant's quota. Other form fields are read past, not kept."""
    limit, what = (max_bytes, "upload limit") if max_bytes <= quota_left else (quota_left, "tenant's remaining quota")
    return await receive_upload(
        content_type,
        body,
        dest,
        max_bytes=limit,
        keep_fields=(),
        limit_name=what,
        limit_details={"limit": what},
        not_multipart="upload the document as multipart/form-data with a 'file' field",
    )
