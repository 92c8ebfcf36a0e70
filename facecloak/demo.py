"""`facecloak demo`: protect photos that installed packages carry and show what changed, per model.

Sources: skimage's astronaut portrait and insightface's sample photos (a group of six and a portrait). The
table compares each protected face, as written to disk and read back, with the same clean face: on the
source models (white-box) and on models the protection never saw (held-out), against each model's
threshold at FAR 1e-3 where one is calibrated.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from facecloak.align import align
from facecloak.bundled import bundled_photos
from facecloak.io import read_image, write_image
from facecloak.models import MODELS, cached_model, embed_crops, get_spec
from facecloak.protection import DEFAULT_MODELS, protect
from facecloak.thresholds import load_thresholds

console = Console()


def _cos(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return (a * b).sum(1)


def run_demo(out: Path, *, fill: str = "cloak", budget: float = 2.0, seed: int = 0) -> None:
    out = Path(out)
    held_out = [m for m in MODELS if m not in DEFAULT_MODELS]
    sources = ",".join(DEFAULT_MODELS)
    table = Table(title=f"facecloak demo: fill={fill}, budget={budget} % of face pixels, sources={sources}")
    table.add_column("photo")
    table.add_column("face", justify="right")
    for m in [*DEFAULT_MODELS, *held_out]:
        tag = "src" if m in DEFAULT_MODELS else "held-out"
        table.add_column(f"{m} ({tag})", justify="right")
    dodged = total = 0
    for name, rgb in bundled_photos().items():
        write_image(out / "input" / f"{name}.png", rgb, overwrite=True)
        result = protect(rgb, budget=budget, fill=fill, seed=seed)
        target = out / f"{name}_protected.png"
        write_image(target, result.image, overwrite=True)
        written = read_image(target).rgb
        faces = [f.face for f in result.faces]
        for m in [*DEFAULT_MODELS, *held_out]:
            tpl = get_spec(m).template
            clean = embed_crops(cached_model(m), np.stack([align(rgb, f, tpl).crop for f in faces])).numpy()
            prot = embed_crops(cached_model(m), np.stack([align(written, f, tpl).crop for f in faces])).numpy()
            cos = _cos(clean, prot)
            thr = load_thresholds(m)
            for i, c in enumerate(cos):
                result.faces[i].cosine_after[f"demo:{m}"] = float(c)
                if m in held_out and thr is not None:
                    total += 1
                    dodged += int(c < thr.at("0.001"))
        for i, f in enumerate(result.faces):
            cells = []
            for m in [*DEFAULT_MODELS, *held_out]:
                c = f.cosine_after[f"demo:{m}"]
                thr = load_thresholds(m)
                mark = "" if thr is None else (" ✓" if c < thr.at("0.001") else " ✗")
                cells.append(f"{c:.2f}{mark}")
            table.add_row(name, str(i), *cells)
    console.print(table)
    console.print(
        "cells: cosine between the clean face and the protected face read back from PNG; "
        "✓ = below the model's FAR 1e-3 threshold (no longer matched to the clean photo), ✗ = still matched."
    )
    if total:
        console.print(f"held-out models fooled on {dodged}/{total} face×model pairs. Outputs in {out}/")
