"""Units of the transfer benchmark, their shards and where they are computed.

A unit is one (source, fill, budget); its cells (one per target and defence) are written to OUT/cells/ as a JSON
shard keyed by `unit_key`; a rerun skips finished shards and computes only what is missing (e.g. an added
target, or a target calibrated since). `local_units` computes units in this process; a distributed executor
(`bench.scale.ray_units`) gets the same jobs and returns the same (index, cells, seconds); shards are written by
`run_units` either way.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.cells import cell_key, clean_dodging
from bench.config import Recipe, SourceSpec
from bench.report import far_label, write_results

if TYPE_CHECKING:
    from bench.transfer_run import TransferRun

UNIT_VERSION = "template-regions-v2"
"""Part of every unit key. v2: face regions are rasterised in the common template by the masking stage
(`facecloak.faces.parse.template_labels`) instead of a photo-sized label map warped down, which moves region edges by
a pixel; shards written before that are computed again."""


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.+-]+", "_", text)[:80]


def sha(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def unit_key(recipe: Recipe, data_fingerprint: str, parser: str, source: str, fill: str, budget: float) -> str:
    """Key of one resumable unit: what changes its numbers (recipe cell fingerprint, data, parser, the bench's
    `UNIT_VERSION`) and its names."""
    return sha([recipe.cell_fingerprint(), data_fingerprint, parser, source, fill, float(budget), UNIT_VERSION])


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


def read_shard(path: Path, key: str) -> dict | None:
    """A unit's shard when it exists, parses and has `key`; None otherwise (a damaged shard is recomputed)."""
    if not path.is_file():
        return None
    try:
        shard = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return shard if isinstance(shard, dict) and shard.get("key") == key else None


def shard_path(run: TransferRun, source: str, fill: str, budget: float) -> tuple[Path, str]:
    key = unit_key(run.recipe, run.fingerprint, run.backend.parser_name, source, fill, budget)
    return run.out / "cells" / f"{key[:12]}-{slug(source)}-{fill}-{budget:g}.json", key


def same_thresholds(run: TransferRun, cell: Mapping[str, Any]) -> bool:
    """True when a stored cell was computed with the thresholds its target has now (a calibration done
    between two runs changes every dodging share, so such a cell is recomputed)."""
    now, _ = run.thresholds(str(cell["target"]))
    stored = cell.get("thresholds") or {}
    return all(far_label(f) in stored and math.isclose(float(stored[far_label(f)]), t, rel_tol=1e-9)
               for f, t in now.items())


def run_units(run: TransferRun, execute: UnitExecutor | None = None) -> tuple[list[dict], dict[str, int]]:
    """Compute every unit not finished yet (with `execute`, default `local_units`); returns all cells (recipe
    order) and counts of computed/skipped. Each unit's shard is written as soon as its cells come back."""
    recipe = run.recipe
    counts = {"computed": 0, "skipped": 0, "unit_seconds": 0}
    done: dict[tuple[str, str, float], dict[str, dict]] = {}
    todo: list[tuple[UnitJob, Path, str, dict | None, dict[str, dict]]] = []
    units = [(spec, fill, float(b)) for spec in recipe.source_specs() for fill in recipe.fills for b in recipe.budgets]
    for spec, fill, budget in units:
        path, key = shard_path(run, spec.text, fill, budget)
        shard = read_shard(path, key)
        have = shard["cells"] if shard else {}
        # a target calibrated since its cells were computed is computed again
        have = {k: c for k, c in have.items() if c["target"] not in recipe.targets or same_thresholds(run, c)}
        missing = [t for t in recipe.targets if any(cell_key(t, d) not in have for d in run.defence_names)]
        if not missing:
            counts["skipped"] += 1
            counts["unit_seconds"] += round((shard or {}).get("seconds", 0.0))
            done[(spec.text, fill, budget)] = have
        else:
            todo.append((UnitJob(spec, fill, budget, tuple(missing)), path, key, shard, have))
    for index, computed, seconds in (execute or local_units)(run, [t[0] for t in todo]):
        job, path, key, shard, have = todo[index]
        have = {**have, **computed}
        seconds += (shard or {}).get("seconds", 0.0)
        payload = {"key": key, "source": job.spec.text, "fill": job.fill, "budget": job.budget,
                   "seconds": seconds, "cells": have}
        write_results(path.parent, payload, name=path.name)
        counts["computed"] += 1
        counts["unit_seconds"] += round(seconds)
        done[(job.spec.text, job.fill, job.budget)] = have
    # every kept cell was computed with today's thresholds (`same_thresholds`), so the floors match it
    cells = [{**done[(s, f, b)][cell_key(t, d)], **clean_dodging(run, t)}
             for f in recipe.fills for b in recipe.budgets
             for s in recipe.sources for t in recipe.targets for d in run.defence_names
             if cell_key(t, d) in done[(s, f, float(b))]]
    return cells, counts
