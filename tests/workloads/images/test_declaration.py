"""The workload's declaration: importable without its extra, left out with the reason when the extra is missing."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest

from conveyor.errors import ConfigurationError

REPO = Path(__file__).resolve().parents[3]

BLOCKED = """
import importlib.abc, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {"cv2", "dlib", "skimage", "face_recognition_models", "PIL", "numpy"}:
            raise ImportError(f"blocked: {name}")
        return None
sys.meta_path.insert(0, Block())
import conveyor.workloads.images as images
assert images.workload.name == "images"
assert "cv2" not in sys.modules and "numpy" not in sys.modules
print("ok")
"""


def test_the_declaration_imports_without_opencv_numpy_or_dlib() -> None:
    """``conveyor.workloads.images`` imports with cv2, numpy, PIL, skimage and dlib made unimportable."""
    out = subprocess.run([sys.executable, "-c", BLOCKED], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


def test_without_its_extra_the_workload_is_left_out_with_the_install_line(monkeypatch: pytest.MonkeyPatch) -> None:
    """By default it is skipped, saying ``pip install 'conveyor[images]'``; asked for by name, it is a loud error."""
    import conveyor.workloads.images as images
    from conveyor.workload import load_workloads

    monkeypatch.delenv("CONVEYOR_WORKLOADS", raising=False)
    assert "images" in load_workloads(None, store_kind="redis").names()  # no SQL needed
    lacking = dataclasses.replace(images.workload, requires=("a_module_nobody_installed",))
    monkeypatch.setattr(images, "workload", lacking)
    skipped = load_workloads(None, store_kind="redis")
    assert "images" not in skipped.names()
    assert "pip install 'conveyor[images]'" in skipped.skipped["images"]
    with pytest.raises(ConfigurationError, match=r"conveyor\[images\]"):
        load_workloads(["system", "images"], store_kind="redis")
