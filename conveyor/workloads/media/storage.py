"""The tenant's media storage: where uploads, inputs and outputs live.

Every tenant has one folder, ``<data_dir>/media/<slug>-<hash>/``; in a
multi-host deployment ``data_dir`` is a volume the API and the media workers
share (one PVC, see ``deploy/``). A path a client names is resolved inside
that folder, symlinks included, and refused if it leaves it. The client's
file name is never used as a path: uploads are received by
``conveyor.uploads`` and stored under the correction's id with a cleaned name.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
import shutil
from pathlib import Path

from conveyor.workloads.media.errors import OutsideStorage

__all__ = ["remove_tree", "resolve_inside", "tenant_root"]


def tenant_root(data_dir: Path, tenant: str) -> Path:
    """The tenant's folder: a readable slug plus a hash, so no tenant name can escape or collide."""
    slug = re.sub(r"[^A-Za-z0-9_-]+", "-", tenant)[:40].strip("-") or "tenant"
    digest = hashlib.sha256(tenant.encode()).hexdigest()[:12]
    return data_dir / "media" / f"{slug}-{digest}"


def resolve_inside(root: Path, given: str, field_name: str) -> Path:
    """``given`` (relative to the tenant's folder, or absolute within it) as a real path inside ``root``.

    OutsideStorage (400) for ``..``, an absolute path elsewhere, or a symlink out.
    """
    if not given or "\x00" in given:
        raise OutsideStorage(f"{field_name} must be a path inside the tenant's storage", details={"field": field_name})
    base = root.resolve()
    candidate = Path(given)
    full = candidate if candidate.is_absolute() else base / candidate
    real = full.resolve()
    if real != base and base not in real.parents:
        raise OutsideStorage(
            f"{field_name} {given!r} is outside the tenant's storage; give a path relative to it",
            details={"field": field_name, "path": given},
        )
    return real


def remove_tree(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink()
