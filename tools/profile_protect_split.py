"""Where `protect`'s per-photo time goes (torch vs the rest), for the GPU estimate of the Ray capacity plan.

    python tools/profile_protect_split.py --n 30 > bench/results/ray-protect/profile.txt

One `protect` runner (default models, FaceMesh, fill black, 1 torch thread) on one photo each of the first N LFW
people (the first photo warms up and is left out), under cProfile; prints CPU seconds per photo and the cumulative
wall seconds per photo of the pipeline's stages, torch stages marked.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

STAGES = {  # function name -> (torch?, what)
    "embed_crops": (True, "LEAM: embeddings of the aligned faces (3 models)"),
    "compute_relevance": (True, "LEAM: relevance, forward + autograd over the layers (3 models)"),
    "similarities": (True, "re-read output, embed it (cosine before/after)"),
    "detect_batch": (True, "MTCNN detection"),
    "parse": (False, "FaceMesh parser (TFLite)"),
    "warp_crop": (False, "alignment warps"),
    "warp_to_photo": (False, "masks back to the photo"),
    "select_pixels": (False, "top-k selection"),
    "read_image": (False, "decode"),
    "write_image": (False, "encode + atomic write"),
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=30)
    args = parser.parse_args()
    import torch
    from measure_ray_protect import lfw_photos

    from facecloak.cli.protect import NoFacePolicy, ProtectOptions, _Runner

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as out:
        options = ProtectOptions(
            out=Path(out), suffix="_protected", format=None, jpeg_quality=95, models=(), budget=1.0, fill="black",
            seed=0, largest_only=False, no_face=NoFacePolicy.skip, overwrite=True, keep_metadata=False,
            keep_gps=False, dry_run=False, save_mask=False, save_heatmap=False, max_pixels=10**8, steps=60,
            epsilon=None, parser="facemesh")
        runner = _Runner(options)
        runner.prepare()
        photos = lfw_photos(args.n)
        runner.run_one(photos[0], photos[0].parent)  # warm-up
        profile = cProfile.Profile()
        cpu, wall = time.process_time(), time.perf_counter()
        profile.enable()
        for photo in photos[1:]:
            runner.run_one(photo, photo.parent)
        profile.disable()
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    n = len(photos) - 1
    stats = pstats.Stats(profile).stats  # type: ignore[attr-defined]
    cumulative: dict[str, float] = {}
    for (filename, _, name), (_, _, _, ct, _) in stats.items():
        if name in STAGES and ("facecloak" in filename or "leam" in filename):
            cumulative[name] = cumulative.get(name, 0.0) + ct
    print(f"n = {n} photos (1 warm-up left out); CPU {cpu / n:.3f} s/photo; wall under cProfile {wall / n:.3f} s/photo")
    torch_s = sum(v for k, v in cumulative.items() if STAGES[k][0])
    rest_s = sum(v for k, v in cumulative.items() if not STAGES[k][0])
    for name, seconds in sorted(cumulative.items(), key=lambda kv: -kv[1]):
        mark = "torch" if STAGES[name][0] else "other"
        print(f"{seconds / n:7.3f} s/photo  {mark}  {name}: {STAGES[name][1]}")
    print(f"non-torch stages {rest_s / n:.3f} s/photo = {rest_s / wall:.0%} of the wall time; the other "
          f"{1 - rest_s / wall:.0%} is the torch stages and glue (stage times nest, e.g. `similarities` calls "
          f"`embed_crops`, so the torch rows add up to more than their share: {torch_s / n:.3f} s/photo)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
