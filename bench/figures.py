"""PNG figures of the benchmarks. Matplotlib's object API on the Agg canvas: no pyplot, no windows, no global
backend switch, so importing this module changes nothing for the caller.

Every function takes plain arrays (or result cells), writes one PNG atomically and returns its path.
"""

from __future__ import annotations

import io
import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from numpy.typing import ArrayLike

from bench.report import MAIN_BUDGET, cell_is_transfer, variants_in
from facecloak.files import atomic_write_bytes

DPI = 120


def _save(fig: Figure, path: str | Path) -> Path:
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, bbox_inches="tight")
    return atomic_write_bytes(Path(path), buf.getvalue())


def heatmap(
    matrix: np.ndarray,
    sources: Sequence[str],
    targets: Sequence[str],
    path: str | Path,
    title: str = "",
    white_box: np.ndarray | None = None,
    label: str = "Δcos",
) -> Path:
    """S×T heatmap with values written in the cells; diverging colours centred on 0 (red: > 0).

    matrix: (len(sources), len(targets)) floats, NaN for a missing cell. white_box: same shape, bool; those cells
    get a black frame.
    """
    m = np.asarray(matrix, dtype=float)
    if m.shape != (len(sources), len(targets)):
        raise ValueError(f"matrix shape {m.shape} does not match {len(sources)} sources × {len(targets)} targets")
    finite = m[np.isfinite(m)]
    vmax = float(np.max(np.abs(finite))) if finite.size else 1.0
    vmax = vmax or 1.0
    fig = Figure(figsize=(1.2 + 1.0 * len(targets), 1.0 + 0.6 * len(sources)))
    ax = fig.add_subplot()
    im = ax.imshow(np.ma.masked_invalid(m), cmap="RdBu_r", vmin=-vmax, vmax=vmax, aspect="auto")
    ax.set_xticks(range(len(targets)), labels=list(targets), rotation=35, ha="right")
    ax.set_yticks(range(len(sources)), labels=list(sources))
    ax.set_xlabel("target")
    ax.set_ylabel("source")
    for i in range(m.shape[0]):
        for j in range(m.shape[1]):
            if math.isfinite(m[i, j]):
                dark = abs(m[i, j]) > 0.6 * vmax
                ax.text(j, i, f"{m[i, j]:.3f}", ha="center", va="center", fontsize=8,
                        color="white" if dark else "black")
            if white_box is not None and white_box[i, j]:
                ax.add_patch(_frame(j, i))
    fig.colorbar(im, ax=ax, label=label)
    if title:
        ax.set_title(title, fontsize=10)
    return _save(fig, path)


def _frame(x: float, y: float) -> Any:
    from matplotlib.patches import Rectangle

    return Rectangle((x - 0.5, y - 0.5), 1, 1, fill=False, edgecolor="black", linewidth=1.5)


def transfer_heatmap(
    cells: Sequence[Mapping[str, Any]],
    path: str | Path,
    budget: float = MAIN_BUDGET,
    fill: str | None = None,
    control: str = "random_scatter",
) -> Path:
    """Heatmap of Δcos LEAM minus Δcos `control` per (source, target) at `budget` and `fill` (first one seen)."""
    group = [c for c in cells if math.isclose(float(c["budget"]), budget) and c.get("defence") in (None, "none", "")]
    fill = fill or (str(group[0]["fill"]) if group else None)
    group = [c for c in group if c["fill"] == fill]
    if not group:
        raise ValueError(f"no cells at budget {budget:g} % and fill {fill!r}")
    sources = list(dict.fromkeys(str(c["source"]) for c in group))
    targets = list(dict.fromkeys(str(c["target"]) for c in group))
    m = np.full((len(sources), len(targets)), np.nan)
    wb = np.zeros(m.shape, dtype=bool)
    for c in group:
        i, j = sources.index(str(c["source"])), targets.index(str(c["target"]))
        a, b = c.get("delta_cos_leam"), c.get(f"delta_cos_{control}")
        if a is not None and b is not None:
            m[i, j] = float(a) - float(b)
        wb[i, j] = not cell_is_transfer(c)
    title = f"Δcos LEAM − {control.replace('_', '-')}, {budget:g} %, fill {fill} (framed: white-box)"
    return heatmap(m, sources, targets, path, title=title, white_box=wb, label="Δcos difference")


def deletion_curves(
    budgets: Sequence[float],
    curves: Mapping[str, ArrayLike],
    path: str | Path,
    bands: Mapping[str, tuple[ArrayLike, ArrayLike]] | None = None,
    title: str = "Deletion curve",
) -> Path:
    """Δcos against budget (percent, log axis) for each named ordering; optional (lo, hi) band per curve."""
    x = np.asarray(budgets, dtype=float)
    fig = Figure(figsize=(5.5, 4))
    ax = fig.add_subplot()
    for name, ys in curves.items():
        y = np.asarray(ys, dtype=float)
        if y.shape != x.shape:
            raise ValueError(f"curve {name!r} has {y.size} points for {x.size} budgets")
        (line,) = ax.plot(x, y, marker="o", label=name)
        if bands and name in bands:
            lo, hi = (np.asarray(v, dtype=float) for v in bands[name])
            ax.fill_between(x, lo, hi, color=line.get_color(), alpha=0.2, linewidth=0)
    if x.size and np.all(x > 0):
        ax.set_xscale("log")
        ax.set_xticks(x, labels=[f"{b:g}" for b in x])
        ax.set_xticks([], minor=True)  # the log axis' own minor labels overlap the budgets
    ax.set_xlabel("pixels changed (% of the face region)")
    ax.set_ylabel("Δcos (drop in cosine to the reference)")
    ax.axhline(0, color="grey", linewidth=0.8)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(title, fontsize=10)
    return _save(fig, path)


def deletion_curves_from_cells(
    cells: Sequence[Mapping[str, Any]], path: str | Path, fill: str | None = None, transfer_only: bool = False
) -> Path:
    """Deletion curves averaged over (source, target) cells: LEAM and every control present, per budget."""
    group = [c for c in cells if c.get("defence") in (None, "none", "")]
    fill = fill or (str(group[0]["fill"]) if group else None)
    group = [c for c in group if c["fill"] == fill and (not transfer_only or cell_is_transfer(c))]
    if not group:
        raise ValueError(f"no cells for fill {fill!r}")
    budgets = sorted({float(c["budget"]) for c in group})
    # Average the same (source, target) pairs at every budget, or the curve would mix different cell sets.
    have: dict[tuple[str, str], set[float]] = defaultdict(set)
    for c in group:
        have[(str(c["source"]), str(c["target"]))].add(float(c["budget"]))
    complete = {pair for pair, bs in have.items() if bs == set(budgets)}
    if not complete:
        raise ValueError("no (source, target) pair has a cell at every budget")
    group = [c for c in group if (str(c["source"]), str(c["target"])) in complete]
    acc: dict[str, dict[float, list[float]]] = defaultdict(lambda: defaultdict(list))
    for c in group:
        for v in variants_in([c]):
            value = c.get(f"delta_cos_{v}")
            if value is not None:
                acc[v][float(c["budget"])].append(float(value))
    curves = {
        ("LEAM" if v == "leam" else v.replace("_", "-")): [float(np.mean(acc[v][b])) if acc[v][b] else math.nan
                                                           for b in budgets]
        for v in variants_in(group)
    }
    scope = "transfer (source, target) pairs" if transfer_only else "(source, target) pairs"
    title = f"Deletion curve, fill {fill}, mean over {len(complete)} {scope}"
    return deletion_curves(budgets, curves, path, title=title)


def bc_histograms(
    same: ArrayLike, different: ArrayLike, path: str | Path, title: str = "Bhattacharyya coefficient"
) -> Path:
    """Overlaid, density-normalised histograms of BC for same-person and different-person pairs."""
    a, b = np.asarray(same, dtype=float), np.asarray(different, dtype=float)
    both = np.concatenate([a, b])
    if both.size == 0:
        raise ValueError("no BC values to plot")
    lo, hi = float(both.min()), float(both.max())
    bins = np.linspace(lo, hi if hi > lo else lo + 1e-6, 31)
    fig = Figure(figsize=(5.5, 4))
    ax = fig.add_subplot()
    for values, name in ((a, "same person"), (b, "different people")):
        if values.size:
            ax.hist(values, bins=bins.tolist(), density=True, alpha=0.55, label=f"{name} (n={values.size})")
    ax.set_xlabel("BC")
    ax.set_ylabel("density")
    ax.legend(fontsize=8)
    ax.set_title(title, fontsize=10)
    return _save(fig, path)


def region_share_bars(
    shares: Mapping[str, Mapping[str, float]], path: str | Path, title: str = "Share of the top-k % pixels per region"
) -> Path:
    """Grouped bars: one group per region, one bar per model (shares as fractions, drawn in percent)."""
    if not shares:
        raise ValueError("no region shares to plot")
    regions: list[str] = []
    for s in shares.values():
        regions += [r for r in s if r not in regions]
    x = np.arange(len(regions))
    width = 0.8 / len(shares)
    fig = Figure(figsize=(1.2 + 0.9 * len(regions), 4))
    ax = fig.add_subplot()
    for k, (model, s) in enumerate(shares.items()):
        ax.bar(x + (k - (len(shares) - 1) / 2) * width, [100 * s.get(r, 0.0) for r in regions], width, label=model)
    ax.set_xticks(x, labels=regions, rotation=20)
    ax.set_ylabel("% of selected pixels")
    ax.legend(fontsize=8)
    ax.set_title(title, fontsize=10)
    return _save(fig, path)


def overlay_mask(photo: np.ndarray, mask: np.ndarray, color: tuple[int, int, int] = (255, 0, 0)) -> np.ndarray:
    """Copy of an RGB uint8 photo with the mask's pixels painted `color` (masks of 1 % are too sparse to tint)."""
    img = np.asarray(photo)
    m = np.asarray(mask).astype(bool)
    if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
        raise ValueError(f"photo must be uint8 RGB (H, W, 3), got {img.dtype} {img.shape}")
    if m.shape != img.shape[:2]:
        raise ValueError(f"mask shape {m.shape} does not match the photo's {img.shape[:2]}")
    out = img.copy()
    out[m] = color
    return out


def example_grid(
    photos: Sequence[np.ndarray],
    masks: Sequence[np.ndarray],
    path: str | Path,
    titles: Sequence[str] | None = None,
    protected: Sequence[np.ndarray] | None = None,
) -> Path:
    """One row per example: the photo, the photo with its mask in red, and optionally the protected photo."""
    if len(photos) != len(masks) or not photos:
        raise ValueError(f"need as many masks as photos (and at least one), got {len(photos)} and {len(masks)}")
    if protected is not None and len(protected) != len(photos):
        raise ValueError("need one protected photo per photo")
    cols = 2 if protected is None else 3
    fig = Figure(figsize=(2.4 * cols, 2.4 * len(photos)))
    axes = fig.subplots(len(photos), cols, squeeze=False)
    for i, (photo, mask) in enumerate(zip(photos, masks, strict=True)):
        panels = [photo, overlay_mask(photo, mask)] + ([protected[i]] if protected is not None else [])
        names = ["photo", f"mask ({100 * np.asarray(mask).astype(bool).mean():.1f} %)", "protected"]
        for j, panel in enumerate(panels):
            ax = axes[i][j]
            ax.imshow(panel)
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(names[j] if not titles else f"{titles[i]}: {names[j]}", fontsize=8)
    return _save(fig, path)


def level_examples(rgb: np.ndarray, out: str | Path, levels: Sequence[str] = ("low", "medium", "high", "max"),
                   seed: int = 0) -> tuple[Path, dict[str, dict[str, float]]]:
    """Before/after crops of the largest face of `rgb` at each protection level (the file as `facecloak protect`
    would write it as PNG), at 2x zoom so single pixels show; returns the figure and per level its whole-photo
    SSIM and changed pixels."""
    import facecloak
    from bench.stats import ssim_local_change
    from facecloak.protection.levels import LEVELS

    panels = [("original", rgb)]
    quality: dict[str, dict[str, float]] = {}
    box = None
    for name in levels:
        result = facecloak.protect(rgb, seed=seed, **LEVELS.get(name).protect_options())
        face = max(result.faces, key=lambda f: f.face.area).face
        box = box or face.box
        panels.append((name, result.image))
        quality[name] = {"ssim_photo": ssim_local_change(rgb, result.image), "pixels_changed": result.pixels_changed}
    if box is None:
        raise ValueError("level_examples needs at least one level and a photo with a face")
    x0, y0, x1, y1 = (round(v) for v in box)
    pad = int(0.15 * (x1 - x0))
    crop = (slice(max(0, y0 - pad), y1 + pad), slice(max(0, x0 - pad), x1 + pad))
    fig = Figure(figsize=(3.2 * len(panels), 3.6))
    FigureCanvasAgg(fig)
    for k, (name, img) in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), k + 1)
        ax.imshow(img[crop], interpolation="nearest")
        q = quality.get(name)
        ax.set_title(name if q is None else f"{name}: SSIM {q['ssim_photo']:.4f}", fontsize=9)
        ax.axis("off")
    fig.tight_layout()
    return _save(fig, out), quality
