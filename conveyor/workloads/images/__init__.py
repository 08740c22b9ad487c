"""Images workload: seed 004's backendAI image tasks on CPU/GPU queues, Redis-only, results that expire.

Five task types (``image_generation``, ``face_swap``, ``background_removal``,
``object_removal``, ``style_transfer``) submitted on ``POST
/api/v1/tasks/submit/`` with the seed's bodies. Processing is real and
offline: OpenCV, scikit-image and dlib's landmark model shipped inside
``face_recognition_models``; generation is procedural (no model), and says so.

This module imports without the extra (``pip install 'conveyor[images]'``):
OpenCV and dlib are imported by the modules listed below when the workload loads.
"""

from __future__ import annotations

from pathlib import Path

from conveyor.workload import Workload
from conveyor.workloads.images.config import ImagesSettings

__all__ = ["workload"]

workload = Workload(
    name="images",
    description="Image generation, face swap, background and object removal, style transfer",
    extra="images",
    requires=("cv2", "skimage", "dlib", "face_recognition_models"),
    needs_sql=False,
    modules=("conveyor.workloads.images.tasks",),
    router="conveyor.workloads.images.routes:router",
    periodic_jobs=(),
    settings=ImagesSettings,
    # Each job goes to the CPU or the GPU queue by its kind (tasks.py), as seed 004's routes chose.
    queues=lambda settings: (settings.cpu_queue, settings.gpu_queue),
    migrations=None,
    dashboard=Path(__file__).with_name("dashboard"),
)
