"""Small torch-free file helpers shared by the pull step, caches, reports and `facecloak.photos.io`'s image writer."""

from __future__ import annotations

import contextlib
import errno
import glob
import hashlib
import os
import secrets
from collections.abc import Iterator
from pathlib import Path

TEMP_SUFFIX = ".part"  # every temp file is hidden: `.{name}.{random}.part`, beside the file it becomes


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@contextlib.contextmanager
def atomic_path(path: Path, *, overwrite: bool = True, durable: bool = True) -> Iterator[Path]:
    """The one atomic writer: yields a temp path in the same folder for any writer (bytes, `np.save`, an image
    encoder); on success it is fsynced and moved onto `path`, so readers see the old file or the new one, and on
    any exception (Ctrl-C included) the temp file is removed: an interrupted write leaves no partial file.
    Writers that add a suffix (np.save) must be given an open file.

    overwrite=False never replaces an existing `path`: FileExistsError if it exists when the write finishes, even
    if another process created it a moment ago (the new file is hard-linked into place). Permissions follow the
    umask, as for any normally created file. durable=True fsyncs the file and its folder so the new file survives
    a power cut; caches pass False (a lost entry is only recomputed, and two fsyncs cost ~10 ms per file, minutes
    over a labelled set): their writes stay atomic for concurrent readers.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _create_temp_beside(path)
    try:
        yield tmp
        if durable:
            with open(tmp, "rb+") as fh:
                os.fsync(fh.fileno())
        if overwrite:
            os.replace(tmp, path)
        else:
            _link_exclusive(tmp, path)
        if durable:
            _fsync_folder(path.parent)
    finally:
        tmp.unlink(missing_ok=True)  # gone after a replace; the leftover name after a link or an error


def remove_abandoned_temps(path: Path) -> int:
    """Delete the temp files `atomic_path` left beside `path` when its writer was killed outright (SIGKILL, a
    Ray worker stopped mid-write: no `finally` runs). Only for outputs whose writer is known to be gone."""
    path = Path(path)
    removed = 0
    for tmp in path.parent.glob(f".{glob.escape(path.name)}.*{TEMP_SUFFIX}"):
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
            removed += 1
    return removed


def atomic_write_bytes(path: Path, data: bytes, *, durable: bool = True) -> Path:
    """`data` written to `path` through `atomic_path`."""
    with atomic_path(path, durable=durable) as tmp:
        tmp.write_bytes(data)
    return path


def atomic_write_text(path: Path, text: str) -> Path:
    """`text` (UTF-8) written to `path` through `atomic_path`."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def _create_temp_beside(path: Path) -> Path:
    """Create an empty hidden temp file next to `path` (same file system, so link/replace are atomic).

    os.open with 0o666 lets the umask decide the final permissions, as for any normally created file
    (mkstemp would leave the file readable by its owner only).
    """
    for _ in range(16):
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}{TEMP_SUFFIX}")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            continue
        os.close(fd)
        return tmp
    raise FileExistsError(errno.EEXIST, "no free temporary file name", str(path.parent))


def _link_exclusive(tmp: Path, path: Path) -> None:
    """Put `tmp` at `path`, failing with FileExistsError if `path` exists, even if it appeared a moment ago."""
    try:
        os.link(tmp, path)
    except FileExistsError:
        raise
    except OSError as exc:
        if exc.errno not in {errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV, errno.EMLINK}:
            raise
        # File systems without hard links (FAT, some network shares): claim the name with O_EXCL, then replace
        # our own empty placeholder. Another run's O_EXCL fails on the placeholder, so nothing is clobbered.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        os.close(fd)
        os.replace(tmp, path)


def _fsync_folder(folder: Path) -> None:
    # Makes the new directory entry durable on POSIX; Windows cannot open folders, which is harmless.
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        with contextlib.suppress(OSError):
            os.fsync(fd)
    finally:
        os.close(fd)
