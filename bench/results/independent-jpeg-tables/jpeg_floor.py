"""What writing a probe back costs before any pixel is changed: each probe of the runs in this folder (the same
seed-0 draw as `bench independent`) decoded, then written as JPEG the earlier way (quality 95, 4:4:4) and the way
`write_image` writes a JPEG source now (its own quantisation tables and chroma subsampling), and decoded again.
Per set: whole-photo SSIM to the decoded original (mean, min), share of pixels that moved by >= 1 level, and file
size relative to the original file. Run from the repository root:

    python bench/results/independent-jpeg-tables/jpeg_floor.py
"""

import io
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from bench.independent import choose_probes
from bench.stats import ssim
from facecloak.photos.io import read_image, round_trip


def encoded_size(rgb: np.ndarray, **params: object) -> int:
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="JPEG", **params)
    return len(buffer.getvalue())


for name, people in (("deepface", 13), ("lfw", 200)):
    probes = choose_probes(Path(f"../shared/faces/{name}"), people=people, seed=0)
    stats: dict[str, list[tuple[float, float, float]]] = {"q95 4:4:4": [], "own tables": []}
    for probe in probes:
        photo = read_image(probe.probe)
        size = probe.probe.stat().st_size
        for label, quality in (("q95 4:4:4", 95), ("own tables", None)):
            back = round_trip(photo.rgb, probe.probe, jpeg_quality=quality, source=photo)
            moved = float((back != photo.rgb).any(-1).mean())
            assert photo.jpeg_encoding is not None
            params = ({"quality": 95, "subsampling": 0, "optimize": True} if quality else
                      {"qtables": [list(t) for t in photo.jpeg_encoding.qtables],
                       "subsampling": photo.jpeg_encoding.subsampling, "optimize": True})
            stats[label].append((ssim(photo.rgb, back), moved, encoded_size(photo.rgb, **params) / size))
    for label, rows in stats.items():
        a = np.array(rows)
        print(f"{name} n={len(rows)} {label}: SSIM mean {a[:, 0].mean():.4f} min {a[:, 0].min():.4f}; "
              f"pixels moved {100 * a[:, 1].mean():.1f} %; size / original {a[:, 2].mean():.2f}")
    sys.stdout.flush()
