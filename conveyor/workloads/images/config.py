"""Settings of the images workload (env prefix ``CONVEYOR_IMAGES_``)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["ImagesSettings"]


class ImagesSettings(BaseSettings):
    """Limits, queues and the image generator of the image tasks."""

    model_config = SettingsConfigDict(env_prefix="CONVEYOR_IMAGES_", extra="ignore")

    #: largest decoded file per image field (base64 or multipart), in MiB
    max_image_mb: float = Field(default=10.0, gt=0)
    #: largest image in pixels (width × height): the decompression-bomb guard
    max_pixels: int = Field(default=40_000_000, ge=64 * 64)
    #: largest submit body for an image task, in MiB (base64 adds a third to each image)
    max_body_mb: float = Field(default=40.0, gt=0)
    #: image_generation: largest width or height, in pixels (a multiple of 8)
    max_side: int = Field(default=2048, ge=64)
    #: image_generation: fewest and most steps
    max_steps: int = Field(default=150, ge=1)
    #: where the heavy types (generation, face swap, style transfer) run: ``gpu`` when GPU
    #: workers serve that queue (``conveyor worker -Q gpu``), else the ``cpu`` queue
    gpu_workers: bool = False
    cpu_queue: str = "cpu"
    gpu_queue: str = "gpu"
    #: the text-to-image backend: ``procedural`` (always here, no model) or ``diffusers``
    #: (a local diffusers pipeline folder, with ``pip install 'conveyor[images-diffusers]'``)
    generator: Literal["procedural", "diffusers"] = "procedural"
    #: the diffusers pipeline folder (``save_pretrained`` layout); nothing is downloaded
    diffusers_model_dir: str | None = None
    #: images decoded by a worker are at most this many pixels on their longest side
    #: for the segmentation pass of background removal (the mask is upsampled after)
    segmentation_side: int = Field(default=640, ge=64, le=4096)
