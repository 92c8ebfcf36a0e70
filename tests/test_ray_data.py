"""The albumentations transform in a Ray Data pipeline (issue 12, examples/ray_data_transform.py).

Ray Data reads PNGs, `LeamOcclusionBatches` occludes them on a local 2-CPU Ray, a second step writes them; the
written pixels must equal the transform applied in a plain loop with the same per-photo seeds and 1 torch thread.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from _protect_support import astronaut, need_weights
from PIL import Image

from facecloak.scale.data import LeamOcclusionBatches, photo_seed

ray = pytest.importorskip("ray", reason="the Ray extra is not installed: pip install 'facecloak[ray]'")
pytest.importorskip("ray.data", reason="Ray Data is not installed: pip install 'facecloak[ray]'")

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "ray_data_transform.py"
FAST = {"models": ["mbf-arc"], "fill": "black", "parser": "landmarks5", "budget": 2.0}


def _example():
    spec = importlib.util.spec_from_file_location("ray_data_transform", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def example() -> Iterator[object]:
    module = _example()
    ray.cloudpickle.register_pickle_by_value(module)  # workers cannot import the example by name
    ray.init(num_cpus=2, include_dashboard=False, object_store_memory=128 * 2**20, log_to_driver=False)
    try:
        yield module
    finally:
        ray.shutdown()


@pytest.fixture
def photos(tmp_path: Path) -> Path:
    need_weights()
    src = tmp_path / "in"
    (src / "sub").mkdir(parents=True)
    Image.fromarray(astronaut(256)).save(src / "astronaut.png")
    Image.fromarray(np.ascontiguousarray(astronaut(200)[:, ::-1])).save(src / "sub" / "mirrored.png")
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(90, 110, (120, 160, 3), dtype=np.uint8)).save(src / "wall.png")
    return src


def test_photo_seed_depends_on_path_and_seed_only() -> None:
    assert photo_seed(0, "/a.png") == photo_seed(0, "/a.png")
    assert len({photo_seed(0, "/a.png"), photo_seed(0, "/b.png"), photo_seed(1, "/a.png")}) == 3


def test_ray_data_pipeline_writes_what_a_plain_loop_gives(example, photos: Path, tmp_path: Path) -> None:
    import torch

    out = tmp_path / "out"
    ds = example.pipeline(photos, workers=1, batch_size=2, seed=5, **FAST)
    rows = sorted(example.rows(ds, photos, out), key=lambda r: str(r["path"]))
    assert [Path(str(r["output"])).relative_to(out).as_posix() for r in rows] == [
        "astronaut.png", "sub/mirrored.png", "wall.png"]

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        local = LeamOcclusionBatches(seed=5, **FAST)
        for row in rows:
            src = np.asarray(Image.open(str(row["path"])).convert("RGB"))
            expected = local.one(src, str(row["path"]))
            written = np.asarray(Image.open(str(row["output"])))
            assert np.array_equal(written, expected), row["path"]
            assert int(row["changed_pixels"]) == int(np.any(expected != src, axis=-1).sum())
    finally:
        torch.set_num_threads(before)
    changed = {Path(str(r["path"])).name: int(r["changed_pixels"]) for r in rows}
    assert changed["wall.png"] == 0  # no face: passes unchanged
    assert changed["astronaut.png"] > 0 and changed["mirrored.png"] > 0

    # a rerun keeps the finished files (no overwrite)
    stamp = {p: p.stat().st_mtime_ns for p in out.rglob("*.png")}
    list(example.rows(example.pipeline(photos, workers=1, seed=5, **FAST), photos, out))
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*.png")} == stamp


@pytest.mark.slow
def test_example_script_runs_on_its_own_local_ray(photos: Path, tmp_path: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, str(EXAMPLE), str(photos), "-o", str(tmp_path / "out"), "--workers", "1",
                           "--models", "mbf-arc", "--parser", "landmarks5"],
                          env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    lines = [json.loads(x) for x in done.stdout.splitlines() if x.startswith("{")]
    assert len(lines) == 3 and all(Path(x["output"]).is_file() for x in lines)
