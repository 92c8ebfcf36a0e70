"""Helpers shared by the `facecloak protect` / transform / reliability tests (not a test module).

Fast settings everywhere: one small source model (mbf-arc), fill black, the weight-free `landmarks5` parser and
photos scaled down to a few hundred pixels, so a CLI run costs about a second per photo on a busy 2-core machine.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from facecloak.files import TEMP_SUFFIX

FAST = ("--models", "mbf-arc", "--fill", "black", "--budget", "1", "--parser", "landmarks5", "--no-verify")


def need_weights() -> None:
    """Skip unless the detector and mbf-arc are pulled (the fast settings need nothing else)."""
    from facecloak.errors import FacecloakError
    from facecloak.models import cached_model
    from facecloak.protection.protect import default_detector

    try:
        default_detector()
        cached_model("mbf-arc")
    except FacecloakError as exc:
        pytest.skip(f"weights not pulled ({exc}); run `facecloak models pull`")


def need_default_weights() -> None:
    """Skip unless the detector and every default source model are pulled (the real serve pipeline needs them)."""
    from facecloak.errors import FacecloakError
    from facecloak.models import cached_model
    from facecloak.protection.protect import DEFAULT_MODELS, default_detector

    try:
        default_detector()
        for m in DEFAULT_MODELS:
            cached_model(m)
    except FacecloakError as exc:
        pytest.skip(f"weights not pulled ({exc}); run `facecloak models pull`")


def astronaut(side: int = 256) -> np.ndarray:
    """skimage's astronaut portrait (installed with scikit-image, no shared data), uint8 RGB side x side."""
    from skimage import data

    return cv2.resize(data.astronaut(), (side, side), interpolation=cv2.INTER_AREA)


def astronaut_face(side: int = 120) -> np.ndarray:
    """A tight crop of the astronaut's face, side x side."""
    from skimage import data

    return cv2.resize(data.astronaut()[20:220, 130:330], (side, side), interpolation=cv2.INTER_AREA)


def small_copy(src: Path, dst: Path, max_side: int = 320) -> Path:
    """A downscaled copy of a real photo (upright, no metadata), saved in the format of `dst`'s suffix."""
    from facecloak.photos.io import read_image

    rgb = read_image(src).rgb
    scale = max_side / max(rgb.shape[:2])
    size = (max(1, round(rgb.shape[1] * scale)), max(1, round(rgb.shape[0] * scale)))
    dst.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)).save(dst, quality=95)
    return dst


def deepface_photos(deepface_dir: Path, n: int) -> list[Path]:
    """The first `n` photos of the manifest, one per identity first (deterministic)."""
    rows = (deepface_dir / "manifest.csv").read_text().splitlines()[1:]
    seen: set[str] = set()
    first, rest = [], []
    for row in rows:
        path, identity = row.split(",")[:2]
        (rest if identity in seen else first).append(deepface_dir / path)
        seen.add(identity)
    return (first + rest)[:n]


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def snapshot(folder: Path) -> dict[str, str]:
    """Relative path -> sha256 of every file under `folder`, hidden ones included."""
    return {str(p.relative_to(folder)): sha256(p) for p in sorted(folder.rglob("*")) if p.is_file()}


def temp_leftovers(folder: Path) -> list[Path]:
    """Temporary files `write_image` would leave if it were interrupted badly (hidden, `files.TEMP_SUFFIX`)."""
    return [p for p in folder.rglob(".*") if p.name.endswith(TEMP_SUFFIX)]


def json_lines(stdout: str) -> tuple[list[dict], dict]:
    """(per-photo records, summary) from `protect --json` output."""
    records = [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]
    assert records and "summary" in records[-1], stdout
    return records[:-1], records[-1]


def by_name(records: Iterable[dict]) -> dict[str, dict]:
    return {Path(r["path"]).name: r for r in records}


def invoke(args: Sequence[str | os.PathLike[str]]):
    """Run `facecloak ...` in-process with typer's CliRunner; returns the click Result."""
    from typer.testing import CliRunner

    from facecloak.cli import app

    return CliRunner().invoke(app, [str(a) for a in args], catch_exceptions=False)


def run_main(args: Sequence[str | os.PathLike[str]], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """Run the real entry point `facecloak.cli.main` (its error formatting and exit codes); (code, out, err)."""
    from facecloak.cli import main

    saved = sys.argv
    sys.argv = ["facecloak", *map(str, args)]
    code = 0
    try:
        main()
    except SystemExit as exc:
        code = int(exc.code or 0)
    finally:
        sys.argv = saved
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def subprocess_cmd(*args: str | os.PathLike[str]) -> list[str]:
    """argv that runs the `facecloak` entry point in a fresh interpreter (same venv)."""
    return [sys.executable, "-c", "from facecloak.cli import main; main()", *map(str, args)]


def assert_one_line_error(err: str) -> None:
    """A user-facing error: no traceback, the message on one line starting with 'error:'."""
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.strip()]
    assert any(line.startswith("error:") for line in lines), err
