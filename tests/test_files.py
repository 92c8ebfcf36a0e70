"""The one atomic writer (`facecloak.files.atomic_path`) and its users' caches."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from facecloak.files import TEMP_SUFFIX, atomic_path, atomic_write_bytes, atomic_write_text


@pytest.mark.parametrize("durable", [True, False])
def test_atomic_write_replaces_the_file_and_leaves_nothing_else(tmp_path: Path, durable: bool) -> None:
    target = tmp_path / "sub" / "report.json"
    atomic_write_text(target, "old")
    atomic_write_bytes(target, b"new", durable=durable)
    assert target.read_bytes() == b"new"
    assert [p.name for p in target.parent.iterdir()] == ["report.json"]


@pytest.mark.parametrize("durable", [True, False])
@pytest.mark.parametrize("failure", [OSError("disk full"), KeyboardInterrupt()])
def test_an_exception_mid_write_leaves_no_partial_file_and_keeps_the_old_one(
    tmp_path: Path, failure: BaseException, durable: bool
) -> None:
    target = tmp_path / "cache.npy"
    target.write_bytes(b"old")
    with pytest.raises(type(failure)), atomic_path(target, durable=durable) as tmp:
        assert tmp.parent == tmp_path and tmp.name.startswith(".cache.npy.") and tmp.name.endswith(TEMP_SUFFIX)
        tmp.write_bytes(b"half of the new")
        raise failure
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["cache.npy"]


def test_writers_that_add_a_suffix_get_an_open_file(tmp_path: Path) -> None:
    target = tmp_path / "e.npy"
    with atomic_path(target) as tmp, open(tmp, "wb") as fh:
        np.save(fh, np.arange(3, dtype=np.float32))
    assert np.load(target).tolist() == [0.0, 1.0, 2.0]
    assert [p.name for p in tmp_path.iterdir()] == ["e.npy"]


def test_without_overwrite_an_existing_file_is_never_replaced(tmp_path: Path) -> None:
    target = tmp_path / "photo.png"
    with pytest.raises(FileExistsError), atomic_path(target, overwrite=False) as tmp:
        tmp.write_bytes(b"ours")
        target.write_bytes(b"another run's")  # appears while we write
    assert target.read_bytes() == b"another run's"
    assert [p.name for p in tmp_path.iterdir()] == ["photo.png"]


def test_files_get_the_permissions_the_umask_gives(tmp_path: Path) -> None:
    old = os.umask(0o027)
    try:
        atomic_write_bytes(tmp_path / "a", b"x")
    finally:
        os.umask(old)
    assert (tmp_path / "a").stat().st_mode & 0o777 == 0o640


def test_remove_abandoned_temps_deletes_only_the_temps_of_that_output(tmp_path: Path) -> None:
    from facecloak.files import TEMP_SUFFIX, remove_abandoned_temps

    out = tmp_path / "a[1].jpg"  # glob characters in the name must not widen the match
    killed = tmp_path / f".a[1].jpg.dead{TEMP_SUFFIX}"
    other = tmp_path / f".a1.jpg.beef{TEMP_SUFFIX}"
    for p in (out, killed, other):
        p.write_bytes(b"x")
    assert remove_abandoned_temps(out) == 1
    assert out.exists() and other.exists() and not killed.exists()
