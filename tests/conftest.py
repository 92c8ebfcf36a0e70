"""Shared fixtures: where the shared photos are, and skips with a stated reason when they or weights are absent."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("FACECLOAK_SHARED", REPO.parent / "shared"))


@pytest.fixture(scope="session")
def shared_faces() -> Path:
    faces = SHARED / "faces"
    if not (faces / "deepface" / "manifest.csv").is_file():
        pytest.skip(f"shared photos not found at {faces} (set FACECLOAK_SHARED or place ../shared beside the repo)")
    return faces


@pytest.fixture(scope="session")
def deepface_dir(shared_faces: Path) -> Path:
    return shared_faces / "deepface"


@pytest.fixture(scope="session")
def lfw_dir(shared_faces: Path) -> Path:
    lfw = shared_faces / "lfw"
    if not (lfw / "pairs.txt").is_file():
        pytest.skip(f"LFW not found at {lfw}")
    return lfw


def require_pulled(*model_ids: str) -> None:
    """Skip (with the command to run) unless every named model's weights are in the cache."""
    from facecloak.models import get_spec
    from facecloak.models.pull import is_pulled

    missing = [m for m in model_ids if not is_pulled(get_spec(m))]
    if missing:
        pytest.skip(f"weights not pulled for {', '.join(missing)}; run `facecloak models pull`")


def require_dlib(purpose: str) -> tuple[Any, Any]:
    """(dlib, its model files) as facecloak finds them (`import_dlib`), or a skip saying what to install."""
    pytest.importorskip("dlib", reason="native dlib is not installed (pip install 'facecloak[dlib]')")
    from facecloak.errors import FacecloakError
    from facecloak.models.blackbox import import_dlib

    try:
        return import_dlib(purpose)
    except FacecloakError as exc:
        pytest.skip(str(exc))


def run_fresh(code: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """`code` in a fresh interpreter at the repository root (what it imports is then only its own doing)."""
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, env=env)
