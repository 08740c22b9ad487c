"""Uploads: a multipart form's file streamed to disk under a byte limit, never held in memory.

A workload that takes files over HTTP calls :func:`receive_upload` with the
request's stream (``request.stream()``) and a path of its own choosing. The
file part goes to that path a network chunk at a time, counted as it comes:
the chunk that passes the limit is a 413, not a gigabyte read into memory
and measured afterwards. The small text fields beside the file (options, a path,
a type) are kept in memory, each bounded. Whatever goes wrong (the limit, a
body cut short, a malformed form, the client leaving), the partial file is
removed before the error leaves.

The name the client gave the file is never the path: :func:`clean_filename`
makes it one harmless path component, for metadata or for a file inside a
folder the workload already owns.

This is API for workload authors (the upload routes of the built-in workloads use it):
import ``receive_upload``, ``Upload`` and ``clean_filename`` from here. What
stays the workload's is where the file goes and what its limits are called.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
import unicodedata
from collections.abc import AsyncIterator, Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.exceptions import HTTPException

from conveyor.errors import PayloadTooLarge, RequestError, UnsupportedMediaType

if TYPE_CHECKING:
    from _hashlib import HASH

    from python_multipart.multipart import MultipartCallbacks

__all__ = ["MAX_FIELD", "Upload", "clean_filename", "receive_upload"]

#: the most a text field of an upload form may hold; anything bigger is not a field but a file
MAX_FIELD = 64 * 1024
#: a cleaned name's most characters, and its most UTF-8 bytes (a file system allows 255)
MAX_NAME_CHARS = 120
MAX_NAME_BYTES = 240


def clean_filename(name: str | None, default: str = "upload") -> str:
    """The client's file name as one safe path component, or ``default`` when nothing of it is left.

    Only the last component of any path survives (``/`` or ``\\``), without
    control characters (NUL among them) or leading dots; any other character
    that is not a letter, digit, ``_``, ``-``, ``.`` or space becomes ``_``.
    At most 120 characters and 240 bytes of UTF-8.
    """
    if not name:
        return default
    name = unicodedata.normalize("NFC", name)
    name = re.split(r"[\\/]", name)[-1]
    name = "".join(ch for ch in name if unicodedata.category(ch)[0] != "C")
    name = re.sub(r"[^\w.\- ]+", "_", name).strip().lstrip(".")
    name = name[:MAX_NAME_CHARS]
    while len(name.encode()) > MAX_NAME_BYTES:
        name = name[:-1]
    return name.rstrip() or default


@dataclass(frozen=True)
class Upload:
    """What a multipart form carried: its file (streamed to ``path``) and the text fields that were kept."""

    #: where the file is; None when the form had no file field (only if it was not required)
    path: Path | None
    #: the client's name for it, cleaned; the default when it gave none
    filename: str
    size: int
    sha256: str
    fields: Mapping[str, str]


async def receive_upload(
    content_type: str,
    body: AsyncIterator[bytes],
    dest: Path,
    *,
    max_bytes: int,
    file_field: str = "file",
    require_file: bool = True,
    keep_fields: Collection[str] | None = None,
    max_field: int = MAX_FIELD,
    limit_name: str = "limit",
    limit_details: Mapping[str, Any] | None = None,
    not_multipart: str | None = None,
) -> Upload:
    """Stream the form's ``file_field`` into ``dest`` (its folder is made); 413 as soon as it passes ``max_bytes``.

    Memory use is one network chunk plus the kept text fields. The first part
    named ``file_field`` is the file; later ones are ignored.

    - ``content_type``: the request's header; not multipart/form-data is 415
      (``not_multipart`` is its message).
    - ``require_file``: a form without the file is a RequestError (400);
      when False it is an ``Upload`` whose ``path`` is None.
    - ``keep_fields``: the text fields to keep (None: all of them), each at
      most ``max_field`` bytes or a RequestError; others are read past.
    - ``limit_name``, ``limit_details``: how the 413 names the limit
      ("the upload is larger than the <limit_name> of N MiB") and what its
      details hold besides ``max_bytes``.

    A body that ends before its closing boundary, or cannot be parsed, is a
    RequestError; a body over the server's limit while streaming is a
    PayloadTooLarge. On any error the partial file is removed, and ``dest``'s
    folder too if this call made it and it is empty.
    """
    ctype, options = parse_options_header(content_type)
    if ctype != b"multipart/form-data":
        raise UnsupportedMediaType(not_multipart or f"send the file as multipart/form-data in the field '{file_field}'")
    boundary = options.get(b"boundary")
    if not boundary:
        raise RequestError("the multipart body has no boundary")
    too_large = PayloadTooLarge(
        f"the upload is larger than the {limit_name} of {max_bytes / (1024 * 1024):g} MiB",
        details={"max_bytes": max_bytes, **(limit_details or {})},
    )
    form = _Form(dest, file_field, max_bytes, too_large, keep_fields, max_field)
    try:
        try:
            parser = MultipartParser(boundary, form.callbacks())  # a boundary it refuses is a RequestError too
            async for chunk in body:
                parser.write(chunk)
            parser.finalize()
        except RequestError:
            raise
        except HTTPException as e:
            if e.status_code == 413:  # a chunked body passed the server's limit while streaming
                raise PayloadTooLarge(str(e.detail), details=getattr(e, "details", None)) from None
            raise
        except Exception as e:
            raise RequestError(f"the multipart body could not be read: {e}") from None
        if not form.ended:  # finalize() accepts a body cut short: the file in it would be partial
            raise RequestError("the multipart body ends before its closing boundary")
        if require_file and form.out is None:
            raise RequestError(f"the form has no '{file_field}' file field")
    except BaseException:
        form.discard()
        raise
    form.close()
    return Upload(
        path=dest if form.out is not None else None,
        filename=clean_filename(form.filename),
        size=form.size,
        sha256=form.sha.hexdigest(),
        fields=form.fields,
    )


@dataclass(eq=False)
class _Form:
    """The parser's callbacks and what they have read so far."""

    dest: Path
    file_field: str
    max_bytes: int
    too_large: PayloadTooLarge
    keep: Collection[str] | None
    max_field: int
    headers: dict[bytes, bytes] = field(default_factory=dict)
    header_name: bytearray = field(default_factory=bytearray)
    header_value: bytearray = field(default_factory=bytearray)
    part: str | None = None  # the name of the field whose data is arriving
    in_file: bool = False  # that field is the file
    text: bytearray | None = None  # that field is a text field being kept
    out: IO[bytes] | None = None
    made_folder: bool = False
    filename: str | None = None
    size: int = 0
    sha: HASH = field(default_factory=hashlib.sha256)
    fields: dict[str, str] = field(default_factory=dict)
    ended: bool = False

    def callbacks(self) -> MultipartCallbacks:
        return {
            "on_part_begin": self.headers.clear,
            "on_header_field": self.on_header_field,
            "on_header_value": self.on_header_value,
            "on_header_end": self.on_header_end,
            "on_headers_finished": self.on_headers_finished,
            "on_part_data": self.on_part_data,
            "on_part_end": self.on_part_end,
            "on_end": self.on_end,
        }

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self.header_name.extend(data[start:end])

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self.header_value.extend(data[start:end])

    def on_header_end(self) -> None:
        self.headers[bytes(self.header_name).lower()] = bytes(self.header_value)
        self.header_name.clear()
        self.header_value.clear()

    def on_headers_finished(self) -> None:
        _, disposition = parse_options_header(self.headers.get(b"content-disposition", b""))
        self.part = disposition.get(b"name", b"").decode("utf-8", "replace")
        self.in_file = False
        self.text = None
        if self.part == self.file_field:
            if self.out is None:  # the first file part; a second one is read past
                raw = disposition.get(b"filename")
                self.filename = raw.decode("utf-8", "replace") if raw else None
                if not self.dest.parent.is_dir():
                    self.dest.parent.mkdir(parents=True, exist_ok=True)
                    self.made_folder = True
                self.out = open(self.dest, "wb")  # noqa: SIM115 - closed in on_part_end, close() or discard()
                self.in_file = True
        elif self.keep is None or self.part in self.keep:
            self.text = bytearray()

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        if self.text is not None:
            self.text.extend(data[start:end])
            if len(self.text) > self.max_field:
                raise RequestError(f"the form field {self.part!r} is longer than {self.max_field} bytes")
        elif self.in_file and self.out is not None:
            self.size += end - start
            if self.size > self.max_bytes:
                raise self.too_large
            chunk = data[start:end]
            self.sha.update(chunk)
            self.out.write(chunk)

    def on_part_end(self) -> None:
        if self.text is not None and self.part is not None:
            self.fields[self.part] = self.text.decode("utf-8", "replace")
        elif self.in_file:
            self.close()
        self.part = None
        self.in_file = False
        self.text = None

    def on_end(self) -> None:
        self.ended = True

    def close(self) -> None:
        if self.out is not None:
            self.out.close()

    def discard(self) -> None:
        """Remove the partial file, and the folder made for it if nothing else is in it."""
        if self.out is None:  # nothing was written: a file already at dest is not ours
            return
        self.close()
        with contextlib.suppress(FileNotFoundError):
            self.dest.unlink()
        if self.made_folder:
            with contextlib.suppress(OSError):
                self.dest.parent.rmdir()
