"""`facecloak protect PATH...`: protected copies of photos; originals are never touched.

Exit codes: 0 every photo handled (protected, already done, or skipped/copied by the no-face policy),
1 some photos failed, 2 all photos failed or nothing could start (bad option, missing model).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Annotated

import numpy as np
import typer
from rich.console import Console
from rich.table import Table

from facecloak.cli.common import parse_names, progress_iter
from facecloak.errors import ConfigError, FacecloakError, NoFaceError

stderr = Console(stderr=True)


class NoFacePolicy(str, Enum):
    skip = "skip"
    copy = "copy"
    error = "error"


@dataclass(frozen=True)
class PhotoReport:
    path: str
    output: str | None
    status: str  # protected | exists | no-face-skipped | no-face-copied | failed | would-write
    faces: int = 0
    pixels_changed: int = 0
    fill: str = ""
    cosine: tuple[dict, ...] = ()
    seconds: float = 0.0
    message: str = ""
    frames: int = 1

    def as_json(self) -> dict:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in self.__dict__.items()}


def register(app: typer.Typer) -> None:
    app.command("protect")(protect_command)
    app.command("demo")(demo_command)


def protect_command(
    paths: Annotated[list[Path], typer.Argument(help="Photos and/or folders.", exists=False)],
    out: Annotated[Path | None, typer.Option("-o", "--out", help="Output folder (default: next to each input).")] = None,
    recursive: Annotated[bool, typer.Option("--recursive", "-r", help="Descend into sub-folders, mirroring the tree.")] = False,
    suffix: Annotated[str, typer.Option(help="Added to each output file name.")] = "_protected",
    format: Annotated[str | None, typer.Option(help="Output format: jpeg, png, webp, tiff (default: as input).")] = None,
    jpeg_quality: Annotated[int, typer.Option(min=1, max=100)] = 95,
    models: Annotated[str | None, typer.Option(help="Comma-separated source models (default: mbf-arc,hse-mnv1,mbf-tf).")] = None,
    budget: Annotated[float, typer.Option(help="Percent of each face's pixels that may change.")] = 1.0,
    fill: Annotated[str, typer.Option(help="black, mean, blur, pixelate, noise, inpaint or cloak.")] = "black",
    person: Annotated[str | None, typer.Option(help="Name of the person the photos show (with --person-photos).")] = None,
    person_photos: Annotated[Path | None, typer.Option(help="Folder of photos of --person to build/reuse a profile.")] = None,
    seed: int = 0,
    largest_only: Annotated[bool, typer.Option(help="Protect only the largest face of each photo.")] = False,
    no_face: Annotated[NoFacePolicy, typer.Option(help="Photos without a face: skip, copy (metadata stripped) or error.")] = NoFacePolicy.skip,
    overwrite: Annotated[bool, typer.Option(help="Replace existing outputs (default: skip them, so reruns resume).")] = False,
    keep_metadata: Annotated[bool, typer.Option(help="Keep EXIF/ICC (GPS still removed unless --keep-gps).")] = False,
    keep_gps: Annotated[bool, typer.Option(help="With --keep-metadata, keep GPS location too.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON line per photo, then a summary line.")] = False,
    dry_run: Annotated[bool, typer.Option(help="List what would be written, change nothing.")] = False,
    save_mask: Annotated[bool, typer.Option(help="Also write <output>.mask.png (the changed pixels).")] = False,
    save_heatmap: Annotated[bool, typer.Option(help="Also write <output>.heatmap.png (LEAM relevance).")] = False,
    follow_symlinks: Annotated[bool, typer.Option(help="Follow symlinks that leave the input folder.")] = False,
    max_pixels: Annotated[int, typer.Option(help="Refuse photos larger than this many pixels.")] = 100_000_000,
    steps: Annotated[int, typer.Option(help="Cloak: optimisation steps.")] = 60,
    epsilon: Annotated[float | None, typer.Option(help="Cloak: max change per pixel (0-255 levels).")] = None,
) -> None:
    """Write protected copies of photos: only the pixels recognition relies on most are changed."""
    from facecloak.io import find_images

    if keep_gps and not keep_metadata:
        raise ConfigError("--keep-gps only makes sense with --keep-metadata")
    if (person is None) != (person_photos is None):
        raise ConfigError("--person and --person-photos go together")
    items = [i for i in find_images(paths, recursive=recursive, follow_symlinks=follow_symlinks)
             if not i.path.stem.endswith(suffix)]  # never protect our own outputs again
    if not items:
        raise FacecloakError("no photos found in the given paths")
    model_ids = tuple(parse_names(models) or ())
    runner = _Runner(
        out=out, suffix=suffix, format=format, jpeg_quality=jpeg_quality, models=model_ids, budget=budget,
        fill=fill, seed=seed, largest_only=largest_only, no_face=no_face, overwrite=overwrite,
        keep_metadata=keep_metadata, keep_gps=keep_gps, dry_run=dry_run, save_mask=save_mask,
        save_heatmap=save_heatmap, max_pixels=max_pixels, steps=steps, epsilon=epsilon,
    )
    if person is not None and person_photos is not None and not dry_run:
        runner.load_person(person, person_photos)
    reports: list[PhotoReport] = []
    for item in progress_iter(items, "protecting"):
        report = runner.run_one(item.path, item.root)
        reports.append(report)
        if as_json:
            typer.echo(json.dumps(report.as_json()))
        elif report.status == "failed":
            stderr.print(f"[red]failed[/red] {report.path}: {report.message}", highlight=False)
    failed = sum(r.status == "failed" for r in reports)
    summary = {s: sum(r.status == s for r in reports) for s in sorted({r.status for r in reports})}
    if as_json:
        typer.echo(json.dumps({"summary": summary, "photos": len(reports), "failed": failed}))
    else:
        _print_summary(reports, summary)
    if failed:
        raise typer.Exit(2 if failed == len(reports) else 1)


def _print_summary(reports: list[PhotoReport], summary: dict[str, int]) -> None:
    table = Table(title="facecloak protect")
    for col in ("photo", "status", "faces", "pixels changed", "cosine to reference before → after (per model)"):
        table.add_column(col)
    for r in reports:
        cos = "; ".join(
            ", ".join(f"{m} {v['before']:.2f}→{v['after']:.2f}" for m, v in face.items()) for face in r.cosine
        )
        table.add_row(Path(r.path).name, r.status, str(r.faces), str(r.pixels_changed), cos or r.message)
    Console(stderr=True).print(table)
    stderr.print(", ".join(f"{n} {s}" for s, n in summary.items()))


class _Runner:
    """Holds the options and the loaded models for one `protect` invocation."""

    def __init__(self, **options) -> None:
        from facecloak.cloak import CloakSettings
        from facecloak.protect import DEFAULT_MODELS

        self.o = options
        self.models = options["models"] or DEFAULT_MODELS
        self.person = None
        self.cloak = CloakSettings(steps=options["steps"], epsilon=options["epsilon"])
        self._detector = None

    @property
    def detector(self):
        if self._detector is None:
            from facecloak.detect import load_detector

            self._detector = load_detector("mtcnn")
        return self._detector

    def load_person(self, name: str, folder: Path) -> None:
        import leam
        from facecloak import paths
        from facecloak.io import find_images, read_image
        from facecloak.models.pull import sha256_file
        from facecloak.protect import build_person

        files = [i.path for i in find_images([folder])]
        photos = [read_image(p, max_pixels=self.o["max_pixels"]).rgb for p in files]
        hashes = [sha256_file(p) for p in files]
        person, profile = build_person(name, photos, models=self.models, photo_hashes=hashes, detector=self.detector)
        safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in name)
        path = paths.profiles_dir() / f"{safe}.npz"
        leam.save_profile(path, profile)
        stderr.print(f"profile of {name!r}: {person.n_photos} photos, saved to {path}")
        self.person = person

    def run_one(self, path: Path, root: Path) -> PhotoReport:
        from facecloak.io import output_path_for, read_image, write_image
        from facecloak.protect import protect, similarities

        o = self.o
        start = time.perf_counter()
        try:
            out_dir = o["out"] if o["out"] is not None else root
            target = output_path_for(path, root, out_dir, suffix=o["suffix"], format=o["format"])
            if target.exists() and not o["overwrite"]:
                return PhotoReport(str(path), str(target), "exists", message="output exists (use --overwrite)")
            if o["dry_run"]:
                return PhotoReport(str(path), str(target), "would-write")
            photo = read_image(path, max_pixels=o["max_pixels"])
            result = protect(
                photo.rgb, models=self.models, budget=o["budget"], fill=o["fill"], person=self.person,
                seed=o["seed"], cloak_settings=self.cloak, detector=self.detector, largest_only=o["largest_only"],
            )
            write = dict(alpha=photo.alpha, format=o["format"], jpeg_quality=o["jpeg_quality"],
                         keep_metadata=o["keep_metadata"], keep_gps=o["keep_gps"], source=photo,
                         overwrite=o["overwrite"])
            if not result.faces:
                if o["no_face"] is NoFacePolicy.error:
                    raise NoFaceError("no face found")
                if o["no_face"] is NoFacePolicy.skip:
                    return PhotoReport(str(path), None, "no-face-skipped", frames=photo.n_frames,
                                       seconds=time.perf_counter() - start, message="no face found; nothing written")
                write_image(target, photo.rgb, **write)
                return PhotoReport(str(path), str(target), "no-face-copied", frames=photo.n_frames,
                                   seconds=time.perf_counter() - start)
            write_image(target, result.image, **write)
            # Measure on the file as written (JPEG can erase a sparse perturbation), aligned with the same detections.
            written = read_image(target, max_pixels=o["max_pixels"]).rgb
            refs = result.references
            after = similarities(written, [f.face for f in result.faces], self.models, refs)
            cosine = tuple(
                {m: {"before": round(f.cosine_before[m], 4), "after": round(float(after[m][i]), 4)} for m in self.models}
                for i, f in enumerate(result.faces)
            )
            if o["save_mask"]:
                write_image(target.with_name(target.stem + ".mask.png"), (result.mask * 255).astype(np.uint8)[..., None]
                            .repeat(3, 2), overwrite=o["overwrite"])
            if o["save_heatmap"] and result.heatmap is not None:
                write_image(target.with_name(target.stem + ".heatmap.png"), _heat_overlay(photo.rgb, result.heatmap),
                            overwrite=o["overwrite"])
            return PhotoReport(
                str(path), str(target), "protected", faces=len(result.faces), pixels_changed=result.pixels_changed,
                fill=o["fill"], cosine=cosine, seconds=round(time.perf_counter() - start, 3), frames=photo.n_frames,
            )
        except FacecloakError as exc:
            return PhotoReport(str(path), None, "failed", message=str(exc), seconds=time.perf_counter() - start)


def _heat_overlay(rgb: np.ndarray, heat: np.ndarray) -> np.ndarray:
    import matplotlib

    colours = (matplotlib.colormaps["inferno"](np.clip(heat, 0, 1))[..., :3] * 255).astype(np.float32)
    return (0.45 * rgb.astype(np.float32) + 0.55 * colours).round().astype(np.uint8)


def demo_command(
    out: Annotated[Path, typer.Option("--out", "-o", help="Where the demo writes inputs and outputs.")] = Path("out/demo"),
    fill: Annotated[str, typer.Option(help="Fill to demonstrate.")] = "cloak",
    budget: float = 2.0,
) -> None:
    """Protect photos bundled with installed packages (no data needed) and print before/after similarity."""
    from facecloak.demo import run_demo

    run_demo(out, fill=fill, budget=budget)
