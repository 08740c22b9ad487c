"""Reading an image task's submit body: JSON with base64 images, or multipart files, on one route.

``prepare(app, body, ...)`` runs before the task manager validates the
params. It turns uploaded files into base64 fields, strips ``data:``
prefixes, checks every image (bytes, pixel count from the header, format,
that it decodes) and the rules between fields (mask size equals image size,
box inside the image, width and height within the configured limits), and
answers 413 over a limit and 422 naming the field otherwise.
"""

from __future__ import annotations

import base64
import json
import random
from collections.abc import Mapping
from typing import Any

import anyio.to_thread

from conveyor.errors import InvalidParams
from conveyor.workloads.images import codec
from conveyor.workloads.images.config import ImagesSettings
from conveyor.workloads.images.errors import ImageInputError, ImageTooLarge, invalid

__all__ = ["IMAGE_FIELDS", "TASK_TYPES", "check_images", "normalise_form", "prepare"]

#: the seed's task type names → canonical names in Conveyor
TASK_TYPES = {
    "image_generation": "images.image_generation",
    "face_swap": "images.face_swap",
    "background_removal": "images.background_removal",
    "object_removal": "images.object_removal",
    "style_transfer": "images.style_transfer",
}
#: the image fields of each type, by seed name
IMAGE_FIELDS: dict[str, tuple[str, ...]] = {
    "image_generation": (),
    "face_swap": ("source_image", "target_image"),
    "background_removal": ("image",),
    "object_removal": ("image", "mask"),
    "style_transfer": ("image", "style_image"),
}
#: the fields each type cannot go without (the seed serializers' "required based on task_type")
REQUIRED: dict[str, tuple[str, ...]] = {
    "image_generation": ("prompt",),
    "face_swap": ("source_image", "target_image"),
    "background_removal": ("image",),
    "object_removal": ("image",),
    "style_transfer": ("image",),
}
#: form fields that carry JSON when a body comes as multipart
_JSON_FORM_FIELDS = ("parameters", "box")


def seed_name(task_type: str) -> str:
    """``images.face_swap`` or ``face_swap`` → ``face_swap``."""
    return task_type.removeprefix("images.")


async def normalise_form(task_type: str, body: Mapping[str, Any], settings: ImagesSettings) -> dict[str, Any]:
    """A multipart form as the JSON body would be: files as base64, JSON fields parsed."""
    max_bytes = int(settings.max_image_mb * 2**20)
    out: dict[str, Any] = {}
    for key, value in body.items():
        if hasattr(value, "read") and hasattr(value, "filename"):  # an UploadFile
            data = await value.read(max_bytes + 1)
            if len(data) > max_bytes:
                raise ImageTooLarge(key, f"is larger than {settings.max_image_mb:g} MiB", max_bytes=max_bytes)
            if not data:
                raise ImageInputError(key, "is an empty file")
            out[key] = base64.b64encode(data).decode("ascii")
        elif key in _JSON_FORM_FIELDS and isinstance(value, str):
            out[key] = _form_json(key, value)
        else:
            out[key] = value
    # A generation's parameters may also come as form fields of their own (width=512).
    if seed_name(task_type) == "image_generation":
        params = dict(out.get("parameters") or {})
        for key in ("width", "height", "seed", "steps", "guidance_scale"):
            if key in out and isinstance(out[key], str):
                params[key] = _form_number(key, out.pop(key))
        if params:
            out["parameters"] = params
    return out


def _form_json(field: str, text: str) -> Any:
    text = text.strip()
    if field == "box" and text and text[0] not in "[{":
        parts = [p.strip() for p in text.split(",")]
        return [_form_number(field, p) for p in parts]
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise invalid(field, f"must be JSON ({e.msg})") from None


def _form_number(field: str, text: str) -> int | float:
    try:
        return int(text)
    except ValueError:
        try:
            return float(text)
        except ValueError:
            raise invalid(field, f"must be a number, not {text[:40]!r}") from None


def check_images(task_type: str, params: dict[str, Any], settings: ImagesSettings) -> dict[str, Any]:
    """Decode and check each image field of ``params`` (blocking: run it in a thread)."""
    name = seed_name(task_type)
    missing = [f for f in REQUIRED.get(name, ()) if params.get(f) in (None, "")]
    if missing:
        details = [{"field": f, "message": "field required", "type": "missing"} for f in missing]
        raise InvalidParams(f"Invalid request: {', '.join(missing)} required for {name}", details=details)
    max_bytes = int(settings.max_image_mb * 2**20)
    sizes: dict[str, tuple[int, int]] = {}
    for field in IMAGE_FIELDS.get(name, ()):
        value = params.get(field)
        if value is None:
            continue
        data = codec.decode_base64(field, value, max_bytes=max_bytes)
        if len(data) > max_bytes:
            raise ImageTooLarge(field, f"is larger than {settings.max_image_mb:g} MiB", max_bytes=max_bytes)
        # Fully decoded here: a truncated file is a 422 now, not a FAILURE later.
        img = codec.decode_image(field, data, max_pixels=settings.max_pixels)
        sizes[field] = (img.width, img.height)
        params[field] = codec.strip_data_url(value)
    if name == "object_removal":
        _check_region(params, sizes)
    if name == "image_generation":
        _check_generation(params, settings)
    return params


def _check_region(params: dict[str, Any], sizes: dict[str, tuple[int, int]]) -> None:
    if params.get("mask") is None and params.get("box") is None:
        raise invalid("mask", "mask or box is required: the region to remove")
    if params.get("mask") is not None and params.get("box") is not None:
        raise invalid("box", "send mask or box, not both")
    image = sizes.get("image")
    if image is None:
        return
    if "mask" in sizes and sizes["mask"] != image:
        mw, mh = sizes["mask"]
        raise invalid("mask", f"is {mw} × {mh}; it must be the image's size, {image[0]} × {image[1]}")
    box = params.get("box")
    if box is not None:
        values = _box_values(box)
        if values is None:
            raise invalid("box", "must be [x, y, width, height] or {x, y, width, height} of integers")
        x, y, w, h = values
        if x < 0 or y < 0 or w <= 0 or h <= 0 or x + w > image[0] or y + h > image[1]:
            raise invalid("box", f"({x}, {y}, {w} × {h}) is not inside the image ({image[0]} × {image[1]})")


def _box_values(box: Any) -> tuple[int, int, int, int] | None:
    if isinstance(box, Mapping):
        box = [box.get(k) for k in ("x", "y", "width", "height")]
    if not isinstance(box, list | tuple) or len(box) != 4:
        return None
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in box):
        return None
    return (box[0], box[1], box[2], box[3])


def _check_generation(params: dict[str, Any], settings: ImagesSettings) -> None:
    parameters = params.get("parameters")
    if parameters is None:
        parameters = params["parameters"] = {}
    if not isinstance(parameters, dict):
        raise invalid("parameters", "must be a JSON object")
    for side in ("width", "height"):
        v = parameters.get(side)
        if isinstance(v, int) and not isinstance(v, bool):
            if v % 8:
                raise invalid(
                    f"parameters.{side}", f"must be a multiple of 8 (got {v}; nearest: {max(64, round(v / 8) * 8)})"
                )
            if v > settings.max_side:
                raise invalid(f"parameters.{side}", f"must be at most {settings.max_side}")
    steps = parameters.get("steps")
    if isinstance(steps, int) and not isinstance(steps, bool) and steps > settings.max_steps:
        raise invalid("parameters.steps", f"must be at most {settings.max_steps}")
    if parameters.get("seed") is None:
        # Chosen now and kept in the record: the same request can be replayed to the same image.
        parameters["seed"] = random.randrange(2**32)


async def prepare(
    task_type: str, body: dict[str, Any], settings: ImagesSettings, *, body_bytes: int | None, form: bool
) -> dict[str, Any]:
    """The submit body checked and normalised for ``task_type`` (a seed or canonical name)."""
    max_body = int(settings.max_body_mb * 2**20)
    if body_bytes is not None and body_bytes > max_body:
        raise ImageTooLarge(
            "body", f"the request is larger than {settings.max_body_mb:g} MiB for image tasks", max_bytes=max_body
        )
    if form:
        body = await normalise_form(task_type, body, settings)
    params = dict(body)
    return await anyio.to_thread.run_sync(check_images, task_type, params, settings)
