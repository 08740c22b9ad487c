"""Workloads: one package each, declaring a ``Workload`` (see ``conveyor.workload``).

``system`` (always loaded) has the built-in types. ``BUILTIN`` lists the
workloads that load by default wherever their extra is installed and their
store needs are met; ``CONVEYOR_WORKLOADS`` names another set.
"""

from __future__ import annotations

__all__ = ["BUILTIN"]

BUILTIN: tuple[str, ...] = ("documents", "images", "media")
