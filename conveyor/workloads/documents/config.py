"""The documents workload's settings: ``CONVEYOR_DOCUMENTS_*``."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["DocumentsSettings"]


class DocumentsSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CONVEYOR_DOCUMENTS_", extra="ignore")

    #: largest single upload, in MiB
    max_upload_mb: float = Field(default=50.0, gt=0)
    #: what one tenant's stored uploads may add up to, in MiB
    quota_mb: float = Field(default=1024.0, gt=0)
    #: documents older than this many days are deleted by the hourly cleanup
    retention_days: float = Field(default=30.0, gt=0)
    #: what a PDF's pages may decompress to in all, in MiB: one 20 MiB stream shared by every page once held a worker
    pdf_max_content_mb: float = Field(default=128.0, gt=0)
    #: the most pages read from one PDF
    pdf_max_pages: int = Field(default=5000, gt=0)
    #: the most seconds text extraction may take for one document (within the task's own time limit)
    extract_seconds: float = Field(default=1800.0, gt=0)
