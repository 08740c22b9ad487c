"""HTTP for the images workload.

Seed 004's clients submit on the core route ``POST /api/v1/tasks/submit/``;
this module hooks the five image types into it (``submit_hook``), so their
bodies are read as the seed's serializers read them: JSON with base64
images or a multipart form with files, per-type checks naming each field,
413 over the workload's limits, and the queue chosen by configuration.

``GET /api/v1/images`` says what a client may send: the types and their
fields, the named styles, the limits, and which generator runs.
"""

from __future__ import annotations

from typing import Any

from conveyor.api.deps import App
from conveyor.api.routes.tasks import submit_hook
from conveyor.api.routing import SlashRouter
from conveyor.app import Conveyor
from conveyor.workloads.images.config import ImagesSettings
from conveyor.workloads.images.style import STYLES
from conveyor.workloads.images.submit import IMAGE_FIELDS, TASK_TYPES, prepare, seed_name
from conveyor.workloads.images.tasks import GPU_TYPES, queue_for

__all__ = ["router"]

router = SlashRouter(prefix="/api/v1/images", tags=["images"])


def _settings(app: Conveyor) -> ImagesSettings:
    s = app.workload_settings("images")
    assert isinstance(s, ImagesSettings)
    return s


@submit_hook(*TASK_TYPES.values())
async def prepare_submit(
    app: Conveyor, task_type: str, body: dict[str, Any], *, form: bool, body_bytes: int | None
) -> dict[str, Any]:
    """The seed's submit body for an image type, checked; its queue from the settings unless the body names one."""
    settings = _settings(app)
    out = await prepare(task_type, body, settings, body_bytes=body_bytes, form=form)
    out.setdefault("queue", queue_for(seed_name(app.registry.get(task_type).name), settings))
    return out


@router.get("", summary="What the image tasks take: types, fields, styles, limits, generator")
async def describe(app: App) -> dict[str, Any]:
    s = _settings(app)
    return {
        "task_types": {
            name: {
                "canonical": canonical,
                "image_fields": list(IMAGE_FIELDS[name]),
                "queue": queue_for(name, s),
                "gpu": name in GPU_TYPES,
            }
            for name, canonical in TASK_TYPES.items()
        },
        "styles": list(STYLES),
        "generator": s.generator,
        "limits": {
            "max_image_mb": s.max_image_mb,
            "max_pixels": s.max_pixels,
            "max_body_mb": s.max_body_mb,
            "max_side": s.max_side,
            "max_steps": s.max_steps,
        },
        "result_ttl": 3600,
    }
