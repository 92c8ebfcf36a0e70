"""Which LEAM variant makes the paper's findings hold? A fractional comparison on a labelled set.

    facecloak bench variants --data ../shared/faces/deepface -o OUT [--sources mbf-arc,dlib-r29]
                             [--targets mbf-arc,dlib-r29,mbf-tf] [--probes-per-identity 2] [--seed 0]
                             [--extra "layercam/early/topk/contrast;..."] [--variants "...;..."]

Factors (docs LEAM.md): method (gradcam, layercam, gradxact) × layer set (each model's 4 default layers;
`early` = the first half of them; `last` = the last one; `default+input` = the 4 plus the gradient × input
pseudo-layer) × selection (topk, stratified, sampled) × target (reference = leave-one-out centroid, flip,
contrast = reference minus 5 impostor centroids). Design: the baseline (gradcam, default, topk, reference), each
other level of one factor with the rest at baseline, then combinations of the best level of every factor.

Per variant and source model S:
- person-specificity: BC of overall maps (full) and of the selected masks, same-person vs different-person pairs,
  one-sided Mann-Whitney p;
- occlusion at `--budget` % (black fill) of each probe's face region, Δcos = cos(f_T(probe), f_T(ref)) −
  cos(f_T(occluded probe), f_T(ref)) over genuine (probe, reference) pairs, for the LEAM mask and three controls of
  the same pixel count: `random-scatter` (uniform pixels of the face region), `random-shape` (the LEAM mask moved
  inside the face region) and `other-person` (the LEAM mask of a photo of somebody else, same variant and S).
  S = T cells are white-box, the others transfer.

The mask is made in the common template, warped to the photo (nearest), the photo's pixels are blackened and the
occluded photo is aligned again to T's template — what `facecloak protect` writes, read back from a PNG (lossless,
so the array is used). Photos are cut to a region around the face first, which gives the same crops for less work.
Alignment (`align_faces`), maps (`leamface.model_maps`) and selection (`leamface.select_pixels`) are the masking
stage's (`facecloak.masking.stage`), as in `protect`; face regions are `bench.patterns.load_faces`'s (photo-resolution
labels, as the committed results were measured).

Cost control: layer sets are derived from one computation of (default layers + input) per (method, target),
since the overall map is the equal-weight mean of the non-empty layer maps; the random-scatter control does not
depend on the variant and is evaluated once.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from bench.controls import control_rng, other_person_index, random_scatter, random_shape
from bench.patterns import (
    N_IMPOSTORS,
    FaceData,
    PairSet,
    compare,
    different_pairs,
    embed_all,
    impostor_centroids,
    leam_settings,
    load_faces,
    maps_for,
    pair_bc,
    pair_mask_bc,
    same_pairs,
)
from bench.report import environment_info, write_results, write_text

FACTORS: dict[str, tuple[str, ...]] = {
    "method": ("gradcam", "layercam", "gradxact"),
    "layers": ("default", "early", "last", "default+input"),
    "selection": ("topk", "stratified", "sampled"),
    "target": ("reference", "flip", "contrast"),
}
KINDS = ("leam", "random_scatter", "random_shape", "other_person")


@dataclass(frozen=True)
class Variant:
    method: str = "gradcam"
    layers: str = "default"
    selection: str = "topk"
    target: str = "reference"

    @property
    def name(self) -> str:
        return f"{self.method}/{self.layers}/{self.selection}/{self.target}"


BASELINE = Variant()


def one_factor_design(baseline: Variant = BASELINE) -> list[Variant]:
    """The baseline, then every other level of each factor with the remaining factors at the baseline."""
    out = [baseline]
    for factor, levels in FACTORS.items():
        out += [replace(baseline, **{factor: level}) for level in levels if level != getattr(baseline, factor)]
    return out


def best_levels(scores: Mapping[Variant, float], baseline: Variant = BASELINE) -> dict[str, list[str]]:
    """Per factor, its levels ordered best first by the one-factor variants' scores (baseline scores its level)."""
    out: dict[str, list[str]] = {}
    for factor, levels in FACTORS.items():
        scored = {}
        for level in levels:
            v = replace(baseline, **{factor: level})
            if v in scores:
                scored[level] = scores[v]
        out[factor] = sorted(scored, key=lambda lv: -scored[lv])
    return out


def combinations(order: Mapping[str, Sequence[str]], tried: Sequence[Variant], n: int = 2) -> list[Variant]:
    """Up to `n` new variants: the best level of every factor, then that with one factor at its runner-up
    (the factor whose runner-up comes first in FACTORS order), skipping variants already tried."""
    best = Variant(**{f: lv[0] for f, lv in order.items() if lv})
    candidates = [best] + [replace(best, **{f: lv[1]}) for f, lv in order.items() if len(lv) > 1]
    out: list[Variant] = []
    for c in candidates:
        if c not in tried and c not in out:
            out.append(c)
        if len(out) == n:
            break
    return out


def layer_indices(kind: str, n_default: int) -> list[int]:
    """Indices into (default layers..., input) of a layer set."""
    if kind == "default":
        return list(range(n_default))
    if kind == "early":
        return list(range(max(1, n_default // 2)))
    if kind == "last":
        return [n_default - 1]
    if kind == "default+input":
        return list(range(n_default + 1))
    raise ValueError(f"unknown layer set {kind!r}; choose one of {', '.join(FACTORS['layers'])}")


def overall_from_layers(layer_maps: np.ndarray, indices: Sequence[int]) -> np.ndarray:
    """Equal-weight mean of the non-empty maps among `indices` of (N, L, S, S), renormalised (leam's rule)."""
    chosen = layer_maps[:, list(indices)].astype(np.float64)
    mass = chosen.sum(axis=(2, 3))
    present = mass > 0
    norm = np.where(present, mass, 1.0)[:, :, None, None]
    weights = present / np.maximum(present.sum(axis=1, keepdims=True), 1)
    out = (weights[:, :, None, None] * chosen / norm).sum(axis=1)
    total = out.sum(axis=(1, 2), keepdims=True)
    return (out / np.where(total > 0, total, 1.0)).astype(np.float32)


# --- occlusion -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Probe:
    index: int
    references: tuple[int, ...]


def choose_probes(identities: Sequence[str], per_identity: int | None, rng: np.random.Generator) -> list[Probe]:
    """Up to `per_identity` probe photos per person (seeded); each probe's references are all the person's
    other photos, so the genuine pairs are (probe, reference) with two different files."""
    ids = np.asarray(identities)
    probes = []
    for person in sorted(set(ids.tolist())):
        rows = np.flatnonzero(ids == person)
        chosen = rows if per_identity is None or per_identity >= len(rows) else np.sort(
            rng.choice(rows, size=per_identity, replace=False))
        probes += [Probe(int(i), tuple(int(j) for j in rows if j != i)) for i in chosen]
    return probes


class Occluder:
    """Black-fill occlusion of probe photos and the resulting Δcos on each target model."""

    def __init__(self, faces: FaceData, targets: Sequence[str], embeddings: Mapping[str, np.ndarray],
                 probes: Sequence[Probe], common_template: str, device: str = "cpu") -> None:
        from facecloak.faces.align import TEMPLATES, compose_affine
        from facecloak.masking.stage import align_faces, resolve_device
        from facecloak.models import get_spec

        if faces.photos is None:
            raise ValueError("the occlusion benchmark needs the photos (load_faces(..., keep_photos=True))")
        self.targets = tuple(targets)
        self.probes = tuple(probes)
        self.device = resolve_device(device)  # where the targets run
        self.sizes = {t: get_spec(t).input_size for t in targets}
        self.unit = {t: embeddings[t] / np.linalg.norm(embeddings[t], axis=1, keepdims=True) for t in targets}
        self.regions: list[np.ndarray] = []
        self.common: list[np.ndarray] = []
        self.to_target: list[dict[str, np.ndarray]] = []
        templates = {t: get_spec(t).template for t in targets}
        for probe in self.probes:
            photo, face = faces.photos[probe.index], faces.bench.photos[probe.index].face
            matrices = align_faces(photo, [face], (*templates.values(), common_template)).matrices
            mats = {t: matrices[tpl][0] for t, tpl in templates.items()}
            common = matrices[common_template][0]
            x0, y0, x1, y1 = _region(photo.shape, [*mats.values(), common],
                                     [*(self.sizes[t] for t in targets), TEMPLATES.get(common_template).size])
            shift = np.array([[1.0, 0.0, x0], [0.0, 1.0, y0]])  # region pixels -> photo pixels
            self.regions.append(photo[y0:y1, x0:x1])
            self.common.append(compose_affine(common, shift))
            self.to_target.append({t: compose_affine(m, shift) for t, m in mats.items()})
        self.clean_cos = {t: [self.unit[t][list(p.references)] @ self.unit[t][p.index] for p in self.probes]
                          for t in targets}

    @property
    def n_pairs(self) -> int:
        return sum(len(p.references) for p in self.probes)

    def delta_cos(self, masks: np.ndarray) -> dict[str, np.ndarray]:
        """Per target: Δcos of every genuine pair (probe order, then reference order) for the masks (P, S, S) of
        the probes in the common template."""
        from facecloak.faces.align import warp_crop, warp_to_photo
        from facecloak.masking.stage import model_on
        from facecloak.models import embed_crops

        crops: dict[str, list[np.ndarray]] = {t: [] for t in self.targets}
        for k, mask in enumerate(masks):
            region = self.regions[k]
            occluded = region.copy()
            occluded[warp_to_photo(mask, self.common[k], region.shape, interpolation="nearest")] = 0
            for t in self.targets:
                crops[t].append(warp_crop(occluded, self.to_target[k][t], self.sizes[t]))
        out = {}
        for t in self.targets:
            emb = embed_crops(model_on(t, self.device), np.stack(crops[t])).numpy()
            unit = emb / np.linalg.norm(emb, axis=1, keepdims=True)
            out[t] = np.concatenate([
                clean - self.unit[t][list(p.references)] @ unit[k]
                for k, (p, clean) in enumerate(zip(self.probes, self.clean_cos[t], strict=True))
            ])
        return out


def _region(shape: tuple[int, ...], matrices: Sequence[np.ndarray], sizes: Sequence[int]) -> tuple[int, int, int, int]:
    """Photo pixel box covering every crop's footprint with a margin (antialiasing reads a few pixels beyond)."""
    from facecloak.faces.align import apply_affine, invert_affine

    pts = []
    for m, s in zip(matrices, sizes, strict=True):
        corners = np.array([[-0.5, -0.5], [s - 0.5, -0.5], [-0.5, s - 0.5], [s - 0.5, s - 0.5]])
        pts.append(apply_affine(invert_affine(m), corners))
    allp = np.concatenate(pts)
    margin = 8 + 0.05 * float(np.ptp(allp[:, 0]))
    x0 = max(int(np.floor(allp[:, 0].min() - margin)), 0)
    y0 = max(int(np.floor(allp[:, 1].min() - margin)), 0)
    x1 = min(int(np.ceil(allp[:, 0].max() + margin)) + 1, int(shape[1]))
    y1 = min(int(np.ceil(allp[:, 1].max() + margin)) + 1, int(shape[0]))
    return x0, y0, x1, y1


# --- the study -----------------------------------------------------------------------------------------------


def _mean(x: Any) -> float | None:
    vals = [float(v) for v in x if v is not None and np.isfinite(v)]
    return float(np.mean(vals)) if vals else None


class Study:
    """Holds the data, caches maps per (source, method, target) and evaluates variants."""

    def __init__(self, faces: FaceData, sources: Sequence[str], targets: Sequence[str], *, budget: float,
                 seed: int, probes_per_identity: int | None, max_different: int, log: Any = None,
                 device: str = "cpu") -> None:
        from facecloak.faces.parse import face_region
        from facecloak.models import get_spec

        self.faces, self.sources, self.targets = faces, tuple(sources), tuple(targets)
        self.budget, self.seed = budget, seed
        self.log = log or (lambda msg: None)
        models = list(dict.fromkeys([*sources, *targets]))
        self.device = device  # where the sources and targets run
        self.embeddings = embed_all(faces, models, device)
        ids = faces.identities
        self.pairs = PairSet(same_pairs(ids), different_pairs(ids, max_different, np.random.default_rng([seed, 0xBC])))
        self.impostors = {m: impostor_centroids(self.embeddings[m], ids, N_IMPOSTORS, np.random.default_rng([seed, 7]))
                          for m in sources}
        self.region = face_region(faces.labels)
        self.probes = choose_probes(ids, probes_per_identity, np.random.default_rng([seed, 0x9B]))
        self.occluder = Occluder(faces, targets, self.embeddings, self.probes, "arcface112", device)
        self.n_default = {m: len(get_spec(m).default_layers) for m in sources}
        self._maps: dict[tuple[str, str, str], np.ndarray] = {}
        self._scatter: dict[str, np.ndarray] | None = None
        self.map_seconds: dict[str, float] = {}
        self.command = ""  # the command line recorded in variants.json

    def _layer_maps(self, source: str, method: str, target: str) -> np.ndarray:
        key = (source, method, target)
        if key not in self._maps:
            from facecloak.models import get_spec

            t0 = time.perf_counter()
            layers = {source: (*get_spec(source).default_layers, "input")}
            settings = leam_settings({"method": method, "layers": layers}, target=target)
            mm = maps_for(source, self.faces, settings, self.embeddings[source],
                          impostors=self.impostors[source] if target == "contrast" else None, device=self.device)
            self._maps[key] = mm.layer_maps
            self.map_seconds["/".join(key)] = round(time.perf_counter() - t0, 1)
            self.log(f"  maps {'/'.join(key)}: {time.perf_counter() - t0:.0f} s")
        return self._maps[key]

    def overall(self, source: str, v: Variant) -> tuple[np.ndarray, np.ndarray]:
        """(N, S, S) overall maps and (N,) bool: faces whose chosen layers are all empty (map all zero)."""
        p = overall_from_layers(self._layer_maps(source, v.method, v.target),
                                layer_indices(v.layers, self.n_default[source]))
        return p, p.reshape(len(p), -1).sum(axis=1) == 0

    def _scatter_mask(self, index: int) -> np.ndarray:
        from leam import selection_count

        region = self.region[index]
        return random_scatter(selection_count(self.budget, int(region.sum())), region,
                              control_rng(self.seed, index, self.budget, "random-scatter"))

    def masks(self, overall: np.ndarray, empty: np.ndarray, v: Variant) -> np.ndarray:
        """Selected pixels of every face; a face without relevance gets uniform random pixels of its face region
        (a map with no preference; the same pixels as its random-scatter control)."""
        from facecloak.masking.leamface import select_pixels

        settings = leam_settings({"selection": v.selection, "budget": self.budget})
        masks = select_pixels(overall, settings, region=self.region, seed=self.seed)
        for i in np.flatnonzero(empty):
            masks[i] = self._scatter_mask(int(i))
        return masks

    def scatter(self) -> dict[str, np.ndarray]:
        """Δcos of the random-scatter control (independent of the variant and the source)."""
        if self._scatter is None:
            masks = np.stack([self._scatter_mask(p.index) for p in self.probes])
            self._scatter = self.occluder.delta_cos(masks)
        return self._scatter

    def evaluate(self, v: Variant) -> dict[str, Any]:
        t0 = time.perf_counter()
        ids = self.faces.identities
        result: dict[str, Any] = {"name": v.name, "variant": asdict(v), "bc_full": {}, "bc_mask": {}, "cells": []}
        for s in self.sources:
            overall, empty = self.overall(s, v)
            masks = self.masks(overall, empty, v)
            # Faces without relevance have no distribution: their pairs are left out of the BC comparison.
            same, diff = (p[~(empty[p[:, 0]] | empty[p[:, 1]])] for p in (self.pairs.same, self.pairs.different))
            result["bc_full"][s] = compare(pair_bc(overall, same), pair_bc(overall, diff))
            result["bc_mask"][s] = compare(pair_mask_bc(masks, same), pair_mask_bc(masks, diff))
            result.setdefault("n_empty_faces", {})[s] = int(empty.sum())
            probe_masks = masks[[p.index for p in self.probes]]
            shapes = np.stack([random_shape(masks[p.index], self.region[p.index],
                                            control_rng(self.seed, p.index, self.budget, "random-shape"))
                               for p in self.probes])
            others = np.stack([masks[other_person_index(ids, p.index, control_rng(self.seed, p.index, self.budget,
                                                                                      "other-person"))]
                               for p in self.probes])
            deltas = {"leam": self.occluder.delta_cos(probe_masks), "random_scatter": self.scatter(),
                      "random_shape": self.occluder.delta_cos(shapes), "other_person": self.occluder.delta_cos(others)}
            for t in self.targets:
                cell: dict[str, Any] = {"source": s, "target": t, "transfer": s != t,
                                        "n_pairs": len(deltas["leam"][t])}
                for kind in KINDS:
                    d = deltas[kind][t]
                    cell[f"delta_cos_{kind}"] = float(d.mean())
                    cell[f"std_{kind}"] = float(d.std(ddof=1)) if len(d) > 1 else 0.0
                cell["p_leam_gt_scatter"] = _paired_p(deltas["leam"][t], deltas["random_scatter"][t])
                cell["p_leam_gt_other_person"] = _paired_p(deltas["leam"][t], deltas["other_person"][t])
                # Per-pair values (probe order, then reference order; same pairs in every variant) for paired tests.
                cell["pairs_delta_cos_leam"] = [round(float(x), 6) for x in deltas["leam"][t]]
                result["cells"].append(cell)
        result["summary"] = summarise(result)
        result["seconds"] = round(time.perf_counter() - t0, 1)
        return result


def _paired_p(a: np.ndarray, b: np.ndarray) -> float | None:
    """One-sided Wilcoxon signed-rank p (a > b) over paired Δcos values (same probe and reference)."""
    from scipy.stats import wilcoxon

    d = np.asarray(a) - np.asarray(b)
    if len(d) < 2 or np.all(d == 0):
        return None
    return float(wilcoxon(d, alternative="greater").pvalue)


def summarise(result: Mapping[str, Any]) -> dict[str, Any]:
    """Means over cells (all, white-box, transfer) of each Δcos and mean BC statistics over sources."""
    cells = result["cells"]
    out: dict[str, Any] = {}
    for scope, pool in (("all", cells), ("white_box", [c for c in cells if not c["transfer"]]),
                        ("transfer", [c for c in cells if c["transfer"]])):
        for kind in KINDS:
            out[f"{scope}_delta_cos_{kind}"] = _mean(c[f"delta_cos_{kind}"] for c in pool)
        out[f"{scope}_n_cells"] = len(pool)
    for which in ("bc_full", "bc_mask"):
        blocks = result[which].values()
        out[f"{which}_same"] = _mean(b["same"]["mean"] for b in blocks)
        out[f"{which}_different"] = _mean(b["different"]["mean"] for b in blocks)
        ps = [b["p_value"] for b in blocks if b["p_value"] is not None]
        out[f"{which}_max_p"] = max(ps) if ps else None
        out[f"{which}_n_specific"] = sum(p < 0.01 for p in ps)
    return out


def score(result: Mapping[str, Any]) -> float:
    """Ranking key: mean Δcos of the LEAM mask over transfer cells (the protection that matters is against models
    that made no mask); white-box cells when there is no transfer cell."""
    s = result["summary"]
    value = s.get("transfer_delta_cos_leam")
    return float(value if value is not None else s.get("all_delta_cos_leam") or 0.0)


# --- report --------------------------------------------------------------------------------------------------


def _f(x: Any, d: int = 4) -> str:
    return "–" if x is None else f"{x:.{d}f}"


def _p(x: Any) -> str:
    return "–" if x is None else (f"{x:.1e}" if x < 1e-3 else f"{x:.3f}")


def ranked_table(results: Sequence[Mapping[str, Any]]) -> str:
    header = ["rank", "variant (method/layers/selection/target)", "LEAM wb", "LEAM transfer", "scatter tr.",
              "shape tr.", "other-person tr.", "BC mask same / diff", "max p (mask)", "BC full same / diff",
              "max p (full)", "p vs best"]
    vs_best = ties_with_best(results)
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for rank, r in enumerate(sorted(results, key=score, reverse=True), 1):
        s = r["summary"]
        lines.append("| " + " | ".join([
            str(rank), f"`{r['name']}`", _f(s["white_box_delta_cos_leam"]), f"**{_f(s['transfer_delta_cos_leam'])}**",
            _f(s["transfer_delta_cos_random_scatter"]), _f(s["transfer_delta_cos_random_shape"]),
            _f(s["transfer_delta_cos_other_person"]),
            f"{_f(s['bc_mask_same'], 3)} / {_f(s['bc_mask_different'], 3)}", _p(s["bc_mask_max_p"]),
            f"{_f(s['bc_full_same'], 3)} / {_f(s['bc_full_different'], 3)}", _p(s["bc_full_max_p"]),
            _p(vs_best[r["name"]]),
        ]) + " |")
    return "\n".join(lines)


def transfer_pairs(result: Mapping[str, Any]) -> np.ndarray:
    """Per-pair Δcos of the LEAM mask over the transfer cells, in a fixed (source, target, pair) order."""
    return np.concatenate([np.asarray(c["pairs_delta_cos_leam"]) for c in result["cells"] if c["transfer"]] or
                          [np.zeros(0)])


def ties_with_best(results: Sequence[Mapping[str, Any]], alpha: float = 0.05) -> dict[str, float | None]:
    """Two-sided Wilcoxon signed-rank p of each variant against the best one on the same transfer pairs;
    variants with p >= alpha cannot be told apart from the best on this set."""
    from scipy.stats import wilcoxon

    best = max(results, key=score)
    ref = transfer_pairs(best)
    out: dict[str, float | None] = {}
    for r in results:
        d = transfer_pairs(r) - ref
        out[r["name"]] = None if r is best or len(d) < 2 or np.all(d == 0) else float(wilcoxon(d).pvalue)
    return out


def recommendation(results: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The best variant by `score`, with the facts that qualify it (beats controls? person-specific? ties?)."""
    ranked = sorted(results, key=score, reverse=True)
    best = ranked[0]
    p_vs_best = ties_with_best(results)
    base = next((r for r in results if r["name"] == BASELINE.name), None)
    s = best["summary"]
    beats = {c: (s["transfer_delta_cos_leam"] or 0) > (s[f"transfer_delta_cos_{c}"] or 0)
             for c in ("random_scatter", "random_shape", "other_person")}
    specific = [r["name"] for r in results if r["summary"]["bc_mask_n_specific"] == len(r["bc_mask"])]
    return {
        "variant": best["variant"], "name": best["name"],
        "transfer_delta_cos_leam": s["transfer_delta_cos_leam"],
        "baseline_transfer_delta_cos_leam": base["summary"]["transfer_delta_cos_leam"] if base else None,
        "beats_transfer": beats,
        "person_specific_variants": specific,
        "best_is_person_specific": best["name"] in specific,
        "p_vs_best": p_vs_best,
        "tied_with_best": [n for n, p in p_vs_best.items() if p is not None and p >= 0.05],
    }


def render(payload: Mapping[str, Any]) -> str:
    rec = payload["recommendation"]
    env = payload["environment"]
    n = payload["n"]
    lines = [
        "# LEAM variants: person-specificity and occlusion", "",
        f"- Command: `{env.get('command')}`", f"- Run time: {env.get('run_time_s')} s on {env.get('cpu_count')} CPUs "
        f"({env.get('platform')})",
        f"- Data: {n['photos']} photos of {n['identities']} people; {n['probes']} probe photos, {n['pairs']} genuine "
        f"(probe, reference) pairs per cell; BC: {n['same_pairs']} same-person and {n['different_pairs']} "
        "different-person pairs per source model",
        f"- Sources: {', '.join(payload['sources'])}; targets: {', '.join(payload['targets'])}; budget "
        f"{payload['budget']:g} % of the parsed face region, black fill, evaluated on the re-aligned occluded photo",
        "",
        "## Ranking (by mean Δcos of the LEAM mask over transfer cells)", "",
        "Δcos columns: mean over cells (wb = white-box S = T; tr. = transfer S ≠ T) of the mean over genuine pairs. "
        "Controls have the LEAM mask's pixel count. BC: mean over source models; p: one-sided Mann-Whitney "
        "(same > different), the largest over the source models.", "",
        ranked_table(payload["variants"]), "",
        "## Recommendation", "",
        payload["recommendation_text"], "",
        "## Cells of the recommended variant", "",
        "| source | target | n pairs | LEAM | scatter | shape | other-person | p LEAM > scatter | p LEAM > other |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    best = next(r for r in payload["variants"] if r["name"] == rec["name"])
    for c in best["cells"]:
        lines.append(f"| {c['source']} | {c['target']}{'' if c['transfer'] else ' (wb)'} | {c['n_pairs']} | "
                     f"{_f(c['delta_cos_leam'])} | {_f(c['delta_cos_random_scatter'])} | "
                     f"{_f(c['delta_cos_random_shape'])} | {_f(c['delta_cos_other_person'])} | "
                     f"{_p(c['p_leam_gt_scatter'])} | {_p(c['p_leam_gt_other_person'])} |")
    lines += ["", "p: one-sided Wilcoxon signed-rank over the paired Δcos of the same (probe, reference) pairs; pairs "
              "share photos, so treat p as indicative.", "",
              "## Design", "", f"One factor at a time from the baseline `{BASELINE.name}`, then combinations of "
              f"the best levels: {', '.join(payload['combinations']) or 'none'}."
              " Layer sets: `early` = first half of each model's default layers, `last` = its last default layer, "
              "`default+input` adds gradient × input. Contrast: reference minus the mean cosine to "
              f"{N_IMPOSTORS} impostor centroids.", ""]
    return "\n".join(lines)


def recommendation_text(rec: Mapping[str, Any], results: Sequence[Mapping[str, Any]]) -> str:
    best = next(r for r in results if r["name"] == rec["name"])
    s = best["summary"]
    parts = [
        f"**Recommended defaults: `{rec['name']}`** (method/layers/selection/target). Its LEAM mask lowers the cosine "
        f"of transfer targets by {_f(s['transfer_delta_cos_leam'])} on average (white-box "
        f"{_f(s['white_box_delta_cos_leam'])}), against {_f(rec['baseline_transfer_delta_cos_leam'])} for the "
        f"baseline `{BASELINE.name}`.",
    ]
    ctrl = ", ".join(f"{c.replace('_', '-')} {_f(s[f'transfer_delta_cos_{c}'])} "
                     f"({'beaten' if rec['beats_transfer'][c] else 'NOT beaten'})"
                     for c in ("random_scatter", "random_shape", "other_person"))
    parts.append(f"Controls on the same transfer cells: {ctrl}.")
    if rec["tied_with_best"]:
        parts.append("On these pairs it cannot be told apart (two-sided Wilcoxon over the same transfer pairs, "
                     "p >= 0.05) from " + ", ".join(f"`{n}` (p {_p(rec['p_vs_best'][n])})" for n in
                                                   rec["tied_with_best"]) + "; among tied variants prefer the "
                     "simplest.")
    if rec["best_is_person_specific"]:
        parts.append("Its masks are person-specific for every source model (BC same > different, p < 0.01).")
    else:
        parts.append(f"Its masks are not person-specific for every source model (BC mask same "
                     f"{_f(s['bc_mask_same'], 3)} vs different {_f(s['bc_mask_different'], 3)}, largest p "
                     f"{_p(s['bc_mask_max_p'])}).")
    if rec["person_specific_variants"]:
        parts.append("Variants whose masks are person-specific for every source: "
                     + ", ".join(f"`{n}`" for n in rec["person_specific_variants"]) + ".")
    else:
        parts.append("No variant gives person-specific masks for every source model on this set.")
    if not rec["beats_transfer"]["other_person"]:
        parts.append("Because another person's mask works as well, the protective effect comes from *where on a face* "
                     "pixels are changed, not from who the face belongs to.")
    return " ".join(parts)


# --- entry point ---------------------------------------------------------------------------------------------


def run_variants(
    data: Path,
    out: Path,
    *,
    sources: Sequence[str] = ("mbf-arc", "dlib-r29"),
    targets: Sequence[str] = ("mbf-arc", "dlib-r29", "mbf-tf"),
    budget: float = 1.0,
    seed: int = 0,
    probes_per_identity: int | None = 2,
    identities: int | None = None,
    max_different: int = 2000,
    n_combinations: int = 2,
    variants: Sequence[Variant] | None = None,
    extra: Sequence[Variant] = (),
    log: Any = None,
    command: str = "",
    device: str = "cpu",
) -> dict[str, Any]:
    """Evaluate the design on the labelled set in `data`; writes OUT/variants.json and OUT/variants.md.
    log: a `(message) -> None` callback for progress lines (the CLI prints them); command: recorded in the output;
    device: where the models run (auto, cpu, cuda[:N])."""
    from facecloak.masking.stage import resolve_device

    start = time.perf_counter()
    log = log or (lambda msg: None)
    out = Path(out)
    models = list(dict.fromkeys([*sources, *targets]))
    resolve_device(device)  # an unavailable device stops here, before any photo
    faces = load_faces(Path(data), models, identities=identities, seed=seed, keep_photos=True)
    study = Study(faces, sources, targets, budget=budget, seed=seed, probes_per_identity=probes_per_identity,
                  max_different=max_different, log=log, device=device)
    study.command = command
    design = list(variants) if variants is not None else one_factor_design()
    results: list[dict[str, Any]] = []

    def run(v: Variant) -> None:
        log(f"variant {v.name}")
        results.append(study.evaluate(v))
        log(f"  transfer Δcos LEAM {_f(results[-1]['summary']['transfer_delta_cos_leam'])}, "
            f"{results[-1]['seconds']} s")
        _write(out, results, study, start, [], partial=True)  # outputs survive an interrupted run

    for v in design:
        run(v)
    for v in extra:  # chosen by hand after a first run, e.g. interactions the one-factor design cannot see
        if v not in design:
            run(v)
    combos: list[Variant] = []
    if variants is None and n_combinations > 0:
        order = best_levels({Variant(**r["variant"]): score(r) for r in results})
        combos = combinations(order, [*design, *extra], n_combinations)
        for v in combos:
            run(v)
    return _write(out, results, study, start, [c.name for c in combos], partial=False)


def _write(out: Path, results: list[dict[str, Any]], study: Study, start: float, combos: list[str],
           partial: bool) -> dict[str, Any]:
    rec = recommendation(results)
    payload: dict[str, Any] = {
        "sources": list(study.sources), "targets": list(study.targets), "budget": study.budget, "seed": study.seed,
        "partial": partial,
        "n": {"photos": len(study.faces.identities), "identities": len(set(study.faces.identities)),
              "probes": len(study.probes), "pairs": study.occluder.n_pairs, "same_pairs": len(study.pairs.same),
              "different_pairs": len(study.pairs.different)},
        "variants": results, "combinations": combos, "recommendation": rec,
        "recommendation_text": recommendation_text(rec, results),
        "map_seconds": study.map_seconds,
        "environment": {**environment_info(), "command": study.command,
                        "run_time_s": round(time.perf_counter() - start, 1)},
    }
    write_results(out, payload, "variants.json")
    write_text(out, "variants.md", render(payload))
    return payload


def parse_variants(text: str | None) -> list[Variant]:
    """`"layercam/early/topk/contrast;gradcam/default/topk/reference"` -> variants; `ConfigError` names a bad one."""
    from facecloak.errors import ConfigError

    found = []
    for item in (text or "").split(";"):
        if not item.strip():
            continue
        parts = item.strip().split("/")
        if len(parts) != len(FACTORS):
            raise ConfigError(f"variant {item.strip()!r}: expected method/layers/selection/target, e.g. "
                              f"{BASELINE.name}")
        for (factor, levels), level in zip(FACTORS.items(), parts, strict=True):
            if level not in levels:
                raise ConfigError(f"variant {item.strip()!r}: {factor} {level!r} is not one of {', '.join(levels)}")
        found.append(Variant(*parts))
    return found


__all__ = ["BASELINE", "FACTORS", "Variant", "combinations", "one_factor_design", "parse_variants", "run_variants"]
