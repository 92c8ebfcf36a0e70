"""Figures and report notes of the transfer benchmark: heatmaps, deletion curves, robustness bars, example photos.

Reads finished cells (and, for the example photos, the run's masks and fills); writes PNGs through the one atomic
writer (`facecloak.files`).
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from bench.data import common_matrix
from bench.probes import DEFENCE_ONLY, LEAM, fill_photo
from bench.report import MAIN_BUDGET, NO_DEFENCE, delta_key, dodge_key, far_label, main_budget
from bench.transfer_run import TransferRun
from facecloak.faces.align import warp_to_photo
from facecloak.faces.face import Face
from facecloak.files import atomic_write_bytes


def _inside(path: Path, folder: Path) -> bool:
    try:
        path.resolve().relative_to(folder.resolve())
        return True
    except ValueError:
        return False


REPO = Path(__file__).resolve().parents[1]


def _crop_around(face: Face, shape: tuple[int, ...], scale: float = 1.6) -> tuple[slice, slice]:
    cx, cy = face.centre
    half = scale * max(face.width, face.height) / 2
    h, w = shape[:2]
    rows = slice(max(int(cy - half), 0), min(int(cy + half), h))
    return rows, slice(max(int(cx - half), 0), min(int(cx + half), w))


def example_figure(run: TransferRun, path: Path, n: int = 3) -> Path | None:
    """Photos of the data set with their LEAM and random-scatter masks and the protected photo (first source,
    the budget nearest 1 %, the first fill); one probe per person for the first `n` people."""
    from bench.figures import example_grid

    recipe = run.recipe
    spec = recipe.source_specs()[0]
    members = spec.members(recipe.targets[0], run.pool)
    budget = min(recipe.budgets, key=lambda b: (abs(b - MAIN_BUDGET), b))
    fill = recipe.fills[0]
    seen: set[str] = set()
    photos, masks, protected, titles = [], [], [], []
    for i in run.probes:
        photo = run.data.photos[i]
        if photo.identity in seen:
            continue
        seen.add(photo.identity)
        image = run.read(photo.path)
        matrix = common_matrix(photo, run.common)
        tm = run.template_masks(members, i, budget)
        ys, xs = _crop_around(photo.face, image.shape)
        for variant in [LEAM, *[c for c in tm if c == "random-scatter"]]:
            pmask = warp_to_photo(tm[variant], matrix, image.shape, interpolation="nearest").astype(bool)
            out, _ = fill_photo(run, image, pmask, fill, members, photo, budget, variant)
            photos.append(image[ys, xs])
            masks.append(pmask[ys, xs])
            protected.append(out[ys, xs])
            titles.append(f"{photo.identity} {variant}")
        if len(seen) >= n:
            break
    if not photos:
        return None
    return example_grid(photos, masks, path, titles=titles, protected=protected)


def _mean_over(cells: Sequence[Mapping[str, Any]], key: str) -> float:
    values = [float(c[key]) for c in cells if isinstance(c.get(key), int | float) and math.isfinite(c[key])]
    return float(np.mean(values)) if values else math.nan


def robustness_figure(cells: Sequence[Mapping[str, Any]], path: Path, budget: float, far: float) -> Path:
    """Two panels over the defences ("none" first) at `budget`: Δcos and per-pair dodging at `far` of the LEAM
    variant, one bar per fill (mean over the (source, target) cells), and the clean photo under the same defence
    as a black tick (`defence-only`: what the defence alone does). No photos."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    group = [c for c in cells if math.isclose(float(c["budget"]), budget) and c.get("defence")]
    if not group:
        raise ValueError(f"no defended cells at budget {budget:g} %")
    fills = list(dict.fromkeys(str(c["fill"]) for c in group))
    defences = list(dict.fromkeys(str(c["defence"]) for c in group))
    fig = Figure(figsize=(1.6 + 1.1 * len(defences), 6.4))
    width = 0.8 / len(fills)
    x = np.arange(len(defences))
    panels = ((LEAM, "Δcos (LEAM mask)", delta_key), (LEAM, f"dodging at FAR {far_label(far)} (pairs)",
                                                     lambda v: dodge_key(far, v)))
    for ax, (variant, label, key) in zip(fig.subplots(2, 1, sharex=True), panels, strict=True):
        for k, fill in enumerate(fills):
            means = [_mean_over([c for c in group if c["fill"] == fill and c["defence"] == d], key(variant))
                     for d in defences]
            ax.bar(x - 0.4 + width * (k + 0.5), means, width, label=fill)
        only = [_mean_over([c for c in group if c["defence"] == d], key(DEFENCE_ONLY)) for d in defences]
        ax.scatter(x, only, marker="_", s=900, color="black", label="defence only (clean photo)", zorder=3)
        ax.axhline(0.0, color="grey", linewidth=0.8)
        ax.set_ylabel(label)
        if key is not delta_key:  # a share: never below 0
            ax.set_ylim(bottom=0.0)
    ax.set_xticks(x, labels=defences, rotation=20)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))  # outside: bars reach every corner
    fig.suptitle(f"Protection after each defence, budget {budget:g} %, mean over (source, target) cells",
                 fontsize=10)
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120, bbox_inches="tight")
    return atomic_write_bytes(path, buf.getvalue())


def write_figures(run: TransferRun, cells: Sequence[Mapping[str, Any]], examples: bool) -> list[str]:
    """Heatmap(s) of Δcos LEAM − random-scatter, deletion curves, robustness bars (when the recipe has defences),
    example photos; returns the written names."""
    from bench import figures

    written: list[str] = []
    if run.defences:
        budgets = sorted({float(c["budget"]) for c in cells})
        for b in budgets:
            p = robustness_figure(cells, run.out / f"robustness_{b:g}.png", b, min(run.recipe.evaluation.far))
            written.append(p.name)
        cells = [c for c in cells if c.get("defence") in NO_DEFENCE]
    budget = main_budget(cells)
    for fill in run.recipe.fills:
        for control in ("random_scatter", "random_shape"):
            if budget is None or not any(f"delta_cos_{control}" in c for c in cells):
                continue
            try:
                p = figures.transfer_heatmap(cells, run.out / f"heatmap_{fill}_{control}.png", budget=budget,
                                             fill=fill, control=control)
                written.append(p.name)
            except ValueError:
                pass
        try:
            p = figures.deletion_curves_from_cells(cells, run.out / f"deletion_{fill}.png", fill=fill)
            written.append(p.name)
        except ValueError:
            pass
    if examples:
        # Faces of the data set never go into the repository (bench/results is committed).
        if _inside(run.out, REPO):
            run.notes.append("example photos skipped: the output folder is inside the repository")
        else:
            grid = example_figure(run, run.out / "examples.png")
            if grid is not None:
                written.append(grid.name)
    return written


def notes_section(payload: Mapping[str, Any]) -> str:
    """What a reader must know that the generic report does not say: local thresholds, parser, dropped photos."""
    lines = [str(n) for n in payload.get("notes") or []]
    local = sorted({str(c["target"]) for c in payload["cells"] if c.get("threshold_origin") == "local"})
    if local:
        lines.append(f"No calibrated thresholds for {', '.join(local)} (`facecloak models calibrate`): their dodging "
                     "thresholds come from this set's own impostor pairs, which cannot resolve FAR 1e-3")
    data = payload.get("data") or {}
    lines.append(f"Face regions from the `{data.get('parser')}` parser; {payload.get('n_pairs')} genuine pairs over "
                 f"{payload.get('n_probes')} protected probes; PSNR / SSIM / changed share are measured inside each "
                 "probe's detected face box")
    for key, what in (("no_face", "without a detected face"), ("unreadable", "unreadable"),
                      ("single_photo", "left without a second photo of the person")):
        if data.get(key):
            lines.append(f"{len(data[key])} photo(s) {what}: {', '.join(map(str, data[key]))}")
    return "\n## Notes\n\n" + "".join(f"- {line}.\n" for line in lines)
