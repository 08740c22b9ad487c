"""Text out of an uploaded file: the type is read from the content, never from the extension.

Errors are ``DocumentError`` subclasses whose message names the cause in
plain words; the task stores that message on the document.
"""

from __future__ import annotations

import re
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from conveyor.errors import SoftTimeLimitExceeded, TaskCancelled
from conveyor.workloads.documents.errors import (
    BadEncoding,
    DocumentError,
    EmptyText,
    EncryptedPdf,
    ExtractionLimit,
    FileMissing,
    OutputNotWritten,
    UnreadableDocument,
    UnsupportedType,
)

__all__ = [
    "BadEncoding",
    "DocumentError",
    "EmptyText",
    "EncryptedPdf",
    "ExtractLimits",
    "Extracted",
    "ExtractionLimit",
    "FileMissing",
    "OutputNotWritten",
    "UnreadableDocument",
    "UnsupportedType",
    "extract",
    "sniff",
    "sniff_file",
]

SNIFF_BYTES = 8192


#: NUL (PostgreSQL text cannot hold it) and lone surrogates (not encodable as UTF-8)
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def _clean(text: str) -> str:
    return _UNSTORABLE.sub("", text)


@dataclass(frozen=True)
class Extracted:
    text: str
    #: (page number from 1, start character, end character)
    pages: list[tuple[int, int, int]]
    kind: str
    encoding: str | None
    #: PDF pages whose text could not be extracted (they count as empty)
    unreadable_pages: list[int] = field(default_factory=list)


def _decode(data: bytes) -> tuple[str, str]:
    """UTF-8 first (with or without BOM), UTF-16 with a BOM, then cp1252."""
    if data.startswith(b"\xef\xbb\xbf"):
        try:
            return data[3:].decode("utf-8"), "utf-8-sig"
        except UnicodeDecodeError as e:
            raise BadEncoding(f"the text starts as UTF-8 but is not valid UTF-8 (byte {e.start + 3})") from None
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        try:
            return data.decode("utf-16"), "utf-16"
        except UnicodeDecodeError as e:
            raise BadEncoding(f"the text starts as UTF-16 but is not valid UTF-16 (byte {e.start})") from None
    try:
        return data.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        pass
    try:
        return data.decode("cp1252"), "cp1252"
    except UnicodeDecodeError as e:
        raise BadEncoding(f"the text is neither UTF-8 nor Windows-1252 (byte {e.start})") from None


def _looks_like_text(head: bytes) -> bool:
    if b"\x00" in head and not head.startswith((b"\xff\xfe", b"\xfe\xff")):
        return False
    sample: str | None = None
    for trim in range(5):  # a multi-byte character cut at the sniff boundary is not binary
        try:
            sample, _ = _decode(head[: len(head) - trim])
            break
        except BadEncoding:
            continue
    if sample is None:
        return False
    if not sample:
        return True
    controls = sum(1 for ch in sample if ord(ch) < 32 and ch not in "\t\n\r\f")
    return controls / len(sample) < 0.01


def sniff(head: bytes, filename: str | None = None) -> str:
    """ "pdf", "html", "markdown" or "text" from the first bytes; zip files need ``sniff_file``."""
    if head.startswith(b"%PDF-"):
        return "pdf"
    if head.startswith(b"PK\x03\x04"):
        raise UnsupportedType("a zip archive needs sniff_file to tell a .docx from other archives")
    start = head.lstrip(b"\xef\xbb\xbf").lstrip()[:512].lower()
    if start.startswith((b"<!doctype html", b"<html")) or (start.startswith(b"<") and b"<body" in head.lower()):
        return "html"
    if _looks_like_text(head):
        if filename and filename.lower().endswith((".md", ".markdown")):
            return "markdown"
        return "text"
    raise UnsupportedType("the file is binary and not a PDF, DOCX, HTML, Markdown or text document")


def sniff_file(path: Path, filename: str | None = None) -> str:
    with open(path, "rb") as f:
        head = f.read(SNIFF_BYTES)
    if not head:
        raise EmptyText("the file is empty")
    if head.startswith(b"PK\x03\x04"):
        try:
            with zipfile.ZipFile(path) as z:
                if "word/document.xml" in z.namelist():
                    return "docx"
        except zipfile.BadZipFile:
            raise UnreadableDocument("the file looks like a zip archive but is damaged") from None
        raise UnsupportedType("the file is a zip archive but not a Word (.docx) document")
    return sniff(head, filename or path.name)


@dataclass(frozen=True)
class ExtractLimits:
    """How much work reading one document may take (``CONVEYOR_DOCUMENTS_*`` in the task)."""

    #: what a PDF's page contents may decompress to, summed over its pages
    pdf_max_content_bytes: int = 128 * 1024 * 1024
    pdf_max_pages: int = 5000
    #: the time budget of the extraction, in seconds
    seconds: float = 1800.0


def extract(
    path: Path,
    filename: str | None = None,
    progress: Callable[[float], None] | None = None,
    limits: ExtractLimits | None = None,
) -> Extracted:
    """The document's text, with page spans for PDFs; ``progress`` gets the fraction of pages read."""
    if not path.is_file():
        raise FileMissing(f"the uploaded file is missing on disk ({path.name})")
    kind = sniff_file(path, filename)
    if kind == "pdf":
        result = _pdf(path, progress, limits or ExtractLimits())
    elif kind == "docx":
        result = _docx(path)
    elif kind == "html":
        text, enc = _decode(path.read_bytes())
        result = Extracted(_clean(_html_text(text)), [], "html", enc)
    else:
        text, enc = _decode(path.read_bytes())
        result = Extracted(_clean(text), [], kind, enc)
    if not result.text.strip():
        hint = " (a scanned PDF without a text layer?)" if kind == "pdf" else ""
        raise EmptyText(f"no text could be extracted from the {kind} file{hint}")
    if not result.pages:
        result = Extracted(result.text, [(1, 0, len(result.text))], result.kind, result.encoding)
    return result


#: what a progress callback may raise through the extractor untouched
_PASS_THROUGH = (DocumentError, TaskCancelled, SoftTimeLimitExceeded)


def _pdf(path: Path, progress: Callable[[float], None] | None, limits: ExtractLimits) -> Extracted:
    from pypdf import PdfReader

    try:
        reader = PdfReader(path)
        if reader.is_encrypted:
            try:
                opened = bool(reader.decrypt(""))  # an empty user password opens some "encrypted" PDFs
            except Exception:  # wrong password, or a cipher pypdf cannot run here
                opened = False
            if not opened:
                raise EncryptedPdf("the PDF is encrypted and cannot be read without its password")
        count = len(reader.pages)
    except _PASS_THROUGH:
        raise
    except Exception as e:  # pypdf raises many kinds on a damaged file
        raise UnreadableDocument(f"the PDF could not be read: {e}") from None
    if count == 0:
        raise EmptyText("the PDF has no pages")
    if count > limits.pdf_max_pages:
        raise ExtractionLimit(f"the PDF has {count} pages, more than the page limit of {limits.pdf_max_pages}")
    deadline = time.monotonic() + limits.seconds
    content = 0
    parts: list[str] = []
    pages: list[tuple[int, int, int]] = []
    unreadable: list[int] = []
    offset = 0
    for number in range(1, count + 1):
        # Counted before the page is read: pages may share one huge stream, each page decoding it again.
        content += _content_bytes(reader.pages[number - 1])
        if content > limits.pdf_max_content_bytes:
            raise ExtractionLimit(
                f"the PDF's pages decompress to more than the content limit of "
                f"{limits.pdf_max_content_bytes / 2**20:g} MiB (by page {number} of {count})"
            )
        if time.monotonic() > deadline:
            raise ExtractionLimit(
                f"reading the PDF passed the time limit of {limits.seconds:g} s (at page {number} of {count})"
            )
        try:
            text = _clean(reader.pages[number - 1].extract_text() or "").strip()
        except _PASS_THROUGH:
            raise
        except Exception:
            # One damaged page should not cost the other 199; the metadata lists it.
            text = ""
            unreadable.append(number)
        if parts:
            parts.append("\n\n")
            offset += 2
        parts.append(text)
        pages.append((number, offset, offset + len(text)))
        offset += len(text)
        if progress is not None:
            progress(number / count)
    if len(unreadable) == count:
        raise UnreadableDocument("the PDF could not be read: no page's text could be extracted")
    return Extracted("".join(parts), pages, "pdf", None, unreadable)


def _content_bytes(page: Any) -> int:
    """The decompressed size of a page's content streams (0 when it has none or they cannot be read)."""
    try:
        contents = page.get_contents()
        return len(contents.get_data()) if contents is not None else 0
    except Exception:  # a damaged page is reported by its own extraction below
        return 0


#: what a DOCX (a zip) may expand to, all members together: a 300 KB zip bomb once took a worker to 2.2 GB
MAX_DOCX_EXPANDED = 200 * 1024 * 1024
#: the most members a DOCX may hold
MAX_DOCX_MEMBERS = 10_000
#: a member larger than this must not be compressed more than MAX_DOCX_RATIO times (text XML is ~10 times)
DOCX_RATIO_FROM = 1024 * 1024
MAX_DOCX_RATIO = 200


def _docx(path: Path) -> Extracted:
    import docx

    try:
        with zipfile.ZipFile(path) as z:
            members = z.infolist()
    except zipfile.BadZipFile:
        raise UnreadableDocument("the Word document could not be read: it is not a valid zip file") from None
    _check_docx_members(members)
    try:
        document = docx.Document(str(path))
    except Exception as e:
        raise UnreadableDocument(f"the Word document could not be read: {e}") from None
    try:
        parts = [p.text for p in document.paragraphs if p.text.strip()]
        for table in document.tables:
            for row in table.rows:
                cells = [c.text.strip() for c in row.cells if c.text.strip()]
                if cells:
                    parts.append(" | ".join(cells))
    except Exception as e:
        raise UnreadableDocument(f"the Word document could not be read: {e}") from None
    return Extracted(_clean("\n\n".join(parts)), [], "docx", None)


def _check_docx_members(members: list[zipfile.ZipInfo]) -> None:
    """Refuse a zip bomb from the sizes its directory declares (zipfile never inflates past them)."""
    if len(members) > MAX_DOCX_MEMBERS:
        raise ExtractionLimit(
            f"the Word document holds {len(members)} files, more than the member limit of {MAX_DOCX_MEMBERS}"
        )
    expanded = sum(info.file_size for info in members)
    if expanded > MAX_DOCX_EXPANDED:
        raise ExtractionLimit(
            f"the Word document expands to {expanded / 2**20:.0f} MiB, more than the decompressed size limit of "
            f"{MAX_DOCX_EXPANDED / 2**20:.0f} MiB (a zip bomb?)"
        )
    for info in members:
        if info.file_size > DOCX_RATIO_FROM and info.file_size > MAX_DOCX_RATIO * max(info.compress_size, 1):
            raise ExtractionLimit(
                f"the Word document's {info.filename} is compressed {info.file_size // max(info.compress_size, 1)} "
                f"times, more than the compression ratio limit of {MAX_DOCX_RATIO} (a zip bomb?)"
            )


def _html_text(markup: str) -> str:
    from bs4 import BeautifulSoup

    soup = BeautifulSoup(markup, "lxml")
    for tag in soup(["script", "style", "noscript", "template"]):
        tag.decompose()
    text = soup.get_text("\n")
    lines = [re.sub(r"[ \t\u00a0]+", " ", line).strip() for line in text.splitlines()]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()
