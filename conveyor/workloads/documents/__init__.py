"""Documents workload: upload, extract, chunk, detect language, index (seed 001).

Load it with ``CONVEYOR_WORKLOADS=system,documents``. Needs a SQL store and
``pip install 'conveyor[documents]'``.
"""

from __future__ import annotations

from conveyor.scheduler import PeriodicJob
from conveyor.workloads.documents.routes import router
from conveyor.workloads.documents.tasks import cleanup_documents, process_document

__all__ = ["cleanup_documents", "periodic_jobs", "process_document", "router"]

periodic_jobs = [PeriodicJob("documents-cleanup", "documents.cleanup", cron="17 3 * * *")]
