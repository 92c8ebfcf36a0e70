"""Whole-photo SSIM of each deepface probe merely re-encoded the way protect writes it (no pixel changed)."""
import json, tempfile
from pathlib import Path
import numpy as np
from bench.independent import written_copy
from bench.stats import ssim
from facecloak.photos.io import read_image
rows = json.load(open(Path(__file__).with_name("independent.json")))["rows"]
out = []
with tempfile.TemporaryDirectory() as tmp:
    for r in rows:
        p = Path(r["probe_path"]); rgb = read_image(p).rgb
        back = written_copy(rgb, p, Path(tmp))
        out.append((p.name, ssim(rgb, back), r["high"]["ssim_photo"]))
for o in out: print(o)
print("mean re-encode SSIM", np.mean([o[1] for o in out]), "min", min(o[1] for o in out), "n", len(out))
