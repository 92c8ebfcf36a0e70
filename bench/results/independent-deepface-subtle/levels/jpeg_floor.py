"""Whole-photo SSIM of each probe of this run merely written back the way `protect` writes it (JPEG q95 for a JPEG
input), no pixel changed: the floor of the SSIM column. Run from the repository root; prints jpeg_floor.txt."""

import json
import tempfile
from pathlib import Path

import numpy as np

from bench.independent import written_copy
from bench.stats import ssim
from facecloak.photos.io import read_image

rows = json.loads(Path(__file__).with_name("independent.json").read_text())["rows"]
out = []
with tempfile.TemporaryDirectory() as tmp:
    for r in rows:
        path = Path(r["probe_path"])
        rgb = read_image(path).rgb
        out.append((path.name, ssim(rgb, written_copy(rgb, path, Path(tmp))), r["high"]["ssim_photo"]))
for row in out:
    print(row)
floor = [o[1] for o in out]
print("mean re-encode SSIM", np.mean(floor), "min", min(floor), "n", len(out))
