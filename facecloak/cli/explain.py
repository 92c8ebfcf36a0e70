"""`facecloak explain PHOTO_OR_DIR... -o OUT`: where face recognition looks, per face, as PNGs and JSON.

Per photo a folder OUT/<photo stem>/ holds, for each face i:
    face<i>_overall.png          ensemble relevance over the photo (inferno overlay)
    face<i>_<model>.png          one model's overall relevance
    face<i>_<model>_<layer>.png  one layer's relevance
    face<i>_mask.png             the top-k % pixels (white), as `protect` would change them
    face<i>_regions.json         facts: region shares of the mask (parser), pixel counts, target, empty layers
OUT/explain.json lists every photo with its status; with --person, OUT/<person>.profile.npz is the person's LEAM
profile (`leam.load_profile`). Every file is written atomically; rerunning replaces them.

Exit codes: 0 every photo explained (or had no face, which is reported), 1 some failed, 2 all failed.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Annotated

import numpy as np
import typer
from rich.console import Console

import leam
from facecloak.cli.common import DeviceOption, parse_names, progress_iter
from facecloak.errors import ConfigError, FacecloakError
from facecloak.faces.parse import PARSERS
from leam.errors import LeamError

stderr = Console(stderr=True)


def register(app: typer.Typer) -> None:
    app.command("explain")(explain_command)


def _safe(name: str) -> str:
    """A file-name-safe version of a model, layer or person name."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "x"


def _write_json(path: Path, payload: object) -> None:
    from facecloak.files import atomic_write_bytes

    atomic_write_bytes(path, (json.dumps(payload, indent=2) + "\n").encode())


def _settings(method: str, layers: str, budget: float, selection: str):
    from facecloak.masking.leamface import LeamSettings

    names = parse_names(layers)
    chosen: str | tuple[str, ...] = "default" if names in (None, ["default"]) else tuple(names or ())
    return LeamSettings(method=method, layers=chosen, budget=budget, selection=selection)


def explain_command(
    paths: Annotated[list[Path], typer.Argument(help="Photos and/or folders.")],
    out: Annotated[Path, typer.Option("-o", "--out", help="Output folder.")],
    models: Annotated[str | None, typer.Option(help="Comma-separated models (default: mbf-arc,hse-mnv1,mbf-tf).")
                      ] = None,
    budget: Annotated[float, typer.Option(help="Percent of the face region to select for the mask.")] = 1.0,
    person: Annotated[str | None, typer.Option(help="All photos show this person: explain each against the others "
                                                    "and save the person's LEAM profile.")] = None,
    method: Annotated[str, typer.Option(help=f"Per-layer method: {', '.join(leam.METHODS)}.")] = "gradcam",
    layers: Annotated[str, typer.Option(help="'default' (each model's) or comma-separated dotted layer names "
                                             "applied to every model; 'input' = gradient x input.")] = "default",
    selection: Annotated[str, typer.Option(help=f"Pixel selection: {', '.join(leam.SELECTORS)}.")] = "topk",
    parser: Annotated[str, typer.Option(help=f"Face parser: {', '.join(PARSERS)} (landmarks5: no weights, "
                                             "approximate).")] = "facemesh",
    recursive: Annotated[bool, typer.Option("--recursive", "-r", help="Descend into sub-folders.")] = False,
    largest_only: Annotated[bool, typer.Option(help="Explain only the largest face of each photo.")] = False,
    seed: Annotated[int, typer.Option(help="Seed of the 'sampled' selection.")] = 0,
    layer_maps: Annotated[bool, typer.Option("--layer-maps/--no-layer-maps", help="Write per-layer PNGs.")] = True,
    device: DeviceOption = "auto",
) -> None:
    """Write LEAM heatmaps (per layer and overall), the top-k % mask and its facial regions for every face."""
    from facecloak.faces.parse import get_parser
    from facecloak.masking.stage import resolve_device
    from facecloak.models import get_spec
    from facecloak.photos.io import find_images
    from facecloak.protection.protect import DEFAULT_MODELS

    settings = _settings(method, layers, budget, selection)
    resolved = resolve_device(device)  # an unavailable device stops here, before any photo
    model_ids = tuple(parse_names(models) or DEFAULT_MODELS)
    for m in model_ids:
        get_spec(m)  # unknown names fail here, with suggestions
    items = find_images(paths, recursive=recursive)
    if not items:
        raise FacecloakError("no photos found in the given paths")
    face_parser = get_parser(parser)
    from facecloak.faces.detect import load_detector

    detector = load_detector("mtcnn")
    out.mkdir(parents=True, exist_ok=True)
    runner = _Explainer(out, model_ids, settings, face_parser, detector, seed=seed, largest_only=largest_only,
                        layer_maps=layer_maps, device=str(resolved))
    if person is not None:
        runner.load_person(person, [i.path for i in items])
    reports = [runner.run_one(item.path) for item in progress_iter(items, "explaining")]
    _write_json(out / "explain.json", {
        "models": list(model_ids), "method": settings.method, "layers": layers, "selection": settings.selection,
        "budget_percent": budget, "person": person, "photos": reports,
    })
    failed = sum(r["status"] == "failed" for r in reports)
    counts = {s: sum(r["status"] == s for r in reports) for s in sorted({r["status"] for r in reports})}
    stderr.print(", ".join(f"{n} {s}" for s, n in counts.items()) + f"; outputs in {out}", highlight=False)
    if failed:
        raise typer.Exit(2 if failed == len(reports) else 1)


class _Explainer:
    """The options, loaded detector/parser and (with --person) the identity references of one invocation."""

    def __init__(self, out: Path, models: tuple[str, ...], settings, parser, detector, *, seed: int,
                 largest_only: bool, layer_maps: bool, device: str = "cpu") -> None:
        self.out, self.models, self.settings = out, models, settings
        self.parser, self.detector = parser, detector
        self.seed, self.largest_only, self.layer_maps = seed, largest_only, layer_maps
        self.device = device
        self.references: dict[Path, dict[str, np.ndarray]] = {}  # photo -> model -> (D,) leave-one-out centroid
        self.used_names: set[str] = set()

    def load_person(self, name: str, files: list[Path]) -> None:
        """Build and save the person's profile from all photos; keep each photo's leave-one-out reference."""
        import torch

        import leam
        from facecloak.explain import leave_one_out_references
        from facecloak.faces.align import align
        from facecloak.files import sha256_file
        from facecloak.masking.stage import model_on
        from facecloak.models import embed_crops, get_spec
        from facecloak.photos.io import read_image
        from facecloak.protection.protect import build_person

        if len(files) < 2:
            raise ConfigError("--person needs at least two photos of the person (each is explained against the others)")
        photos = [read_image(p).rgb for p in files]
        hashes = [sha256_file(p) for p in files]
        person, profile = build_person(name, photos, models=self.models, settings=self.settings,
                                       photo_hashes=hashes, detector=self.detector, device=self.device)
        path = leam.save_profile(self.out / f"{_safe(name)}.profile.npz", profile)
        stderr.print(f"profile of {name!r}: {person.n_photos} of {len(files)} photos, saved to {path}", highlight=False)
        faces = [max(self.detector.detect(img), key=lambda f: f.area, default=None) for img in photos]
        embeddings: dict[str, np.ndarray] = {}
        for m in self.models:
            template = get_spec(m).template
            found = [i for i, f in enumerate(faces) if f is not None]
            crops = np.stack([align(photos[i], faces[i], template).crop for i in found])  # type: ignore[arg-type]
            emb = embed_crops(model_on(m, torch.device(self.device)), crops).numpy()
            full = np.full((len(photos), emb.shape[1]), np.nan, np.float32)
            full[found] = emb
            embeddings[m] = full
        loo = leave_one_out_references(embeddings)
        for i, p in enumerate(files):
            if faces[i] is not None:
                self.references[p] = {m: loo[m][i] for m in self.models}

    def _folder(self, path: Path) -> Path:
        stem = _safe(path.stem)
        name, k = stem, 2
        while name in self.used_names:
            name, k = f"{stem}-{k}", k + 1
        self.used_names.add(name)
        return self.out / name

    def run_one(self, path: Path) -> dict:
        from facecloak.explain import explain_faces, heat_overlay, mask_image
        from facecloak.photos.io import read_image, write_image

        report: dict = {"path": str(path), "status": "failed", "faces": 0, "files": []}
        try:
            rgb = read_image(path).rgb
            faces = sorted(self.detector.detect(rgb), key=lambda f: f.area, reverse=True)
            faces = faces[:1] if self.largest_only else faces
            if not faces:
                report.update(status="no-face", message="no face found")
                return report
            refs = None
            if path in self.references:  # the person is the largest face; bystanders get the flip target
                refs = {m: np.stack([self.references[path][m] if i == 0 else
                                     np.full_like(self.references[path][m], np.nan) for i in range(len(faces))])
                        for m in self.models}
            explanations = explain_faces(rgb, faces, models=self.models, parser=self.parser, settings=self.settings,
                                         references=refs, seed=self.seed, device=self.device)
            folder = self._folder(path)
            files: list[Path] = []

            def png(name: str, image: np.ndarray) -> None:
                files.append(write_image(folder / name, image, format="PNG", overwrite=True))

            for i, ex in enumerate(explanations):
                png(f"face{i}_overall.png", heat_overlay(rgb, ex.heatmap))
                png(f"face{i}_mask.png", mask_image(ex.mask))
                for m, heat in ex.model_heatmaps.items():
                    png(f"face{i}_{_safe(m)}.png", heat_overlay(rgb, heat))
                if self.layer_maps:
                    for key, heat in ex.layer_heatmaps.items():
                        m, layer = key.split("/", 1)
                        png(f"face{i}_{_safe(m)}_{_safe(layer)}.png", heat_overlay(rgb, heat))
                regions = folder / f"face{i}_regions.json"
                _write_json(regions, ex.summary(self.settings.budget))
                files.append(regions)
            report.update(status="explained", faces=len(faces), files=[str(f) for f in files])
        except (FacecloakError, LeamError) as exc:  # one photo's failure does not stop the others
            report["message"] = str(exc)
            stderr.print(f"[red]failed[/red] {path}: {exc}", highlight=False)
        return report
