"""`facecloak bench run`: how much does recognition by model T drop when the pixels are chosen with model S?

Protocol (docs LEAM.md, "Validation occlusion" and "Beyond the paper"; issue 5):

1. Sample the labelled folder (seeded), detect every photo once (cached), keep people with >= 2 faces; parse each
   main face into regions and take the face region in the common template (`leam.common_template`).
2. For every source model, every photo: the LEAM overall map against the leave-this-photo-out centroid of the
   person's other photos on that model, and the Grad-CAM map of its last default layer, both in the common
   template; computed once and reused by every target, budget and fill (cached under OUT/cache/).
   Ensembles (`ensemble:a+b`, `all-but-T`) average their members' maps.
3. Per unit (source, fill, budget) and probe photo: the LEAM mask (top-k % of the map inside the face region) and
   the seeded controls of the same pixel count (bench.controls) are warped to the photo, filled (an occlusion
   fill, or the sparse cloak against the source's members), encoded in the recipe's format and decoded again as a
   user's photo would be, aligned with the original detection (or re-detected) and embedded by every target.
4. Genuine pairs (probe i, clean reference j): Δcos = cos(T(x_i), T(x_j)) − cos(T(protected x_i), T(x_j)); dodging
   at each FAR per pair and per photo; PSNR / SSIM / changed share of the protected probe inside its face box;
   per-gender splits; mean / std / 95 % bootstrap interval / n of every metric (bench.stats.summaries). Every
   cell also gives the dodging shares of the clean probes (variant `clean`, the target's false rejections), the
   floor a protected share is read against.
5. Robustness (recipe `[robustness] defences`): every decoded probe variant is additionally passed through each
   defence (bench.defences: JPEG, resize, blur applied to the whole photo; inpainting of exactly that variant's
   mask) and evaluated like step 4; each (source, target, budget, fill) then has one cell per defence, `defence`
   set ("none" = the photo as written). A defended cell also carries the variant `defence-only` for the blind
   defences: the clean probe under the same defence, i.e. what the defence alone does to recognition.

Each finished unit is written to OUT/cells/ as a JSON shard keyed by the recipe's cell fingerprint, the data and
the unit's names; a rerun skips finished shards and computes only what is missing (e.g. an added target).

Coordinates: template masks and maps are (S, S) in the common template; photo masks are (H, W) photo pixels.
Images are uint8 RGB. Cosines are plain floats.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import re
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn

import leam
from bench import controls as ctl
from bench.config import LEAVE_ONE_OUT, OWN_PREFIX, Defence, Recipe, SourceSpec, is_transfer, resolve_layers
from bench.data import BenchPhoto, BenchSet, common_matrix, face_regions, genuine_pairs, prepare
from bench.defences import MASK_AWARE, apply_defence
from bench.report import (
    MAIN_BUDGET,
    NO_DEFENCE,
    PAPER_TRANSFER,
    delta_key,
    dodge_key,
    environment_info,
    far_label,
    main_budget,
    render_markdown,
    summarise_cells,
    write_results,
    write_text,
)
from bench.stats import changed_share, psnr, ssim, ssim_local_change, summaries
from facecloak.align import TEMPLATES, align, template_matrix, warp_between_templates, warp_to_photo
from facecloak.cloak import CloakSettings, SourceModel, cloak
from facecloak.embedding_cache import DetectedPhoto, detector_settings, embed_main_faces
from facecloak.errors import ConfigError, FacecloakError
from facecloak.fills import FILLS
from facecloak.independent import get_independent, iou, match_faces, read_photo, threshold_id
from facecloak.io import read_image
from facecloak.leamface import LeamSettings, make_target, select_pixels, to_tensor
from facecloak.models.blackbox import Recogniser
from facecloak.parse import FaceParser
from facecloak.roc import cosine_matrix, threshold_at_far
from facecloak.thresholds import Thresholds
from facecloak.types import Face

Progress = Callable[..., Iterable[Any]]  # progress(items, description) -> the same items, e.g. progress_iter
CLOAK = "cloak"
LEAM = "leam"
NONE = "none"  # the defence name of the protected photo as written (no further processing)
CLEAN = "clean"  # variant: the unprotected probe (its dodging share is the target's false-reject rate)
DEFENCE_ONLY = "defence-only"  # variant: the clean photo under the defence (what the defence alone costs)
IMPOSTOR_CENTROIDS = 8  # other people's centroids used by the `contrast` LEAM target
MAP_BATCH = 16


def _no_progress(items: Iterable[Any], description: str = "") -> Iterable[Any]:
    return items


# --------------------------------------------------------------------------------------------------------------
# What the runner needs from the outside world (injectable, so tests run on tiny hand-made models)


@dataclass(frozen=True)
class Network:
    """A differentiable source model: module (float RGB 0-255 (N, 3, S, S) -> (N, D)), its template, layers."""

    id: str
    module: nn.Module
    template: str
    default_layers: tuple[str, ...]


@dataclass(frozen=True)
class Backend:
    """Models, detector, parser and thresholds the runner uses. `default_backend()` reads the model zoo."""

    network: Callable[[str], Network]  # differentiable model id -> Network (sources, cloak members)
    recogniser: Callable[[str], Recogniser]  # target name (model id or black box) -> Recogniser
    detector: Any  # `.detect(rgb) -> list[Face]`
    parser: FaceParser
    parser_name: str
    thresholds: Callable[[str], Thresholds | None]
    cache_tag: Callable[[str], str | None]  # recogniser name -> on-disk embedding cache tag (None: no cache)
    use_cache: bool = True  # detection and embedding caches under $FACECLOAK_HOME
    notes: tuple[str, ...] = ()


def _weights_tag(name: str) -> str:
    """A tag that changes when a recogniser's weights do: converted weights' sha256, or the source file's."""
    from facecloak import paths

    info = paths.models_dir() / f"{name}.json"
    if info.is_file():
        return str(json.loads(info.read_text()).get("weights_sha256", ""))[:16]
    if name.startswith("onnx:"):
        from facecloak.models.pull import sha256_file

        return sha256_file(Path(name.removeprefix("onnx:")).expanduser())[:16]
    return "v1"


def default_backend(*, use_cache: bool = True) -> Backend:
    """The real zoo: MTCNN, FaceMesh (landmarks5 with a note when FaceMesh is not pulled), shipped/user thresholds."""
    from facecloak.detect import load_detector
    from facecloak.models import MODELS, get_spec, load_model
    from facecloak.models.blackbox import differentiable_recogniser, get_recogniser
    from facecloak.parse import get_parser, is_parser_pulled
    from facecloak.thresholds import load_thresholds

    notes: list[str] = []
    if is_parser_pulled():
        parser_name = "facemesh"
    else:
        parser_name = "landmarks5"
        notes.append("FaceMesh is not pulled (`facecloak models pull`): face regions come from the approximate "
                     "landmarks5 parser")

    @cache
    def network(model_id: str) -> Network:
        spec = get_spec(model_id)
        return Network(model_id, load_model(model_id), spec.template, tuple(spec.default_layers))

    @cache
    def recogniser(name: str) -> Recogniser:
        return differentiable_recogniser(name) if name in MODELS else get_recogniser(name)

    detector = load_detector("mtcnn")
    det_key = hashlib.sha256(json.dumps(detector_settings(detector), sort_keys=True).encode()).hexdigest()[:8]

    def cache_tag(name: str) -> str | None:
        safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", name)[-40:]
        return f"bench-{safe}-{_weights_tag(name)}-{det_key}" if use_cache else None

    return Backend(network=network, recogniser=recogniser, detector=detector, parser=get_parser(parser_name),
                   parser_name=parser_name, thresholds=load_thresholds, cache_tag=cache_tag, use_cache=use_cache,
                   notes=tuple(notes))


# --------------------------------------------------------------------------------------------------------------
# Small pure helpers


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return x / np.clip(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12, None)


def loo_centroids(embeddings: np.ndarray, group: Sequence[int]) -> np.ndarray:
    """(len(group), D): for each photo of the group the L2-normalised mean of the OTHER photos' unit embeddings."""
    emb = torch.from_numpy(np.asarray(embeddings, np.float32)[list(group)])
    return leam.reference_target(emb).reference.numpy()


def ensemble_map(maps: Sequence[np.ndarray]) -> np.ndarray:
    """Equal-weight mean of (S, S) maps, each renormalised to sum 1; all-zero maps are left out (uniform if all)."""
    usable = [np.asarray(m, np.float64) / m.sum() for m in maps if np.isfinite(m).all() and m.sum() > 0]
    if not usable:
        shape = np.asarray(maps[0]).shape
        return np.full(shape, 1.0 / (shape[0] * shape[1]), np.float32)
    return (np.mean(usable, axis=0)).astype(np.float32)


def encode_decode(image: np.ndarray, fmt: str, quality: int) -> np.ndarray:
    """The photo as a user would get it back from disk: encoded as PNG or JPEG (quality) in memory and decoded."""
    buf = io.BytesIO()
    if fmt == "png":
        Image.fromarray(image).save(buf, format="PNG", compress_level=1)
    else:
        Image.fromarray(image).save(buf, format="JPEG", quality=int(quality), subsampling=0 if quality >= 90 else 2)
    buf.seek(0)
    with Image.open(buf) as decoded:
        return np.asarray(decoded.convert("RGB"), dtype=np.uint8).copy()


def face_box_slices(face: Face, shape: tuple[int, int]) -> tuple[slice, slice]:
    """Rows and columns of the face's detection box, clipped to the photo (at least 7x7 for SSIM when possible)."""
    h, w = shape
    x0, y0 = max(math.floor(face.box[0]), 0), max(math.floor(face.box[1]), 0)
    x1, y1 = min(math.ceil(face.box[2]), w), min(math.ceil(face.box[3]), h)
    if x1 - x0 < 7 or y1 - y0 < 7:
        return slice(0, h), slice(0, w)
    return slice(y0, y1), slice(x0, x1)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.+-]+", "_", text)[:80]


def _sha(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def own_pipeline(target: str) -> str | None:
    """`own:dlib` -> `dlib`: a target that reads whole photos through its own pipeline; None for crop targets."""
    return target.removeprefix(OWN_PREFIX) if target.startswith(OWN_PREFIX) else None


def own_embeddings(image: np.ndarray, face: Face, pipelines: Sequence[str]) -> dict[str, np.ndarray | None]:
    """Per pipeline, the unit embedding of the face it finds at `face`'s place in `image` (None: not found).
    Detection and landmarks run once for all pipelines."""
    found = read_photo(image, [get_independent(p) for p in pipelines])
    return {p: (lambda f: None if f is None else f.embedding)(match_faces([face.box], found[p])[0]) for p in pipelines}


def unit_key(recipe: Recipe, data_fingerprint: str, parser: str, source: str, fill: str, budget: float) -> str:
    """Key of one resumable unit: what changes its numbers (recipe cell fingerprint, data, parser) and its names."""
    return _sha([recipe.cell_fingerprint(), data_fingerprint, parser, source, fill, float(budget)])


# --------------------------------------------------------------------------------------------------------------
# The run


@dataclass
class _Probe:
    """What one protected probe photo gives the targets: crops per template, defence and variant, and the
    quality numbers of its LEAM variant per defence (vs the original photo, inside the face box)."""

    index: int
    # template -> defence -> variant -> (S, S, 3) uint8 crop
    crops: dict[str, dict[str, dict[str, np.ndarray]]] = field(default_factory=dict)
    # own-pipeline target -> defence -> variant -> unit embedding (None: that pipeline found no face there)
    own: dict[str, dict[str, dict[str, np.ndarray | None]]] = field(default_factory=dict)
    quality: dict[str, dict[str, float]] = field(default_factory=dict)  # defence -> psnr/ssim/changed_share
    variants: list[str] = field(default_factory=list)  # LEAM first, then the controls
    template_pixels: int = 0
    photo_pixels: int = 0
    cloak_steps: int = 0
    redetect_failed: dict[str, int] = field(default_factory=dict)  # defence -> 1 when the LEAM variant lost its face


def cell_key(target: str, defence: str) -> str:
    """Key of a cell inside a unit's shard: the target, with the defence after a `|` when there is one."""
    return target if defence == NONE else f"{target}|{defence}"


class TransferRun:
    """One `bench run`: prepared data, per-model maps and embeddings (computed lazily, cached), and the units."""

    def __init__(
        self,
        recipe: Recipe,
        data_dir: Path,
        out_dir: Path,
        backend: Backend,
        progress: Progress = _no_progress,
    ) -> None:
        self.recipe = recipe
        self.out = Path(out_dir)
        self.backend = backend
        self.progress = progress
        self.common = recipe.leam.common_template
        self.common_size = TEMPLATES.get(self.common).size
        if recipe.leam.grid[0] != recipe.leam.grid[1]:
            raise ConfigError(f"leam.grid must be square for now (rows == cols), got {list(recipe.leam.grid)}")
        self.notes: list[str] = list(backend.notes)
        self.data: BenchSet = prepare(data_dir, recipe.data, backend.detector, use_cache=backend.use_cache,
                                      progress=lambda items: progress(items, "detecting faces"))
        self.pairs = genuine_pairs(self.data, recipe.max_pairs_per_identity, recipe.seed)
        self.probes = sorted({i for i, _ in self.pairs})
        self.fingerprint = self.data.fingerprint()
        self.groups = self.data.groups()
        self.regions = self._regions()
        self._detected = [DetectedPhoto(p.path, p.sha256, p.shape, (p.face,)) for p in self.data.photos]
        self._embeddings: dict[str, np.ndarray] = {}
        self._maps: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        self._thresholds: dict[str, tuple[dict[float, float], str]] = {}
        self._defended_clean: dict[tuple[str, str], np.ndarray] = {}
        self.pool = recipe.pool()
        self.defences: tuple[Defence, ...] = recipe.robustness.parsed() if recipe.robustness else ()
        self.defence_names: tuple[str, ...] = (NONE, *(d.name for d in self.defences))

    # --- cached per-photo inputs ------------------------------------------------------------------------------

    def read(self, path: Path) -> np.ndarray:
        return read_image(path).rgb

    def _cache_file(self, kind: str, key: Any) -> Path:
        return self.out / "cache" / f"{kind}-{_sha([key, self.fingerprint])[:16]}.npy"

    def _regions(self) -> np.ndarray:
        path = self._cache_file("regions", [self.backend.parser_name, self.common])
        if path.is_file():
            regions = np.load(path)
        else:
            regions = face_regions(self.data, self.backend.parser, self.common, self.read,
                                   progress=lambda items: self.progress(items, "parsing faces"))
            _save_npy(path, regions)
        empty = [i for i in range(len(regions)) if regions[i].sum() < 16]
        if empty:
            self.notes.append(f"{len(empty)} photo(s) had (almost) no parsed face region; their whole crop was used")
            regions = regions.copy()
            regions[empty] = True
        return regions

    def embeddings(self, name: str) -> np.ndarray:
        """(N, D) clean embeddings of every photo's main face by recogniser `name` (cached on disk)."""
        if name not in self._embeddings:
            pipe = own_pipeline(name)
            if pipe is not None:
                self._embeddings[name] = self._own_embeddings(pipe)
            else:
                rec = self.backend.recogniser(name)
                self._embeddings[name] = embed_main_faces(self._detected, rec,
                                                          cache_tag=self.backend.cache_tag(name))
        return self._embeddings[name]

    def _own_embeddings(self, pipe: str) -> np.ndarray:
        """(N, D) embeddings of every clean photo's main face through pipeline `pipe`, each photo encoded and
        decoded like the probes; a face the pipeline does not find is a zero row (it matches nothing)."""
        ev = self.recipe.evaluation
        path = self._cache_file(f"own-{pipe}", [pipe, ev.format, ev.jpeg_quality, "own-v1"])
        if path.is_file():
            return np.load(path)
        rows = [own_embeddings(encode_decode(self.read(p.path), ev.format, ev.jpeg_quality), p.face, [pipe])[pipe]
                for p in self.progress(self.data.photos, f"reading photos with {pipe}'s own pipeline")]
        dim = next((len(r) for r in rows if r is not None), 1)
        out = np.stack([np.zeros(dim, np.float32) if r is None else r.astype(np.float32) for r in rows])
        _save_npy(path, out)
        return out

    def thresholds(self, name: str) -> tuple[dict[float, float], str]:
        """Cosine threshold per FAR of recogniser `name`: calibrated if stored, else from this set's impostor pairs."""
        if name not in self._thresholds:
            fars = self.recipe.evaluation.far
            pipe = own_pipeline(name)
            stored = self.backend.thresholds(threshold_id(pipe) if pipe is not None else name)
            try:
                if stored is None:
                    raise KeyError(name)
                self._thresholds[name] = ({f: float(stored.at(f)) for f in fars}, stored.origin)
            except KeyError:
                emb = self.embeddings(name)
                ids = np.array([p.identity for p in self.data.photos])
                sims = cosine_matrix(emb, emb)
                iu, ju = np.triu_indices(len(ids), k=1)
                impostor = sims[iu, ju][ids[iu] != ids[ju]]
                self._thresholds[name] = ({f: float(threshold_at_far(impostor, f)) for f in fars}, "local")
        return self._thresholds[name]

    def maps(self, model: str) -> tuple[np.ndarray, np.ndarray]:
        """(LEAM overall maps, last-layer Grad-CAM maps) of every photo by `model`, each (N, S, S) in the common
        template; cached under OUT/cache/ (keyed by the LEAM settings and the data)."""
        if model not in self._maps:
            net = self.backend.network(model)
            lc = self.recipe.leam
            layers = resolve_layers(lc.layers, net.default_layers)
            key = [model, net.template, lc.method, list(layers), lc.target, self.recipe.seed, "maps-v1"]
            path = self._cache_file(f"maps-{_slug(model)}", key)
            if path.is_file():
                both = np.load(path)
            else:
                both = self._compute_maps(net, layers)
                _save_npy(path, both)
            self._maps[model] = (both[0], both[1])
        return self._maps[model]

    def _compute_maps(self, net: Network, layers: tuple[str, ...]) -> np.ndarray:
        lc = self.recipe.leam
        emb = self.embeddings(net.id)
        n, size = len(self.data.photos), self.common_size
        out = np.zeros((2, n, size, size), np.float32)
        groups = self.groups
        centroids = {k: _unit(_unit(emb[idx]).mean(0)) for k, idx in groups.items()}
        last = (net.default_layers[-1],)
        for identity in self.progress(sorted(groups), f"LEAM maps {net.id}"):
            idx = groups[identity]
            crops = np.stack([align(self.read(self.data.photos[i].path), self.data.photos[i].face, net.template).crop
                              for i in idx])
            refs = torch.from_numpy(loo_centroids(emb, idx))
            impostors = None
            if lc.target == "contrast":
                others = sorted(k for k in centroids if k != identity)
                rng = np.random.default_rng(np.random.SeedSequence([self.recipe.seed, ctl._name_entropy(identity)]))
                pick = rng.permutation(len(others))[:IMPOSTOR_CENTROIDS]
                impostors = torch.from_numpy(np.stack([centroids[others[k]] for k in pick]).astype(np.float32))
            x = to_tensor(crops)
            target = make_target(lc.target, net.module, x, refs, impostors)
            for kind, (method, lay) in enumerate(((lc.method, layers), ("gradcam", last))):
                rel = leam.compute_relevance(net.module, x, target, lay, method, batch_size=MAP_BATCH)
                for row, i in enumerate(idx):
                    out[kind, i] = self._to_common(rel.overall[row].numpy(), net.template)
        return out

    def _to_common(self, p: np.ndarray, template: str) -> np.ndarray:
        if template == self.common:
            return p.astype(np.float32)
        q = np.clip(warp_between_templates(p.astype(np.float32), template, self.common), 0, None)
        return (q / q.sum()).astype(np.float32) if q.sum() > 0 else q.astype(np.float32)

    # --- masks and protection ---------------------------------------------------------------------------------

    def _select(self, overall: np.ndarray, region: np.ndarray, budget: float, index: int, variant: str) -> np.ndarray:
        lc = self.recipe.leam
        settings = LeamSettings(method=lc.method, selection=lc.selection, budget=budget,
                                restrict_to_face=lc.restrict_to_face, common_template=self.common, grid=lc.grid[0],
                                gamma=lc.gamma)
        seed = int(ctl.control_rng(self.recipe.seed, index, budget, f"select:{variant}").integers(2**31))
        return select_pixels(overall[None], settings, region=region[None], seed=seed)[0]

    def template_masks(self, members: tuple[str, ...], index: int, budget: float) -> dict[str, np.ndarray]:
        """LEAM mask and every control of the recipe for photo `index`, (S, S) bool in the common template."""
        leam_maps = [self.maps(m)[0] for m in members]
        region = self.regions[index] if self.recipe.leam.restrict_to_face else np.ones_like(self.regions[index])
        leam_mask = self._select(ensemble_map([m[index] for m in leam_maps]), region, budget, index, LEAM)
        out = {LEAM: leam_mask}
        count = int(leam_mask.sum())
        seed = self.recipe.seed
        for control in self.recipe.controls:
            rng = ctl.control_rng(seed, index, budget, control)
            if control == "random-scatter":
                out[control] = ctl.random_scatter(count, region, rng)
            elif control == "random-shape":
                out[control] = ctl.random_shape(leam_mask, region, rng)
            elif control == "other-person":
                other = ctl.other_person_index([p.identity for p in self.data.photos], index, rng)
                out[control] = self._select(ensemble_map([m[other] for m in leam_maps]), region, budget, index,
                                            control)
            elif control == "lastlayer-gradcam":
                last = ensemble_map([self.maps(m)[1][index] for m in members])
                out[control] = self._select(last, region, budget, index, control)
            else:  # recipes are validated against bench.config.CONTROLS
                raise ConfigError(f"unknown control {control!r}")
        return out

    def _fill(
        self, image: np.ndarray, mask: np.ndarray, fill: str, members: tuple[str, ...], photo: BenchPhoto,
        budget: float, variant: str,
    ) -> tuple[np.ndarray, int]:
        rng = ctl.control_rng(self.recipe.seed, photo.index, budget, f"fill:{fill}:{variant}")
        if fill != CLOAK:
            return FILLS.get(fill)(image, mask, rng=rng), 0
        cc = self.recipe.cloak
        settings = CloakSettings(steps=cc.steps, step_size=cc.step_size, epsilon=cc.epsilon, diversity=cc.diversity,
                                 early_stop=cc.early_stop, eot=cc.eot, decoy=cc.decoy)
        strictest = min(self.recipe.evaluation.far)
        sources = []
        for m in members:
            net = self.backend.network(m)
            group = self.groups[photo.identity]
            ref = loo_centroids(self.embeddings(m), group)[group.index(photo.index)]
            sources.append(SourceModel(
                id=m, module=net.module, size=TEMPLATES.get(net.template).size,
                matrices=template_matrix(photo.face, TEMPLATES.get(net.template))[None],
                references=torch.from_numpy(ref[None].astype(np.float32)),
                threshold=self.thresholds(m)[0][strictest],
            ))
        # torch warns on read-only arrays (decoded photos are): hand the cloak a writable copy
        writable = image if image.flags.writeable else image.copy()
        return cloak(writable, mask, sources, settings, seed=int(rng.integers(2**31)))

    def _eval_face(self, image: np.ndarray, photo: BenchPhoto) -> tuple[Face, bool]:
        """The face a recogniser sees in `image` (a processed copy of `photo`): the original detection, or with
        `evaluation.redetect` the re-detection overlapping it best. Returns (face, found); when re-detection
        finds nothing that overlaps (IoU <= 0.3), the original detection is used and found is False."""
        if not self.recipe.evaluation.redetect:
            return photo.face, True
        found = self.backend.detector.detect(image)
        best = max(found, key=lambda f: iou(f.box, photo.face.box), default=None)
        if best is not None and iou(best.box, photo.face.box) > 0.3:
            return best, True
        return photo.face, False

    def _defended(self, decoded: np.ndarray, mask: np.ndarray) -> Iterator[tuple[str, np.ndarray]]:
        """(defence name, photo) for "none" (the decoded photo itself) and every defence of the recipe."""
        yield NONE, decoded
        for d in self.defences:
            yield d.name, apply_defence(d, decoded, mask)

    def protect_probe(
        self, members: tuple[str, ...], fill: str, budget: float, index: int, templates: Iterable[str],
        own: Sequence[str] = (),
    ) -> _Probe:
        """Every variant of one probe, protected, encoded and decoded, through every defence, aligned to each
        template and read by each own-pipeline target in `own` (pipeline names). The defences see the whole photo
        and (inpaint-mask) exactly the pixels of that variant's mask."""
        photo = self.data.photos[index]
        image = self.read(photo.path)
        matrix = common_matrix(photo, self.common)
        ev = self.recipe.evaluation
        templates = list(templates)
        probe = _Probe(index)
        box = face_box_slices(photo.face, photo.shape)
        masks = self.template_masks(members, index, budget)
        for variant, tmask in masks.items():
            pmask = warp_to_photo(tmask, matrix, image.shape, interpolation="nearest").astype(bool)
            protected, steps = self._fill(image, pmask, fill, members, photo, budget, variant)
            decoded = encode_decode(protected, ev.format, ev.jpeg_quality)
            probe.variants.append(variant)
            if variant == LEAM:
                probe.template_pixels = int(tmask.sum())
                probe.photo_pixels = int(pmask.sum())
                probe.cloak_steps = steps
            for defence, seen in self._defended(decoded, pmask):
                face, found = self._eval_face(seen, photo)
                for template in templates:
                    probe.crops.setdefault(template, {}).setdefault(defence, {})[variant] = align(
                        seen, face, template).crop
                if own:  # the decoded file as the world reads it: own detection, landmarks and alignment
                    for pipe, emb in own_embeddings(seen, photo.face, own).items():
                        probe.own.setdefault(pipe, {}).setdefault(defence, {})[variant] = emb
                if variant == LEAM:  # the cells report the LEAM variant's image quality
                    probe.redetect_failed[defence] = int(not found)
                    a, b = image[box], seen[box]
                    probe.quality[defence] = {"psnr": psnr(a, b), "ssim": ssim(a, b),
                                              "changed_share": changed_share(a, b), "psnr_photo": psnr(image, seen),
                                              "ssim_photo": ssim_local_change(image, seen)}
        return probe

    def defended_clean(self, target: str, defence: Defence) -> np.ndarray:
        """(len(self.probes), D) unit embeddings by `target` of the clean probes (encoded and decoded like the
        protected ones) after the blind `defence`: what the defence alone does. Computed once per pair."""
        key = (target, defence.name)
        if key not in self._defended_clean:
            ev = self.recipe.evaluation
            pipe = own_pipeline(target)
            seen_photos = []
            for i in self.probes:
                photo = self.data.photos[i]
                decoded = encode_decode(self.read(photo.path), ev.format, ev.jpeg_quality)
                seen_photos.append((apply_defence(defence, decoded, np.zeros(decoded.shape[:2], bool)), photo))
            if pipe is not None:
                dim = self.embeddings(target).shape[1]
                rows = [own_embeddings(seen, photo.face, [pipe])[pipe] for seen, photo in seen_photos]
                self._defended_clean[key] = np.stack([np.zeros(dim) if r is None else r for r in rows])
            else:
                rec = self.backend.recogniser(target)
                crops = [align(seen, self._eval_face(seen, photo)[0], rec.template).crop for seen, photo in seen_photos]
                self._defended_clean[key] = _unit(rec.embed(np.stack(crops)))
        return self._defended_clean[key]

    # --- cells ------------------------------------------------------------------------------------------------

    def unit_cells(self, spec: SourceSpec, fill: str, budget: float, targets: Sequence[str]) -> dict[str, dict]:
        """Cells of one (source, fill, budget) for `targets`, keyed by `cell_key(target, defence)`: protected
        probes are made once per member set, every defence's crops embedded in one batch per target."""
        by_members: dict[tuple[str, ...], list[str]] = {}
        for t in targets:
            by_members.setdefault(spec.members(t, self.pool), []).append(t)
        cells: dict[str, dict] = {}
        for members, group_targets in by_members.items():
            own = sorted({p for t in group_targets if (p := own_pipeline(t)) is not None})
            templates = sorted({self.backend.recogniser(t).template for t in group_targets if own_pipeline(t) is None})
            what = f"{spec.text} {fill} {budget:g}%" + (f" (T={','.join(group_targets)})"
                                                        if spec.kind == "leave-one-out" else "")
            probes = [self.protect_probe(members, fill, budget, i, templates, own)
                      for i in self.progress(self.probes, what)]
            for t in group_targets:
                cells.update(self.target_cells(spec, members, t, fill, budget, probes))
        return cells

    def target_cells(
        self, spec: SourceSpec, members: tuple[str, ...], target: str, fill: str, budget: float,
        probes: Sequence[_Probe],
    ) -> dict[str, dict]:
        """One cell per defence ("none" first) of `target`; all (defence, variant, probe) crops in one batch."""
        variants = probes[0].variants
        names = self.defence_names
        pipe = own_pipeline(target)
        if pipe is not None:  # read by the pipeline itself in protect_probe; a face it lost matches nothing
            dim = self.embeddings(target).shape[1]
            rows = [p.own[pipe][d][v] for d in names for v in variants for p in probes]
            prot = np.stack([np.zeros(dim) if r is None else r for r in rows]).reshape(
                len(names), len(variants), len(probes), -1)
        else:
            rec = self.backend.recogniser(target)
            crops = np.stack([p.crops[rec.template][d][v] for d in names for v in variants for p in probes])
            prot = _unit(rec.embed(crops)).reshape(len(names), len(variants), len(probes), -1)
        return {cell_key(target, d): self.cell(spec, members, target, fill, budget, probes, d,
                                               dict(zip(variants, prot[k], strict=True)))
                for k, d in enumerate(names)}

    def cell(
        self, spec: SourceSpec, members: tuple[str, ...], target: str, fill: str, budget: float,
        probes: Sequence[_Probe], defence: str, protected: Mapping[str, np.ndarray],
    ) -> dict[str, Any]:
        """Metrics of one (source, target, budget, fill, defence); `protected`: variant -> (len(probes), D) unit
        embeddings of the protected probes after that defence."""
        embs = dict(protected)
        blind = next((d for d in self.defences if d.name == defence and d.kind not in MASK_AWARE), None)
        if blind is not None:
            pos = {i: k for k, i in enumerate(self.probes)}
            embs[DEFENCE_ONLY] = self.defended_clean(target, blind)[[pos[p.index] for p in probes]]
        clean = _unit(self.embeddings(target))
        row = {p.index: k for k, p in enumerate(probes)}
        pi = np.array([i for i, _ in self.pairs])
        pj = np.array([j for _, j in self.pairs])
        before = np.sum(clean[pi] * clean[pj], axis=1)
        thresholds, origin = self.thresholds(target)
        ids = [p.identity for p in self.data.photos]
        groups = self.groups
        pair_cols: dict[str, np.ndarray] = {}
        photo_cols: dict[str, np.ndarray] = {}
        for v, emb in embs.items():
            after = np.sum(emb[[row[i] for i in pi]] * clean[pj], axis=1)
            pair_cols[delta_key(v)] = before - after
            # cosine of each protected probe to every clean photo of the same person
            to_refs = [clean[[j for j in groups[ids[p.index]] if j != p.index]] @ emb[k]
                       for k, p in enumerate(probes)]
            for far, thr in thresholds.items():
                pair_cols[dodge_key(far, v)] = (after < thr).astype(np.float64)
                photo_cols[dodge_key(far, v, per="photo")] = np.array([float(np.all(c < thr)) for c in to_refs])
        for metric in ("psnr", "ssim", "changed_share", "psnr_photo", "ssim_photo"):
            photo_cols[metric] = np.array([p.quality[defence][metric] for p in probes])
        cell: dict[str, Any] = {
            "source": spec.text, "target": target, "budget": float(budget), "fill": fill,
            "members": list(members), "transfer": spec.text == LEAVE_ONE_OUT or is_transfer(members, target),
            "n_pairs": len(self.pairs), "n_probes": len(probes),
            "threshold_origin": origin, "thresholds": {far_label(f): t for f, t in thresholds.items()},
            "cos_clean": float(before.mean()),
            "mask_pixels_template": float(np.mean([p.template_pixels for p in probes])),
            "mask_pixels_photo": float(np.mean([p.photo_pixels for p in probes])),
        }
        if self.defences:
            cell["defence"] = defence
        if fill == CLOAK:
            cell["cloak_steps"] = float(np.mean([p.cloak_steps for p in probes]))
        if self.recipe.evaluation.redetect:
            cell["redetect_failed"] = int(sum(p.redetect_failed.get(defence, 0) for p in probes))
        stats = summaries(pair_cols, seed=self.recipe.seed)
        # an unchanged probe has infinite PSNR: the PSNR summaries cover the others
        finite = {k: v[np.isfinite(v)] for k, v in photo_cols.items() if k.startswith("psnr")}
        stats.update(summaries({k: v for k, v in photo_cols.items() if k not in finite}, seed=self.recipe.seed))
        for k, v in finite.items():  # one call each: the two PSNRs may leave out different probes
            stats.update(summaries({k: v}, seed=self.recipe.seed))
        cell.update({k: s["mean"] for k, s in stats.items()})
        if finite["psnr"].size < len(probes):
            cell["psnr_unchanged_probes"] = int(len(probes) - finite["psnr"].size)
        cell["stats"] = stats
        genders = [self.data.photos[i].gender for i in pi]
        if any(genders):
            by: dict[str, dict[str, Any]] = {}
            for g in sorted({g for g in genders if g}):
                sel = np.array([x == g for x in genders])
                by[g] = {k: float(v[sel].mean()) for k, v in pair_cols.items() if k.startswith("delta_cos_")}
                by[g]["n_pairs"] = int(sel.sum())
            cell["by_gender"] = by
        return cell

    # --- units, shards, outputs -------------------------------------------------------------------------------

    def units(self) -> list[tuple[SourceSpec, str, float]]:
        r = self.recipe
        return [(spec, fill, float(b)) for spec in r.source_specs() for fill in r.fills for b in r.budgets]

    def shard_path(self, source: str, fill: str, budget: float) -> tuple[Path, str]:
        key = unit_key(self.recipe, self.fingerprint, self.backend.parser_name, source, fill, budget)
        return self.out / "cells" / f"{key[:12]}-{_slug(source)}-{fill}-{budget:g}.json", key

    def run_units(self, execute: UnitExecutor | None = None) -> tuple[list[dict], dict[str, int]]:
        """Compute every unit not finished yet (with `execute`, default `local_units`); returns all cells (recipe
        order) and counts of computed/skipped. Each unit's shard is written as soon as its cells come back."""
        counts = {"computed": 0, "skipped": 0, "unit_seconds": 0}
        done: dict[tuple[str, str, float], dict[str, dict]] = {}
        todo: list[tuple[UnitJob, Path, str, dict | None, dict[str, dict]]] = []
        for spec, fill, budget in self.units():
            path, key = self.shard_path(spec.text, fill, budget)
            shard = _read_shard(path, key)
            have = shard["cells"] if shard else {}
            # a target calibrated since its cells were computed is computed again
            have = {k: c for k, c in have.items()
                    if c["target"] not in self.recipe.targets or self._same_thresholds(c)}
            missing = [t for t in self.recipe.targets
                       if any(cell_key(t, d) not in have for d in self.defence_names)]
            if not missing:
                counts["skipped"] += 1
                counts["unit_seconds"] += round((shard or {}).get("seconds", 0.0))
                done[(spec.text, fill, budget)] = have
            else:
                todo.append((UnitJob(spec, fill, budget, tuple(missing)), path, key, shard, have))
        for index, computed, seconds in (execute or local_units)(self, [t[0] for t in todo]):
            job, path, key, shard, have = todo[index]
            have = {**have, **computed}
            seconds += (shard or {}).get("seconds", 0.0)
            payload = {"key": key, "source": job.spec.text, "fill": job.fill, "budget": job.budget,
                       "seconds": seconds, "cells": have}
            write_results(path.parent, payload, name=path.name)
            counts["computed"] += 1
            counts["unit_seconds"] += round(seconds)
            done[(job.spec.text, job.fill, job.budget)] = have
        # every kept cell was computed with today's thresholds (`_same_thresholds`), so the floors match it
        cells = [{**done[(s, f, b)][cell_key(t, d)], **self.clean_dodging(t)}
                 for f in self.recipe.fills for b in self.recipe.budgets
                 for s in self.recipe.sources for t in self.recipe.targets for d in self.defence_names
                 if cell_key(t, d) in done[(s, f, float(b))]]
        return cells, counts

    def _same_thresholds(self, cell: Mapping[str, Any]) -> bool:
        """True when a stored cell was computed with the thresholds its target has now (a calibration done
        between two runs changes every dodging share, so such a cell is recomputed)."""
        now, _ = self.thresholds(str(cell["target"]))
        stored = cell.get("thresholds") or {}
        return all(far_label(f) in stored and math.isclose(float(stored[far_label(f)]), t, rel_tol=1e-9)
                   for f, t in now.items())

    def clean_dodging(self, target: str) -> dict[str, float]:
        """Dodging shares of the unprotected probes (variant `clean`: the target's false rejections at each FAR),
        per pair and per photo: the floor every protected share is read against. The same for every cell of a
        target, so they are added when the cells are assembled (resumed shards get them too)."""
        clean = _unit(self.embeddings(target))
        thresholds, _ = self.thresholds(target)
        cos = np.array([float(clean[i] @ clean[j]) for i, j in self.pairs])
        ids = [p.identity for p in self.data.photos]
        to_refs = [clean[[j for j in self.groups[ids[i]] if j != i]] @ clean[i] for i in self.probes]
        out: dict[str, float] = {}
        for far, thr in thresholds.items():
            out[dodge_key(far, CLEAN)] = float(np.mean(cos < thr))
            out[dodge_key(far, CLEAN, per="photo")] = float(np.mean([np.all(c < thr) for c in to_refs]))
        return out


# --------------------------------------------------------------------------------------------------------------
# Where units are computed: `local_units` in this process; a distributed executor (bench.scale.ray_units) gets the
# same jobs and returns the same (index, cells, seconds); shards are written by `run_units` either way.


@dataclass(frozen=True)
class UnitJob:
    """One unit to compute: (source, fill, budget) and the targets its shard is missing."""

    spec: SourceSpec
    fill: str
    budget: float
    targets: tuple[str, ...]


# (run, jobs) -> (index into jobs, cells keyed by cell_key, compute seconds), in any order
UnitExecutor = Callable[["TransferRun", Sequence[UnitJob]], Iterable[tuple[int, dict[str, dict], float]]]


def compute_unit(run: TransferRun, job: UnitJob) -> tuple[dict[str, dict], float]:
    """The cells of one unit and the seconds they took."""
    start = time.perf_counter()
    cells = run.unit_cells(job.spec, job.fill, job.budget, list(job.targets))
    return cells, time.perf_counter() - start


def local_units(run: TransferRun, jobs: Sequence[UnitJob]) -> Iterator[tuple[int, dict[str, dict], float]]:
    for index, job in enumerate(run.progress(jobs, "units (source, fill, budget)")):
        yield index, *compute_unit(run, job)


def _read_shard(path: Path, key: str) -> dict | None:
    if not path.is_file():
        return None
    try:
        shard = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None  # a damaged shard is recomputed
    return shard if isinstance(shard, dict) and shard.get("key") == key else None


def _save_npy(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.part.npy")
    np.save(tmp, array)
    tmp.replace(path)


# --------------------------------------------------------------------------------------------------------------
# Figures


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
            out, _ = run._fill(image, pmask, fill, members, photo, budget, variant)
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

    from bench.report import atomic_write_bytes

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


# --------------------------------------------------------------------------------------------------------------
# Entry point


def run_transfer(
    recipe: Recipe,
    data_dir: Path,
    out_dir: Path,
    *,
    backend: Backend | None = None,
    examples: bool = True,
    command: str = "",
    progress: Progress = _no_progress,
    units: UnitExecutor | None = None,
) -> dict[str, Any]:
    """Run (or resume) a transfer benchmark; writes OUT/results.json, OUT/report.md, figures; returns the payload.
    units: where the units are computed (default `local_units`; `bench.scale.ray_units` for Ray)."""
    start = time.perf_counter()
    started = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    run = TransferRun(recipe, Path(data_dir), out, backend or default_backend(), progress)
    if not run.pairs:
        raise FacecloakError("no genuine pairs: every person needs two photos with a detected face")
    cells, counts = run.run_units(units)
    summary = summarise_cells(cells, main_budget(cells) or MAIN_BUDGET, recipe.fills[0] if recipe.fills else None)
    figures_written = write_figures(run, cells, examples)
    data = run.data
    payload: dict[str, Any] = {
        "recipe": recipe.name,
        "config": recipe.to_dict(),
        "environment": {**environment_info(), "command": command, "started": started,
                        "run_time_s": round(time.perf_counter() - start, 1),
                        "units_computed": counts["computed"], "units_resumed": counts["skipped"],
                        # compute time of every unit, earlier resumed runs included (run_time_s is this run's)
                        "unit_seconds_total": counts["unit_seconds"]},
        "data": {"root": data.root.name, "fingerprint": run.fingerprint, "parser": run.backend.parser_name,
                 "n_sampled": data.n_sampled, "no_face": list(data.no_face), "unreadable": list(data.unreadable),
                 "single_photo": list(data.single)},
        "n_photos": len(data.photos),
        "n_identities": len(data.identities),
        "n_no_face": len(data.no_face),
        "n_pairs": len(run.pairs),
        "n_probes": len(run.probes),
        "notes": run.notes,
        "figures": figures_written,
        "cells": cells,
        "summary": summary,
    }
    if "black" in recipe.fills:
        payload["paper"] = PAPER_TRANSFER
    write_results(out, payload)
    write_text(out, "report.md", render_markdown(payload) + _notes_section(payload))
    return payload


def _notes_section(payload: Mapping[str, Any]) -> str:
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
