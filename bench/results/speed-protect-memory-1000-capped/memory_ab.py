"""RSS of in-process fast-path `protect` calls (speed-protect's memory trace) at several oneDNN kernel-cache
capacities, side by side: one process per capacity, all at once.

Usage: python memory_ab.py TREE SETS COUNT OUT_JSON CAPACITY...   (run from a checkout, so `bench` imports)
SETS holds deepface-1024/ and lfw/ (`facecloak bench speed-protect`'s prepared photos); the calls cycle through
them in that order, as speed-protect's own trace does."""

import json
import os
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from bench.speed_protect import MEMORY_SNIPPET


def trace(tree: str, photos: list[str], count: int, capacity: str) -> dict:
    import subprocess

    env = {**os.environ, "PYTHONPATH": tree, "OMP_NUM_THREADS": "1", "ONEDNN_PRIMITIVE_CACHE_CAPACITY": capacity}
    out = subprocess.run([sys.executable, "-c", MEMORY_SNIPPET, str(count), "", *photos], env=env,
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(tree: str, sets: Path, count: int, out: Path, capacities: list[str]) -> None:
    photos = [str(p) for name in ("deepface-1024", "lfw") for p in sorted((sets / name).iterdir())]
    with ThreadPoolExecutor(len(capacities)) as pool:
        runs = dict(zip(capacities, pool.map(lambda c: trace(tree, photos, count, c), capacities), strict=True))
    out.write_text(json.dumps(runs, indent=1) + "\n")
    for capacity, run in runs.items():
        rss = dict((int(i), r) for i, r in run["rss_mb"])
        after = [r for i, r in rss.items() if i >= 100]
        print(f"capacity {capacity}: peak {run['peak_rss_mb']:.0f} MB; RSS {min(after):.0f}-{max(after):.0f} MB "
              f"from photo 100 to {count}; at 100/500/{count}: {rss[100]:.0f}/{rss[500]:.0f}/{rss[count]:.0f} MB")


if __name__ == "__main__":
    main(sys.argv[1], Path(sys.argv[2]), int(sys.argv[3]), Path(sys.argv[4]), sys.argv[5:])
