"""Seed 004's five image tasks: generation, face swap, background removal, object removal, style transfer.

Each task decodes its images (10 %), runs its steps (reported as they pass,
with a cancel check between each), encodes a PNG (95 %) and returns seed
004's result: ``{image_data, metadata: {width, height, method or generator,
timings, ...}}`` (``prompt_used`` too for a generation). Results are kept
``result_ttl`` = 3600 s, as the seed's Redis results expire after an hour.

The heavy types (every one but object removal) go to the ``gpu`` queue when
``CONVEYOR_IMAGES_GPU_WORKERS=true`` (a ``conveyor worker -Q gpu`` serves
them) and to ``cpu`` otherwise; the submit route applies the serving app's
settings, and ``.delay()`` from Python those of the environment.
"""

from __future__ import annotations

import time
from typing import Any

from conveyor.context import TaskContext
from conveyor.registry import task
from conveyor.workloads.images import codec
from conveyor.workloads.images.config import ImagesSettings
from conveyor.workloads.images.params import (
    BackgroundRemoval,
    FaceSwap,
    ImageGeneration,
    ObjectRemoval,
    StyleTransfer,
)
from conveyor.workloads.images.steps import Step

__all__ = [
    "GPU_TYPES",
    "RESULT_TTL",
    "background_removal",
    "face_swap",
    "image_generation",
    "object_removal",
    "queue_for",
    "style_transfer",
]

RESULT_TTL = 3600.0
#: seed names of the types that run on the GPU queue when GPU workers are configured
GPU_TYPES = frozenset({"image_generation", "face_swap", "background_removal", "style_transfer"})


def queue_for(seed_name: str, settings: ImagesSettings) -> str:
    if seed_name in GPU_TYPES and settings.gpu_workers:
        return settings.gpu_queue
    return settings.cpu_queue


def settings_of(ctx: TaskContext) -> ImagesSettings:
    s = ctx.resources.workload_settings("images")
    assert isinstance(s, ImagesSettings)
    return s


def _stepper(ctx: TaskContext) -> Step:
    def step(percent: float, message: str) -> None:
        ctx.raise_if_cancelled()
        ctx.progress(percent, message)

    return step


def _load(ctx: TaskContext, field: str, value: str, settings: ImagesSettings) -> codec.DecodedImage:
    data = codec.decode_base64(field, value, max_bytes=int(settings.max_image_mb * 2**20))
    return codec.decode_image(field, data, max_pixels=settings.max_pixels)


def _result(pixels: Any, metadata: dict[str, Any], started: float, **extra: Any) -> dict[str, Any]:
    t = time.perf_counter()
    image_data = codec.encode_png(pixels)
    metadata.setdefault("timings", {})["encode"] = round(time.perf_counter() - t, 4)
    metadata["timings"]["total"] = round(time.perf_counter() - started, 4)
    return {
        "image_data": image_data,
        **extra,
        "metadata": {"width": int(pixels.shape[1]), "height": int(pixels.shape[0]), "format": "PNG", **metadata},
    }


_OPTIONS: dict[str, Any] = {"result_ttl": RESULT_TTL, "time_limit": 900, "soft_time_limit": 840}
_ENV = ImagesSettings()


@task(
    "images.image_generation",
    aliases=("image_generation",),
    params=ImageGeneration,
    queue=queue_for("image_generation", _ENV),
    heavy=True,
    **_OPTIONS,
)
def image_generation(ctx: TaskContext, prompt: str, parameters: dict[str, Any]) -> dict[str, Any]:
    """Text to image: the configured generator (procedural by default, no model) from prompt and parameters."""
    from conveyor.workloads.images.generate import make_generator

    started = time.perf_counter()
    settings = settings_of(ctx)
    step = _stepper(ctx)
    step(5, "Loading the generator")
    generator = make_generator(settings.generator, settings.diffusers_model_dir)
    p = dict(parameters)
    known = {"width", "height", "seed", "steps", "guidance_scale", "negative_prompt"}
    options = {k: p[k] for k in ("guidance_scale", "negative_prompt") if p.get(k) is not None}
    ignored = sorted(set(p) - known)
    seed = int(p.get("seed") or 0)
    step(10, "Generating image")
    pixels, meta = generator.generate(
        prompt, width=p["width"], height=p["height"], seed=seed, steps=p["steps"], options=options, step=step
    )
    step(95, "Encoding image")
    meta.update(seed=seed, steps=p["steps"], ignored_parameters=ignored)
    return _result(pixels, meta, started, prompt_used=prompt)


@task(
    "images.face_swap",
    aliases=("face_swap",),
    params=FaceSwap,
    queue=queue_for("face_swap", _ENV),
    heavy=True,
    **_OPTIONS,
)
def face_swap(ctx: TaskContext, source_image: str, target_image: str, parameters: dict[str, Any]) -> dict[str, Any]:
    """The face of source_image on the face of target_image (dlib landmarks, warp, Poisson blend)."""
    from conveyor.workloads.images.faces import swap_faces

    started = time.perf_counter()
    settings = settings_of(ctx)
    step = _stepper(ctx)
    source = _load(ctx, "source_image", source_image, settings)
    target = _load(ctx, "target_image", target_image, settings)
    step(10, "Finding faces")
    out, meta = swap_faces(source.rgb, target.rgb, step=step)
    step(95, "Encoding image")
    return _result(out, meta, started)


@task(
    "images.background_removal",
    aliases=("background_removal",),
    params=BackgroundRemoval,
    queue=queue_for("background_removal", _ENV),
    heavy=True,
    **_OPTIONS,
)
def background_removal(ctx: TaskContext, image: str, parameters: dict[str, Any]) -> dict[str, Any]:
    """The subject of image on a transparent background: an RGBA PNG whose alpha is the mask."""
    import numpy as np

    from conveyor.workloads.images.background import METHOD, remove_background

    started = time.perf_counter()
    settings = settings_of(ctx)
    step = _stepper(ctx)
    img = _load(ctx, "image", image, settings)
    step(10, "Image decoded")
    alpha, meta = remove_background(
        img.rgb,
        work_side=parameters.get("work_side") or settings.segmentation_side,
        iterations=int(parameters.get("iterations", 5)),
        step=step,
    )
    if img.alpha is not None:
        alpha = np.minimum(alpha, img.alpha)  # already transparent stays transparent
    rgba = np.dstack([img.rgb, alpha])
    step(95, "Encoding image")
    meta["method"] = METHOD
    return _result(rgba, meta, started, mask_data=codec.encode_png(alpha))


@task(
    "images.object_removal",
    aliases=("object_removal",),
    params=ObjectRemoval,
    queue=queue_for("object_removal", _ENV),
    heavy=False,
    **_OPTIONS,
)
def object_removal(
    ctx: TaskContext, image: str, mask: str | None, box: dict[str, int] | None, parameters: dict[str, Any]
) -> dict[str, Any]:
    """The region under mask (or inside box) of image, filled from its surroundings."""
    import numpy as np

    from conveyor.workloads.images.errors import ImageInputError
    from conveyor.workloads.images.inpaint import box_mask, remove_object

    started = time.perf_counter()
    settings = settings_of(ctx)
    step = _stepper(ctx)
    img = _load(ctx, "image", image, settings)
    h, w = img.height, img.width
    if mask is not None:
        m = _load(ctx, "mask", mask, settings)
        if (m.width, m.height) != (w, h):
            raise ImageInputError("mask", f"is {m.width} × {m.height}; it must be the image's size, {w} × {h}")
        # White (or opaque, for a mask drawn on a transparent layer) is the region.
        region = m.rgb.max(axis=2)
        if m.alpha is not None and m.alpha.min() < 255:
            region = np.maximum(region, m.alpha) if region.max() == 0 else np.minimum(region, m.alpha)
    else:
        assert box is not None
        x, y, bw, bh = box["x"], box["y"], box["width"], box["height"]
        if x + bw > w or y + bh > h:
            raise ImageInputError("box", f"({x}, {y}, {bw} × {bh}) is not inside the image ({w} × {h})")
        region = box_mask(h, w, (x, y, bw, bh))
    step(10, "Image decoded")
    out, meta = remove_object(
        img.rgb, region, method=parameters.get("method", "telea"), dilate=int(parameters.get("dilate", 3)), step=step
    )
    step(95, "Encoding image")
    return _result(out, meta, started)


@task(
    "images.style_transfer",
    aliases=("style_transfer",),
    params=StyleTransfer,
    queue=queue_for("style_transfer", _ENV),
    heavy=True,
    **_OPTIONS,
)
def style_transfer(
    ctx: TaskContext, image: str, style: str | None, style_image: str | None, parameters: dict[str, Any]
) -> dict[str, Any]:
    """image in a named style (pencil, sketch, oil, watercolor, cartoon) or in the colours of style_image."""
    from conveyor.workloads.images.style import apply_style, transfer_style

    started = time.perf_counter()
    settings = settings_of(ctx)
    step = _stepper(ctx)
    img = _load(ctx, "image", image, settings)
    strength = float(parameters.get("strength", 1.0))
    if style_image is not None:
        ref = _load(ctx, "style_image", style_image, settings)
        step(10, "Images decoded")
        out, meta = transfer_style(
            img.rgb, ref.rgb, strength=strength, texture=float(parameters.get("texture", 0.5)), step=step
        )
    else:
        assert style is not None
        step(10, "Image decoded")
        out, meta = apply_style(img.rgb, style, strength=strength, step=step)
        meta["style"] = style
    step(95, "Encoding image")
    return _result(out, meta, started)
