"""The metrics of the transfer benchmark's cells: Δcos, dodging per pair and per photo, image quality, gender splits.

A cell is one (source, target, budget, fill, defence); its numbers come from the protected probes of its unit
(`bench.probes.Probe`) and the run's clean embeddings and thresholds (`bench.transfer_run.TransferRun`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from bench.config import LEAVE_ONE_OUT, SourceSpec, is_transfer
from bench.defences import MASK_AWARE
from bench.probes import CLEAN, CLOAK, DEFENCE_ONLY, NONE, Probe, own_pipeline, unit_rows
from bench.report import delta_key, dodge_key, far_label
from bench.stats import summaries

if TYPE_CHECKING:
    from bench.transfer_run import TransferRun


def cell_key(target: str, defence: str) -> str:
    """Key of a cell inside a unit's shard: the target, with the defence after a `|` when there is one."""
    return target if defence == NONE else f"{target}|{defence}"


def target_cells(
    run: TransferRun, spec: SourceSpec, members: tuple[str, ...], target: str, fill: str, budget: float,
    probes: Sequence[Probe],
) -> dict[str, dict]:
    """One cell per defence ("none" first) of `target`; all (defence, variant, probe) crops in one batch."""
    variants = probes[0].variants
    names = run.defence_names
    pipe = own_pipeline(target)
    if pipe is not None:  # read by the pipeline itself in protect_probe; a face it lost matches nothing
        dim = run.embeddings(target).shape[1]
        rows = [p.own[pipe][d][v] for d in names for v in variants for p in probes]
        prot = np.stack([np.zeros(dim) if r is None else r for r in rows]).reshape(
            len(names), len(variants), len(probes), -1)
    else:
        rec = run.backend.recogniser(target)
        crops = np.stack([p.crops[rec.template][d][v] for d in names for v in variants for p in probes])
        prot = unit_rows(rec.embed(crops)).reshape(len(names), len(variants), len(probes), -1)
    return {cell_key(target, d): cell(run, spec, members, target, fill, budget, probes, d,
                                           dict(zip(variants, prot[k], strict=True)))
            for k, d in enumerate(names)}

def cell(
    run: TransferRun, spec: SourceSpec, members: tuple[str, ...], target: str, fill: str, budget: float,
    probes: Sequence[Probe], defence: str, protected: Mapping[str, np.ndarray],
) -> dict[str, Any]:
    """Metrics of one (source, target, budget, fill, defence); `protected`: variant -> (len(probes), D) unit
    embeddings of the protected probes after that defence."""
    embs = dict(protected)
    blind = next((d for d in run.defences if d.name == defence and d.kind not in MASK_AWARE), None)
    if blind is not None:
        pos = {i: k for k, i in enumerate(run.probes)}
        embs[DEFENCE_ONLY] = run.defended_clean(target, blind)[[pos[p.index] for p in probes]]
    clean = unit_rows(run.embeddings(target))
    row = {p.index: k for k, p in enumerate(probes)}
    pi = np.array([i for i, _ in run.pairs])
    pj = np.array([j for _, j in run.pairs])
    before = np.sum(clean[pi] * clean[pj], axis=1)
    thresholds, origin = run.thresholds(target)
    ids = [p.identity for p in run.data.photos]
    groups = run.groups
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
        "n_pairs": len(run.pairs), "n_probes": len(probes),
        "threshold_origin": origin, "thresholds": {far_label(f): t for f, t in thresholds.items()},
        "cos_clean": float(before.mean()),
        "mask_pixels_template": float(np.mean([p.template_pixels for p in probes])),
        "mask_pixels_photo": float(np.mean([p.photo_pixels for p in probes])),
    }
    if run.defences:
        cell["defence"] = defence
    if fill == CLOAK:
        cell["cloak_steps"] = float(np.mean([p.cloak_steps for p in probes]))
    if run.recipe.evaluation.redetect:
        cell["redetect_failed"] = int(sum(p.redetect_failed.get(defence, 0) for p in probes))
    stats = summaries(pair_cols, seed=run.recipe.seed)
    # an unchanged probe has infinite PSNR: the PSNR summaries cover the others
    finite = {k: v[np.isfinite(v)] for k, v in photo_cols.items() if k.startswith("psnr")}
    stats.update(summaries({k: v for k, v in photo_cols.items() if k not in finite}, seed=run.recipe.seed))
    for k, v in finite.items():  # one call each: the two PSNRs may leave out different probes
        stats.update(summaries({k: v}, seed=run.recipe.seed))
    cell.update({k: s["mean"] for k, s in stats.items()})
    if finite["psnr"].size < len(probes):
        cell["psnr_unchanged_probes"] = int(len(probes) - finite["psnr"].size)
    cell["stats"] = stats
    genders = [run.data.photos[i].gender for i in pi]
    if any(genders):
        by: dict[str, dict[str, Any]] = {}
        for g in sorted({g for g in genders if g}):
            sel = np.array([x == g for x in genders])
            by[g] = {k: float(v[sel].mean()) for k, v in pair_cols.items() if k.startswith("delta_cos_")}
            by[g]["n_pairs"] = int(sel.sum())
        cell["by_gender"] = by
    return cell

def clean_dodging(run: TransferRun, target: str) -> dict[str, float]:
    """Dodging shares of the unprotected probes (variant `clean`: the target's false rejections at each FAR),
    per pair and per photo: the floor every protected share is read against. The same for every cell of a
    target, so they are added when the cells are assembled (resumed shards get them too)."""
    clean = unit_rows(run.embeddings(target))
    thresholds, _ = run.thresholds(target)
    cos = np.array([float(clean[i] @ clean[j]) for i, j in run.pairs])
    ids = [p.identity for p in run.data.photos]
    to_refs = [clean[[j for j in run.groups[ids[i]] if j != i]] @ clean[i] for i in run.probes]
    out: dict[str, float] = {}
    for far, thr in thresholds.items():
        out[dodge_key(far, CLEAN)] = float(np.mean(cos < thr))
        out[dodge_key(far, CLEAN, per="photo")] = float(np.mean([np.all(c < thr) for c in to_refs]))
    return out
