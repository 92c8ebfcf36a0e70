"""The state of one `bench run`: prepared data, and per-photo inputs computed once and cached around the masking
stage (face regions, clean embeddings, thresholds, LEAM maps), the masks of each probe, and the units' cells
(metrics in `bench.cells`).

The masking itself is `facecloak.masking.stage`'s, as `protect` and `explain` use it: faces aligned once per template
(`align_faces`), LEAM maps per model in the common template (`leamface.model_maps`), regions rasterised in the
common template (`parse.template_labels`), selection through `leam.SELECTORS` (`leamface.select_pixels`). The bench
adds only what a benchmark needs around it: the person's leave-this-photo-out centroid as the reference and
seeded impostor centroids of the data set (so maps do not depend on the bundled bank), the controls of equal
size, and caches under OUT/cache/.

Coordinates: template masks and maps are (S, S) in the common template; photo masks are (H, W) photo pixels.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

import leam
from bench import controls as ctl
from bench.backend import Backend, Network
from bench.cells import target_cells
from bench.config import Defence, Recipe, SourceSpec, resolve_layers
from bench.data import BenchSet, face_regions, genuine_pairs, prepare
from bench.probes import (
    LEAM,
    NONE,
    defended_clean,
    encode_decode,
    own_embeddings,
    own_pipeline,
    protect_probe,
    unit_rows,
)
from bench.units import sha, slug
from facecloak.errors import ConfigError
from facecloak.faces.align import TEMPLATES
from facecloak.files import atomic_path
from facecloak.masking.leamface import LeamSettings, model_maps, select_pixels
from facecloak.masking.stage import align_faces
from facecloak.photos.io import read_image
from facecloak.progress import Progress, no_progress
from facecloak.verification.embedding_cache import DetectedPhoto, embed_main_faces
from facecloak.verification.independent import threshold_id
from facecloak.verification.roc import cosine_matrix, threshold_at_far

IMPOSTOR_CENTROIDS = 8  # other people's centroids used by the `contrast` LEAM target


def loo_centroids(embeddings: np.ndarray, group: Sequence[int]) -> np.ndarray:
    """(len(group), D): for each photo of the group the L2-normalised mean of the OTHER photos' unit embeddings."""
    emb = torch.from_numpy(np.asarray(embeddings, np.float32)[list(group)])
    return leam.reference_target(emb).reference.numpy()


def ensemble_map(maps: Sequence[np.ndarray]) -> np.ndarray:
    """Equal-weight mean of (S, S) maps, each renormalised to sum 1; all-zero maps are left out (uniform if all).

    Unlike `leamface.ensemble` (which refuses an all-zero map), a benchmark photo whose map vanished on one model
    still gets a mask."""
    usable = [np.asarray(m, np.float64) / m.sum() for m in maps if np.isfinite(m).all() and m.sum() > 0]
    if not usable:
        shape = np.asarray(maps[0]).shape
        return np.full(shape, 1.0 / (shape[0] * shape[1]), np.float32)
    return (np.mean(usable, axis=0)).astype(np.float32)


def save_npy(path: Path, array: np.ndarray) -> None:
    """`np.save` through the one atomic writer (an open file, so np.save adds no suffix)."""
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.save(fh, array)


class TransferRun:
    """One `bench run`: prepared data, per-model maps and embeddings (computed lazily, cached), and the cells."""

    def __init__(
        self,
        recipe: Recipe,
        data_dir: Path,
        out_dir: Path,
        backend: Backend,
        progress: Progress = no_progress,
    ) -> None:
        self.recipe = recipe
        self.out = Path(out_dir)
        self.backend = backend
        self.progress = progress
        self.common = recipe.leam.common_template
        self.common_size = TEMPLATES.get(self.common).size
        self.notes: list[str] = list(backend.notes)
        self.data: BenchSet = prepare(data_dir, recipe.data, backend.detector, use_cache=backend.use_cache,
                                      progress=progress)
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
        return self.out / "cache" / f"{kind}-{sha([key, self.fingerprint])[:16]}.npy"

    def _regions(self) -> np.ndarray:
        """(N, S, S) bool: each photo's parsed face region in the common template, as the masking stage makes it
        (`template_labels`: the parser's regions rasterised in the template)."""
        path = self._cache_file("regions", [self.backend.parser_name, self.common, "template-labels-v2"])
        if path.is_file():
            regions = np.load(path)
        else:
            regions = face_regions(self.data, self.backend.parser, self.common, self.read, self.progress)
            save_npy(path, regions)
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
        save_npy(path, out)
        return out

    def reference(self, model: str, index: int) -> np.ndarray:
        """(D,) the leave-this-photo-out centroid of photo `index`'s person on `model` (the cloak's reference)."""
        group = self.groups[self.data.photos[index].identity]
        return loo_centroids(self.embeddings(model), group)[group.index(index)]

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

    # --- maps: the masking stage's step 2, with the bench's references and impostors --------------------------

    def map_settings(self, net: Network) -> tuple[LeamSettings, LeamSettings]:
        """(the recipe's LEAM settings, last-layer Grad-CAM) for `net`, layer tokens resolved for that model."""
        lc = self.recipe.leam
        layers = resolve_layers(lc.layers if isinstance(lc.layers, str | tuple) else "default", net.default_layers)
        return (dataclasses.replace(lc, layers=layers),
                dataclasses.replace(lc, method="gradcam", layers=(net.default_layers[-1],)))

    def maps(self, model: str) -> tuple[np.ndarray, np.ndarray]:
        """(LEAM overall maps, last-layer Grad-CAM maps) of every photo by `model`, each (N, S, S) in the common
        template; cached under OUT/cache/ (keyed by the LEAM settings and the data)."""
        if model not in self._maps:
            net = self.backend.network(model)
            lc = self.recipe.leam
            settings, _ = self.map_settings(net)
            key = [model, net.template, lc.method, list(settings.layers), lc.target, self.recipe.seed, "maps-v2"]
            key += [self.backend.device] if self.backend.device != "cpu" else []  # CPU caches stay valid
            path = self._cache_file(f"maps-{slug(model)}", key)
            if path.is_file():
                both = np.load(path)
            else:
                both = self._compute_maps(net)
                save_npy(path, both)
            self._maps[model] = (both[0], both[1])
        return self._maps[model]

    def _impostors(self, identity: str, centroids: Mapping[str, np.ndarray]) -> torch.Tensor:
        """Seeded centroids of up to `IMPOSTOR_CENTROIDS` other people of the data set (the contrast target)."""
        others = sorted(k for k in centroids if k != identity)
        rng = np.random.default_rng(np.random.SeedSequence([self.recipe.seed, ctl._name_entropy(identity)]))
        pick = rng.permutation(len(others))[:IMPOSTOR_CENTROIDS]
        return torch.from_numpy(np.stack([centroids[others[k]] for k in pick]).astype(np.float32))

    def _compute_maps(self, net: Network) -> np.ndarray:
        """Per person: the faces aligned by the masking stage (one crop per photo in the model's template), maps
        by `model_maps` against each photo's leave-this-photo-out centroid (and the data set's impostors)."""
        emb = self.embeddings(net.id)
        n, size = len(self.data.photos), self.common_size
        out = np.zeros((2, n, size, size), np.float32)
        groups = self.groups
        centroids = {k: unit_rows(unit_rows(emb[idx]).mean(0)) for k, idx in groups.items()}
        settings = self.map_settings(net)
        contrast = self.recipe.leam.target == "contrast"
        for identity in self.progress(sorted(groups), f"LEAM maps {net.id}"):
            idx = groups[identity]
            x = torch.cat([
                align_faces(self.read(self.data.photos[i].path), [self.data.photos[i].face], (),
                            crop_templates=(net.template,), device=self.backend.device).inputs[net.template]
                for i in idx
            ])
            refs = torch.from_numpy(loo_centroids(emb, idx))
            impostors = self._impostors(identity, centroids) if contrast else None
            for kind, s in enumerate(settings):
                out[kind, idx] = model_maps(net.id, net.module, x, s, references=refs, impostors=impostors).overall
        return out

    # --- masks: the masking stage's selection, and the controls of the same size ------------------------------

    def _select(self, overall: np.ndarray, region: np.ndarray, budget: float, index: int, variant: str) -> np.ndarray:
        seed = int(ctl.control_rng(self.recipe.seed, index, budget, f"select:{variant}").integers(2**31))
        settings = dataclasses.replace(self.recipe.leam, budget=budget)
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

    def defended_clean(self, target: str, defence: Defence) -> np.ndarray:
        """`bench.probes.defended_clean`, computed once per (target, defence)."""
        key = (target, defence.name)
        if key not in self._defended_clean:
            self._defended_clean[key] = defended_clean(self, target, defence)
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
            probes = [protect_probe(self, members, fill, budget, i, templates, own)
                      for i in self.progress(self.probes, what)]
            for t in group_targets:
                cells.update(target_cells(self, spec, members, t, fill, budget, probes))
        return cells
