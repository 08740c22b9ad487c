"""Workloads: task types plus their own HTTP routes, one subpackage or module each.

``system`` (always loaded) has the built-in types; the others are loaded by
naming them in ``CONVEYOR_WORKLOADS``. A workload module may define
``router`` (a FastAPI APIRouter) and ``periodic_jobs`` (a list of PeriodicJob).
"""
