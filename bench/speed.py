"""Speed and memory of embedding and LEAM per model on this machine (a benchmark, not a test).

    OMP_NUM_THREADS=1 facecloak bench speed -o bench/results/speed [--repeats 5] [--models ...]

Each model runs in its own subprocess so that peak RSS (ru_maxrss) belongs to that model alone. Crops are
real aligned faces of skimage's astronaut photo (bundled), repeated to the batch size. Reported: median
wall-clock milliseconds per face for the embedding forward (batch 1 and batch 16) and for LEAM (one forward +
one autograd.grad over the model's default layers; batch 1 and batch 16), and the peak RSS of the process.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from facecloak.files import atomic_write_text


def _crops(model_id: str, n: int) -> np.ndarray:
    from skimage import data

    from facecloak.faces.align import align
    from facecloak.models import get_spec
    from facecloak.protection.protect import default_detector

    img = data.astronaut()
    face = default_detector().detect(img)[0]
    crop = align(img, face, get_spec(model_id).template).crop
    return np.repeat(crop[None], n, axis=0)


def measure_one(model_id: str, repeats: int) -> dict:
    import torch

    import leam
    from facecloak.masking.leamface import to_tensor
    from facecloak.models import get_spec, load_model

    model = load_model(model_id)
    spec = get_spec(model_id)
    out: dict = {"model": model_id, "threads": torch.get_num_threads()}
    for batch in (1, 16):
        x = to_tensor(_crops(model_id, batch))
        with torch.no_grad():
            model(x)  # warm-up
            times = []
            for _ in range(repeats):
                t = time.perf_counter()
                model(x)
                times.append(time.perf_counter() - t)
        out[f"embed_ms_per_face_b{batch}"] = 1000 * statistics.median(times) / batch
        target = leam.flip_target(model, x)
        leam.compute_relevance(model, x, target, spec.default_layers)  # warm-up
        times = []
        for _ in range(repeats):
            t = time.perf_counter()
            leam.compute_relevance(model, x, target, spec.default_layers)
            times.append(time.perf_counter() - t)
        out[f"leam_ms_per_face_b{batch}"] = 1000 * statistics.median(times) / batch
    out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return out


REPO = Path(__file__).resolve().parents[1]


def env_with_checkout() -> dict[str, str]:
    """This environment with the source checkout first on PYTHONPATH, so child processes import this `bench`."""
    return {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)}


MEASURE_SNIPPET = "import json, sys; from bench.speed import measure_one; " \
    "print(json.dumps(measure_one(sys.argv[1], int(sys.argv[2]))))"


def run_speed(out: Path, models: Sequence[str], repeats: int, command: str) -> str:
    """Measure each model in its own subprocess, write OUT/speed.json and OUT/speed.md; returns the markdown."""
    rows = []
    for m in models:
        proc = subprocess.run([sys.executable, "-c", MEASURE_SNIPPET, m, str(repeats)], capture_output=True,
                              text=True, check=True, env=env_with_checkout())
        rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    load = os.getloadavg()
    env = {"machine": platform.machine(), "cpus": os.cpu_count(), "python": platform.python_version(),
           "loadavg_at_end": [round(v, 2) for v in load], "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
           "command": command, "repeats": repeats}
    atomic_write_text(out / "speed.json", json.dumps({"environment": env, "models": rows}, indent=2) + "\n")
    lines = [
        "| model | embed ms/face b1 | embed ms/face b16 | LEAM ms/face b1 | LEAM ms/face b16 | peak RSS MB |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(f"| {r['model']} | {r['embed_ms_per_face_b1']:.1f} | {r['embed_ms_per_face_b16']:.1f} | "
                     f"{r['leam_ms_per_face_b1']:.1f} | {r['leam_ms_per_face_b16']:.1f} | {r['peak_rss_mb']:.0f} |")
    md = "\n".join([f"Command: `{env['command']}`; {env['cpus']} CPUs, load average at end {env['loadavg_at_end']}, "
                    f"threads {rows[0]['threads']}, median of {repeats}.", "", *lines, ""])
    atomic_write_text(out / "speed.md", md)
    return md
