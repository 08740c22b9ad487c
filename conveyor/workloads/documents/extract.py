"""Text out of an uploaded file: the type is read from the content, never from the extension.

Errors are ``DocumentError`` subclasses whose message names the cause in
plain words; the task stores that message on the document.
"""

from __future__ import annotations

import re
import zipfile
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "BadEncoding",
    "DocumentError",
    "EmptyText",
    "EncryptedPdf",
    "Extracted",
    "FileMissing",
    "UnreadableDocument",
    "UnsupportedType",
    "extract",
    "sniff",
    "sniff_file",
]

SNIFF_BYTES = 8192


class DocumentError(Exception):
    code = "document_error"


class FileMissing(DocumentError):
    code = "file_missing"


class UnsupportedType(DocumentError):
    code = "unsupported_type"


class EncryptedPdf(DocumentError):
    code = "encrypted_pdf"


class UnreadableDocument(DocumentError):
    code = "unreadable"


class EmptyText(DocumentError):
    code = "empty_text"


class BadEncoding(DocumentError):
    code = "bad_encoding"


@dataclass(frozen=True)
class Extracted:
    text: str
    #: (page number from 1, start character, end character)
    pages: list[tuple[int, int, int]]
    kind: str
    encoding: str | None


def _decode(data: bytes) -> tuple[str, str]:
    """UTF-8 first (with or without BOM), UTF-16 with a BOM, then cp1252."""
    if data.startswith(b"\xef\xbb\xbf"):
        return data[3:].decode("utf-8"), "utf-8-sig"
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        return data.decode("utf-16"), "utf-16"
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
    try:
        sample, _ = _decode(head)
    except (BadEncoding, UnicodeDecodeError):
        # A multi-byte character cut at the sniff boundary is not binary.
        try:
            sample = head[:-4].decode("utf-8")
        except UnicodeDecodeError:
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


def extract(path: Path, filename: str | None = None) -> Extracted:
    if not path.is_file():
        raise FileMissing(f"the uploaded file is missing on disk ({path.name})")
    kind = sniff_file(path, filename)
    if kind == "pdf":
        result = _pdf(path)
    elif kind == "docx":
        result = _docx(path)
    elif kind == "html":
        text, enc = _decode(path.read_bytes())
        result = Extracted(_html_text(text), [], "html", enc)
    else:
        text, enc = _decode(path.read_bytes())
        result = Extracted(text, [], kind, enc)
    if not result.text.strip():
        raise EmptyText(f"no text could be extracted from the {kind} file")
    if not result.pages:
        result = Extracted(result.text, [(1, 0, len(result.text))], result.kind, result.encoding)
    return result


def _pdf(path: Path) -> Extracted:
    from pypdf import PdfReader
    from pypdf.errors import PdfReadError

    try:
        reader = PdfReader(path)
        if reader.is_encrypted:
            try:
                opened = bool(reader.decrypt(""))  # an empty user password opens some "encrypted" PDFs
            except Exception:
                opened = False
            if not opened:
                raise EncryptedPdf("the PDF is encrypted and cannot be read without its password")
        parts: list[str] = []
        pages: list[tuple[int, int, int]] = []
        offset = 0
        for number, page in enumerate(reader.pages, 1):
            text = (page.extract_text() or "").strip()
            if parts:
                parts.append("\n\n")
                offset += 2
            parts.append(text)
            pages.append((number, offset, offset + len(text)))
            offset += len(text)
    except DocumentError:
        raise
    except (PdfReadError, ValueError, KeyError, TypeError, OSError) as e:
        raise UnreadableDocument(f"the PDF could not be read: {e}") from None
    return Extracted("".join(parts), pages, "pdf", None)


def _docx(path: Path) -> Extracted:
    import docx

    try:
        document = docx.Document(str(path))
    except Exception as e:
        raise UnreadableDocument(f"the Word document could not be read: {e}") from None
    parts = [p.text for p in document.paragraphs if p.text.strip()]
    for table in document.tables:
        for row in table.rows:
            cells = [c.text.strip() for c in row.cells if c.text.strip()]
            if cells:
                parts.append(" | ".join(cells))
    return Extracted("\n\n".join(parts), [], "docx", None)


def _html_text(markup: str) -> str:
    from bs4 import BeautifulSoup

    soup = BeautifulSoup(markup, "lxml")
    for tag in soup(["script", "style", "noscript", "template"]):
        tag.decompose()
    text = soup.get_text("\n")
    lines = [re.sub(r"[ \t\u00a0]+", " ", line).strip() for line in text.splitlines()]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()
