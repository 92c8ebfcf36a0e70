"""Seconds to set up the three verifiers (`get_independent` for dlib, arcface, hse: what a verified protect run loads
before its first photo), in a fresh interpreter per run, two checkouts alternated (ABAB...), after the imports.

Usage: OMP_NUM_THREADS=1 python verifier_setup_ab.py TREE_A TREE_B [PAIRS]   (weights pulled, dlib installed)"""

import os
import statistics
import subprocess
import sys

CODE = (
    "import time\n"
    "from facecloak.verification.independent import get_independent\n"
    "t = time.perf_counter(); c = time.process_time()\n"
    "for name in ('dlib', 'arcface', 'hse'): get_independent(name)\n"
    "print(time.perf_counter() - t, time.process_time() - c)\n"
)


def one_run(tree: str) -> tuple[float, float]:
    env = {**os.environ, "PYTHONPATH": tree}
    done = subprocess.run([sys.executable, "-c", CODE], capture_output=True, text=True, env=env, cwd=tree, check=True)
    wall, cpu = map(float, done.stdout.split())
    return wall, cpu


def main(trees: list[str], pairs: int) -> None:
    for tree in trees:  # warm the disk cache and, for a tree that saves a copy of the detector, save it
        one_run(tree)
    runs: dict[str, list[tuple[float, float]]] = {tree: [] for tree in trees}
    for _ in range(pairs):
        for tree in trees:
            runs[tree].append(one_run(tree))
    for tree, values in runs.items():
        print(f"{tree}: verifier set-up {statistics.median(v[0] for v in values):.3f} s wall, "
              f"{statistics.median(v[1] for v in values):.3f} s CPU (median of {pairs}; "
              f"wall range {min(v[0] for v in values):.3f}-{max(v[0] for v in values):.3f})")


if __name__ == "__main__":
    main(sys.argv[1:3], int(sys.argv[3]) if len(sys.argv) > 3 else 10)
