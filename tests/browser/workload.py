"""A test-only workload (``CONVEYOR_WORKLOADS=system,tests.browser.workload``).

Its results carry an image, audio and a file link, and its params use every
kind of field the generated form must handle.
"""

from __future__ import annotations

import base64
import io
import math
import struct
import wave
import zlib
from enum import StrEnum
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from conveyor.context import TaskContext
from conveyor.registry import task


def tiny_png(size: int = 24) -> bytes:
    """A PNG square with a diagonal, written by hand (no imaging library)."""
    rows = b""
    for y in range(size):
        row = b"\x00"
        for x in range(size):
            row += b"\xd0\x30\x30" if abs(x - y) < 3 else b"\x30\x70\xd0"
        rows += row

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", size, size, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


def tiny_wav(seconds: float = 0.3, rate: int = 8000) -> bytes:
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        frames = b"".join(
            struct.pack("<h", int(8000 * math.sin(2 * math.pi * 440 * i / rate))) for i in range(int(seconds * rate))
        )
        w.writeframes(frames)
    return buffer.getvalue()


@task("testing.media", queue="default")
def media(ctx: TaskContext) -> dict[str, object]:
    """Return an image (data URI), audio (base64 with a content type) and a link to a file."""
    return {
        "image": "data:image/png;base64," + base64.b64encode(tiny_png()).decode(),
        "audio": {"content_type": "audio/wav", "data": base64.b64encode(tiny_wav()).decode(), "filename": "tone.wav"},
        "report_url": "/api/v1/task-types",
        "width": 24,
    }


class Colour(StrEnum):
    red = "red"
    green = "green"


class FormParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    label: str = Field(min_length=2, max_length=20, description="a name for the run")
    mode: Literal["fast", "careful"] = "fast"
    tags: list[str] = Field(default_factory=list, max_length=5)
    limit: int | None = Field(default=None, ge=1, le=10)
    ratio: float = Field(default=0.5, gt=0, le=1)
    verbose: bool = False
    strict: bool | None = None
    #: an Enum class: its schema is a $ref to $defs, not an inline enum
    colour: Colour = Colour.red


@task("testing.form", queue="default", params=FormParams)
def form(ctx: TaskContext, **params: object) -> dict[str, object]:
    """Echo the params: what the form sent is what the task got."""
    return {"received": params}
