"""Seconds per photo and peak memory of `facecloak protect` on a folder of photos (issue 4, "what it must show").

    python tools/measure_protect.py --n 50 --fill black
    python tools/measure_protect.py --n 10 --fill cloak
    python tools/measure_protect.py --source lfw --n 50 --fill cloak --quality --extra "--budget 2 --format png"

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

import argparse
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

SHARED = Path(os.environ.get("FACECLOAK_SHARED", Path(__file__).resolve().parents[2] / "shared"))


def photos(n: int, source: str = "deepface") -> list[Path]:
    if source == "lfw":
        people = sorted(p for p in (SHARED / "faces" / "lfw").iterdir() if p.is_dir())
        firsts = [min(p.glob("*.jpg")) for p in people[: n * 2] if any(p.glob("*.jpg"))]
        if len(firsts) < n:
            raise SystemExit(f"only {len(firsts)} LFW photos under {SHARED / 'faces'}")
        return firsts[:n]
    deepface = SHARED / "faces" / "deepface"
    rows = (deepface / "manifest.csv").read_text().splitlines()[1:]
    found = [deepface / row.split(",")[0] for row in rows]
    if len(found) < n:
        found += sorted((SHARED / "faces" / "lfw").rglob("*.jpg"))[: n - len(found)]
    if len(found) < n:
        raise SystemExit(f"only {len(found)} photos under {SHARED / 'faces'}")
    return found[:n]


def whole_photo_quality(rows: list[dict]) -> dict:
    """Mean and min PSNR (dB; unchanged photos left out) and SSIM of each protected output vs its input."""
    import math

    from bench.stats import psnr, ssim_local_change
    from facecloak.io import read_image

    values = []
    for r in rows:
        if r["status"] == "protected" and r.get("output"):
            before, after = read_image(Path(r["path"])).rgb, read_image(Path(r["output"])).rgb
            values.append((psnr(before, after), ssim_local_change(before, after)))
    finite = [p for p, _ in values if math.isfinite(p)]
    ssims = [s for _, s in values]
    return {"quality_n": len(values),
            "psnr_photo_mean": round(statistics.mean(finite), 2) if finite else None,
            "psnr_photo_min": round(min(finite), 2) if finite else None,
            "ssim_photo_mean": round(statistics.mean(ssims), 5) if ssims else None,
            "ssim_photo_min": round(min(ssims), 5) if ssims else None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=50)
    parser.add_argument("--fill", default="black")
    parser.add_argument("--extra", default="", help="more `protect` options, space-separated")
    parser.add_argument("--source", choices=("deepface", "lfw"), default="deepface")
    parser.add_argument("--quality", action="store_true", help="whole-photo PSNR / SSIM of each output vs its input")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="facecloak-measure-") as folder:
        src, out = Path(folder) / "in", Path(folder) / "out"
        src.mkdir()
        for i, photo in enumerate(photos(args.n, args.source)):
            shutil.copy(photo, src / f"{i:03d}_{photo.name}")
        command = [sys.executable, "-c", "from facecloak.cli import main; main()", "protect", str(src), "-o", str(out),
                   "--fill", args.fill, "--json", *args.extra.split()]  # fmt: skip
        load_before = os.getloadavg()
        start = time.perf_counter()
        done = subprocess.run(command, capture_output=True, text=True)
        wall = time.perf_counter() - start
        peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        records = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
        rows = [r for r in records if "summary" not in r]
        summary: dict = next((r for r in records if "summary" in r), {})
        per_photo = [r["seconds"] for r in rows if r["status"] == "protected"]
        quality = whole_photo_quality(rows) if args.quality else {}
        print(json.dumps({
            "n": args.n, "source": args.source, "fill": args.fill, "extra": args.extra, "exit_code": done.returncode,
            "wall_s": round(wall, 1), "s_per_photo_wall": round(wall / args.n, 2),
            "s_per_protected_photo_mean": round(statistics.mean(per_photo), 2) if per_photo else None,
            "s_per_protected_photo_median": round(statistics.median(per_photo), 2) if per_photo else None,
            "faces": sum(r["faces"] for r in rows), "peak_rss_mb": round(peak_mb), "summary": summary.get("summary"),
            **quality,
            "loadavg_before": [round(v, 2) for v in load_before],
            "loadavg_after": [round(v, 2) for v in os.getloadavg()], "cpus": os.cpu_count(),
        }))  # fmt: skip
        if done.returncode not in (0, 1):
            print(done.stderr[-3000:], file=sys.stderr)


if __name__ == "__main__":
    main()
