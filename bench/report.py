"""results.json and report.md of `facecloak bench run`, and the Markdown of `facecloak bench patterns`.

The runner builds the payload; this module names its keys, writes it atomically and renders it. No torch here.

Transfer payload (`results.json`), keys read by `render_markdown` (optional ones marked ?):

    recipe: str                        name of the recipe
    config: dict                       `Recipe.to_dict()` (description, controls, fills, evaluation.far, ...)
    environment: dict                  `environment_info()` plus command: str, run_time_s: float, started?: str
    n_photos, n_identities: int        photos and people used; n_no_face?: int photos without a detected face
    cells: list[dict]                  one per (source, target, budget, fill[, defence]):
        source, target: str; budget: float (percent); fill: str; defence?: str | None ("none" = no defence)
        n_pairs: int                   genuine (probe, reference) pairs
        transfer?: bool                target's network not among the source's models (derived when absent)
        delta_cos_<variant>: float     variant = "leam" or a control with "-" -> "_" (`delta_key`)
        dodge_far_<far>_<variant>: float         per-pair dodging share at that FAR (`dodge_key`)
        dodge_photo_far_<far>_<variant>?: float  per-photo dodging share (`dodge_key(..., per="photo")`)
        psnr, ssim, changed_share?: float        protected probe vs original inside the face's detection box
                                                 (PSNR in dB, shares in [0, 1])
        psnr_photo, ssim_photo?: float           the same over the whole photo
        stats?: {metric: {"mean", "std", "ci95": [lo, hi], "n"}}   `bench.stats.summaries` of the same metrics
        by_gender?: {gender: {metric: float, "n_pairs": int}}
    summary: dict                      `summarise_cells(cells)`: means over the cells at budget 1 %
    paper?: dict                       reference numbers to print beside ours (`PAPER_TRANSFER`)

Patterns payload (`patterns.json`, issue 3) for `render_patterns_markdown`:

    models: {id: {"bc_full": {"same": S, "different": S, "p_value": float}, "bc_mask": {...},
                  "region_shares": {region: fraction}, "layers"?: {layer: {"region_shares": {...}}},
                  "layer_diversity"?: float | S, "by_gender"?: {gender: {"region_shares": {...}, ...}}}}
      with S = {"mean", "std", "n"[, "ci95"]}
    n_photos, n_identities: int; test?: str (name of the test behind p_value); cross_model_bc?: {model: {model: float}};
    environment?; paper? (`PAPER_PATTERNS`)
"""

from __future__ import annotations

import json
import math
import os
import platform
import re
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from bench.config import LEAVE_ONE_OUT, is_transfer, parse_source
from facecloak.files import atomic_write_text

PAPER_TRANSFER: dict[str, Any] = {
    "delta_cos_leam": 0.1148,
    "delta_cos_random": 0.0286,
    "source": "arXiv 2509.17457 (abstract): top-1 % LEAM pixels vs the same number of random pixels, 9 models",
}
PAPER_PATTERNS: dict[str, Any] = {
    "bc_same": [0.32, 0.57],
    "bc_different": [0.04, 0.13],
    "nose_share": [0.189, 0.297],
    "source": "arXiv 2509.17457 (abstract): 1000 people, 9 models",
}
MAIN_BUDGET = 1.0
NO_DEFENCE = (None, "none", "")


# --- key names -----------------------------------------------------------------------------------------------


def variant_key(variant: str) -> str:
    """"leam" or a control name -> the suffix used in metric keys ("random-scatter" -> "random_scatter")."""
    return variant.replace("-", "_")


def delta_key(variant: str) -> str:
    return f"delta_cos_{variant_key(variant)}"


def far_label(far: float) -> str:
    """0.001 -> "1e-3", 0.01 -> "1e-2", 0.05 -> "5e-2" (the spelling of the issue's keys)."""
    mantissa, exponent = f"{far:.0e}".split("e")
    return f"{mantissa}e{int(exponent)}"


def dodge_key(far: float, variant: str, per: str = "pair") -> str:
    """Key of a dodging share: per pair `dodge_far_1e-3_leam`, per photo `dodge_photo_far_1e-3_leam`."""
    if per not in ("pair", "photo"):
        raise ValueError(f"per must be 'pair' or 'photo', got {per!r}")
    prefix = "dodge_far" if per == "pair" else "dodge_photo_far"
    return f"{prefix}_{far_label(far)}_{variant_key(variant)}"


_DODGE = re.compile(r"^dodge(_photo)?_far_(\d+e-?\d+)_(\w+)$")


# --- environment and writing ---------------------------------------------------------------------------------


def environment_info() -> dict[str, Any]:
    """Machine and versions for results.json (no host name, user name or paths)."""
    info: dict[str, Any] = {
        "platform": platform.platform(),
        "machine": platform.machine(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
    }
    for module in ("numpy", "torch", "onnxruntime", "facecloak"):
        try:
            from importlib.metadata import version

            info[module] = version(module)
        except Exception:  # not installed, or not installed as a distribution (source checkout)
            info[module] = None
    return info


def _finite(value: Any) -> Any:
    """JSON has no NaN/inf: they become null (e.g. the PSNR of an unchanged photo)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {str(k): _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def write_results(out_dir: str | Path, payload: Mapping[str, Any], name: str = "results.json") -> Path:
    """Write `payload` as `out_dir/name` atomically (temp file + rename); non-finite floats become null."""
    text = json.dumps(_finite(payload), indent=2, ensure_ascii=False, allow_nan=False) + "\n"
    return atomic_write_text(Path(out_dir) / name, text)


def write_text(out_dir: str | Path, name: str, text: str) -> Path:
    """Write a report (report.md, patterns.md) atomically."""
    return atomic_write_text(Path(out_dir) / name, text)


# --- cell arithmetic -----------------------------------------------------------------------------------------


def cell_is_transfer(cell: Mapping[str, Any]) -> bool:
    """The cell's own `transfer` flag, else derived from its source (leave-one-out is always transfer)."""
    if "transfer" in cell:
        return bool(cell["transfer"])
    spec = parse_source(str(cell["source"]))
    return spec.text == LEAVE_ONE_OUT or is_transfer(spec.models, str(cell["target"]))


def _no_defence(cell: Mapping[str, Any]) -> bool:
    return cell.get("defence") in NO_DEFENCE


def _close(a: float, b: float) -> bool:
    return math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=1e-12)


def main_budget(cells: Sequence[Mapping[str, Any]]) -> float | None:
    """1 % when the cells have it, else the budget closest to it."""
    budgets = sorted({float(c["budget"]) for c in cells})
    if not budgets:
        return None
    return min(budgets, key=lambda b: (abs(b - MAIN_BUDGET), b))


def _mean(values: Iterable[Any]) -> float | None:
    xs = [float(v) for v in values if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)]
    return sum(xs) / len(xs) if xs else None


def variants_in(cells: Sequence[Mapping[str, Any]]) -> list[str]:
    """Metric suffixes present as delta_cos_* keys, "leam" first."""
    found = {k[len("delta_cos_"):] for c in cells for k in c if k.startswith("delta_cos_")}
    return sorted(found, key=lambda v: (v != "leam", v))


def summarise_cells(
    cells: Sequence[Mapping[str, Any]], budget: float = MAIN_BUDGET, fill: str | None = None
) -> dict[str, Any]:
    """The issue's `summary`: mean over cells at `budget` (and `fill`, default the first fill seen) of every
    delta_cos_* metric, and `transfer_*` over the cells whose target is not among the source's models.

    Cells with a robustness defence are left out. Also returns how many cells each mean covers.
    """
    pool = [c for c in cells if _no_defence(c) and _close(c["budget"], budget)]
    if fill is None and pool:
        fill = str(pool[0]["fill"])
    pool = [c for c in pool if c["fill"] == fill]
    transfer = [c for c in pool if cell_is_transfer(c)]
    out: dict[str, Any] = {"budget": budget, "fill": fill, "n_cells": len(pool), "n_transfer_cells": len(transfer)}
    for v in variants_in(pool):
        key = f"delta_cos_{v}"
        out[key] = _mean(c.get(key) for c in pool)
        out[f"transfer_{key}"] = _mean(c.get(key) for c in transfer)
    return out


# --- Markdown helpers ----------------------------------------------------------------------------------------


def _fmt(x: Any, digits: int = 4) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "–"
    if isinstance(x, bool):
        return "yes" if x else "no"
    if isinstance(x, int):
        return str(x)
    if isinstance(x, float):
        return f"{x:.{digits}f}"
    return str(x)


def _pct(x: Any, digits: int = 1) -> str:
    return "–" if not isinstance(x, int | float) else f"{100 * x:.{digits}f} %"


def _stat(s: Mapping[str, Any] | None, digits: int = 4, ci: bool = True) -> str:
    """`mean ± std [lo, hi] (n=N)` of a `bench.stats.summary` dict."""
    if not s or s.get("mean") is None:
        return "–"
    text = f"{_fmt(s['mean'], digits)} ± {_fmt(s.get('std'), digits)}"
    if ci and s.get("ci95"):
        lo, hi = s["ci95"]
        text += f" [{_fmt(lo, digits)}, {_fmt(hi, digits)}]"
    if "n" in s:
        text += f" (n={s['n']})"
    return text


def _table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def _range(r: Any, pct: bool = False) -> str:
    if isinstance(r, list | tuple) and len(r) == 2:
        return f"{100 * r[0]:.1f}–{100 * r[1]:.1f} %" if pct else f"{r[0]:g}–{r[1]:g}"
    return _fmt(r)


def _duration(seconds: Any) -> str:
    if not isinstance(seconds, int | float):
        return "–"
    s = round(float(seconds))
    h, rem = divmod(s, 3600)
    m, sec = divmod(rem, 60)
    parts = [f"{h} h"] if h else []
    parts += [f"{m} min"] if h or m else []
    text = " ".join([*parts, f"{sec} s"])
    return text + f" ({float(seconds):.0f} s)" if s >= 60 else text


def _run_section(payload: Mapping[str, Any]) -> list[str]:
    env = dict(payload.get("environment") or {})
    command = env.get("command", payload.get("command"))
    run_time = env.get("run_time_s", payload.get("run_time_s"))
    machine = ", ".join(
        f"{label} {env[key]}" for key, label in (
            ("platform", "platform"), ("cpu_count", "CPUs:"), ("python", "Python"), ("torch", "torch"),
            ("numpy", "numpy"), ("facecloak", "facecloak"),
        ) if env.get(key) is not None
    )
    lines = ["## Run", ""]
    lines.append(f"- Command: `{command}`" if command else "- Command: (not recorded)")
    lines.append(f"- Run time: {_duration(run_time)}")
    if env.get("units_resumed") and env.get("unit_seconds_total") is not None:
        lines.append(f"- Compute time of all units, including the {env['units_resumed']} resumed from earlier runs: "
                     f"{_duration(env['unit_seconds_total'])}")
    if env.get("started"):
        lines.append(f"- Started: {env['started']}")
    lines.append(f"- Machine: {machine or '(not recorded)'}")
    data = f"- Data: {_fmt(payload.get('n_photos'))} photos of {_fmt(payload.get('n_identities'))} people"
    if payload.get("n_no_face") is not None:
        data += f"; {payload['n_no_face']} photos without a detected face (counted, not used)"
    lines += [data, ""]
    return lines


def _label(variant: str) -> str:
    return "LEAM" if variant == "leam" else variant.replace("_", "-")


# --- transfer report -----------------------------------------------------------------------------------------


def _cell_value(cell: Mapping[str, Any], key: str, with_n: bool) -> str:
    stats = (cell.get("stats") or {}).get(key)
    mean = cell.get(key)
    if mean is None:
        return "–"
    text = _fmt(mean)
    if stats and stats.get("std") is not None:
        text += f" ± {_fmt(stats['std'], 3)}"
    if with_n:
        text += f" (n={stats['n'] if stats and 'n' in stats else cell.get('n_pairs', '?')})"
    return text


def _n_of(cell: Mapping[str, Any], key: str) -> Any:
    stats = (cell.get("stats") or {}).get(key)
    return stats["n"] if stats and "n" in stats else cell.get("n_pairs")


def _matrix_tables(cells: Sequence[Mapping[str, Any]], budget: float, fills: Sequence[str]) -> list[str]:
    lines: list[str] = []
    for fill in fills:
        group = [c for c in cells if c["fill"] == fill]
        if not group:
            continue
        sources = list(dict.fromkeys(str(c["source"]) for c in group))
        targets = list(dict.fromkeys(str(c["target"]) for c in group))
        by = {(c["source"], c["target"]): c for c in group}
        for v in variants_in(group):
            key = f"delta_cos_{v}"
            ns = {_n_of(c, key) for c in group if c.get(key) is not None}
            with_n = len(ns) > 1
            lines += [f"### Δcos {_label(v)}, fill {fill}, budget {budget:g} %", ""]
            rows = []
            for s in sources:
                row = [f"**{s}**"]
                for t in targets:
                    c = by.get((s, t))
                    if c is None:
                        row.append("")
                        continue
                    mark = "" if cell_is_transfer(c) else " ⁽ʷᵇ⁾"
                    row.append(_cell_value(c, key, with_n) + mark)
                rows.append(row)
            lines += [_table(["source \\ target", *targets], rows), ""]
            if not with_n and ns:
                lines += [f"n = {ns.pop()} genuine pairs in every cell; ⁽ʷᵇ⁾ = white-box (target among the sources).",
                          ""]
    return lines


def _summary_section(
    cells: Sequence[Mapping[str, Any]], budget: float, fill: str, paper: Mapping[str, Any]
) -> list[str]:
    s = summarise_cells(cells, budget, fill)
    header = ["", f"all cells (n={s['n_cells']})", f"transfer cells (n={s['n_transfer_cells']})"]
    if paper:
        header.append("paper")
    variants = variants_in([c for c in cells if c["fill"] == fill])
    rows = []
    for v in variants:
        key = f"delta_cos_{v}"
        row = [f"Δcos {_label(v)}", _fmt(s.get(key)), _fmt(s.get(f"transfer_{key}"))]
        if paper:
            row.append(_fmt(paper.get(key, paper.get("delta_cos_random") if v != "leam" else None)))
        rows.append(row)
    leam = s.get("delta_cos_leam")
    for v in variants:
        if v == "leam":
            continue
        ctrl, tctrl = s.get(f"delta_cos_{v}"), s.get(f"transfer_delta_cos_{v}")
        tleam = s.get("transfer_delta_cos_leam")
        row = [f"ratio LEAM / {_label(v)}", _ratio(leam, ctrl), _ratio(tleam, tctrl)]
        if paper:
            pl, pr = paper.get("delta_cos_leam"), paper.get(f"delta_cos_{v}", paper.get("delta_cos_random"))
            row.append(_ratio(pl, pr))
        rows.append(row)
    lines = [f"## Summary: Δcos at {budget:g} %, fill {fill}", "",
             "Mean over cells of each cell's mean Δcos = cos(probe, ref) − cos(protected probe, ref) on the target.",
             ""]
    return [*lines, _table(header, rows), ""]


def _ratio(a: Any, b: Any) -> str:
    if not isinstance(a, int | float) or not isinstance(b, int | float) or b == 0:
        return "–"
    return f"{a / b:.2f}×"


def _dodge_columns(cells: Sequence[Mapping[str, Any]]) -> list[str]:
    keys = {k for c in cells for k in c if _DODGE.match(k)}

    def order(k: str) -> tuple[bool, float, bool, str]:
        m = _DODGE.match(k)
        assert m is not None  # filtered above
        photo, far, variant = m.groups()
        return (bool(photo), -float(far), variant != "leam", variant)

    return sorted(keys, key=order)


def _dodge_header(key: str) -> str:
    m = _DODGE.match(key)
    assert m is not None
    photo, far, variant = m.groups()
    return f"{_label(variant)} FAR {far} ({'photo' if photo else 'pair'})"


def _dodge_section(cells: Sequence[Mapping[str, Any]], budget: float) -> list[str]:
    cols = _dodge_columns(cells)
    if not cols:
        return []
    rows = []
    for c in cells:
        rows.append([str(c["source"]), str(c["target"]), str(c["fill"]), _fmt(c.get("n_pairs")),
                     *(_pct(c.get(k)) for k in cols)])
    return [f"## Dodging success at {budget:g} %", "",
            "Share of protected probes whose cosine falls below the target's threshold at that false-accept rate "
            "(thresholds calibrated once per model on impostor pairs). Per pair: to one clean reference; per photo: "
            "to every clean photo of the person.", "",
            _table(["source", "target", "fill", "n pairs", *map(_dodge_header, cols)], rows), ""]


def _quality_section(cells: Sequence[Mapping[str, Any]]) -> list[str]:
    groups: dict[tuple[str, str, float], list[Mapping[str, Any]]] = defaultdict(list)
    for c in cells:
        if any(c.get(k) is not None for k in ("psnr", "ssim", "changed_share")):
            groups[(str(c["source"]), str(c["fill"]), float(c["budget"]))].append(c)
    if not groups:
        return []
    rows = []
    for (source, fill, budget), group in sorted(groups.items(), key=lambda kv: (kv[0][1], kv[0][0], kv[0][2])):
        first = group[0]
        stats = first.get("stats") or {}
        n = (stats.get("psnr") or {}).get("n", first.get("n_pairs"))
        rows.append([source, fill, f"{budget:g} %", _fmt(_mean(c.get("psnr") for c in group), 2),
                     _fmt(_mean(c.get("ssim") for c in group)), _pct(_mean(c.get("changed_share") for c in group), 2),
                     _fmt(_mean(c.get("psnr_photo") for c in group), 2),
                     _fmt(_mean(c.get("ssim_photo") for c in group)), _fmt(n)])
    return ["## Image quality of the protected probes", "",
            "PSNR (dB) and SSIM against the original photo inside the face's detection box (where every change is), "
            "share of the box's pixels changed, and PSNR / SSIM of the whole photo (– in runs made before it was "
            "recorded); per source, fill and budget (the image does not depend on the target; n: probes when the "
            "cell has statistics, else pairs). An unchanged photo has infinite PSNR (shown as –).", "",
            _table(["source", "fill", "budget", "PSNR box", "SSIM box", "changed", "PSNR photo", "SSIM photo", "n"],
                   rows), ""]


def _gender_section(cells: Sequence[Mapping[str, Any]]) -> list[str]:
    per: dict[str, dict[str, list[Any]]] = defaultdict(lambda: defaultdict(list))
    for c in cells:
        for gender, metrics in (c.get("by_gender") or {}).items():
            for k, v in metrics.items():
                per[gender][k].append(v)
    if not per:
        return []
    variants = sorted({k[len("delta_cos_"):] for g in per.values() for k in g if k.startswith("delta_cos_")},
                      key=lambda v: (v != "leam", v))
    rows = [[g, *(_fmt(_mean(per[g].get(f"delta_cos_{v}", []))) for v in variants),
             _fmt(sum(int(n) for n in per[g].get("n_pairs", []) if isinstance(n, int)))] for g in sorted(per)]
    return ["## Per gender", "", "Mean over the cells above of each gender's mean Δcos (paper: occlusion is more "
            "effective on images of women; no number given).", "",
            _table(["gender", *(f"Δcos {_label(v)}" for v in variants), "pairs (sum over cells)"], rows), ""]


def _robustness_section(cells: Sequence[Mapping[str, Any]]) -> list[str]:
    defended = [c for c in cells if not _no_defence(c)]
    if not defended:
        return []
    groups: dict[tuple[str, float, str], list[Mapping[str, Any]]] = defaultdict(list)
    for c in cells:
        groups[(str(c["fill"]), float(c["budget"]), str(c.get("defence") or "none"))].append(c)
    cols = [k for k in ("delta_cos_leam", "delta_cos_random_scatter") if any(k in c for c in cells)]
    dodge_cols = [k for k in _dodge_columns(cells) if not k.startswith("dodge_photo")]
    rows = []
    for (fill, budget, defence), group in sorted(groups.items(), key=lambda kv: (kv[0][0], kv[0][1], kv[0][2] != "none",
                                                                                 kv[0][2])):
        rows.append([fill, f"{budget:g} %", defence, *(_fmt(_mean(c.get(k) for c in group)) for k in cols),
                     *(_pct(_mean(c.get(k) for c in group)) for k in dodge_cols), str(len(group))])
    header = ["fill", "budget", "defence", *(f"Δcos {_label(k[len('delta_cos_'):])}" for k in cols),
              *map(_dodge_header, dodge_cols), "cells"]
    return ["## Robustness: after common processing and adaptive defences", "",
            "Means over the (source, target) cells; `none` is the protected photo as written.", "",
            _table(header, rows), ""]


def render_markdown(payload: Mapping[str, Any]) -> str:
    """report.md of a transfer benchmark (see the module docstring for the payload)."""
    config = dict(payload.get("config") or {})
    cells: list[Mapping[str, Any]] = list(payload.get("cells") or [])
    paper = dict(payload.get("paper") or {})
    lines = [f"# Transfer benchmark: recipe `{payload.get('recipe', config.get('name', '?'))}`", ""]
    if config.get("description"):
        lines += [str(config["description"]), ""]
    lines += _run_section(payload)

    plain = [c for c in cells if _no_defence(c)]
    budget = main_budget(plain)
    if budget is None:
        lines += ["No cells were computed.", ""]
    else:
        at_budget = [c for c in plain if _close(c["budget"], budget)]
        fills = list(dict.fromkeys(str(c["fill"]) for c in at_budget))
        for fill in fills:
            lines += _summary_section(at_budget, budget, fill, paper)
        if paper.get("source"):
            lines += [f"Paper numbers: {paper['source']}.", ""]
        lines += ["## Δcos matrices (rows: source, columns: target)", "",
                  "Mean ± std over genuine pairs; controls have the same pixel count as the LEAM mask and are seeded.",
                  ""]
        lines += _matrix_tables(at_budget, budget, fills)
        lines += _dodge_section(at_budget, budget)
        lines += _quality_section(plain)
        lines += _gender_section(at_budget)
    lines += _robustness_section(cells)
    if config:
        lines += ["## Configuration", "", "```json", json.dumps(_finite(config), indent=2), "```", ""]
    return "\n".join(lines).rstrip() + "\n"


# --- patterns report -----------------------------------------------------------------------------------------


def _bc_cells(block: Mapping[str, Any] | None) -> list[str]:
    if not block:
        return ["–", "–", "–"]
    p = _p(block.get("p_value"))
    if isinstance(block.get("p_value_permutation"), int | float):
        p += f" / {_p(block['p_value_permutation'])}"
    return [_stat(block.get("same"), 3, ci=False), _stat(block.get("different"), 3, ci=False), p]


def _p(p: Any) -> str:
    if not isinstance(p, int | float):
        return "–"
    return f"{p:.1e}" if p < 1e-3 else f"{p:.3f}"


def _shares_table(rows_by_name: Mapping[str, Mapping[str, Any]], first: str) -> str:
    regions: list[str] = []
    for shares in rows_by_name.values():
        regions += [r for r in shares if r not in regions]
    rows = [[name, *(_pct(shares.get(r)) for r in regions)] for name, shares in rows_by_name.items()]
    return _table([first, *regions], rows)


def _n_perm(models: Mapping[str, Mapping[str, Any]]) -> str:
    counts = {n for m in models.values() if isinstance(n := (m.get("bc_mask") or {}).get("n_permutations"), int)}
    return ", ".join(f"{c:,}" for c in sorted(counts)) or "?"


def render_patterns_markdown(payload: Mapping[str, Any]) -> str:
    """patterns.md of `bench patterns` (see the module docstring for the payload)."""
    models: Mapping[str, Mapping[str, Any]] = payload.get("models") or {}
    paper = dict(payload.get("paper") or {})
    lines = ["# LEAM patterns: person-specificity, regions, layers", ""]
    lines += _run_section(payload)

    lines += ["## Person-specificity: Bhattacharyya coefficient, same vs different person", "",
              "BC of overall maps (full) and of the top-k % masks taken as uniform distributions (mask; then BC is the "
              f"overlap fraction); mean ± std (n pairs); p: {payload.get('test', 'two-sample test')}, same vs "
              "different"
              + (f"; after the slash: {payload['permutation_test']} ({_n_perm(models)} permutations; photos as the "
                 "unit, so this is the p-value to trust)" if payload.get("permutation_test") else "")
              + ".", ""]
    rows = []
    for name, m in models.items():
        nose = (m.get("region_shares") or {}).get("nose")
        rows.append([f"**{name}**", *_bc_cells(m.get("bc_full")), *_bc_cells(m.get("bc_mask")), _pct(nose)])
    if paper:
        rows.append(["*paper*", _range(paper.get("bc_same")), _range(paper.get("bc_different")), "", "", "", "",
                     _range(paper.get("nose_share"), pct=True)])
    header = ["model", "BC full same", "BC full different", "p (full)", "BC mask same", "BC mask different",
              "p (mask)", "nose share"]
    lines += [_table(header, rows), ""]
    if paper:
        lines += ["The paper's BC ranges are for its overall activation patterns (the abstract does not say full map "
                  "or mask, so they stand beside both); its nose share is of the critical recognition regions."
                  + (f" Source: {paper['source']}." if paper.get("source") else ""), ""]

    shares = {name: m["region_shares"] for name, m in models.items() if m.get("region_shares")}
    if shares:
        lines += ["## Region shares of the top-k % pixels", "", _shares_table(shares, "model"), ""]
    for name, m in models.items():
        layers = {layer: d["region_shares"] for layer, d in (m.get("layers") or {}).items() if d.get("region_shares")}
        if layers:
            lines += [f"### Per layer: {name}", "", _shares_table(layers, "layer"), ""]

    diversity = {name: m["layer_diversity"] for name, m in models.items() if m.get("layer_diversity") is not None}
    if diversity:
        lines += ["## Layer diversity (BC between the layer maps of one model; low = layers look at different areas)",
                  ""]
        lines += [_table(["model", "BC between layers"],
                         [[n, _stat(d, 3, ci=False) if isinstance(d, Mapping) else _fmt(d, 3)]
                          for n, d in diversity.items()]), ""]
    cross = payload.get("cross_model_bc") or {}
    if cross:
        names = list(cross)
        cols = list(dict.fromkeys(c for row in cross.values() for c in row))
        lines += ["## Cross-model BC of overall maps (common template)", "",
                  _table(["", *cols], [[n, *(_fmt(cross[n].get(c), 3) for c in cols)] for n in names]), ""]
    for name, m in models.items():
        genders = m.get("by_gender") or {}
        if genders:
            rows = [[g, *_bc_cells(d.get("bc_mask")), _pct((d.get("region_shares") or {}).get("nose"))]
                    for g, d in genders.items()]
            lines += [f"### By gender: {name}", "",
                      _table(["gender", "BC mask same", "BC mask different", "p", "nose share"], rows), ""]
    return "\n".join(lines).rstrip() + "\n"
