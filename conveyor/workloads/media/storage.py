"""The tenant's media storage: where uploads, inputs and outputs live, and the upload receiver.

Every tenant has one folder, ``<data_dir>/media/<slug>-<hash>/``; in a
multi-host deployment ``data_dir`` is a volume the API and the media workers
share (one PVC, see ``deploy/``). A path a client names is resolved inside
that folder, symlinks included, and refused if it leaves it. The client's
file name is never used as a path: uploads are stored under the correction's
id with a cleaned name.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
import shutil
import threading
import unicodedata
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.exceptions import HTTPException

from conveyor.errors import PayloadTooLarge, RequestError, UnsupportedMediaType
from conveyor.workloads.media.errors import OutsideStorage

__all__ = ["Upload", "clean_filename", "receive_upload", "remove_tree", "resolve_inside", "tenant_root"]

#: text fields of the form (media_type, options, input) are small; anything bigger is not one of ours
MAX_FIELD = 64 * 1024


def tenant_root(data_dir: Path, tenant: str) -> Path:
    """The tenant's folder: a readable slug plus a hash, so no tenant name can escape or collide."""
    slug = re.sub(r"[^A-Za-z0-9_-]+", "-", tenant)[:40].strip("-") or "tenant"
    digest = hashlib.sha256(tenant.encode()).hexdigest()[:12]
    return data_dir / "media" / f"{slug}-{digest}"


def clean_filename(name: str | None, default: str = "upload") -> str:
    """A safe single path component: no directories, no control characters, at most 120 characters."""
    if not name:
        return default
    name = unicodedata.normalize("NFC", name)
    name = re.split(r"[\\/]", name)[-1]
    name = "".join(ch for ch in name if unicodedata.category(ch)[0] != "C")
    name = re.sub(r"[^\w.\- ]+", "_", name).strip().lstrip(".")
    return (name or default)[:120]


def resolve_inside(root: Path, given: str, field_name: str) -> Path:
    """``given`` (relative to the tenant's folder, or absolute within it) as a real path inside ``root``.

    OutsideStorage (400) for ``..``, an absolute path elsewhere, or a symlink out.
    """
    if not given or "\x00" in given:
        raise OutsideStorage(f"{field_name} must be a path inside the tenant's storage", details={"field": field_name})
    base = root.resolve()
    candidate = Path(given)
    full = candidate if candidate.is_absolute() else base / candidate
    real = full.resolve()
    if real != base and base not in real.parents:
        raise OutsideStorage(
            f"{field_name} {given!r} is outside the tenant's storage; give a path relative to it",
            details={"field": field_name, "path": given},
        )
    return real


def remove_tree(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink()


@dataclass
class Upload:
    """What a multipart form carried: the file (streamed to ``path``) and its small text fields."""

    path: Path | None = None
    filename: str = "upload"
    size: int = 0
    fields: dict[str, str] = field(default_factory=dict)


async def receive_upload(content_type: str, body: AsyncIterator[bytes], dest: Path, *, max_bytes: int) -> Upload:
    """Stream the form's ``file`` field into ``dest``; 413 as soon as it passes ``max_bytes``.

    Memory use is one network chunk plus the small text fields; on any error
    the partial file is removed.
    """
    ctype, options = parse_options_header(content_type)
    if ctype != b"multipart/form-data":
        raise UnsupportedMediaType("send the file as multipart/form-data in the field 'file', or JSON with 'input'")
    boundary = options.get(b"boundary")
    if not boundary:
        raise RequestError("the multipart body has no boundary")
    result = Upload()
    headers: dict[bytes, bytes] = {}
    hname = bytearray()
    hvalue = bytearray()
    current: dict[str, object] = {"name": None, "text": None}
    out = None

    def on_part_begin() -> None:
        headers.clear()

    def on_header_field(data: bytes, start: int, end: int) -> None:
        hname.extend(data[start:end])

    def on_header_value(data: bytes, start: int, end: int) -> None:
        hvalue.extend(data[start:end])

    def on_header_end() -> None:
        headers[bytes(hname).lower()] = bytes(hvalue)
        hname.clear()
        hvalue.clear()

    def on_headers_finished() -> None:
        nonlocal out
        _, disposition = parse_options_header(headers.get(b"content-disposition", b""))
        name = disposition.get(b"name", b"").decode("utf-8", "replace")
        current["name"] = name
        current["text"] = None
        if name == "file" and result.path is None:
            raw = disposition.get(b"filename")
            result.filename = clean_filename(raw.decode("utf-8", "replace") if raw else None)
            dest.parent.mkdir(parents=True, exist_ok=True)
            out = open(dest, "wb")  # noqa: SIM115 - closed in on_part_end or by _discard
            result.path = dest
        elif name != "file":
            current["text"] = bytearray()

    def on_part_data(data: bytes, start: int, end: int) -> None:
        text = current["text"]
        if isinstance(text, bytearray):
            text.extend(data[start:end])
            if len(text) > MAX_FIELD:
                raise RequestError(f"the form field {current['name']!r} is longer than {MAX_FIELD} bytes")
            return
        if current["name"] == "file" and out is not None and not out.closed:
            result.size += end - start
            if result.size > max_bytes:
                raise PayloadTooLarge(
                    f"the upload is larger than the limit of {max_bytes / (1024 * 1024):g} MiB",
                    details={"max_bytes": max_bytes, "field": "file"},
                )
            out.write(data[start:end])

    def on_part_end() -> None:
        text = current["text"]
        if isinstance(text, bytearray) and isinstance(current["name"], str):
            result.fields[current["name"]] = text.decode("utf-8", "replace")
        elif current["name"] == "file" and out is not None:
            out.close()
        current["name"] = None
        current["text"] = None

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
    return result


def _discard(path: Path, handle: object) -> None:
    close = getattr(handle, "close", None)
    if close is not None:
        close()
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    with contextlib.suppress(OSError):
        path.parent.rmdir()
