"""The params of each image task type: seed 004's field names, checked as its serializers check them.

These models check shapes (types, ranges, which fields a type needs, which
go together). What needs the pixels (is it an image, the mask's size, the
box inside the image) is checked by ``submit.prepare`` at submit time, with
the workload's limits, and again by the task before it runs.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from conveyor.workloads.images.style import STYLES

__all__ = [
    "BackgroundRemoval",
    "BackgroundRemovalParameters",
    "Box",
    "FaceSwap",
    "GenerationParameters",
    "ImageGeneration",
    "ObjectRemoval",
    "ObjectRemovalParameters",
    "StyleTransfer",
    "StyleTransferParameters",
]

#: a base64 image (with or without a ``data:`` prefix); decoded and checked at submit
ImageField = Field(min_length=1, description="the image as base64, with or without a data: prefix")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class GenerationParameters(BaseModel):
    """``parameters`` of ``image_generation``; unknown keys are kept and reported as ignored."""

    model_config = ConfigDict(extra="allow")

    width: int = Field(default=512, ge=64, le=4096, description="pixels, a multiple of 8")
    height: int = Field(default=512, ge=64, le=4096, description="pixels, a multiple of 8")
    #: chosen at submit when not given, so a record says how to make the same image again
    seed: int | None = Field(default=None, ge=0, le=2**32 - 1)
    steps: int = Field(default=30, ge=1, le=1000)
    guidance_scale: float = Field(default=7.5, ge=0, le=50)
    negative_prompt: str | None = Field(default=None, max_length=2000)

    @field_validator("width", "height")
    @classmethod
    def _multiple_of_8(cls, v: int) -> int:
        if v % 8:
            raise ValueError(f"must be a multiple of 8 (got {v}; nearest: {max(64, round(v / 8) * 8)})")
        return v


class ImageGeneration(_Strict):
    prompt: str = Field(min_length=1, max_length=2000)
    parameters: GenerationParameters = Field(default_factory=GenerationParameters)

    @field_validator("prompt")
    @classmethod
    def _not_blank(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("must not be blank")
        return v


class FaceSwap(_Strict):
    source_image: str = ImageField
    target_image: str = ImageField
    parameters: dict[str, Any] = Field(default_factory=dict)


class BackgroundRemovalParameters(_Strict):
    #: longest side of the segmentation pass (the mask is scaled back to the photo's size)
    work_side: int | None = Field(default=None, ge=64, le=4096)
    iterations: int = Field(default=5, ge=1, le=20)


class BackgroundRemoval(_Strict):
    image: str = ImageField
    parameters: BackgroundRemovalParameters = Field(default_factory=BackgroundRemovalParameters)


class Box(_Strict):
    """The region to remove: pixels from the top-left corner."""

    x: int = Field(ge=0)
    y: int = Field(ge=0)
    width: int = Field(gt=0)
    height: int = Field(gt=0)

    @model_validator(mode="before")
    @classmethod
    def _from_list(cls, value: Any) -> Any:
        # [x, y, width, height] as clients often send it
        if isinstance(value, list | tuple):
            if len(value) != 4:
                raise ValueError("must be [x, y, width, height] or {x, y, width, height}")
            return dict(zip(("x", "y", "width", "height"), value, strict=True))
        return value


class ObjectRemovalParameters(_Strict):
    method: Literal["telea", "ns"] = "telea"
    #: pixels the mask is grown by (object edges spill past a tight mask)
    dilate: int = Field(default=3, ge=0, le=50)


class ObjectRemoval(_Strict):
    image: str = ImageField
    mask: str | None = Field(default=None, min_length=1, description="white where the object is, same size as image")
    box: Box | None = None
    parameters: ObjectRemovalParameters = Field(default_factory=ObjectRemovalParameters)

    @model_validator(mode="after")
    def _mask_or_box(self) -> ObjectRemoval:
        if self.mask is None and self.box is None:
            raise ValueError("mask or box is required: the region to remove")
        if self.mask is not None and self.box is not None:
            raise ValueError("send mask or box, not both")
        return self


class StyleTransferParameters(_Strict):
    #: 1: the full style; 0: the photo unchanged
    strength: float = Field(default=1.0, ge=0, le=1)
    #: style_image only: how much of its fine texture is laid over the photo
    texture: float = Field(default=0.5, ge=0, le=2)


class StyleTransfer(_Strict):
    image: str = ImageField
    style: str | None = Field(default=None, description=f"one of {', '.join(STYLES)}")
    style_image: str | None = Field(default=None, min_length=1)
    parameters: StyleTransferParameters = Field(default_factory=StyleTransferParameters)

    @field_validator("style")
    @classmethod
    def _known_style(cls, v: str | None) -> str | None:
        if v is not None and v.lower() not in STYLES:
            raise ValueError(f"unknown style {v!r}; known styles: {', '.join(STYLES)}")
        return None if v is None else v.lower()

    @model_validator(mode="after")
    def _style_or_image(self) -> StyleTransfer:
        if self.style is None and self.style_image is None:
            raise ValueError(f"style or style_image is required (styles: {', '.join(STYLES)})")
        if self.style is not None and self.style_image is not None:
            raise ValueError("send style or style_image, not both")
        return self
