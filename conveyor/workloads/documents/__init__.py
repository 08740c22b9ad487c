"""Documents workload: upload, extract, chunk, detect language, index (seed 001).

Loaded by default when its extra is installed (``pip install 'conveyor[documents]'``)
and the store is SQL; name it in ``CONVEYOR_WORKLOADS`` to require it.
"""

from __future__ import annotations

from conveyor.scheduler import PeriodicJob
from conveyor.workloads.documents.routes import router
from conveyor.workloads.documents.tasks import cleanup_documents, process_document

__all__ = ["cleanup_documents", "periodic_jobs", "process_document", "router"]

#: hourly: old documents go after ``documents_retention_days``, and a document
#: whose task died without marking it is settled within the hour even if nobody asks
periodic_jobs = [PeriodicJob("documents-cleanup", "documents.cleanup", cron="17 * * * *")]
