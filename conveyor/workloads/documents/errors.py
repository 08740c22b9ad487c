"""The documents workload's errors, in Conveyor's one hierarchy.

``DocumentError`` and its kinds are raised while a document is read; the
task fails with its message and code. The others answer HTTP requests.
"""

from __future__ import annotations

from conveyor.errors import ConveyorError, NotFound, Unavailable

__all__ = [
    "BadEncoding",
    "DocumentError",
    "DocumentNotFound",
    "DocumentsUnavailable",
    "EmptyText",
    "EncryptedPdf",
    "FileMissing",
    "OutputNotWritten",
    "UnreadableDocument",
    "UnsupportedType",
]


class DocumentNotFound(NotFound):
    code = "document_not_found"

    def __init__(self, document_id: str) -> None:
        super().__init__(f"No document with id {document_id!r}", details={"document_id": document_id})


class DocumentsUnavailable(Unavailable):
    """Its tables need a SQL store: 503 naming the database, as every outage answers."""

    code = "documents_unavailable"
    dependency = "database"


class DocumentError(ConveyorError):
    """A document that cannot be read: its processing task fails with this message."""

    status_code = 422
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


class OutputNotWritten(DocumentError):
    code = "output_not_written"


class ExtractionLimit(DocumentError):
    """The file would take more than a limit allows to read (a decompression or page-work bomb)."""

    code = "extraction_limit"
