"""The job runner behind `facecloak serve`: uploads in, protected photos out, nothing kept.

Privacy and robustness rules, all enforced here (the web layer only maps them to HTTP):

- An upload's bytes are sniffed (known image signatures only), written under a server-made random name into a
  private temporary folder (mode 0700) only for `facecloak.photos.io.read_image` to decode (size checked from the header
  before any pixel is decoded), and unlinked at once. Outputs are encoded by `facecloak.photos.io.write_image` (no
  metadata) the same way and kept as bytes in memory. No client value ever becomes a path.
- One worker thread runs `facecloak.protect`, so one process holds the models and concurrent uploads queue;
  a failure is recorded on its own job and the worker goes on with the next.
- Finished jobs are forgotten when the client deletes them or `keep_seconds` after they finished; the folder is
  removed when the runner stops.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import secrets
import shutil
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from facecloak.errors import FacecloakError, ImageError
from facecloak.photos.io import WRITE_FORMATS, Photo, read_image, write_image, written_format
from facecloak.serve.policy import FaceVerdict, Strength

log = logging.getLogger(__name__)

Protector = Callable[[np.ndarray, Strength], Any]  # -> facecloak.ProtectResult (or an object shaped like it)
Verifier = Callable[[np.ndarray, Any, np.ndarray], tuple[FaceVerdict, ...]]  # (original, result, written file)

# Leading bytes of the formats facecloak reads; anything else is refused before it touches the disk.
_SIGNATURES: tuple[tuple[int, bytes], ...] = (
    (0, b"\xff\xd8\xff"),  # JPEG
    (0, b"\x89PNG\r\n\x1a\n"),
    (0, b"GIF87a"),
    (0, b"GIF89a"),
    (0, b"BM"),
    (0, b"II*\x00"),  # TIFF, little endian
    (0, b"MM\x00*"),  # TIFF, big endian
    (8, b"WEBP"),
    (4, b"ftyp"),  # HEIF/HEIC (ISO-BMFF); read_image says what to install when pillow-heif is missing
)
READABLE = "JPEG, PNG, WebP, TIFF, BMP, GIF, HEIC"
OUTPUT_CHOICES = ("same", "png", "jpeg", "webp")
_JOB_ID = re.compile(r"^[A-Za-z0-9_-]{16,64}$")
HEATMAP_SIDE = 1600  # the heatmap is for looking at: its longest side is capped (a 50 MP overlay would cost GBs)


class Rejected(FacecloakError):
    """An upload or request the server refuses; `status` is the HTTP status code to answer with."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def looks_like_image(data: bytes) -> bool:
    return any(data[offset : offset + len(magic)] == magic for offset, magic in _SIGNATURES)


def safe_name(name: str | None, default: str = "photo") -> str:
    """A display name made of the client's file name: last path part, [A-Za-z0-9._ -] only, at most 80 chars.

    Used only in messages, the Content-Disposition header and zip entry names, never as a path on the server.
    """
    base = re.split(r"[\\/]", name or "")[-1]
    cleaned = re.sub(r"[^A-Za-z0-9._ -]+", "_", base).strip(" .")[:80]
    return cleaned or default


@dataclass
class Job:
    """One photo's way through the runner. Mutated only under the runner's lock."""

    id: str
    name: str
    strength: Strength
    output_format: str  # Pillow format name of the protected file
    width: int
    height: int
    created: float
    status: str = "queued"  # queued | running | done | failed
    stage: str = "waiting in the queue"
    photo: Photo | None = field(default=None, repr=False)  # the decoded photo (while queued: see `source`)
    source: bytes | None = field(default=None, repr=False)  # the upload's bytes, decoded again when its turn comes
    started: float | None = None
    finished: float | None = None
    error: str | None = None
    image: bytes | None = field(default=None, repr=False)
    heatmap: bytes | None = field(default=None, repr=False)
    mask: bytes | None = field(default=None, repr=False)
    verdicts: tuple[FaceVerdict, ...] = ()
    pixels_changed: int = 0
    notes: tuple[str, ...] = ()

    @property
    def media_type(self) -> str:
        return WRITE_FORMATS[self.output_format].media_type

    @property
    def download_name(self) -> str:
        stem = self.name.rsplit(".", 1)[0] if "." in self.name else self.name
        return f"{stem}_protected{WRITE_FORMATS[self.output_format].suffix}"


def _for_display(rgb: np.ndarray, heat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The photo and its heatmap scaled down so that the longest side is at most HEATMAP_SIDE."""
    scale = HEATMAP_SIDE / max(rgb.shape[:2])
    if scale >= 1:
        return rgb, heat
    import cv2

    size = (max(1, round(rgb.shape[1] * scale)), max(1, round(rgb.shape[0] * scale)))
    return cv2.resize(rgb, size, interpolation=cv2.INTER_AREA), cv2.resize(heat, size, interpolation=cv2.INTER_AREA)


def default_protector(models: Sequence[str], device: str = "cpu") -> Protector:
    """`protect` with the page's strength, its models and the cloak on `device` (cpu, cuda, cuda:N)."""

    def run(rgb: np.ndarray, strength: Strength) -> Any:
        from facecloak.protection.protect import protect

        chosen = tuple(strength.models or models)
        return protect(rgb, models=chosen, budget=strength.budget, fill=strength.fill, seed=0,
                       cloak_settings=strength.cloak, device=device)  # fmt: skip

    return run


def preload(models: Sequence[str], warm_up: bool = True, device: str = "cpu") -> None:
    """Load the detector, the parser and the models (on `device`) now, and run one small photo, so the first upload
    is fast."""
    import torch

    from facecloak.masking.stage import model_on
    from facecloak.protection.protect import default_detector, default_parser, protect

    default_detector()
    default_parser()
    for m in models:
        model_on(m, torch.device(device))
    if warm_up:
        from facecloak.photos.bundled import bundled_photos

        small = min(bundled_photos().values(), key=lambda rgb: rgb.size)
        protect(small, models=tuple(models), fill="black", budget=1.0, seed=0, device=device)


class JobRunner:
    """Holds the jobs, the queue and the worker thread. Thread-safe; `start` before submitting, `stop` at the end."""

    def __init__(
        self,
        protector: Protector,
        verifier: Verifier,
        *,
        max_pixels: int = 50_000_000,
        keep_seconds: float = 900.0,
        max_queue: int = 100,
        max_jobs: int = 300,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._protect = protector
        self._verify = verifier
        self.max_pixels = max_pixels
        self.keep_seconds = keep_seconds
        self.max_queue = max_queue
        self.max_jobs = max_jobs
        self._clock = clock
        self._jobs: dict[str, Job] = {}
        self._pending: deque[str] = deque()
        self._lock = threading.Condition()
        self._decoding = threading.BoundedSemaphore(2)  # at most two full-size decodes in memory at once
        self._thread: threading.Thread | None = None
        self._stopping = False
        self.workdir: Path | None = None
        self.processed = 0

    # ------------------------------------------------------------------------------------------- lifecycle

    def start(self) -> None:
        if self._thread is not None:
            return
        self.workdir = Path(tempfile.mkdtemp(prefix="facecloak-serve-"))  # mode 0700: this user only
        self._stopping = False
        self._thread = threading.Thread(target=self._work, name="facecloak-serve-worker", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Stop the worker (after the photo in hand), forget every job and remove the private folder."""
        with self._lock:
            self._stopping = True
            self._lock.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        with self._lock:
            self._jobs.clear()
            self._pending.clear()
        if self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)
            self.workdir = None

    # ------------------------------------------------------------------------------------------ submitting

    def decode(self, data: bytes, name: str) -> Photo:
        """Decode an upload with `facecloak.photos.io.read_image`; raises `Rejected` (413/415/400) with a one-line
        reason."""
        if not data:
            raise Rejected(400, f"{name}: empty upload (0 bytes), not a photo")
        if not looks_like_image(data):
            raise Rejected(415, f"{name}: not a photo facecloak can read; send one of {READABLE}")
        workdir = self._require_workdir()
        path = self._private_file(workdir, ".upload")
        with self._decoding:
            try:
                with path.open("wb") as handle:
                    handle.write(data)
                return read_image(path, max_pixels=self.max_pixels)
            except ImageError as exc:
                message = str(exc).replace(str(path), name)
                if "max_pixels" in message or "decompression bomb" in message:
                    raise Rejected(413, f"{message.split('; if the photo')[0]}; this server accepts at most "
                                        f"{self.max_pixels:,} pixels (facecloak serve --max-megapixels)") from None
                if "not a photo format" in message or "HEIC" in message:
                    raise Rejected(415, message) from None
                raise Rejected(400, message) from None
            finally:
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()

    def submit(self, photo: Photo, name: str, strength: Strength, output: str = "same", source: bytes | None = None
               ) -> Job:  # fmt: skip
        """Queue a decoded `facecloak.photos.io.Photo`; raises `Rejected(503)` when the queue or the job table is full.

        With `source` (the upload's bytes, already checked by `decode`), the job keeps those instead of the decoded
        pixels while it waits: a queue of large photos then costs their file sizes, not their pixels.
        """
        if output not in OUTPUT_CHOICES:
            raise Rejected(400, f"unknown output format {output!r}; choose one of {', '.join(OUTPUT_CHOICES)}")
        fmt = written_format(photo.format) if output == "same" else output.upper()
        job = Job(
            id=secrets.token_urlsafe(16), name=name, strength=strength, output_format=fmt,
            width=photo.width, height=photo.height, created=self._clock(),
            photo=photo if source is None else None, source=source,
        )  # fmt: skip
        with self._lock:
            if self._stopping or self._thread is None:
                raise Rejected(503, "the server is shutting down")
            if len(self._pending) >= self.max_queue or len(self._jobs) >= self.max_jobs:
                raise Rejected(503, f"the server is busy ({len(self._pending)} photos waiting); try again in a while")
            self._jobs[job.id] = job
            self._pending.append(job.id)
            self._lock.notify_all()
        return job

    # ------------------------------------------------------------------------------------------- querying

    def get(self, job_id: str) -> Job | None:
        if not _JOB_ID.match(job_id):
            return None
        with self._lock:
            return self._jobs.get(job_id)

    def queue_position(self, job_id: str) -> int | None:
        """0 for the next photo to be processed; None when the job is not waiting."""
        with self._lock:
            try:
                return self._pending.index(job_id)
            except ValueError:
                return None

    def delete(self, job_id: str) -> bool:
        if not _JOB_ID.match(job_id):
            return False
        with self._lock:
            job = self._jobs.pop(job_id, None)
            if job is None:
                return False
            with contextlib.suppress(ValueError):
                self._pending.remove(job_id)
            job.photo = job.source = job.image = job.heatmap = job.mask = None
            return True

    def counts(self) -> dict[str, int]:
        with self._lock:
            statuses = [j.status for j in self._jobs.values()]
        return {s: statuses.count(s) for s in ("queued", "running", "done", "failed")}

    def sweep(self, now: float | None = None) -> int:
        """Forget finished jobs older than `keep_seconds`; returns how many were forgotten."""
        now = self._clock() if now is None else now
        with self._lock:
            old = [j.id for j in self._jobs.values() if j.finished is not None and now - j.finished > self.keep_seconds]
        return sum(self.delete(job_id) for job_id in old)

    # ------------------------------------------------------------------------------------------- the worker

    def _work(self) -> None:
        while True:
            with self._lock:
                if not self._pending and not self._stopping:
                    self._lock.wait(timeout=5.0)  # wakes up on a new job, on stop, or to sweep old jobs
                if self._stopping:
                    return
                job = self._jobs.get(self._pending.popleft()) if self._pending else None
                if job is not None:
                    job.status, job.stage, job.started = "running", "finding faces and protecting them", self._clock()
            if job is not None:
                self._run(job)
            self.sweep()

    def _run(self, job: Job) -> None:
        photo, source = job.photo, job.source
        try:
            if source is not None:
                photo = self.decode(source, job.name)
            if photo is None:  # deleted while waiting
                return
            rgb = photo.rgb
            result = self._protect(rgb, job.strength)
            self._set(job, stage="writing the protected file and checking it")
            image, written = self._encode_output(result.image, job.output_format, photo)
            verdicts = self._verify(rgb, result, written)
            heatmap = mask = None
            if result.heatmap is not None:
                from facecloak.explain import heat_overlay, mask_image

                small, heat = _for_display(rgb, result.heatmap)
                heatmap = self._encode_png(heat_overlay(small, heat))
                mask = self._encode_png(mask_image(result.mask))
            notes = tuple(result.notes)
            if not result.faces:
                notes = (*notes, "nothing was changed; the copy has its metadata removed")
            self._set(job, status="done", stage="done", image=image, heatmap=heatmap, mask=mask, verdicts=verdicts,
                      pixels_changed=int(result.mask.sum()), notes=notes)  # fmt: skip
        except FacecloakError as exc:
            self._fail(job, str(exc))
        except MemoryError:
            self._fail(job, "not enough memory to protect this photo; try a smaller one")
        except Exception as exc:
            log.exception("facecloak serve: protecting one photo failed")
            self._fail(job, f"internal error while protecting this photo ({type(exc).__name__}); other photos are "
                            "not affected")  # fmt: skip
        finally:
            with self._lock:
                job.photo = job.source = None
                job.finished = self._clock()
                self.processed += 1

    def _set(self, job: Job, **values: Any) -> None:
        with self._lock:
            for key, value in values.items():
                setattr(job, key, value)

    def _fail(self, job: Job, message: str) -> None:
        if self.workdir is not None:
            message = message.replace(str(self.workdir), "<private folder>")
        self._set(job, status="failed", stage="failed", error=message)

    # ------------------------------------------------------------------------------------------- encoding

    def _require_workdir(self) -> Path:
        if self.workdir is None:
            raise Rejected(503, "the server is not running")
        return self.workdir

    @staticmethod
    def _private_file(folder: Path, suffix: str) -> Path:
        for _ in range(8):
            path = folder / f"{secrets.token_hex(12)}{suffix}"
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            except FileExistsError:
                continue
            os.close(fd)
            return path
        raise ImageError("cannot create a private temporary file")

    def _encode_output(self, rgb: np.ndarray, file_format: str, source: Photo) -> tuple[bytes, np.ndarray]:
        """The protected photo as file bytes (via `write_image`: no metadata, a JPEG upload's own encoding) and as
        decoded back from them."""
        path = self._private_file(self._require_workdir(), WRITE_FORMATS[file_format].suffix)
        try:
            write_image(path, rgb, format=file_format, source=source, overwrite=True)
            data = path.read_bytes()
            written = read_image(path, max_pixels=max(self.max_pixels, rgb.shape[0] * rgb.shape[1])).rgb
        finally:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
        return data, written

    def _encode_png(self, rgb: np.ndarray) -> bytes:
        path = self._private_file(self._require_workdir(), ".png")
        try:
            write_image(path, rgb, format="PNG", overwrite=True)
            return path.read_bytes()
        finally:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
