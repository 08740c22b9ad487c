"""The images workload's errors, under Conveyor's one hierarchy."""

from __future__ import annotations

from conveyor.errors import InvalidParams, PayloadTooLarge

__all__ = ["ImageInputError", "ImageTooLarge", "NoFaceFound", "invalid"]


class ImageTooLarge(PayloadTooLarge):
    """An image over the byte or pixel limit (413), naming the field."""

    code = "image_too_large"

    def __init__(self, field: str, message: str, **details: object) -> None:
        super().__init__(f"{field}: {message}", details={"field": field, **details})


class ImageInputError(InvalidParams):
    """An image field that cannot be read (truncated base64, not an image, wrong size): 422 naming it."""

    code = "invalid_image"

    def __init__(self, field: str, message: str) -> None:
        super().__init__(
            f"Invalid request: {field}: {message}", details=[{"field": field, "message": message, "type": "image"}]
        )


class NoFaceFound(ValueError):
    """Raised in a face swap task: the task ends FAILURE with this message."""


def invalid(field: str, message: str) -> InvalidParams:
    """A 422 naming ``field``, its message in the text too (``for_field`` keeps it in details only)."""
    return InvalidParams(
        f"Invalid request: {field}: {message}", details=[{"field": field, "message": message, "type": "value"}]
    )
