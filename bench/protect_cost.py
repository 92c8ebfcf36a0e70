"""Seconds per photo, peak memory and whole-photo quality of `facecloak protect` on a folder of photos.

    facecloak bench protect-cost --n 50 --fill black
    facecloak bench protect-cost --n 10 --fill cloak
    facecloak bench protect-cost --source lfw --n 50 --fill cloak --quality --extra "--budget 2 --format png"

Copies the first N photos of ../shared/faces/deepface (then LFW, if more are needed) to a temporary folder,
runs `facecloak protect DIR -o OUT --fill FILL --json` once as a child process (default models and settings
unless --extra says otherwise), and prints one JSON line: n, wall seconds, seconds per photo (wall / n, including
start-up and model loading; and the mean of the per-photo times the CLI reports), peak RSS of the child (MB),
statuses and the machine's load average before and after (the machine is shared).

--source lfw takes one photo of each of the first N LFW people (name order) instead. --quality adds PSNR and SSIM
of each whole photo as written against its input (after the run, outside the timing); with JPEG outputs they
include the re-encoding, so pair it with `--extra "--format png"` to see the protection alone.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from facecloak.errors import DataError

SHARED = Path(os.environ.get("FACECLOAK_SHARED", Path(__file__).resolve().parents[2] / "shared"))
SOURCES = ("deepface", "lfw")
# `facecloak protect --json` statuses of a photo whose protected copy was written (verified or not).
WRITTEN = frozenset({"protected", "still-recognised", "unverified"})


def photos(n: int, source: str = "deepface", shared: Path = SHARED) -> list[Path]:
    if source == "lfw":
        people = sorted(p for p in (shared / "faces" / "lfw").iterdir() if p.is_dir())
        firsts = [min(p.glob("*.jpg")) for p in people[: n * 2] if any(p.glob("*.jpg"))]
        if len(firsts) < n:
            raise DataError(f"only {len(firsts)} LFW photos under {shared / 'faces'}")
        return firsts[:n]
    deepface = shared / "faces" / "deepface"
    rows = (deepface / "manifest.csv").read_text().splitlines()[1:]
    found = [deepface / row.split(",")[0] for row in rows]
    if len(found) < n:
        found += sorted((shared / "faces" / "lfw").rglob("*.jpg"))[: n - len(found)]
    if len(found) < n:
        raise DataError(f"only {len(found)} photos under {shared / 'faces'}")
    return found[:n]


def whole_photo_quality(rows: list[dict]) -> dict:
    """Mean and min PSNR (dB; unchanged photos left out) and SSIM of each protected output vs its input."""
    import math

    from bench.stats import psnr, ssim_local_change
    from facecloak.photos.io import read_image

    values = []
    for r in rows:
        if r["status"] in WRITTEN and r.get("output"):
            before, after = read_image(Path(r["path"])).rgb, read_image(Path(r["output"])).rgb
            values.append((psnr(before, after), ssim_local_change(before, after)))
    finite = [p for p, _ in values if math.isfinite(p)]
    ssims = [s for _, s in values]
    return {"quality_n": len(values),
            "psnr_photo_mean": round(statistics.mean(finite), 2) if finite else None,
            "psnr_photo_min": round(min(finite), 2) if finite else None,
            "ssim_photo_mean": round(statistics.mean(ssims), 5) if ssims else None,
            "ssim_photo_min": round(min(ssims), 5) if ssims else None}


def measure_protect_cost(
    n: int, fill: str = "black", extra: str = "", source: str = "deepface", quality: bool = False,
    shared: Path = SHARED,
) -> tuple[dict, str]:
    """Run `facecloak protect` once as a child process on the first `n` photos of `source`; returns (one JSON-able
    record, the child's stderr tail when it failed outright, else "")."""
    with tempfile.TemporaryDirectory(prefix="facecloak-measure-") as folder:
        src, out = Path(folder) / "in", Path(folder) / "out"
        src.mkdir()
        for i, photo in enumerate(photos(n, source, shared)):
            shutil.copy(photo, src / f"{i:03d}_{photo.name}")
        command = [sys.executable, "-c", "from facecloak.cli import main; main()", "protect", str(src), "-o", str(out),
                   "--fill", fill, "--json", *extra.split()]  # fmt: skip
        load_before = os.getloadavg()
        start = time.perf_counter()
        done = subprocess.run(command, capture_output=True, text=True)
        wall = time.perf_counter() - start
        peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        records = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
        rows = [r for r in records if "summary" not in r]
        summary: dict = next((r for r in records if "summary" in r), {})
        per_photo = [r["seconds"] for r in rows if r["status"] in WRITTEN]
        scores = whole_photo_quality(rows) if quality else {}
        record = {
            "n": n, "source": source, "fill": fill, "extra": extra, "exit_code": done.returncode,
            "wall_s": round(wall, 1), "s_per_photo_wall": round(wall / n, 2),
            "s_per_protected_photo_mean": round(statistics.mean(per_photo), 2) if per_photo else None,
            "s_per_protected_photo_median": round(statistics.median(per_photo), 2) if per_photo else None,
            "faces": sum(r["faces"] for r in rows), "peak_rss_mb": round(peak_mb), "summary": summary.get("summary"),
            **scores,
            "loadavg_before": [round(v, 2) for v in load_before],
            "loadavg_after": [round(v, 2) for v in os.getloadavg()], "cpus": os.cpu_count(),
        }  # fmt: skip
        return record, (done.stderr[-3000:] if done.returncode not in (0, 1) else "")
