"""Uploads: streamed to disk under the tenant's folder, with limits checked as bytes arrive.

The client's file name is never used as a path. Each upload is written to
``<data_dir>/documents/<tenant folder>/<document id>/<document id><ext>``;
the name the client sent is cleaned and kept only as metadata.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
import threading
import unicodedata
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.exceptions import HTTPException

from conveyor.errors import PayloadTooLarge, RequestError, UnsupportedMediaType

__all__ = ["SavedUpload", "clean_filename", "receive_upload", "tenant_dir"]

_EXT = {"pdf": ".pdf", "docx": ".docx", "html": ".html", "markdown": ".md", "text": ".txt"}


def clean_filename(name: str | None) -> str:
    """A display name: no directories, no control characters, at most 200 characters."""
    if not name:
        return "upload"
    name = unicodedata.normalize("NFC", name)
    name = re.split(r"[\\/]", name)[-1]  # drop any path the client sent, either separator
    name = "".join(ch for ch in name if unicodedata.category(ch)[0] != "C")  # NUL and other controls
    name = name.strip().lstrip(".") or "upload"
    return name[:200]


def tenant_dir(data_dir: Path, tenant: str) -> Path:
    """The tenant's folder: a readable slug plus a hash, so no tenant name can escape or collide."""
    slug = re.sub(r"[^A-Za-z0-9_-]+", "-", tenant)[:40].strip("-") or "tenant"
    digest = hashlib.sha256(tenant.encode()).hexdigest()[:12]
    return data_dir / "documents" / f"{slug}-{digest}"


def extension_for(kind: str) -> str:
    return _EXT.get(kind, ".bin")


@dataclass(frozen=True)
class SavedUpload:
    path: Path
    filename: str
    size: int
    sha256: str


def _limit_error(limit: int, what: str) -> PayloadTooLarge:
    return PayloadTooLarge(
        f"the upload is larger than the {what} of {limit / (1024 * 1024):g} MiB",
        details={"max_bytes": limit, "limit": what},
    )


async def receive_upload(
    content_type: str,
    body: AsyncIterator[bytes],
    dest: Path,
    *,
    max_bytes: int,
    quota_left: int,
    field: str = "file",
) -> SavedUpload:
    """Stream the multipart field ``field`` into ``dest``; 413 as soon as a limit is passed.

    Memory use is one network chunk: the parser hands each piece of the file
    to the open file as it arrives. On any error the partial file is removed.
    """
    ctype, options = parse_options_header(content_type)
    if ctype != b"multipart/form-data":
        raise UnsupportedMediaType("upload the document as multipart/form-data with a 'file' field")
    boundary = options.get(b"boundary")
    if not boundary:
        raise RequestError("the multipart body has no boundary")
    limit = min(max_bytes, quota_left)
    what = "upload limit" if max_bytes <= quota_left else "tenant's remaining quota"

    state: dict[str, object] = {"headers": {}, "field": None, "name": None}
    header_field = bytearray()
    header_value = bytearray()
    sha = hashlib.sha256()
    size = 0
    out = None
    found = False
    dest.parent.mkdir(parents=True, exist_ok=True)

    def on_part_begin() -> None:
        state["headers"] = {}

    def on_header_field(data: bytes, start: int, end: int) -> None:
        header_field.extend(data[start:end])

    def on_header_value(data: bytes, start: int, end: int) -> None:
        header_value.extend(data[start:end])

    def on_header_end() -> None:
        headers = state["headers"]
        assert isinstance(headers, dict)
        headers[bytes(header_field).lower()] = bytes(header_value)
        header_field.clear()
        header_value.clear()

    def on_headers_finished() -> None:
        nonlocal out, found
        headers = state["headers"]
        assert isinstance(headers, dict)
        _, disposition = parse_options_header(headers.get(b"content-disposition", b""))
        name = disposition.get(b"name", b"").decode("utf-8", "replace")
        if name == field and not found:
            found = True
            raw = disposition.get(b"filename")
            state["name"] = raw.decode("utf-8", "replace") if raw is not None else None
            out = open(dest, "wb")  # noqa: SIM115 - closed in on_part_end or the finally below
            state["field"] = field
        else:
            state["field"] = None

    def on_part_data(data: bytes, start: int, end: int) -> None:
        nonlocal size
        if state["field"] != field or out is None:
            return
        size += end - start
        if size > limit:
            raise _limit_error(limit, what)
        chunk = data[start:end]
        sha.update(chunk)
        out.write(chunk)

    def on_part_end() -> None:
        if state["field"] == field and out is not None:
            out.close()
        state["field"] = None

    ended = threading.Event()
    parser = MultipartParser(
        boundary,
        {
            "on_part_begin": on_part_begin,
            "on_header_field": on_header_field,
            "on_header_value": on_header_value,
            "on_header_end": on_header_end,
            "on_headers_finished": on_headers_finished,
            "on_part_data": on_part_data,
            "on_part_end": on_part_end,
            "on_end": ended.set,
        },
    )
    try:
        async for chunk in body:
            parser.write(chunk)
        parser.finalize()
        if not ended.is_set():  # finalize() accepts a body cut short: the file in it would be partial
            raise RequestError("the multipart body ends before its closing boundary")
    except (PayloadTooLarge, RequestError):
        _discard(dest, out)
        raise
    except HTTPException as e:
        _discard(dest, out)
        if e.status_code == 413:  # a chunked body passed the server's limit while streaming
            raise PayloadTooLarge(str(e.detail), details=getattr(e, "details", None)) from None
        raise
    except Exception as e:
        _discard(dest, out)
        raise RequestError(f"the multipart body could not be read: {e}") from None
    if out is not None and not out.closed:
        out.close()
    if not found:
        _discard(dest, out)
        raise RequestError(f"the form has no '{field}' file field")
    name = state["name"]
    return SavedUpload(dest, clean_filename(name if isinstance(name, str) else None), size, sha.hexdigest())


def _discard(path: Path, handle: object) -> None:
    close = getattr(handle, "close", None)
    if close is not None:
        close()
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    with contextlib.suppress(OSError):
        path.parent.rmdir()
