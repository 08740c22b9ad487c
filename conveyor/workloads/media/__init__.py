"""Media workload: seed 000's corrections of audio, images and video, with correction task records.

Loaded by default when its extra is installed (``pip install 'conveyor[media]'``,
plus ffmpeg for video, m4a and mp3 probing) and the store is SQL; name it in
``CONVEYOR_WORKLOADS`` to require it. Nothing heavy is imported here: the
declaration names its parts, and they are imported only when the workload loads.
"""

from __future__ import annotations

from pathlib import Path

from conveyor.workload import Workload
from conveyor.workloads.media.config import MediaSettings

__all__ = ["workload"]

_here = Path(__file__).resolve().parent

workload = Workload(
    name="media",
    description="Audio, image and video corrections: loudness, noise, white balance, contrast, web-safe video",
    extra="media",
    requires=("numpy", "scipy", "soundfile", "pyloudnorm", "soxr", "PIL", "cv2"),
    needs_sql=True,
    modules=("conveyor.workloads.media.tasks",),
    router="conveyor.workloads.media.routes:router",
    settings=MediaSettings,
    migrations=_here / "migrations",
    dashboard=_here / "dashboard",
)
