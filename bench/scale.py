"""`facecloak bench run --backend ray`: the transfer benchmark's units computed by Ray actors.

The driver does what every unit shares and is cheap once: detection (cached), face regions and the clean
embeddings of every target. Then, in one Ray session, two rounds of actors, each building its own `TransferRun`
over the same recipe, data and OUT: the first computes the LEAM maps of each source member (one model per item,
cached under OUT/cache/ as locally), the second computes whole units (`bench.units.compute_unit`) reading those
caches. The driver writes each unit's shard as it comes back, so a rerun resumes exactly as a local one.
Workers need the data folder, OUT and the model cache at the same paths (true on a local Ray; on a
cluster, a shared filesystem). Cells equal the local run's within float noise (workers use 1 torch thread).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from bench.backend import Backend
from bench.config import Recipe
from bench.transfer_run import TransferRun
from bench.units import UnitExecutor, UnitJob, compute_unit
from facecloak.scale.ray import RayConfig, actor_map, ray_session


def ray_units(config: RayConfig, make_backend: Callable[[], Backend]) -> UnitExecutor:
    """A `run_transfer(units=...)` executor; `make_backend` (picklable, e.g. functools.partial of
    `bench.backend.default_backend`) builds each actor's models."""

    def execute(run: TransferRun, jobs: Sequence[UnitJob]) -> Iterator[tuple[int, dict[str, dict], float]]:
        if not jobs:
            return
        for target in sorted({t for job in jobs for t in job.targets}):
            run.embeddings(target)  # on disk (with the cache) for every actor; the driver needs them for the cells
        members = sorted({m for job in jobs for t in job.targets for m in job.spec.members(t, run.pool)})
        make = functools.partial(_worker_run, run.recipe, run.data.root, run.out, make_backend)
        with ray_session(config):  # both rounds in one Ray
            for _ in run.progress(actor_map(make, _maps, members, config, ordered=False), "LEAM maps (models)"):
                pass
            yield from run.progress(actor_map(make, _compute, list(enumerate(jobs)), config, ordered=False),
                                    "units (source, fill, budget)")

    return execute


def _worker_run(recipe: Recipe, data_dir: Path, out_dir: Path, make_backend: Callable[[], Backend]) -> TransferRun:
    return TransferRun(recipe, data_dir, out_dir, make_backend())


def _maps(run: TransferRun, model: str) -> str:
    run.maps(model)  # computed and cached under OUT/cache/, or read from there
    return model


def _compute(run: TransferRun, indexed: tuple[int, UnitJob]) -> tuple[int, dict[str, dict], float]:
    index, job = indexed
    cells, seconds = compute_unit(run, job)
    return index, cells, seconds
