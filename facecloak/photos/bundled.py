"""Photos that installed packages carry: skimage's astronaut and insightface's samples (a group of six, a portrait).

Used by the demo and by the bundled impostor bank (`facecloak.masking.impostors`). The files are located through the
packages' import specs and decoded with `facecloak.photos.io`, without importing either package: importing insightface
pulls in albumentations and onnxruntime (seconds), and skimage's reader scans its I/O plugins.

This module sits low in the import graph (it imports only `facecloak.photos.io`) so that anything may use it.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

from facecloak.photos.io import read_image

# (package, file inside the package, name): the order is the order of `bundled_photos()`.
BUNDLED_FILES: tuple[tuple[str, str, str], ...] = (
    ("skimage", "data/astronaut.png", "astronaut"),
    ("insightface", "data/images/t1.jpg", "t1"),
    ("insightface", "data/images/Tom_Hanks_54745.png", "Tom_Hanks_54745"),
)


def _package_dir(package: str) -> Path | None:
    """The installed package's folder, found without importing the package (None when it is not installed)."""
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def bundled_photo_paths() -> dict[str, Path]:
    """Name -> path of each bundled photo that is installed (missing packages or files are left out)."""
    out: dict[str, Path] = {}
    for package, relative, name in BUNDLED_FILES:
        folder = _package_dir(package)
        if folder is not None and (folder / relative).is_file():
            out[name] = folder / relative
    return out


def bundled_photos() -> dict[str, np.ndarray]:
    """Name -> RGB uint8 (H, W, 3) photo, from installed packages only (no shared data, nothing downloaded)."""
    return {name: read_image(path).rgb for name, path in bundled_photo_paths().items()}
