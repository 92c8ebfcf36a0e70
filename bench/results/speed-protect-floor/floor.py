"""The floor under the default protect's cost on this CPU, against issue 10's targets (start-up <= 2 s,
<= 0.15 s per photo): what one start-up cannot avoid and what one step of the default cloak costs.

1. `import torch` in a fresh interpreter (the default needs gradients, so torch is not optional), median of 5.
2. Forward + backward to the input of each of the default's four cloak sources, per face, at batch 1 and 4, in
   float32 and under bfloat16 autocast (this CPU has AVX512-BF16): the levers a CPU has besides fewer steps.
3. One step of the default cloak (`--level high`: 30 steps, four sources, every transformation) on real LFW faces:
   the cloak timed at 30 and at 10 steps on the same faces and detections, seed 0; a step is the difference / 20.

Usage: OMP_NUM_THREADS=1 python floor.py [N_FACES]   (from a checkout with the weights pulled, ../shared beside it)
"""

from __future__ import annotations

import json
import platform
import statistics
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

from facecloak.faces.detect import default_detector
from facecloak.models import load_model
from facecloak.photos.io import read_image
from facecloak.protection.levels import LEVELS
from facecloak.protection.protect import protect

LFW = Path(__file__).resolve().parents[3].parent / "shared" / "faces" / "lfw"
SOURCES = ("hse-mnv1", "mbf-tf", "mbf-arc", "mobileface")


def import_torch_seconds(repeats: int = 5) -> dict[str, float]:
    code = "import time, resource; t = time.perf_counter(); import torch; u = resource.getrusage(0); " \
           "print(time.perf_counter() - t, u.ru_utime + u.ru_stime)"
    runs = [tuple(map(float, subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                            check=True).stdout.split())) for _ in range(repeats)]
    return {"wall_s": statistics.median(r[0] for r in runs), "cpu_s": statistics.median(r[1] for r in runs)}


def step_seconds(model: torch.nn.Module, faces: torch.Tensor, bf16: bool) -> float:
    x = faces.clone().requires_grad_()
    start = time.process_time()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        y = model(x)
    y.float().sum().backward()
    return time.process_time() - start


def per_source(repeats: int = 12) -> dict[str, dict[str, float]]:
    generator = torch.Generator().manual_seed(0)
    table = {}
    for model_id in SOURCES:
        model, size = load_model(model_id), (224 if model_id == "hse-mnv1" else 112)
        row = {}
        for batch in (1, 4):
            faces = torch.rand(batch, 3, size, size, generator=generator) * 255
            for bf16 in (False, True):
                runs = [step_seconds(model, faces, bf16) for _ in range(repeats)]
                row[f"batch{batch}_{'bf16' if bf16 else 'fp32'}_cpu_s_per_face"] = statistics.median(runs[2:]) / batch
        table[model_id] = row
        print(model_id, {k: round(v, 4) for k, v in row.items()}, flush=True)
    return table


def cloak_step(n_faces: int) -> dict[str, float | int]:
    level = LEVELS.get("high")
    detector = default_detector()
    photos = []
    for person in sorted(p for p in LFW.iterdir() if p.is_dir()):
        rgb = read_image(next(iter(sorted(person.glob("*.jpg"))))).rgb
        faces = detector.detect(rgb)
        if len(faces) == 1:
            photos.append((rgb, faces))
        if len(photos) == n_faces:
            break
    options = level.protect_options()
    seconds: dict[int, list[float]] = {10: [], 30: []}
    for rgb, faces in photos:
        for steps in (10, 30):  # interleaved per face, so load from other jobs falls on both
            start = time.process_time()
            protect(rgb, faces=faces, **{**options, "cloak_settings": replace(level.cloak, steps=steps)})
            seconds[steps].append(time.process_time() - start)
    per_step = [(b - a) / 20 for a, b in zip(seconds[10], seconds[30], strict=True)]
    return {"faces": len(photos), "cpu_s_per_face_30_steps": statistics.median(seconds[30]),
            "cpu_s_per_face_10_steps": statistics.median(seconds[10]), "cpu_s_per_step": statistics.median(per_step),
            "cpu_s_per_step_min": min(per_step), "cpu_s_per_step_max": max(per_step)}


def main() -> None:
    torch.set_num_threads(1)
    n_faces = int(sys.argv[1]) if len(sys.argv) > 1 else 8
    result = {"machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} torch thread",
              "torch": torch.__version__, "import_torch": import_torch_seconds()}
    print("import torch", result["import_torch"], flush=True)
    result["per_source"] = per_source()
    result["cloak_step"] = cloak_step(n_faces)
    print("default cloak", result["cloak_step"], flush=True)
    Path(__file__).with_name("floor.json").write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
