"""The sparse cloak's seconds per face of two checkouts, alternated (bench/speed_protect.py's CLOAK_SNIPPET).

Usage: python cloak_ab.py REPEATS TREE_A TREE_B PHOTO... (run from a checkout, so `bench` imports; OMP_NUM_THREADS=1).
Prints one line per run: the tree, wall s per face, cloak steps, CPU s of the whole snippet (warm-up included)."""

import json
import os
import subprocess
import sys

from bench.speed_protect import CLOAK_SNIPPET


def main(repeats: int, trees: list[str], photos: list[str]) -> None:
    for _ in range(repeats):
        for tree in trees:
            env = {**os.environ, "PYTHONPATH": tree, "OMP_NUM_THREADS": "1"}
            before = os.times()
            out = subprocess.run([sys.executable, "-c", CLOAK_SNIPPET, *photos], env=env, capture_output=True,
                                 text=True, check=True, cwd=tree)
            after = os.times()
            got = json.loads(out.stdout.strip().splitlines()[-1])
            cpu = after.children_user + after.children_system - before.children_user - before.children_system
            print(f"{tree}: {got['seconds'] / got['faces']:.2f} s/face, {got['steps']} steps, {cpu:.1f} CPU s",
                  flush=True)


if __name__ == "__main__":
    main(int(sys.argv[1]), sys.argv[2:4], sys.argv[4:])
