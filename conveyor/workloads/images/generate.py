"""Image generation behind one interface; the default backend is procedural, not a model.

No text-to-image model can be installed or downloaded here, so the default
``ProceduralGenerator`` paints an image from the prompt without any learned
model: the prompt picks a palette (colour words and scene words such as
"sunset", "ocean", "forest" choose it; other prompts get one derived from
their hash), and fractal noise seeded by ``(prompt, seed)`` shapes a sky
gradient, layered terrain and texture. The same prompt and seed give the
same pixels; results say ``metadata.generator = "procedural"``.

``DiffusersGenerator`` runs a local diffusers pipeline folder (nothing is
downloaded: ``local_files_only``) when ``CONVEYOR_IMAGES_GENERATOR=diffusers``
and the ``images-diffusers`` extra is installed.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from typing import Any, Protocol

import numpy as np
from numpy.typing import NDArray

from conveyor.errors import ConfigurationError, MissingExtra
from conveyor.workloads.images.steps import Step, no_steps

__all__ = ["DiffusersGenerator", "Generator", "ProceduralGenerator", "make_generator"]

RGB = NDArray[np.uint8]


class Generator(Protocol):
    """A text-to-image backend."""

    name: str

    def generate(
        self, prompt: str, *, width: int, height: int, seed: int, steps: int, options: dict[str, Any], step: Step
    ) -> tuple[RGB, dict[str, Any]]:
        """Pixels (height × width × 3) and metadata of what was done."""
        ...


#: colour words and scene words → (sky top, sky bottom, land near, land far) as RGB
_PALETTES: dict[str, tuple[tuple[int, int, int], ...]] = {
    "sunset": ((58, 28, 92), (250, 140, 60), (40, 22, 40), (120, 60, 70)),
    "sunrise": ((90, 120, 200), (255, 190, 120), (50, 60, 50), (130, 110, 100)),
    "ocean": ((40, 110, 190), (170, 215, 240), (10, 60, 110), (30, 100, 150)),
    "sea": ((40, 110, 190), (170, 215, 240), (10, 60, 110), (30, 100, 150)),
    "forest": ((90, 140, 180), (200, 225, 210), (20, 60, 25), (60, 110, 60)),
    "desert": ((80, 150, 220), (245, 225, 180), (190, 140, 80), (220, 180, 120)),
    "night": ((5, 8, 30), (30, 40, 90), (5, 5, 15), (20, 25, 50)),
    "snow": ((150, 180, 220), (235, 240, 250), (220, 225, 235), (180, 190, 210)),
    "mountain": ((70, 120, 200), (200, 220, 240), (60, 70, 80), (120, 130, 150)),
    "red": ((120, 10, 20), (240, 90, 80), (70, 10, 10), (160, 40, 40)),
    "blue": ((10, 30, 120), (120, 170, 240), (10, 20, 70), (50, 80, 160)),
    "green": ((30, 90, 40), (170, 220, 150), (10, 50, 15), (60, 130, 60)),
    "purple": ((50, 10, 80), (200, 140, 230), (30, 10, 50), (110, 60, 150)),
    "gold": ((120, 80, 10), (250, 215, 120), (90, 60, 10), (180, 140, 40)),
}


def _seed_of(prompt: str, seed: int) -> int:
    digest = hashlib.sha256(f"{seed}\x00{prompt}".encode()).digest()
    return int.from_bytes(digest[:8], "big")


def _palette(prompt: str, rng: np.random.Generator) -> tuple[NDArray[np.float32], list[str]]:
    words = [w.strip(".,!?;:'\"").lower() for w in prompt.split()]
    chosen = [w for w in words if w in _PALETTES]
    if chosen:
        cols = np.mean([np.array(_PALETTES[w], np.float32) for w in chosen], axis=0)
    else:
        # No known word: a palette from the prompt's hash, two related hues.
        h = int.from_bytes(hashlib.sha256(prompt.lower().encode()).digest()[:2], "big") / 65535
        cols = np.array(
            [_hsv(h, 0.6, 0.35), _hsv(h + 0.08, 0.45, 0.95), _hsv(h + 0.5, 0.5, 0.25), _hsv(h + 0.45, 0.4, 0.6)]
        )
    cols = cols.astype(np.float32) + rng.normal(0, 6, cols.shape).astype(np.float32)
    return np.clip(cols, 0, 255).astype(np.float32), chosen


def _hsv(h: float, s: float, v: float) -> tuple[float, float, float]:
    import colorsys

    r, g, b = colorsys.hsv_to_rgb(h % 1.0, s, v)
    return (r * 255, g * 255, b * 255)


def _value_noise(rng: np.random.Generator, width: int, height: int, cells: int) -> NDArray[np.float32]:
    """Smooth noise in 0..1: a random grid of ``cells`` across, bicubically upsampled."""
    import cv2

    gw = max(2, cells)
    gh = max(2, round(cells * height / width))
    grid = rng.random((gh + 1, gw + 1)).astype(np.float32)
    return np.asarray(cv2.resize(grid, (width, height), interpolation=cv2.INTER_CUBIC), dtype=np.float32)


class ProceduralGenerator:
    """Deterministic procedural landscapes from ``(prompt, seed)``: no model, and labelled so."""

    name = "procedural"

    def generate(
        self,
        prompt: str,
        *,
        width: int,
        height: int,
        seed: int,
        steps: int,
        options: dict[str, Any],
        step: Step = no_steps,
    ) -> tuple[RGB, dict[str, Any]]:
        t0 = time.perf_counter()
        rng = np.random.default_rng(_seed_of(prompt, seed))
        cols, words = _palette(prompt, rng)
        y = np.linspace(0, 1, height, dtype=np.float32)[:, None, None]
        sky = cols[0] * (1 - y) + cols[1] * y
        img = np.broadcast_to(sky, (height, width, 3)).astype(np.float32).copy()
        # Each step adds one layer (clouds, then ridges far to near, then fine texture).
        layers = max(1, steps)
        rows = np.arange(height, dtype=np.float32)[:, None]
        for i in range(layers):
            depth = (i + 1) / layers
            if i == 0:
                clouds = _value_noise(rng, width, height, 6) * 0.6 + _value_noise(rng, width, height, 18) * 0.4
                img += (clouds[..., None] - 0.5) * 40 * (1 - y)
            else:
                profile = (
                    _value_noise(rng, width, 1, 3 + 2 * i)[0] * 0.6 + _value_noise(rng, width, 1, 9 + 4 * i)[0] * 0.4
                )
                base = 0.35 + 0.5 * depth
                ridge = (base - 0.25 * profile) * height
                land = (rows >= ridge[None, :]).astype(np.float32)[..., None]
                colour = cols[3] * (1 - depth) + cols[2] * depth
                shade = 1 - 0.25 * (rows - ridge[None, :]).clip(0, None) / height
                img = img * (1 - land) + (colour * shade[..., None]) * land
            step(10 + 80 * (i + 1) / layers, f"Step {i + 1}/{layers}")
        grain = _value_noise(rng, width, height, max(8, width // 4))
        img += (grain[..., None] - 0.5) * 10
        pixels = np.clip(img + 0.5, 0, 255).astype(np.uint8)
        return pixels, {
            "generator": self.name,
            "model": None,
            "note": "procedural image from the prompt's words and hash; no text-to-image model is used",
            "palette_words": words,
            "timings": {"generate": round(time.perf_counter() - t0, 4)},
        }


class DiffusersGenerator:
    """A local diffusers pipeline folder, loaded once per process; nothing is downloaded."""

    name = "diffusers"

    def __init__(self, model_dir: str) -> None:
        self.model_dir = model_dir
        self._pipe: Any = None

    def _pipeline(self) -> Any:
        if self._pipe is None:
            try:
                import diffusers
                import torch
            except ImportError as e:
                raise MissingExtra(e.name or "diffusers", "images-diffusers") from None
            # typed as Any: diffusers is untyped, and absent wherever its extra is not installed
            loader: Any = diffusers.DiffusionPipeline
            pipe = loader.from_pretrained(self.model_dir, local_files_only=True)
            pipe.to("cuda" if torch.cuda.is_available() else "cpu")
            pipe.set_progress_bar_config(disable=True)
            self._pipe = pipe
        return self._pipe

    def generate(
        self,
        prompt: str,
        *,
        width: int,
        height: int,
        seed: int,
        steps: int,
        options: dict[str, Any],
        step: Step = no_steps,
    ) -> tuple[RGB, dict[str, Any]]:
        t0 = time.perf_counter()
        pipe = self._pipeline()  # first: without the extra it says what to install
        import torch

        generator = torch.Generator(device="cpu").manual_seed(seed)

        def on_step(p: Any, i: int, t: Any, kwargs: dict[str, Any]) -> dict[str, Any]:
            step(10 + 80 * (i + 1) / steps, f"Denoising step {i + 1}/{steps}")
            return kwargs

        out = pipe(
            prompt,
            width=width,
            height=height,
            num_inference_steps=steps,
            guidance_scale=float(options.get("guidance_scale", 7.5)),
            negative_prompt=options.get("negative_prompt"),
            generator=generator,
            output_type="np",
            callback_on_step_end=on_step,
        )
        pixels = np.clip(np.asarray(out.images[0]) * 255 + 0.5, 0, 255).astype(np.uint8)
        return pixels, {
            "generator": self.name,
            "model": self.model_dir,
            "timings": {"generate": round(time.perf_counter() - t0, 4)},
        }


_cache: dict[tuple[str, str | None], Generator] = {}


def make_generator(name: str, model_dir: str | None) -> Generator:
    """The configured backend (one per process: a diffusers pipeline is loaded once)."""
    key = (name, model_dir)
    if key not in _cache:
        factories: dict[str, Callable[[], Generator]] = {"procedural": ProceduralGenerator}
        if name == "diffusers":
            if not model_dir:
                raise ConfigurationError(
                    "CONVEYOR_IMAGES_GENERATOR=diffusers needs CONVEYOR_IMAGES_DIFFUSERS_MODEL_DIR"
                )
            factories["diffusers"] = lambda: DiffusersGenerator(model_dir)
        if name not in factories:
            raise ConfigurationError(f"unknown image generator {name!r}; known: procedural, diffusers")
        _cache[key] = factories[name]()
    return _cache[key]
