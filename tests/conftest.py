"""Shared fixtures: where the shared photos are, and skips with a stated reason when they or weights are absent."""

from __future__ import annotations

import os
from pathlib import Path

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
