"""CPU seconds of one forward + backward (to the input) of each cloak source model on 2 faces, as two checkouts
build it, interleaved (median of 30), and the largest difference of their embeddings.

Usage: OMP_NUM_THREADS=1 python models_ab.py TREE_A TREE_B   (the weights pulled; both trees in one process: the
facecloak modules are re-imported from each tree in turn, so the two copies of each model run side by side)"""

import statistics
import sys
import time

import torch

MODELS = ("hse-mnv1", "mbf-tf", "mbf-arc", "mobileface")


def load(tree: str) -> dict[str, torch.nn.Module]:
    for name in [n for n in sys.modules if n.split(".")[0] in ("facecloak", "leam")]:
        del sys.modules[name]
    sys.path.insert(0, tree)
    try:
        from facecloak.models import get_spec, load_model

        return {m: load_model(m) for m in MODELS if get_spec(m)}
    finally:
        sys.path.remove(tree)


def seconds(model: torch.nn.Module, faces: torch.Tensor) -> float:
    x = faces.clone().requires_grad_()
    start = time.process_time()
    model(x).sum().backward()
    return time.process_time() - start


def main(trees: list[str]) -> None:
    torch.set_num_threads(1)
    built = {tree: load(tree) for tree in trees}
    generator = torch.Generator().manual_seed(0)
    for model_id in MODELS:
        size = 224 if model_id == "hse-mnv1" else 112
        faces = torch.rand(2, 3, size, size, generator=generator) * 255
        runs: dict[str, list[float]] = {tree: [] for tree in trees}
        for _ in range(32):
            for tree in trees:
                runs[tree].append(seconds(built[tree][model_id], faces))
        with torch.no_grad():
            a, b = (built[tree][model_id](faces) for tree in trees)
        medians = ", ".join(f"{tree} {statistics.median(v[2:]):.4f}" for tree, v in runs.items())
        gap, scale = float((a - b).abs().max()), float(b.abs().max())
        print(f"{model_id}: {medians} CPU s (median of 30 after 2 warm-ups); "
              f"embeddings differ by at most {gap:.2g} (largest |value| {scale:.3g})")


if __name__ == "__main__":
    main(sys.argv[1:3])
