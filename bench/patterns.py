"""`facecloak bench patterns`: the paper's analyses of LEAM maps on a labelled set (docs LEAM.md, "Analyses").

For every model and for the ensemble of all of them, each photo's main face is explained with the engine's
default settings (LayerCAM, `contrast` target: cosine to the leave-this-photo-out centroid of the person's other
photos minus the mean cosine to 5 seeded impostor centroids; chosen by `bench.variants`, docs/leam.md), and its
maps are compared in the common template (ArcFace 112 unless overridden):

- Bhattacharyya coefficient (BC) of overall maps, full maps and top-k % masks (k = the budget, 1 % by default,
  selected inside the parsed face region), same-person pairs (all) vs different-person pairs (seeded sample);
- region shares of the top-k % pixels (mean over faces of each face's shares), per model and per layer;
- layer diversity (BC between the layer maps of one face) and cross-model BC of overall maps;
- the same split by gender where the manifest has a `gender` column.

Only people with >= 2 photos with a detected face take part (the identity target needs another photo); the
others are counted in the output. Two one-sided p-values (same > different): a Mann-Whitney U test over pairs,
which treats pairs as independent although they share photos (optimistic), and an identity-permutation test
(`leam.identity_permutation_p`: labels shuffled over photos, all pairs, photos as the unit), the one to trust.

The pure part (`pair_bc`, `compare`, `mean_region_shares`, `analyse_model`, `cross_model_bc`) takes arrays and is
tested on synthetic maps; `run_patterns` loads photos and models and writes OUT/patterns.json, OUT/patterns.md and
OUT/figures/*.png.
"""

from __future__ import annotations

import io
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

import leam
from bench.report import (
    PAPER_PATTERNS,
    environment_info,
    render_patterns_markdown,
    write_results,
    write_text,
)
from bench.stats import summary
from facecloak.faces.parse import REGIONS, face_region, region_shares
from facecloak.files import atomic_write_bytes
from facecloak.progress import Progress, no_progress

TEST_NAME = "Mann-Whitney U, one-sided (same > different), pairs treated as independent"
PERMUTATION_TEST = ("identity permutation, one-sided (same > different): mean BC over all same-person pairs minus "
                    "mean over all different-person pairs, labels shuffled over photos")
N_PERMUTATIONS = 9999
MAX_DIFFERENT_PAIRS = 5000
N_IMPOSTORS = 5  # impostor centroids per face for the `contrast` target
ENSEMBLE = "ensemble"
_CHUNK = 512  # pairs per BC batch: (512, 112, 112) float64 twice is ~100 MB


# --- pairs ---------------------------------------------------------------------------------------------------


def same_pairs(identities: Sequence[str]) -> np.ndarray:
    """All (i, j), i < j, of two photos of one person: (P, 2) int64."""
    ids = np.asarray(identities)
    i, j = np.triu_indices(len(ids), k=1)
    keep = ids[i] == ids[j]
    return np.stack([i[keep], j[keep]], axis=1).astype(np.int64)


def different_pairs(identities: Sequence[str], max_pairs: int, rng: np.random.Generator) -> np.ndarray:
    """(i, j), i < j, of photos of two different people: all of them if at most `max_pairs`, else a seeded sample
    of `max_pairs` distinct pairs (uniform over all different-person pairs). Sorted, (P, 2) int64."""
    ids = np.asarray(identities)
    i, j = np.triu_indices(len(ids), k=1)
    keep = ids[i] != ids[j]
    pairs = np.stack([i[keep], j[keep]], axis=1).astype(np.int64)
    if len(pairs) > max_pairs:
        pairs = pairs[np.sort(rng.choice(len(pairs), size=max_pairs, replace=False))]
    return pairs


# --- metrics -------------------------------------------------------------------------------------------------


def pair_bc(maps: np.ndarray, pairs: np.ndarray) -> np.ndarray:
    """BC (`leam.bhattacharyya`) of maps[i] and maps[j] for each pair; maps (N, S, S) distributions."""
    out = [leam.bhattacharyya(maps[pairs[s:s + _CHUNK, 0]], maps[pairs[s:s + _CHUNK, 1]])
           for s in range(0, len(pairs), _CHUNK)]
    return np.concatenate(out) if out else np.zeros(0)


def pair_mask_bc(masks: np.ndarray, pairs: np.ndarray) -> np.ndarray:
    """Overlap BC (`leam.mask_overlap_bc`) of masks[i] and masks[j] for each pair; masks (N, S, S) bool."""
    out = [leam.mask_overlap_bc(masks[pairs[s:s + _CHUNK, 0]], masks[pairs[s:s + _CHUNK, 1]])
           for s in range(0, len(pairs), _CHUNK)]
    return np.concatenate(out) if out else np.zeros(0)


def _summary(values: np.ndarray, seed: int) -> dict[str, Any]:
    s = summary(values, seed=seed)
    return {"mean": s["mean"], "std": s["std"], "n": s["n"], "ci95": s["ci95"]}


def compare(same: np.ndarray, different: np.ndarray, seed: int = 0) -> dict[str, Any]:
    """{"same": S, "different": S, "gap": mean difference, "p_value": one-sided Mann-Whitney (same > different)}."""
    p = leam.mann_whitney_p(same, different, alternative="greater") if len(same) and len(different) else None
    gap = float(np.mean(same) - np.mean(different)) if len(same) and len(different) else None
    return {"same": _summary(same, seed), "different": _summary(different, seed), "gap": gap, "p_value": p}


def pairwise_bc(maps: np.ndarray) -> np.ndarray:
    """(N, N) BC of every two overall maps (N, S, S) distributions, as one matrix product."""
    roots = np.sqrt(np.asarray(maps, np.float32).reshape(len(maps), -1))
    return (roots @ roots.T).astype(np.float64)


def pairwise_mask_bc(masks: np.ndarray) -> np.ndarray:
    """(N, N) overlap BC (`leam.mask_overlap_bc`) of every two masks (N, S, S) bool, none empty."""
    flat = np.asarray(masks, bool).reshape(len(masks), -1).astype(np.float32)
    sizes = flat.sum(axis=1).astype(np.float64)
    return (flat @ flat.T).astype(np.float64) / np.sqrt(np.outer(sizes, sizes))


def with_permutation_p(block: dict[str, Any], similarity: np.ndarray, identities: Sequence[str], seed: int,
                       n: int = N_PERMUTATIONS) -> dict[str, Any]:
    """`block` (from `compare`) plus the identity-permutation p-value of `similarity` (N, N)."""
    rng = np.random.default_rng([seed, 0x9E3])
    return {**block, "p_value_permutation": leam.identity_permutation_p(similarity, identities, n, rng),
            "n_permutations": n}


def mean_region_shares(masks: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Mean over faces of each face's region shares of its mask ((N, S, S) bool and uint8); sums to 1.

    Faces with an empty mask are left out; no face at all gives 0.0 everywhere.
    """
    rows = [region_shares(m, lab) for m, lab in zip(masks, labels, strict=True) if m.any()]
    if not rows:
        return {name: 0.0 for name in REGIONS.values()}
    return {name: float(np.mean([r[name] for r in rows])) for name in REGIONS.values()}


def top_masks(maps: np.ndarray, labels: np.ndarray, budget: float, restrict_to_face: bool = True) -> np.ndarray:
    """Top-`budget` % masks (N, S, S) bool of maps (N, S, S), inside each face's parsed region by default: the
    masking stage's selection (`leamface.select_pixels`, selector `topk`)."""
    from facecloak.masking.leamface import LeamSettings, select_pixels

    settings = LeamSettings(selection="topk", budget=budget, restrict_to_face=restrict_to_face)
    return select_pixels(np.asarray(maps, np.float32), settings, region=face_region(labels))


@dataclass(frozen=True)
class PairSet:
    """The pairs an analysis compares (indices into the faces) and the faces' labels."""

    same: np.ndarray
    different: np.ndarray


def analyse_model(
    overall: np.ndarray,
    labels: np.ndarray,
    pairs: PairSet,
    *,
    budget: float = 1.0,
    genders: Sequence[str | None] | None = None,
    layer_maps: np.ndarray | None = None,
    layer_names: Sequence[str] = (),
    identities: Sequence[str] | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """Patterns of one model (or the ensemble) from its maps in the common template.

    overall     (N, S, S) distributions; labels (N, S, S) uint8 parser codes; layer_maps (N, L, S, S) or None
    (empty layers all zero); identities (N labels) adds the identity-permutation p-values. Returns the
    `models[<id>]` block of patterns.json.
    """
    masks = top_masks(overall, labels, budget)
    bc_full = compare(pair_bc(overall, pairs.same), pair_bc(overall, pairs.different), seed)
    bc_mask = compare(pair_mask_bc(masks, pairs.same), pair_mask_bc(masks, pairs.different), seed)
    if identities is not None:
        bc_full = with_permutation_p(bc_full, pairwise_bc(overall), identities, seed)
        bc_mask = with_permutation_p(bc_mask, pairwise_mask_bc(masks), identities, seed)
    block: dict[str, Any] = {
        "n_faces": len(overall),
        "bc_full": bc_full,
        "bc_mask": bc_mask,
        "region_shares": mean_region_shares(masks, labels),
        # The same shares with the top-k taken over the whole crop, so hair/background ("other") can show up.
        "region_shares_whole_crop": mean_region_shares(top_masks(overall, labels, budget, False), labels),
    }
    if layer_maps is not None and len(layer_names):
        block.update(_layers(layer_maps, labels, layer_names, budget, seed))
    if genders is not None:
        block["by_gender"] = _by_gender(overall, masks, labels, pairs, genders, seed)
    return block


def _layers(layer_maps: np.ndarray, labels: np.ndarray, names: Sequence[str], budget: float,
            seed: int) -> dict[str, Any]:
    layers: dict[str, Any] = {}
    for j, name in enumerate(names):
        maps = layer_maps[:, j]
        present = maps.reshape(len(maps), -1).sum(axis=1) > 0
        entry: dict[str, Any] = {"n_empty": int((~present).sum())}
        if present.any():
            entry["region_shares"] = mean_region_shares(top_masks(maps[present], labels[present], budget),
                                                        labels[present])
        layers[name] = entry
    bc = leam.layer_diversity(layer_maps)  # (N, L, L), NaN where a layer is empty
    off = ~np.eye(len(names), dtype=bool)
    per_face = np.array([np.nanmean(b[off]) for b in bc if np.isfinite(b[off]).any()] if len(names) > 1 else [])
    matrix = np.nanmean(bc, axis=0) if len(bc) else np.zeros((len(names), len(names)))
    out: dict[str, Any] = {"layers": layers, "layer_bc_matrix": {a: {b: _float(matrix[i, k]) for k, b in
                                                                       enumerate(names)} for i, a in enumerate(names)}}
    if len(per_face):
        out["layer_diversity"] = _summary(np.asarray(per_face), seed)
    return out


def _float(x: float) -> float | None:
    return float(x) if np.isfinite(x) else None


def _by_gender(overall: np.ndarray, masks: np.ndarray, labels: np.ndarray, pairs: PairSet,
               genders: Sequence[str | None], seed: int) -> dict[str, Any]:
    g = np.asarray([x or "" for x in genders])
    out: dict[str, Any] = {}
    for gender in sorted(set(g) - {""}):
        same, diff = (p[(g[p[:, 0]] == gender) & (g[p[:, 1]] == gender)] for p in (pairs.same, pairs.different))
        faces = g == gender
        entry: dict[str, Any] = {"n_faces": int(faces.sum()),
                                 "region_shares": mean_region_shares(masks[faces], labels[faces])}
        if len(same) and len(diff):
            entry["bc_full"] = compare(pair_bc(overall, same), pair_bc(overall, diff), seed)
            entry["bc_mask"] = compare(pair_mask_bc(masks, same), pair_mask_bc(masks, diff), seed)
        out[gender] = entry
    return out


def cross_model_bc(overall: Mapping[str, np.ndarray]) -> dict[str, dict[str, float]]:
    """Mean over faces of BC between two models' overall maps of the same face (common template)."""
    names = list(overall)
    return {a: {b: float(np.mean(leam.bhattacharyya(overall[a], overall[b]))) for b in names} for a in names}


# --- data and models -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FaceData:
    """The usable main faces of a labelled set, ready for LEAM (aligned by the masking stage, `align_faces`).

    crops   model id -> float32 (N, 3, s, s) 0-255 RGB model inputs in that model's template.
    common  (N, S, S, 3) uint8 crops in the common template (for figures); labels (N, S, S) uint8 parser codes
            there (the photo's label map warped into the template, see `load_faces`).
    photos  the photos themselves (uint8 RGB) when asked for (occlusion benchmarks), else None.
    """

    bench: Any  # bench.data.BenchSet
    crops: dict[str, Any]  # torch.Tensor
    common: np.ndarray
    labels: np.ndarray
    photos: list[np.ndarray] | None

    @property
    def identities(self) -> list[str]:
        return [p.identity for p in self.bench.photos]

    @property
    def genders(self) -> list[str | None]:
        return [p.gender for p in self.bench.photos]


def load_faces(
    data: Path,
    models: Sequence[str],
    *,
    identities: int | None = None,
    per_identity: int | None = None,
    seed: int = 0,
    common_template: str = "arcface112",
    parser_name: str = "facemesh",
    keep_photos: bool = False,
    progress: Progress = no_progress,
) -> FaceData:
    """Sample, detect (cached), read each photo once and align its face once per template (the masking stage's
    `align_faces`): model inputs per model, common-template crops and parser labels."""
    import torch

    from bench.config import DataConfig
    from bench.data import prepare
    from facecloak.faces.align import TEMPLATES
    from facecloak.faces.detect import load_detector
    from facecloak.faces.parse import get_parser, labels_in_template
    from facecloak.masking.stage import align_faces, model_templates
    from facecloak.models import get_spec
    from facecloak.photos.io import read_image

    bench_set = prepare(Path(data), DataConfig(identities=identities, per_identity=per_identity, min_photos=2,
                                               seed=seed), load_detector("mtcnn"), progress=progress)
    parser = get_parser(parser_name)
    size = TEMPLATES.get(common_template).size
    templates = tuple(dict.fromkeys((*model_templates(models), common_template)))
    inputs: dict[str, list[torch.Tensor]] = {t: [] for t in templates}
    labels, photos = [], []
    for p in progress(bench_set.photos, "aligning and parsing faces"):
        rgb = read_image(p.path).rgb
        batch = align_faces(rgb, [p.face], (), crop_templates=templates)
        for t in templates:
            inputs[t].append(batch.inputs[t])
        # Region shares are a finding of this analysis, so labels keep the parser's photo resolution (a label map
        # of the photo warped down), as the committed patterns results were measured; the masking stage's
        # `template_labels` paints the polygons at template resolution, where thin regions (eyes, brows) gain
        # a few boundary pixels (skin share of the top-1 % pixels 0.25 -> 0.20 for mbf-arc on 4 deepface people).
        labels.append(labels_in_template(parser.parse(rgb, p.face), batch.matrices[common_template][0], size))
        if keep_photos:
            photos.append(rgb)
    stacked = {t: torch.cat(v) for t, v in inputs.items()}
    common = stacked[common_template].permute(0, 2, 3, 1).to(torch.uint8).numpy()
    return FaceData(bench_set, {m: stacked[get_spec(m).template] for m in models}, common, np.stack(labels),
                    photos if keep_photos else None)


def loo_references(embeddings: np.ndarray, identities: Sequence[str]) -> np.ndarray:
    """(N, D) leave-this-photo-out centroid of each photo's person (`leam.reference_target` per person)."""
    import torch

    out = np.zeros_like(embeddings, dtype=np.float32)
    ids = np.asarray(identities)
    for person in np.unique(ids):
        rows = np.flatnonzero(ids == person)
        out[rows] = leam.reference_target(torch.from_numpy(embeddings[rows])).reference.numpy()
    return out


def impostor_centroids(embeddings: np.ndarray, identities: Sequence[str], k: int, rng: np.random.Generator
                       ) -> np.ndarray:
    """(N, K, D): for each photo, the L2-normalised centroids of `k` other people drawn with `rng`."""
    ids = np.asarray(identities)
    people = sorted(set(ids.tolist()))
    unit = embeddings / np.linalg.norm(embeddings, axis=1, keepdims=True)
    cent = {p: unit[ids == p].mean(0) for p in people}
    cent = {p: c / np.linalg.norm(c) for p, c in cent.items()}
    out = []
    for person in ids:
        others = [p for p in people if p != person]
        pick = rng.choice(len(others), size=min(k, len(others)), replace=False)
        out.append(np.stack([cent[others[i]] for i in sorted(pick)]))
    return np.stack(out).astype(np.float32)


def embed_all(faces: FaceData, models: Sequence[str], device: str = "cpu") -> dict[str, np.ndarray]:
    """Clean embeddings (N, D) of every face with every model (run on `device`)."""
    from facecloak.masking.stage import model_on, resolve_device
    from facecloak.models import embed

    dev = resolve_device(device)
    return {m: embed(model_on(m, dev), faces.crops[m].to(dev)).cpu().numpy() for m in models}


def maps_for(model_id: str, faces: FaceData, settings: Any, embeddings: np.ndarray, *,
             impostors: np.ndarray | None = None, device: str = "cpu") -> Any:
    """`ModelMaps` of every face with `settings`; reference / contrast targets use the leave-one-out centroids.
    The model runs on `device`; the maps come back as numpy."""
    import torch

    from facecloak.masking.leamface import model_maps
    from facecloak.masking.stage import model_on, resolve_device

    refs = torch.from_numpy(loo_references(embeddings, faces.identities))
    imp = torch.from_numpy(impostors) if impostors is not None else None
    use_refs = settings.target in ("auto", "reference", "contrast")
    dev = resolve_device(device)
    return model_maps(model_id, model_on(model_id, dev), faces.crops[model_id].to(dev), settings,
                      references=refs if use_refs else None, impostors=imp)


def leam_settings(overrides: Mapping[str, Any] | None, **base: Any) -> Any:
    """`LeamSettings` from keyword defaults and overrides; an unknown key raises `ConfigError`."""
    from dataclasses import fields

    from facecloak.errors import ConfigError
    from facecloak.masking.leamface import LeamSettings

    known = {f.name for f in fields(LeamSettings)}
    values = {**base, **dict(overrides or {})}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(f"unknown LEAM setting(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    if isinstance(values.get("layers"), list):
        values["layers"] = tuple(values["layers"])
    return LeamSettings(**values)


# --- figures -------------------------------------------------------------------------------------------------


def _save_figure(fig: Any, path: Path) -> Path:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    return atomic_write_bytes(path, buf.getvalue())


def layer_grid(crop: np.ndarray, rows: Mapping[str, Mapping[str, np.ndarray]], path: Path, title: str) -> Path:
    """One row per model, one panel per layer map (template space, drawn over `crop`), last panel the overall."""
    from matplotlib.figure import Figure

    from facecloak.explain import heat_overlay

    cols = max(len(r) for r in rows.values())
    fig = Figure(figsize=(1.7 * cols, 1.9 * len(rows)))
    axes = fig.subplots(len(rows), cols, squeeze=False)
    for i, (model, panels) in enumerate(rows.items()):
        for j in range(cols):
            ax = axes[i][j]
            ax.set_xticks([])
            ax.set_yticks([])
            if j >= len(panels):
                ax.axis("off")
                continue
            name, p = list(panels.items())[j]
            peak = float(p.max())
            ax.imshow(heat_overlay(crop, p / peak if peak > 0 else p))
            ax.set_title(f"{model}\n{name}" if j == 0 else name, fontsize=7)
    fig.suptitle(title, fontsize=9)
    return _save_figure(fig, path)


def _inside(path: Path, folder: Path) -> bool:
    try:
        path.resolve().relative_to(folder.resolve())
    except ValueError:
        return False
    return True


def _example_rows(faces: FaceData, models: Sequence[str], settings: Any, use_astronaut: bool,
                  device: str = "cpu") -> tuple[np.ndarray, dict[str, dict[str, np.ndarray]], str]:
    """Per-layer maps of one example face: a bundled photo (skimage's astronaut, flip target) when the output
    lands inside the repository (shared photos must not be committed), else the set's first photo."""
    from dataclasses import replace

    from facecloak.faces.align import align
    from facecloak.masking.leamface import model_maps
    from facecloak.masking.stage import align_faces, model_on, model_templates, resolve_device
    from facecloak.protection.protect import default_detector

    dev = resolve_device(device)
    rows: dict[str, dict[str, np.ndarray]] = {}
    if use_astronaut:
        from skimage import data as skdata

        rgb = skdata.astronaut()
        face = max(default_detector().detect(rgb), key=lambda f: f.area)
        crop = align(rgb, face, settings.common_template).crop
        batch = align_faces(rgb, [face], (), crop_templates=model_templates(models), device=dev)
        for m in models:
            mm = model_maps(m, model_on(m, dev), batch.for_model(m), replace(settings, target="flip"))
            rows[m] = {**{layer: mm.layer_maps[0, j] for j, layer in enumerate(mm.layers)}, "overall": mm.overall[0]}
        return crop, rows, "skimage astronaut, flip target"
    one = FaceData(faces.bench, {m: faces.crops[m][:1] for m in models}, faces.common[:1], faces.labels[:1], None)
    for m in models:
        mm = model_maps(m, model_on(m, dev), one.crops[m].to(dev), replace(settings, target="flip"))
        rows[m] = {**{layer: mm.layer_maps[0, j] for j, layer in enumerate(mm.layers)}, "overall": mm.overall[0]}
    return faces.common[0], rows, "first photo of the set, flip target"


def write_figures(out: Path, payload: Mapping[str, Any], values: Mapping[str, Mapping[str, np.ndarray]],
                  example: tuple[np.ndarray, Mapping[str, Mapping[str, np.ndarray]], str] | None) -> list[Path]:
    """BC histograms (same vs different, full and mask) per model, region-share bars, example layer maps."""
    from bench.figures import bc_histograms, region_share_bars

    fig_dir = out / "figures"
    written = []
    for name, v in values.items():
        for kind in ("full", "mask"):
            same, diff = v[f"{kind}_same"], v[f"{kind}_different"]
            if len(same) or len(diff):
                written.append(bc_histograms(same, diff, fig_dir / f"bc_{kind}_{name}.png",
                                             title=f"BC of {'overall maps' if kind == 'full' else 'top-k masks'}, "
                                                   f"{name}"))
    models = payload["models"]
    shares = {n: m["region_shares"] for n, m in models.items() if m.get("region_shares")}
    if shares:
        written.append(region_share_bars(shares, fig_dir / "region_shares.png"))
    for n, m in models.items():
        layers = {layer: d["region_shares"] for layer, d in (m.get("layers") or {}).items() if d.get("region_shares")}
        if layers:
            written.append(region_share_bars(layers, fig_dir / f"region_shares_layers_{n}.png",
                                             title=f"Share of the top-k % pixels per region, per layer: {n}"))
    if example is not None:
        crop, rows, what = example
        written.append(layer_grid(crop, rows, fig_dir / "example_layers.png", f"LEAM maps per layer ({what})"))
    return written


# --- the run -------------------------------------------------------------------------------------------------


def _command() -> str:
    return " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]) if sys.argv and sys.argv[0] else ""


def run_patterns(
    data: Path,
    out: Path,
    *,
    identities: int | None = None,
    per_identity: int | None = None,
    models: Sequence[str] | None = None,
    seed: int = 0,
    overrides: Mapping[str, Any] | None = None,
    progress: Progress = no_progress,
    max_different: int = MAX_DIFFERENT_PAIRS,
    figures: bool = True,
    device: str = "cpu",
) -> dict[str, Any]:
    """Run the analyses on the labelled set in `data`, write OUT/patterns.json, patterns.md and figures/.

    overrides: `LeamSettings` fields (method, layers, selection, budget, common_template, ...); the target is the
    engine default (`contrast`: the leave-one-out reference minus 5 seeded impostor centroids of other people)
    unless overridden (`--set target=reference` drops the impostors).
    Returns the payload written to patterns.json.
    """
    from facecloak.masking.stage import resolve_device
    from facecloak.models import MODELS, get_spec

    start = time.perf_counter()
    out = Path(out)
    model_ids = list(models or MODELS.names())
    for m in model_ids:
        get_spec(m)
    settings = leam_settings(overrides)
    resolve_device(device)  # an unavailable device stops here, before any photo
    faces = load_faces(Path(data), model_ids, identities=identities, per_identity=per_identity, seed=seed,
                       common_template=settings.common_template, progress=progress)
    ids, genders = faces.identities, faces.genders
    pairs = PairSet(same_pairs(ids), different_pairs(ids, max_different, np.random.default_rng([seed, 0xBC])))
    embeddings = embed_all(faces, model_ids, device)
    has_gender = any(g for g in genders)

    blocks: dict[str, Any] = {}
    overall: dict[str, np.ndarray] = {}
    values: dict[str, dict[str, np.ndarray]] = {}
    timing: dict[str, float] = {}
    for m in progress(model_ids, "LEAM maps per model"):
        t0 = time.perf_counter()
        impostors = (impostor_centroids(embeddings[m], ids, N_IMPOSTORS, np.random.default_rng([seed, 7]))
                     if settings.target == "contrast" else None)
        mm = maps_for(m, faces, settings, embeddings[m], impostors=impostors, device=device)
        timing[m] = (time.perf_counter() - t0) / len(ids)
        overall[m] = mm.overall
        blocks[m] = analyse_model(mm.overall, faces.labels, pairs, budget=settings.budget,
                                  genders=genders if has_gender else None, layer_maps=mm.layer_maps,
                                  layer_names=mm.layers, identities=ids, seed=seed)
        blocks[m]["layers_used"] = list(mm.layers)
        blocks[m]["empty_layer_maps"] = len(mm.empty)
        values[m] = _pair_values(mm.overall, faces.labels, pairs, settings.budget)
    if len(model_ids) > 1:
        ens = np.stack([leam.ensemble_maps([overall[m][i] for m in model_ids]) for i in range(len(ids))])
        blocks[ENSEMBLE] = analyse_model(ens, faces.labels, pairs, budget=settings.budget,
                                         genders=genders if has_gender else None, identities=ids, seed=seed)
        blocks[ENSEMBLE]["members"] = model_ids
        values[ENSEMBLE] = _pair_values(ens, faces.labels, pairs, settings.budget)

    bench_set = faces.bench
    payload: dict[str, Any] = {
        "models": blocks,
        "n_photos": len(ids),
        "n_identities": len(set(ids)),
        "n_sampled": bench_set.n_sampled,
        "n_no_face": len(bench_set.no_face),
        "left_out": {"no_face": list(bench_set.no_face), "unreadable": list(bench_set.unreadable),
                     "single_photo": list(bench_set.single)},
        "n_pairs": {"same": len(pairs.same), "different": len(pairs.different)},
        "test": TEST_NAME,
        "permutation_test": PERMUTATION_TEST,
        # What a mask spread uniformly over the face region would give: each region's share of the face's area.
        "region_area_shares": mean_region_shares(face_region(faces.labels), faces.labels),
        "cross_model_bc": cross_model_bc(overall) if len(overall) > 1 else {},
        "settings": {"method": settings.method, "layers": settings.layers if isinstance(settings.layers, str)
                     else list(settings.layers), "target": settings.target, "budget": settings.budget,
                     "selection_for_masks": "topk inside the parsed face region",
                     "common_template": settings.common_template, "seed": seed, "max_different_pairs": max_different},
        "leam_seconds_per_face": timing,
        "paper": PAPER_PATTERNS,
    }
    example = None
    if figures:
        repository = Path(__file__).resolve().parents[1]
        example = _example_rows(faces, model_ids, settings, use_astronaut=_inside(out, repository), device=device)
    payload["environment"] = {**environment_info(), "command": _command(),
                              "run_time_s": round(time.perf_counter() - start, 1)}
    if figures:
        payload["figures"] = [str(p.relative_to(out)) for p in write_figures(out, payload, values, example)]
        payload["environment"]["run_time_s"] = round(time.perf_counter() - start, 1)
    write_results(out, payload, "patterns.json")
    write_text(out, "patterns.md", render_patterns_markdown(payload) + _notes(payload))
    return payload


def _pair_values(overall: np.ndarray, labels: np.ndarray, pairs: PairSet, budget: float) -> dict[str, np.ndarray]:
    masks = top_masks(overall, labels, budget)
    return {"full_same": pair_bc(overall, pairs.same), "full_different": pair_bc(overall, pairs.different),
            "mask_same": pair_mask_bc(masks, pairs.same), "mask_different": pair_mask_bc(masks, pairs.different)}


def _notes(payload: Mapping[str, Any]) -> str:
    n = payload.get("n_pairs", {})
    area = payload.get("region_area_shares") or {}
    chance = ""
    if area:
        names = [r for r in area if r != "other"]
        chance = ("\n## Chance level of the region shares\n\nEach region's share of the parsed face region's area "
                  "(mean over faces): what a mask spread uniformly over the face would give.\n\n"
                  "| " + " | ".join(names) + " |\n|" + "|".join("---" for _ in names) + "|\n| "
                  + " | ".join(f"{100 * area[r]:.1f} %" for r in names) + " |\n")
    return chance + (
        "\n## Notes\n\n"
        f"- Pairs: all {n.get('same')} same-person pairs; {n.get('different')} different-person pairs "
        f"(all, or a seeded sample when there are more than {payload['settings']['max_different_pairs']}).\n"
        f"- Target `{payload['settings']['target']}`: "
        + ("the leave-this-photo-out centroid of the person's other photos minus the mean cosine to "
           f"{N_IMPOSTORS} seeded impostor centroids" if payload['settings']['target'] == "contrast" else
           "the leave-this-photo-out centroid of the person's other photos")
        + "; people with a single usable photo are left out (listed in patterns.json).\n"
        "- Masks: top-k % of the parsed face region in the common template; `region_shares_whole_crop` in "
        "patterns.json has the top-k over the whole crop.\n"
        "- Mann-Whitney p-values treat pairs as independent; photos recur across pairs, so they are optimistic. The "
        "identity-permutation p-value (after the slash) shuffles identities over photos and is the one to trust.\n"
    )
