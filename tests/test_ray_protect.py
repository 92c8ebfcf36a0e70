"""`facecloak protect --backend ray` (issue 12): same outputs, reports, exit codes and resume as the local backend.

A local Ray with 2 CPUs is started once for the module (the CLI reuses a Ray its process already runs); the tests
that need the CLI's own Ray start (worker environment, missing models) run the entry point in a subprocess.
Local runs use 1 torch thread, like every Ray worker, so outputs can be compared byte for byte.
"""

from __future__ import annotations

import functools
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from _protect_support import (
    FAST,
    assert_one_line_error,
    by_name,
    deepface_photos,
    invoke,
    json_lines,
    need_weights,
    run_main,
    sha256,
    small_copy,
    snapshot,
    subprocess_cmd,
)
from PIL import Image

from facecloak.errors import ConfigError, FacecloakError
from facecloak.scale.ray import RayConfig, actor_map

ray = pytest.importorskip("ray", reason="the Ray extra is not installed: pip install 'facecloak[ray]'")


@pytest.fixture(scope="module")
def local_ray() -> Iterator[None]:
    import sys

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers cannot import test modules
    ray.init(num_cpus=2, include_dashboard=False, object_store_memory=96 * 2**20, log_to_driver=False)
    try:
        yield
    finally:
        ray.shutdown()


@pytest.fixture
def one_thread() -> Iterator[None]:
    """The local run with the workers' thread count (torch float reductions depend on it)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@pytest.fixture
def photos(deepface_dir: Path, tmp_path: Path) -> list[Path]:
    need_weights()
    return [small_copy(p, tmp_path / "in" / f"person{i}.jpg") for i, p in enumerate(deepface_photos(deepface_dir, 4))]


def _without_seconds(records: list[dict]) -> list[dict]:
    """Records without the wall time, output paths reduced to file names (the two runs write to two folders)."""
    def name(value: object) -> object:
        return Path(value).name if isinstance(value, str) else value

    return [{**{k: v for k, v in r.items() if k != "seconds"}, "output": name(r["output"]),
             "side_files": [name(f) for f in r["side_files"]]} for r in records]


# --- the generic actor map (no models) ---------------------------------------------------------------------------


def _state(offset: int) -> int:
    return offset


def _add(offset: int, item: int) -> int:
    if item == 3:
        os._exit(1)  # a native crash / OOM kill of the worker process while it holds item 3
    return offset + item


def _refuse() -> int:
    raise ConfigError("the models are not there; run `facecloak models pull`")


def test_actor_map_keeps_input_order_and_survives_a_dead_worker(local_ray: None) -> None:
    lost: list[int] = []

    def on_lost(item: int, message: str) -> int:
        lost.append(item)
        assert "worker died" in message
        return -1

    out = list(actor_map(functools.partial(_state, 100), _add, list(range(8)), RayConfig(workers=2), on_lost=on_lost))
    assert out == [100, 101, 102, -1, 104, 105, 106, 107]
    assert lost == [3]


def test_actor_map_raises_the_workers_own_error(local_ray: None) -> None:
    with pytest.raises(ConfigError, match=r"^the models are not there; run `facecloak models pull`$"):
        list(actor_map(_refuse, _add, [1, 2], RayConfig(workers=2)))


def test_bad_ray_config_is_refused() -> None:
    with pytest.raises(ConfigError, match="--workers"):
        RayConfig(workers=0)


# --- protect -------------------------------------------------------------------------------------------------------


@pytest.mark.real
@pytest.mark.shared
def test_ray_outputs_and_reports_equal_the_local_run(
    photos: list[Path], tmp_path: Path, local_ray: None, one_thread: None
) -> None:
    src = photos[0].parent
    Image.fromarray(np.random.default_rng(0).integers(90, 110, (120, 160, 3), dtype=np.uint8)).save(src / "wall.png")
    (src / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    before = snapshot(src)
    local = invoke(["protect", src, "-o", tmp_path / "local", *FAST, "--json", "--save-mask"])
    remote = invoke(["protect", src, "-o", tmp_path / "ray", *FAST, "--json", "--save-mask",
                     "--backend", "ray", "--workers", "2"])
    assert local.exit_code == remote.exit_code == 1  # one failed photo, the rest handled
    (lrec, lsum), (rrec, rsum) = json_lines(local.stdout), json_lines(remote.stdout)
    assert rsum == lsum == {"summary": {"failed": 1, "no-face-skipped": 1, "unverified": 4}, "photos": 6, "failed": 1}
    assert _without_seconds(rrec) == _without_seconds(lrec)  # same lines, same (input) order
    assert by_name(rrec)["broken.jpg"]["status"] == "failed"
    assert snapshot(tmp_path / "ray") == snapshot(tmp_path / "local")  # outputs and masks byte-identical
    assert len(snapshot(tmp_path / "ray")) == 8
    assert snapshot(src) == before  # inputs untouched


@pytest.mark.real
@pytest.mark.shared
def test_ray_resumes_and_never_overwrites(photos: list[Path], tmp_path: Path, local_ray: None) -> None:
    src, out = photos[0].parent, tmp_path / "out"
    first = invoke(["protect", photos[0], photos[1], "-o", out, *FAST])
    assert first.exit_code == 0
    mine = out / f"{photos[1].stem}_protected.jpg"
    mine.write_bytes(b"user's own file")
    kept = sha256(out / f"{photos[0].stem}_protected.jpg")
    resumed = invoke(["protect", src, "-o", out, *FAST, "--json", "--backend", "ray", "--workers", "2"])
    records, summary = json_lines(resumed.stdout)
    assert resumed.exit_code == 0
    assert summary["summary"] == {"exists": 2, "unverified": 2}
    assert [r["status"] for r in records] == ["exists", "exists", "unverified", "unverified"]
    assert mine.read_bytes() == b"user's own file"
    assert sha256(out / f"{photos[0].stem}_protected.jpg") == kept
    assert not [p for p in out.rglob(".*") if p.name.endswith(".part")]


def test_ray_options_need_the_ray_backend(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "a.png").write_bytes(b"")
    code, _, err = run_main(["protect", tmp_path / "a.png", "--workers", "2"], capsys)
    assert code == 2 and "--backend ray" in err
    assert_one_line_error(err)


@pytest.mark.real
@pytest.mark.shared
@pytest.mark.slow
def test_a_worker_without_models_fails_like_the_local_cli(photos: list[Path], tmp_path: Path) -> None:
    """The CLI starts its own local Ray (subprocess); the workers see an empty FACECLOAK_HOME, like a cluster node
    that never pulled the models, and the run stops with the local one-line advice, exit 2, nothing written."""
    env = {**os.environ, "FACECLOAK_HOME": str(tmp_path / "empty-home"), "OMP_NUM_THREADS": "1"}
    args = ["protect", photos[0], "-o", tmp_path / "out", "--models", "mbf-arc", "--parser", "landmarks5"]
    local = subprocess.run(subprocess_cmd(*args), env=env, capture_output=True, text=True, timeout=300)
    remote = subprocess.run(subprocess_cmd(*args, "--backend", "ray", "--workers", "1"), env=env,
                            capture_output=True, text=True, timeout=300)
    assert local.returncode == remote.returncode == 2, remote.stderr
    assert_one_line_error(remote.stderr)
    line = next(x for x in remote.stderr.splitlines() if x.startswith("error:"))
    assert line == next(x for x in local.stderr.splitlines() if x.startswith("error:"))
    assert "facecloak models pull" in line
    assert not (tmp_path / "out").exists()


def test_missing_ray_gives_the_install_command(monkeypatch: pytest.MonkeyPatch) -> None:
    import builtins

    from facecloak.scale.ray import RayUnavailableError, import_ray

    real_import = builtins.__import__

    def no_ray(name: str, *args: object, **kwargs: object) -> object:
        if name == "ray":
            raise ImportError("No module named 'ray'")
        return real_import(name, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(builtins, "__import__", no_ray)
    with pytest.raises(RayUnavailableError, match=r"pip install 'facecloak\[ray\]'"):
        import_ray()
    assert issubclass(RayUnavailableError, FacecloakError)


@pytest.mark.real
@pytest.mark.shared
@pytest.mark.slow
def test_sigterm_keeps_finished_outputs_and_a_rerun_resumes(photos: list[Path], tmp_path: Path) -> None:
    """SIGTERM after the first report: exit 130, the outputs written are complete (no temp files), the photos in
    progress finish or leave nothing, and the same command resumes to the same bytes as an uninterrupted run."""
    import signal

    src, out = photos[0].parent, tmp_path / "out"
    for i in range(4):  # more photos than workers, so some are still queued when the signal comes
        small_copy(photos[i % len(photos)], src / f"extra{i}.jpg", max_side=300)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    args = ["protect", src, "-o", out, *FAST, "--json", "--backend", "ray", "--workers", "2"]
    child = subprocess.Popen(subprocess_cmd(*args), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True)
    assert child.stdout is not None
    first = child.stdout.readline()
    assert first.startswith("{"), child.stderr.read() if child.stderr else ""
    child.send_signal(signal.SIGTERM)
    _rest, err = child.communicate(timeout=300)
    assert child.returncode == 130, err
    assert "interrupted after" in err and "rerun the same command to resume" in err
    written = sorted(p.name for p in out.iterdir())
    assert 1 <= len(written) < 8 and not [p for p in out.rglob(".*") if p.name.endswith(".part")]
    resumed = subprocess.run(subprocess_cmd(*args), env=env, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    _records, summary = json_lines(resumed.stdout)
    assert summary["summary"] == {"exists": len(written), "unverified": 8 - len(written)}
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)  # an uninterrupted local run with the workers' thread count
    try:
        whole = invoke(["protect", src, "-o", tmp_path / "whole", *FAST])
    finally:
        torch.set_num_threads(before)
    assert whole.exit_code == 0
    assert snapshot(out) == snapshot(tmp_path / "whole")
