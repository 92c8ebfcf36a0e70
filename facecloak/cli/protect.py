"""`facecloak protect PATH...`: protected copies of photos; originals are never touched.

Exit codes: 0 every photo handled (protected, already done, or skipped/copied by the no-face policy),
1 some photos failed, 2 all photos failed or nothing could start (bad option, missing or tampered model),
130 interrupted (Ctrl-C or SIGTERM; finished outputs are kept and a rerun resumes).

A photo's output is written last and atomically (temp file + link), so an existing output means "done": reruns
skip it, and an interrupted run leaves no partial file. Side files (`--save-mask`, `--save-heatmap`) are
written before the output they belong to for the same reason.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import signal
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import numpy as np
import typer
from rich.console import Console
from rich.table import Table

from facecloak.cli.common import DeviceOption, parse_names, progress_iter
from facecloak.errors import ConfigError, FacecloakError, ImageError, NoFaceError
from facecloak.faces.parse import PARSERS
from facecloak.protection.fills import FILLS
from facecloak.protection.levels import DEFAULT_LEVEL, LEVELS, ORDER

if TYPE_CHECKING:
    from facecloak.photos.io import InputImage
    from facecloak.protection.protect import Person

stderr = Console(stderr=True)

# Formats facecloak reads but does not write (animations, legacy bitmaps): their protected copies are PNG,
# which is lossless and keeps transparency.
_READ_ONLY_SUFFIXES = frozenset({".gif", ".bmp"})
# MTCNN's smallest window (P-Net, 12 px): a photo with a shorter side cannot hold a detectable face, so it goes
# to the no-face policy like any other photo without a face (the detector itself refuses such arrays).
_SMALLEST_FACE_SIDE = 12


class NoFacePolicy(str, Enum):
    skip = "skip"
    copy = "copy"
    error = "error"


class BackendChoice(str, Enum):
    local = "local"
    ray = "ray"


# --level takes the names of `facecloak.protection.levels.LEVELS` (checked by the registry, which suggests close names).
_LEVEL_HELP = ", ".join(f"{n} ({LEVELS.get(n).fill} {LEVELS.get(n).budget:g} %)" for n in ORDER)


@dataclass(frozen=True)
class PhotoReport:
    """What happened to one input; one JSON line with `--json`.

    status: protected (written, and no face is matched by any local verifier any more) | still-recognised
    (written, but some face is still matched: see `verdict`) | unverified (written with --no-verify) | exists |
    no-face-skipped | no-face-copied | failed | would-write.
    cosine: per face, model id -> {"before", "after"}: cosine of the clean / the written-and-reread face to the
    reference (the person's profile with --person, else the clean face itself), by the source models.
    verdict: per face, the verification panel's judgement of the written file (`FaceVerdict.as_json`), each
    verifier reading it through its own detection and alignment. level: the level asked for ("custom" when
    --fill, --budget, --steps or --models replaced its settings); face_levels: the level each face ended at.
    seconds: wall time for the photo. frames: frames/pages in the file (only the first is protected when > 1).
    """

    path: str
    output: str | None
    status: str
    faces: int = 0
    pixels_changed: int = 0
    fill: str = ""
    cosine: tuple[dict[str, dict[str, float]], ...] = ()
    seconds: float = 0.0
    message: str = ""
    frames: int = 1
    side_files: tuple[str, ...] = field(default_factory=tuple)
    level: str = ""
    verdict: tuple[dict[str, Any], ...] = ()
    person_reference: bool = False  # the verdict compared with --person-photos rather than the original
    face_levels: tuple[str, ...] = ()

    @property
    def verified_faces(self) -> int:
        return sum(bool(v.get("protected")) for v in self.verdict)

    def as_json(self) -> dict[str, Any]:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(self).items()}


@dataclass(frozen=True)
class ProtectOptions:
    """The options of one `protect` invocation (see the command's help for each)."""

    out: Path | None
    suffix: str
    format: str | None
    jpeg_quality: int | None
    models: tuple[str, ...]
    budget: float
    fill: str
    seed: int
    largest_only: bool
    no_face: NoFacePolicy
    overwrite: bool
    keep_metadata: bool
    keep_gps: bool
    dry_run: bool
    save_mask: bool
    save_heatmap: bool
    max_pixels: int
    steps: int
    epsilon: float | None
    parser: str
    level: str = DEFAULT_LEVEL
    custom: bool = False  # --fill, --budget, --steps or --models replaced some of the level's settings
    verify: bool = True
    escalate: bool = False
    panel: tuple[str, ...] = ("dlib", "arcface", "hse")
    device: str = "auto"


def register(app: typer.Typer) -> None:
    app.command("protect")(protect_command)
    app.command("demo")(demo_command)


def protect_command(
    paths: Annotated[list[Path], typer.Argument(help="Photos and/or folders.", exists=False)],
    out: Annotated[
        Path | None, typer.Option("-o", "--out", help="Output folder (default: next to each input).")
    ] = None,
    recursive: Annotated[
        bool, typer.Option("--recursive", "-r", help="Descend into sub-folders, mirroring the tree.")
    ] = False,
    suffix: Annotated[str, typer.Option(help="Added to each output file name.")] = "_protected",
    format: Annotated[
        str | None, typer.Option(help="Output format: jpeg, png, webp, tiff (default: as input).")
    ] = None,
    jpeg_quality: Annotated[
        int | None,
        typer.Option(min=1, max=100, help="JPEG/WebP/HEIF quality (default: a JPEG keeps its own quantisation "
                                          "tables and chroma subsampling; anything else 95)."),
    ] = None,
    level: Annotated[
        str, typer.Option(metavar="LEVEL", help=f"Protection level: {_LEVEL_HELP}. --fill, --budget, --steps and "
                                                "--models override it.")
    ] = DEFAULT_LEVEL,
    models: Annotated[str | None, typer.Option(help="Comma-separated source models (default: the level's).")] = None,
    budget: Annotated[
        float | None, typer.Option(help="Percent of each face's pixels that may change, in (0, 100].")
    ] = None,
    fill: Annotated[
        str | None, typer.Option(metavar="FILL", help=f"{', '.join(FILLS.names())} (default: the level's).")
    ] = None,
    person: Annotated[
        str | None, typer.Option(help="Name of the person the photos show (with --person-photos).")
    ] = None,
    person_photos: Annotated[
        Path | None, typer.Option(help="Folder of photos of --person to build a profile from.")
    ] = None,
    seed: int = 0,
    largest_only: Annotated[
        bool, typer.Option("--largest-only", help="Protect only the largest face of each photo.")
    ] = False,
    no_face: Annotated[
        NoFacePolicy, typer.Option(help="Photos without a face: skip, copy (metadata stripped) or error.")
    ] = NoFacePolicy.skip,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace existing outputs (default: skip them, so reruns resume).")
    ] = False,
    keep_metadata: Annotated[
        bool, typer.Option("--keep-metadata", help="Keep EXIF/ICC (GPS still removed unless --keep-gps).")
    ] = False,
    keep_gps: Annotated[bool, typer.Option("--keep-gps", help="With --keep-metadata, keep GPS location too.")] = False,
    no_verify: Annotated[bool, typer.Option(
        "--no-verify", help="Skip checking the written file with the local verifiers (faster; nothing is claimed).")
    ] = False,
    escalate: Annotated[bool, typer.Option(
        "--escalate", help="Raise the level of each face that a verifier still matches, up to high.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON line per photo, then a summary line.")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="List what would be written, change nothing.")] = False,
    save_mask: Annotated[
        bool, typer.Option("--save-mask", help="Also write a .mask.png of the changed pixels beside each output.")
    ] = False,
    save_heatmap: Annotated[
        bool, typer.Option("--save-heatmap", help="Also write a .heatmap.png (LEAM relevance) beside each output.")
    ] = False,
    follow_symlinks: Annotated[
        bool, typer.Option("--follow-symlinks", help="Follow symlinks that leave the input folder.")
    ] = False,
    max_pixels: Annotated[
        int, typer.Option(min=1, help="Refuse photos larger than this many pixels (checked before decoding).")
    ] = 100_000_000,
    steps: Annotated[int | None, typer.Option(min=0, help="Cloak: optimisation steps (default: the level's).")] = None,
    epsilon: Annotated[float | None, typer.Option(help="Cloak: max change per pixel (0-255 levels).")] = None,
    parser: Annotated[
        str, typer.Option(metavar="PARSER", help=f"Face parser that bounds the face region: {', '.join(PARSERS)} "
                                                 "(landmarks5 needs no weights).")
    ] = "facemesh",
    backend: Annotated[
        BackendChoice, typer.Option(help="local: this process; ray: Ray workers (pip install 'facecloak[ray]').")
    ] = BackendChoice.local,
    ray_address: Annotated[
        str | None, typer.Option(help="With --backend ray: join this cluster (auto, HOST:PORT, ray://HOST:10001); "
                                      "default: start a local Ray sized to this machine.")
    ] = None,
    workers: Annotated[
        int | None, typer.Option(min=1, help="With --backend ray: Ray workers (default: one per CPU of the cluster).")
    ] = None,
    device: DeviceOption = "auto",
) -> None:
    """Write protected copies of photos: only the pixels recognition relies on most are changed. Each written file
    is read back by local face recognisers through their own detection and alignment, and the result says, per
    face, whether any of them still matches it."""
    chosen = LEVELS.get(level)
    options = ProtectOptions(
        out=out,
        suffix=suffix,
        format=format,
        jpeg_quality=jpeg_quality,
        models=tuple(parse_names(models) or chosen.models),
        budget=chosen.budget if budget is None else budget,
        fill=chosen.fill if fill is None else fill,
        seed=seed,
        largest_only=largest_only,
        no_face=no_face,
        overwrite=overwrite,
        keep_metadata=keep_metadata,
        keep_gps=keep_gps,
        dry_run=dry_run,
        save_mask=save_mask,
        save_heatmap=save_heatmap,
        max_pixels=max_pixels,
        steps=chosen.cloak.steps if steps is None else steps,
        epsilon=epsilon,
        parser=parser,
        level=chosen.name,
        custom=any(v is not None for v in (fill, budget, steps, models)),
        verify=not no_verify,
        escalate=escalate,
        device=device,
    )
    _check_options(options, person, person_photos)
    if backend is not BackendChoice.ray and (ray_address is not None or workers is not None):
        raise ConfigError("--ray-address and --workers go with --backend ray")
    items = _collect(paths, options, recursive=recursive, follow_symlinks=follow_symlinks)
    runner = _Runner(options)
    reports: list[PhotoReport] = []
    with _sigterm_as_interrupt():
        try:
            if not dry_run and (backend is BackendChoice.local or person is not None):
                runner.prepare()  # a missing or tampered model stops everything here, before any photo
                if person is not None and person_photos is not None:
                    runner.load_person(person, person_photos)
            for report in progress_iter(_reports(backend, runner, items, ray_address, workers), "protecting"):
                reports.append(report)
                if as_json:
                    typer.echo(json.dumps(report.as_json(), ensure_ascii=False))
                elif report.status == "failed":
                    stderr.print(f"[red]failed[/red] {report.path}: {report.message}", highlight=False, soft_wrap=True)
                elif report.status == "still-recognised":
                    stderr.print(f"[yellow]still recognised[/yellow] {report.path}: {_still_matched(report)}",
                                 highlight=False, soft_wrap=True)
        except KeyboardInterrupt:
            # Ray workers are killed outright after the grace period: their writes in flight leave temp files.
            runner.remove_abandoned_temps(items[len(reports):])
            done = sum(r.status in ("protected", "no-face-copied") for r in reports)
            stderr.print(
                f"[yellow]interrupted[/yellow] after {len(reports)} of {len(items)} photos; {done} outputs written "
                "this run are complete and kept, no partial files; rerun the same command to resume",
                highlight=False,
                soft_wrap=True,
            )
            raise
    failed = sum(r.status == "failed" for r in reports)
    summary = {s: sum(r.status == s for r in reports) for s in sorted({r.status for r in reports})}
    faces = {"faces": sum(r.faces for r in reports if r.verdict),
             "verified_protected": sum(r.verified_faces for r in reports)}
    if as_json:
        typer.echo(json.dumps({"summary": summary, "photos": len(reports), "failed": failed,
                               **({"verification": faces} if faces["faces"] else {})}))
    else:
        _print_summary(reports, summary, faces)
    if failed:
        raise typer.Exit(2 if failed == len(reports) else 1)


def _check_options(o: ProtectOptions, person: str | None, person_photos: Path | None) -> None:
    """Refuse bad option values once, before any photo is read (not once per photo)."""
    from facecloak.masking.leamface import check_budget
    from facecloak.masking.stage import resolve_device
    from facecloak.models import get_spec
    from facecloak.photos.io import output_path_for
    from facecloak.protection.cloak import CloakSettings
    from facecloak.protection.fills import get_fill

    if o.keep_gps and not o.keep_metadata:
        raise ConfigError("--keep-gps only makes sense with --keep-metadata")
    if o.escalate and not o.verify:
        raise ConfigError("--escalate needs the verification that --no-verify turns off")
    if (person is None) != (person_photos is None):
        raise ConfigError("--person and --person-photos go together")
    get_fill(o.fill)
    PARSERS.get(o.parser)  # an unknown name raises with suggestions
    resolve_device(o.device)  # an unavailable device stops here, before any photo
    check_budget(o.budget)
    CloakSettings(steps=o.steps, epsilon=o.epsilon)
    for model in o.models:
        get_spec(model)  # unknown names raise with suggestions
    # The suffix and format are checked by naming a dummy output (the same code names the real ones).
    output_path_for(Path("/check.png"), Path("/"), Path("/facecloak-check"), suffix=o.suffix, format=o.format)


def _collect(paths: list[Path], o: ProtectOptions, *, recursive: bool, follow_symlinks: bool) -> list[InputImage]:
    """The photos to protect, without our own earlier outputs (by suffix) and without anything under `-o`."""
    from facecloak.photos.io import find_images

    found = find_images(paths, recursive=recursive, follow_symlinks=follow_symlinks)
    out = Path(os.path.abspath(o.out)) if o.out is not None else None

    def is_earlier_output(item: InputImage) -> bool:
        if o.suffix and item.path.stem.endswith(o.suffix):
            return True
        # An output folder inside the walked tree (not the tree itself) holds outputs, whatever their names.
        root = Path(os.path.abspath(item.root))
        return (
            out is not None
            and out != root
            and out.is_relative_to(root)
            and os.path.abspath(item.path).startswith(f"{out}{os.sep}")
        )

    items = [i for i in found if not is_earlier_output(i)]
    if not items:
        raise FacecloakError(
            "no photos found in the given paths"
            + ("" if recursive or not any(p.is_dir() for p in paths) else " (use --recursive for sub-folders)")
        )
    return items


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """Treat SIGTERM (kill, systemd, docker stop) like Ctrl-C: the current temp file is removed, outputs kept."""

    def handler(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    if threading.current_thread() is not threading.main_thread():  # signal handlers live in the main thread only
        yield
        return
    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _still_matched(r: PhotoReport) -> str:
    from facecloak.verification.panel import verdict_text

    faces = [f"face {i + 1} {verdict_text(v['matched_by'], v['m'])}" for i, v in enumerate(r.verdict)
             if not v["protected"]]
    top = r.face_levels and all(lv == ORDER[-1] for lv in r.face_levels)
    advice = ("the highest level did not stop them; keep this photo private or blur the face" if top
              else f"try --level {ORDER[-1]} or --escalate")
    reference = ("its unprotected original (the strictest test; --person-photos compares with other photos of the "
                 "person instead)" if not r.person_reference else "the person's reference photos")
    return f"{'; '.join(faces)}: they still link the written photo to {reference}; {advice}"


def _print_summary(reports: list[PhotoReport], summary: dict[str, int], faces: dict[str, int]) -> None:
    table = Table(title="facecloak protect")
    for col in ("photo", "status", "faces", "pixels changed", "matched (per face)"):
        table.add_column(col, overflow="fold")
    for r in reports:
        verdict = " ".join(f"{v['k']}/{v['m']}" if v["m"] else "n/a" for v in r.verdict)
        # A dry run detects nothing: "0 faces" would read as "no face found".
        counts = ("—", "—") if r.status == "would-write" else (str(r.faces), str(r.pixels_changed))
        message = "not run (--dry-run)" if r.status == "would-write" else r.message
        table.add_row(Path(r.path).name, r.status, *counts, verdict or message)
    stderr.print(table)
    stderr.print(", ".join(f"{n} {s}" for s, n in summary.items()))
    if faces["faces"]:
        stderr.print("matched k/m: k of the m local recognisers (dlib, arcface, hse; each with its own detection and "
                     "alignment) that find the face still match it; --json names them", highlight=False)
        stderr.print(f"{faces['verified_protected']} of {faces['faces']} faces verified protected: no local "
                     "recogniser (each with its own detection and alignment) matches them to the unprotected original")
    elif any(r.status == "unverified" for r in reports):
        stderr.print("not verified (--no-verify): nothing is claimed about whether recognisers still match these faces")


class _Runner:
    """Holds the options and the loaded models for one `protect` invocation."""

    def __init__(self, options: ProtectOptions) -> None:
        from facecloak.protection.protect import DEFAULT_MODELS

        self.o = options
        self.models: tuple[str, ...] = options.models or DEFAULT_MODELS
        self.person: Person | None = None
        level = LEVELS.get(options.level)
        self.cloak = replace(level.cloak, steps=options.steps, epsilon=options.epsilon)
        # Escalation tries the named levels above the chosen one, each with its own fill, budget and sources.
        self.higher = [LEVELS.get(n) for n in ORDER[ORDER.index(options.level) + 1:]] if options.escalate else []
        self.detector: Any = None
        self.parser: Any = None
        self.panel: Any = None
        self.person_references: dict[str, np.ndarray] = {}  # verifier -> (R, D) embeddings of --person's photos

    def prepare(self) -> None:
        """Load (and sha256-verify) the detector, the parser and every source model once."""
        from facecloak.faces.detect import load_detector
        from facecloak.faces.parse import get_parser
        from facecloak.models import cached_model

        self.detector = load_detector("mtcnn")
        self.parser = get_parser(self.o.parser)
        for model in {*self.models, *(m for lv in self.higher for m in lv.models)}:
            cached_model(model)
        if self.o.verify:
            from facecloak.verification.panel import Panel

            self.panel = Panel(self.o.panel)

    def load_person(self, name: str, folder: Path) -> None:
        import leam
        from facecloak import paths
        from facecloak.files import sha256_file
        from facecloak.photos.io import find_images, read_image
        from facecloak.protection.protect import build_person

        files = [i.path for i in find_images([folder])]
        photos = [read_image(p, max_pixels=self.o.max_pixels).rgb for p in files]
        hashes = [sha256_file(p) for p in files]
        person, profile = build_person(name, photos, models=self.models, photo_hashes=hashes, detector=self.detector,
                                       device=self.o.device)
        safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in name)
        path = paths.profiles_dir() / f"{safe}.npz"
        leam.save_profile(path, profile)  # relevance maps only; the identity centroids stay in memory
        stderr.print(f"profile of {name!r}: {person.n_photos} photos, saved to {path}", highlight=False)
        self.person = person
        if self.panel is not None:  # the verifiers compare the person's face with these photos, not the original
            found: dict[str, list[np.ndarray]] = {}
            for rgb in photos:
                for verifier, faces in self.panel.read(rgb).items():
                    if faces:
                        biggest = max(faces, key=lambda f: f.area)
                        found.setdefault(verifier, []).append(biggest.embedding)
            self.person_references = {k: np.stack(v) for k, v in found.items()}

    def run_one(self, path: Path, root: Path) -> PhotoReport:
        """Protect one photo; every failure of this photo becomes a `failed` report, the batch goes on."""
        start = time.perf_counter()
        o = self.o
        target: Path | None = None
        try:
            target = self._target(path, root)
            if target.exists() and not o.overwrite:
                return PhotoReport(str(path), str(target), "exists", message="output exists (use --overwrite)")
            if o.dry_run:
                return PhotoReport(str(path), str(target), "would-write", side_files=self._side_files(target))
            report = self._protect(path, target)
        except ImageError as exc:
            # Another run wrote the output while we worked (the exclusive link refused ours): its result stands.
            if target is not None and not o.overwrite and target.exists():
                report = PhotoReport(str(path), str(target), "exists", message="written meanwhile by another run")
            else:
                report = PhotoReport(str(path), None, "failed", message=str(exc))
        except ConfigError:
            raise  # an option problem fails every photo the same way: stop with one message
        except FacecloakError as exc:
            report = PhotoReport(str(path), None, "failed", message=str(exc))
        except Exception as exc:  # a bug or a library surprise on this photo must not end the batch
            text = str(exc).strip().splitlines()
            detail = f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__
            report = PhotoReport(str(path), None, "failed", message=f"unexpected error ({detail}); please report it")
        return _with_seconds(report, time.perf_counter() - start)

    def _target(self, path: Path, root: Path) -> Path:
        """Where the protected copy of `path` (found under `root`) is written."""
        from facecloak.photos.io import output_path_for

        out_dir = self.o.out if self.o.out is not None else root
        return output_path_for(path, root, out_dir, suffix=self.o.suffix, format=self._format(path))

    def _format(self, path: Path) -> str | None:
        """The output format: --format, else the input's own (None), PNG for formats facecloak cannot write."""
        return self.o.format or ("PNG" if path.suffix.lower() in _READ_ONLY_SUFFIXES else None)

    def remove_abandoned_temps(self, items: Sequence[InputImage]) -> None:
        """Temp files of the outputs (and side files) of `items`, whose writers were stopped mid-write."""
        from facecloak.files import remove_abandoned_temps

        for item in items:
            with contextlib.suppress(FacecloakError, OSError):
                target = self._target(item.path, item.root)
                for path in (target, *map(Path, self._side_files(target))):
                    remove_abandoned_temps(path)

    def _side_files(self, target: Path) -> tuple[str, ...]:
        names = [".mask.png"] * self.o.save_mask + [".heatmap.png"] * self.o.save_heatmap
        return tuple(str(target.with_name(target.stem + n)) for n in names)

    def _protect(self, path: Path, target: Path) -> PhotoReport:
        from facecloak.photos.io import read_image, round_trip, write_image
        from facecloak.protection.protect import protect, similarities

        o = self.o
        photo = read_image(path, max_pixels=o.max_pixels)
        frames_note = f"first of {photo.n_frames} frames protected" if photo.n_frames > 1 else ""
        too_small = min(photo.height, photo.width) < _SMALLEST_FACE_SIDE
        common = {"seed": o.seed, "detector": self.detector, "parser": self.parser, "person": self.person,
                  "device": o.device}
        result = protect(
            photo.rgb,
            faces=[] if too_small else None,
            models=self.models,
            budget=o.budget,
            fill=o.fill,
            cloak_settings=self.cloak,
            largest_only=o.largest_only,
            **common,
        )

        def write(rgb: np.ndarray) -> None:
            write_image(
                target,
                rgb,
                alpha=photo.alpha,
                format=self._format(path),
                jpeg_quality=o.jpeg_quality,
                keep_metadata=o.keep_metadata,
                keep_gps=o.keep_gps,
                source=photo,
                overwrite=o.overwrite,
            )

        if not result.faces:
            if o.no_face is NoFacePolicy.error:
                raise NoFaceError("no face found (--no-face error)")
            if o.no_face is NoFacePolicy.skip:
                return PhotoReport(
                    str(path),
                    None,
                    "no-face-skipped",
                    frames=photo.n_frames,
                    message="no face found; nothing written (--no-face copy to copy it)",
                )
            write(photo.rgb)
            return PhotoReport(
                str(path),
                str(target),
                "no-face-copied",
                frames=photo.n_frames,
                message=_join("no face found; copied unchanged", frames_note),
            )

        faces = [f.face for f in result.faces]
        boxes = [f.box for f in faces]
        image, mask = result.image, result.mask
        face_changed = [f.changed for f in result.faces]  # per face, the pixels its latest level changed
        face_levels = ["custom" if o.custom else o.level] * len(faces)
        sources = set(self.models)
        references: list[dict[str, np.ndarray]] = []
        if self.panel is not None:
            references = self.panel.references(photo.rgb, boxes)
            for i, f in enumerate(result.faces):
                if f.person_match and self.person_references:
                    references[i] = dict(self.person_references)
            for level in self.higher:  # --escalate: judge the file as it would be written, raise what still matches
                seen = round_trip(image, target, format=self._format(path), jpeg_quality=o.jpeg_quality,
                                  source=photo)
                verdicts = self.panel.verify(seen, boxes, references, sources=sorted(sources))
                failing = [i for i, v in enumerate(verdicts) if v.m > 0 and not v.protected]
                if not failing:
                    break
                stronger = protect(photo.rgb, faces=[faces[i] for i in failing], models=level.models,
                                   budget=level.budget, fill=level.fill, cloak_settings=level.cloak, **common)
                image, mask = image.copy(), mask.copy()
                for i in failing:  # the stronger level replaces the weaker one's change on these faces, not adds to it
                    image.reshape(-1, 3)[face_changed[i]] = photo.rgb.reshape(-1, 3)[face_changed[i]]
                    mask.flat[face_changed[i]] = False
                image[stronger.mask] = stronger.image[stronger.mask]
                mask = mask | stronger.mask
                for i, outcome in zip(failing, stronger.faces, strict=True):  # protect keeps the faces' order
                    face_changed[i] = outcome.changed
                sources |= set(level.models)
                for i in failing:
                    face_levels[i] = level.name

        # Side files first: the output itself is the "done" marker a rerun trusts. Side files of an earlier
        # interrupted run (output missing) are ours to replace.
        side = self._side_files(target)
        if o.save_mask:
            mask_rgb = np.repeat((mask * np.uint8(255)).astype(np.uint8)[..., None], 3, axis=2)
            write_image(side[0], mask_rgb, overwrite=True)
        if o.save_heatmap and result.heatmap is not None:
            from facecloak.explain import heat_overlay

            write_image(side[-1], heat_overlay(image, result.heatmap), overwrite=True)
        write(image)
        # Measure on the file as written (JPEG can erase a sparse perturbation): the source models aligned with the
        # same detections, and the verifiers each through their own pipeline.
        written = read_image(target, max_pixels=o.max_pixels).rgb
        after = similarities(written, faces, self.models, result.references)
        cosine = tuple(
            {m: {"before": round(f.cosine_before[m], 4), "after": round(float(after[m][i]), 4)} for m in self.models}
            for i, f in enumerate(result.faces)
        )
        verdict: tuple[dict[str, Any], ...] = ()
        status = "unverified"
        if self.panel is not None:
            final = self.panel.verify(written, boxes, references, sources=sorted(sources))
            verdict = tuple(v.as_json() for v in final)
            status = "protected" if all(v.protected for v in final) else "still-recognised"
        return PhotoReport(
            str(path),
            str(target),
            status,
            faces=len(result.faces),
            pixels_changed=int(mask.sum()),
            fill=o.fill,
            cosine=cosine,
            frames=photo.n_frames,
            message=frames_note,
            side_files=side,
            level="custom" if o.custom else o.level,
            verdict=verdict,
            face_levels=tuple(face_levels),
            person_reference=bool(self.person_references),
        )


# --- where the per-photo reports come from: this process, or Ray actors that each hold their own _Runner -------


def _reports(
    backend: BackendChoice, runner: _Runner, items: list[InputImage], address: str | None, workers: int | None
) -> Iterable[PhotoReport]:
    """One report per item, in input order. ray: each actor builds `_Runner(options)`, prepares it once (a worker
    without the models fails with the local one-line error) and runs `run_one` per photo, 1 torch thread each."""
    if backend is BackendChoice.local:
        return _local(runner, items)
    from facecloak.scale.ray import RayConfig, actor_map

    make = functools.partial(_ray_runner, runner.o, runner.person)
    return actor_map(make, _ray_run_one, items, RayConfig(address=address, workers=workers), on_lost=_lost)


def _local(runner: _Runner, items: list[InputImage]) -> Iterable[PhotoReport]:
    from facecloak.scale.ray import Sized

    return Sized((runner.run_one(item.path, item.root) for item in items), len(items))


def _ray_runner(options: ProtectOptions, person: Person | None) -> _Runner:
    runner = _Runner(options)
    if not options.dry_run:
        runner.prepare()
    runner.person = person
    return runner


def _ray_run_one(runner: _Runner, item: InputImage) -> PhotoReport:
    return runner.run_one(item.path, item.root)


def _lost(item: InputImage, message: str) -> PhotoReport:
    return PhotoReport(str(item.path), None, "failed", message=message)


def _with_seconds(report: PhotoReport, seconds: float) -> PhotoReport:
    return PhotoReport(**{**asdict(report), "seconds": round(seconds, 3)})


def _join(*parts: str) -> str:
    return "; ".join(p for p in parts if p)


def demo_command(
    out: Annotated[Path, typer.Option("--out", "-o", help="Where the demo writes inputs and outputs.")] = Path(
        "out/demo"
    ),
    level: Annotated[str, typer.Option(help=f"Protection level to demonstrate: {', '.join(ORDER)}.")] = DEFAULT_LEVEL,
) -> None:
    """Protect photos bundled with installed packages (no data needed) exactly as `facecloak protect` does, and
    show per face whether independent local recognisers still match the written file."""
    from facecloak.photos.bundled import bundled_photos
    from facecloak.photos.io import write_image

    inputs = out / "input"
    photos = bundled_photos()
    for name, rgb in photos.items():
        write_image(inputs / f"{name}.png", rgb, overwrite=True)
    stderr.print(f"demo: protecting {len(photos)} bundled photos from {inputs} at level {LEVELS.get(level).name}",
                 highlight=False)
    protect_command([inputs], out=out, level=level, overwrite=True)
