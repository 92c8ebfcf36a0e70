"""`facecloak.verification.embedding_cache`: the one progress protocol and the atomic cache writes, with a fake
detector and recogniser (no weights)."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest
from PIL import Image

from facecloak.faces.face import Face
from facecloak.verification.embedding_cache import detect_photos, embed_main_faces


class OneFace:
    """Finds one face in the middle of any photo."""

    settings: ClassVar[dict[str, str]] = {"detector": "one-face"}

    def detect(self, rgb: np.ndarray) -> list[Face]:
        h, w = rgb.shape[:2]
        points = np.array([[0.35 * w, 0.4 * h], [0.65 * w, 0.4 * h], [0.5 * w, 0.55 * h],
                           [0.4 * w, 0.7 * h], [0.6 * w, 0.7 * h]], np.float32)  # fmt: skip
        return [Face(box=(0.0, 0.0, float(w), float(h)), score=0.99, landmarks=points)]


class MeanColour:
    """A 'recogniser' whose embedding is the crop's mean colour."""

    id = "mean-colour"
    template = "arcface112"

    def embed(self, crops: np.ndarray) -> np.ndarray:
        return crops.reshape(len(crops), -1, 3).mean(1)


def test_progress_gets_a_description_and_caches_are_written_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FACECLOAK_HOME", str(tmp_path / "home"))
    photos = []
    for i, colour in enumerate([(200, 10, 10), (10, 200, 10)]):
        photos.append(tmp_path / f"{i}.png")
        Image.fromarray(np.full((64, 64, 3), colour, np.uint8)).save(photos[-1])
    seen: list[str] = []

    def progress(items: Iterable, description: str = "", /) -> Iterable:
        seen.append(description)
        return items

    detected = detect_photos(photos, OneFace(), settings=OneFace.settings, progress=progress)
    emb = embed_main_faces(detected, MeanColour(), cache_tag="t", progress=progress)
    assert seen == ["detecting faces", "embedding with mean-colour"]
    np.testing.assert_allclose(emb, [[200, 10, 10], [10, 200, 10]], atol=1)
    cached = sorted((tmp_path / "home" / "embeddings" / "t").iterdir())
    assert [p.name for p in cached] == sorted(f"{d.sha256}.npy" for d in detected)  # no temp files left
    again = embed_main_faces(detected, MeanColour(), cache_tag="t")  # from the cache, no progress needed
    np.testing.assert_array_equal(again, emb)
