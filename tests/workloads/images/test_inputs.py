"""Image inputs and per-type rules, checked before a task is queued (``submit.prepare``)."""

from __future__ import annotations

import anyio
import numpy as np
import pytest

pytest.importorskip("cv2")

from conveyor.errors import InvalidParams, PayloadTooLarge
from conveyor.workloads.images import codec
from conveyor.workloads.images.config import ImagesSettings
from conveyor.workloads.images.submit import prepare
from tests.workloads.images import samples

SETTINGS = ImagesSettings()
SMALL = samples.png_bytes(np.full((48, 64, 3), 120, np.uint8))


def _prepare(task_type: str, body: dict[str, object], settings: ImagesSettings = SETTINGS) -> dict[str, object]:
    return anyio.run(lambda: prepare(task_type, body, settings, body_bytes=None, form=False))


def _field(exc: InvalidParams) -> str:
    return str(exc.details[0]["field"])


def test_a_data_url_prefix_is_accepted_and_stripped() -> None:
    """``data:image/png;base64,...`` and bare base64 give the same stored field."""
    bare = samples.b64(SMALL)
    out = _prepare("background_removal", {"image": "data:image/png;base64," + bare})
    assert out["image"] == bare
    assert _prepare("background_removal", {"image": bare})["image"] == bare


def test_truncated_base64_names_the_field() -> None:
    """Base64 cut mid-way is a 422 naming ``image``, whether or not its length still divides by 4."""
    text = samples.b64(SMALL)
    for cut in (text[: len(text) // 2 + 1], text[: (len(text) // 8) * 4]):
        with pytest.raises(InvalidParams) as e:
            _prepare("background_removal", {"image": cut})
        assert _field(e.value) == "image"


def test_a_non_image_names_the_field() -> None:
    """A PDF sent as an image is a 422 naming the field and saying it is not an image."""
    with pytest.raises(InvalidParams, match="not an image") as e:
        _prepare("style_transfer", {"image": samples.b64(b"%PDF-1.4 not a picture" * 20), "style": "oil"})
    assert _field(e.value) == "image"


def test_characters_outside_base64_name_the_field() -> None:
    """``image: "hello!"`` is not base64."""
    with pytest.raises(InvalidParams, match="base64") as e:
        _prepare("background_removal", {"image": "hello!!!"})
    assert _field(e.value) == "image"


def test_a_decompression_bomb_is_refused_from_its_header() -> None:
    """A 20,000 × 20,000 PNG of 48 KB is a 413 naming the field; nothing is decoded."""
    bomb = samples.png_bomb()
    assert len(bomb) < 200_000
    with pytest.raises(PayloadTooLarge, match="pixels") as e:
        _prepare("background_removal", {"image": samples.b64(bomb)})
    assert e.value.details["field"] == "image"
    assert e.value.status_code == 413


def test_an_image_over_the_byte_limit_is_a_413_naming_the_field() -> None:
    """``max_image_mb`` caps each field's decoded bytes."""
    settings = ImagesSettings(max_image_mb=0.001)
    with pytest.raises(PayloadTooLarge) as e:
        _prepare(
            "face_swap",
            {"source_image": samples.b64(samples.png_bytes(samples.chelsea())), "target_image": "x"},
            settings,
        )
    assert e.value.details["field"] == "source_image"


def test_a_body_over_the_limit_is_a_413() -> None:
    """``max_body_mb`` caps the whole submit body."""
    settings = ImagesSettings(max_body_mb=1)
    with pytest.raises(PayloadTooLarge, match="larger than 1 MiB"):
        anyio.run(lambda: prepare("background_removal", {}, settings, body_bytes=2 * 2**20, form=False))


def test_a_truncated_png_is_refused_before_it_is_queued() -> None:
    """Valid base64 of a PNG cut short: a 422 saying it is truncated, naming the field."""
    photo = samples.png_bytes(samples.chelsea())
    with pytest.raises(InvalidParams, match="truncated") as e:
        _prepare("background_removal", {"image": samples.b64(photo[: len(photo) // 2])})
    assert _field(e.value) == "image"


def test_a_mask_of_the_wrong_size_names_mask() -> None:
    """object_removal: the mask must be the image's size."""
    mask = samples.png_bytes(np.zeros((10, 10, 3), np.uint8))
    with pytest.raises(InvalidParams, match="64 × 48") as e:
        _prepare("object_removal", {"image": samples.b64(SMALL), "mask": samples.b64(mask)})
    assert _field(e.value) == "mask"


def test_a_box_outside_the_image_names_box() -> None:
    """object_removal: the box must lie inside the image; a list or an object both work."""
    ok = _prepare("object_removal", {"image": samples.b64(SMALL), "box": [1, 2, 10, 10]})
    assert ok["box"] == [1, 2, 10, 10]
    for box in ([60, 0, 10, 10], {"x": 0, "y": 40, "width": 5, "height": 9}, [0, 0, "a", 1]):
        with pytest.raises(InvalidParams) as e:
            _prepare("object_removal", {"image": samples.b64(SMALL), "box": box})
        assert _field(e.value) == "box"


def test_object_removal_needs_a_mask_or_a_box() -> None:
    """Neither: 422 naming mask; both: 422 naming box."""
    with pytest.raises(InvalidParams, match="mask or box is required") as e:
        _prepare("object_removal", {"image": samples.b64(SMALL)})
    assert _field(e.value) == "mask"
    mask = samples.b64(SMALL)
    with pytest.raises(InvalidParams, match="not both"):
        _prepare("object_removal", {"image": mask, "mask": mask, "box": [0, 0, 1, 1]})


def test_generation_sizes_over_the_configured_limit_name_the_parameter() -> None:
    """``parameters.width`` above ``max_side``: a 422 naming it; a missing seed is chosen and kept."""
    with pytest.raises(InvalidParams) as e:
        _prepare("image_generation", {"prompt": "x", "parameters": {"width": 4096}}, ImagesSettings(max_side=1024))
    assert _field(e.value) == "parameters.width"
    out = _prepare("image_generation", {"prompt": "x", "parameters": {"width": 512}})
    assert isinstance(out["parameters"]["seed"], int)  # type: ignore[index]


def test_the_codec_round_trips_rgba_and_reads_jpeg() -> None:
    """encode_png keeps the alpha; a JPEG decodes to RGB of its size."""
    rgba = np.dstack([samples.chelsea(), np.full(samples.chelsea().shape[:2], 77, np.uint8)])
    img = samples.decode_png(codec.encode_png(rgba))
    assert img.mode == "RGBA"
    assert img.size == (451, 300)
    d = codec.decode_image("image", samples.jpeg_bytes(samples.coffee()), max_pixels=10**7)
    assert (d.width, d.height, d.format, d.alpha) == (600, 400, "JPEG", None)
