"""`facecloak bench run --backend ray`: the transfer benchmark's units computed by Ray actors.

The driver does what every unit shares once: detection (cached), face regions, clean embeddings and the LEAM maps
of every source member (cached under OUT/cache/). Each actor then builds its own `TransferRun` over the same
recipe, data and OUT — reading those caches instead of recomputing them — and computes whole units
(`bench.transfer.compute_unit`); the driver writes each unit's shard as it comes back, so a rerun resumes exactly
as a local one. Workers need the data folder, OUT and the model cache at the same paths (true on a local Ray; on a
cluster, a shared filesystem). Cells equal the local run's within float noise (workers use 1 torch thread).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from bench.config import Recipe
from bench.transfer import Backend, TransferRun, UnitExecutor, UnitJob, compute_unit
from facecloak.scale.ray import RayConfig, actor_map


def ray_units(config: RayConfig, make_backend: Callable[[], Backend]) -> UnitExecutor:
    """A `run_transfer(units=...)` executor; `make_backend` (picklable, e.g. functools.partial of
    `bench.transfer.default_backend`) builds each actor's models."""

    def execute(run: TransferRun, jobs: Sequence[UnitJob]) -> Iterator[tuple[int, dict[str, dict], float]]:
        if not jobs:
            return
        warm_caches(run, jobs)
        make = functools.partial(_worker_run, run.recipe, run.data.root, run.out, make_backend)
        indexed = list(enumerate(jobs))
        yield from run.progress(actor_map(make, _compute, indexed, config, ordered=False),
                                "units (source, fill, budget)")

    return execute


def warm_caches(run: TransferRun, jobs: Sequence[UnitJob]) -> None:
    """Clean embeddings of every target and LEAM maps of every source member, computed (or read) once here."""
    for job in jobs:
        for target in job.targets:
            run.embeddings(target)
            for member in job.spec.members(target, run.pool):
                run.maps(member)


def _worker_run(recipe: Recipe, data_dir: Path, out_dir: Path, make_backend: Callable[[], Backend]) -> TransferRun:
    return TransferRun(recipe, data_dir, out_dir, make_backend())


def _compute(run: TransferRun, indexed: tuple[int, UnitJob]) -> tuple[int, dict[str, dict], float]:
    index, job = indexed
    cells, seconds = compute_unit(run, job)
    return index, cells, seconds
