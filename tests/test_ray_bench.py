"""`facecloak bench run --backend ray` (issue 12): units on Ray actors equal the local run, shards reused on rerun.

Runs on the hand-made tiny models of test_bench_runner (no weights, no shared photos) on a local Ray with 2 CPUs;
one real run of the `quick` recipe through the CLI is marked slow.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import test_bench_runner as tiny
from _protect_support import invoke, need_weights

from bench.scale import ray_units
from bench.transfer import run_transfer
from facecloak.scale.ray import RayConfig

ray = pytest.importorskip("ray", reason="the Ray extra is not installed: pip install 'facecloak[ray]'")


@pytest.fixture(scope="module")
def local_ray() -> Iterator[None]:
    # the tiny models live in test modules, which workers cannot import: ship them by value
    ray.cloudpickle.register_pickle_by_value(tiny)
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    ray.init(num_cpus=2, include_dashboard=False, object_store_memory=96 * 2**20, log_to_driver=False)
    try:
        yield
    finally:
        ray.shutdown()


def assert_close(a: Any, b: Any, path: str = "") -> None:
    """Equal JSON values, floats within float noise (rel/abs 1e-6)."""
    if isinstance(a, dict):
        assert isinstance(b, dict) and sorted(a) == sorted(b), path
        for k in a:
            assert_close(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, list):
        assert isinstance(b, list) and len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_close(x, y, f"{path}[{i}]")
    elif isinstance(a, float) and isinstance(b, float):
        assert math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-6) or (math.isnan(a) and math.isnan(b)), (path, a, b)
    else:
        assert a == b, (path, a, b)


def _cells(payload: dict) -> list[dict]:
    return json.loads(json.dumps(payload["cells"]))


def test_ray_units_equal_local_units_and_resume(local_ray: None, tmp_path: Path) -> None:
    photos = tiny.make_photos(tmp_path / "faces")
    recipe = tiny.tiny_recipe()
    local = run_transfer(recipe, photos, tmp_path / "local", backend=tiny.tiny_backend(), examples=False)
    units = ray_units(RayConfig(workers=2), tiny.tiny_backend)
    out = tmp_path / "ray"
    remote = run_transfer(recipe, photos, out, backend=tiny.tiny_backend(), examples=False, units=units)
    assert remote["environment"]["units_computed"] == tiny.N_UNITS
    assert len(remote["cells"]) == len(local["cells"]) > 0
    assert_close(_cells(remote), _cells(local))
    assert_close(remote["summary"], local["summary"])
    shards = sorted((out / "cells").glob("*.json"))
    assert len(shards) == tiny.N_UNITS

    # a rerun computes nothing; a lost shard is the only unit computed again
    again = run_transfer(recipe, photos, out, backend=tiny.tiny_backend(), examples=False, units=units)
    assert (again["environment"]["units_computed"], again["environment"]["units_resumed"]) == (0, tiny.N_UNITS)
    shards[0].unlink()
    third = run_transfer(recipe, photos, out, backend=tiny.tiny_backend(), examples=False, units=units)
    assert (third["environment"]["units_computed"], third["environment"]["units_resumed"]) == (1, tiny.N_UNITS - 1)
    assert_close(_cells(third), _cells(local))


@pytest.mark.real
@pytest.mark.shared
@pytest.mark.slow
def test_cli_bench_run_on_ray_matches_local(deepface_dir: Path, tmp_path: Path, local_ray: None) -> None:
    """The real zoo, the `quick` recipe cut to black fill and 3 people: `--backend ray` vs local through the CLI."""
    need_weights()
    cut = ["--set", "fills=['black']", "--set", "data.identities=3", "--no-examples"]
    base = ["bench", "run", "--recipe", "quick", "--data", deepface_dir, *cut]
    local = invoke([*base, "-o", tmp_path / "local"])
    remote = invoke([*base, "-o", tmp_path / "ray", "--backend", "ray", "--workers", "2"])
    assert local.exit_code == remote.exit_code == 0, remote.output
    a = json.loads((tmp_path / "local" / "results.json").read_text())
    b = json.loads((tmp_path / "ray" / "results.json").read_text())
    assert b["environment"]["units_computed"] == len(list((tmp_path / "ray" / "cells").glob("*.json"))) > 0
    assert_close(b["cells"], a["cells"])
