"""Whole-photo SSIM of each probe of this run merely written back the way `protect` wrote it then (JPEG q95, 4:4:4
for a JPEG input), no pixel changed: the floor of the SSIM column. Run from the repository root; prints
jpeg_floor.txt. (`protect` now keeps a JPEG's own tables: `../../independent-jpeg-tables/jpeg_floor.py`.)"""

import json
from pathlib import Path

import numpy as np

from bench.stats import ssim
from facecloak.photos.io import read_image, round_trip

rows = json.loads(Path(__file__).with_name("independent.json").read_text())["rows"]
out = []
for r in rows:
    path = Path(r["probe_path"])
    rgb = read_image(path).rgb
    out.append((path.name, ssim(rgb, round_trip(rgb, path, jpeg_quality=95)), r["high"]["ssim_photo"]))
for row in out:
    print(row)
floor = [o[1] for o in out]
print("mean re-encode SSIM", np.mean(floor), "min", min(floor), "n", len(out))
