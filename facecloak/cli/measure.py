"""`facecloak bench speed | speed-protect | protect-cost | ray-protect | serve-latency | dlib-r29`: the measurement
scripts of `bench/` as commands (benchmarks, not tests; each writes or prints numbers with their n and the load).

Thin shells: options in, one call into the `bench` module, its report out. Like the rest of `facecloak bench` they
run from a source checkout (the `bench/` folder beside `facecloak/`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from facecloak.cli.bench import _bench_checkout, _command_line, bench_app
from facecloak.cli.common import DeviceOption, parse_names

OutOption = Annotated[Path, typer.Option("-o", "--out", help="Folder for the results (JSON + markdown).")]
SHARED = Path(__file__).resolve().parents[3] / "shared"  # ../shared beside a source checkout


def register(app: typer.Typer) -> None:
    """Add the measurement commands to the `facecloak bench` group (registered on `app` by `facecloak.cli.bench`)."""
    for name, command in (("speed", speed_command), ("speed-protect", speed_protect_command),
                          ("protect-cost", protect_cost_command), ("ray-protect", ray_protect_command),
                          ("serve-latency", serve_latency_command), ("dlib-r29", dlib_r29_command)):
        bench_app.command(name)(command)


def speed_command(
    out: OutOption,
    models: Annotated[str, typer.Option(help="Comma-separated model ids.")] = (
        "mbf-arc,dlib-r29,hse-mnv1,mobileface,mbf-tf"),
    repeats: Annotated[int, typer.Option(min=1, help="Timed repeats per measurement (median reported).")] = 5,
) -> None:
    """Speed and memory of embedding and LEAM per model on this machine, each model in its own process."""
    with _bench_checkout():
        from bench.speed import run_speed

        typer.echo(run_speed(out, parse_names(models) or [], repeats, _command_line()))


def speed_protect_command(
    out: OutOption,
    data: Annotated[Path, typer.Option(help="Folder holding deepface/ and lfw/ (manifest.csv each).")] = (
        SHARED / "faces"),
    photos: Annotated[int, typer.Option(min=2, help="Photos per set (the marginal cost needs at least 2).")] = 60,
    repeats: Annotated[int, typer.Option(min=1, help="Start-up runs per tool and set (median).")] = 3,
    deface: Annotated[str, typer.Option(help="The deface executable (skipped with a hint when missing).")] = (
        "/tmp/deface-venv/bin/deface"),
    baseline_ref: Annotated[str | None, typer.Option(help="Git ref of an older facecloak to run side by side.")] = None,
    cloak_faces: Annotated[int, typer.Option(min=0, help="LFW photos for the cloak's s/face (0: skip).")] = 4,
    folder_repeats: Annotated[int, typer.Option(min=1, help="Runs of each whole folder per tool.")] = 1,
    memory_photos: Annotated[int, typer.Option(min=0, help="In-process protect calls traced for RSS.")] = 0,
    profile_photos: Annotated[int, typer.Option(min=0, help="Photos per set profiled by stage (0: skip).")] = 10,
    levels: Annotated[str, typer.Option(help="Comma-separated protection levels also measured end to end, "
                                              "verification on (e.g. medium,high; empty: none).")] = "",
    level_photos: Annotated[int, typer.Option(min=2, help="Photos per set for the --levels runs.")] = 20,
    memory_level: Annotated[str, typer.Option(help="Protection level of the traced protect calls (empty: "
                                                   "protect()'s defaults, the black 1 % fill).")] = "",
    device: DeviceOption = "auto",
) -> None:
    """Speed of `facecloak protect` against `deface`, side by side in one run (start-up, folder, marginal seconds
    per photo, peak RSS; each asked level end to end; the sparse cloak's seconds per face; a profile of protect's
    stages)."""
    with _bench_checkout():
        from bench.speed_protect import SpeedProtectOptions, run_speed_protect

        options = SpeedProtectOptions(
            out, data, photos, repeats, deface, baseline_ref, cloak_faces, folder_repeats, memory_photos,
            profile_photos=profile_photos, command=_command_line(), levels=tuple(parse_names(levels) or ()),
            level_photos=level_photos, memory_level=memory_level, device=device)
        typer.echo(run_speed_protect(options, warn=lambda line: typer.echo(line, err=True)))


def protect_cost_command(
    n: Annotated[int, typer.Option(min=1, help="Photos (deepface first, then LFW if more are needed).")] = 50,
    fill: Annotated[str, typer.Option(help="The fill to protect with.")] = "black",
    extra: Annotated[str, typer.Option(help="More `facecloak protect` options, space-separated.")] = "",
    source: Annotated[str, typer.Option(help="deepface, or lfw (one photo of each of the first N people).")] = (
        "deepface"),
    quality: Annotated[bool, typer.Option("--quality", help="Whole-photo PSNR / SSIM of each output vs its input.")
                       ] = False,
    shared: Annotated[Path, typer.Option(help="The folder holding faces/deepface and faces/lfw.")] = SHARED,
) -> None:
    """Seconds per photo, peak memory and (--quality) whole-photo quality of `facecloak protect` run once as a
    child process on a folder of photos; prints one JSON line."""
    import json

    from facecloak.errors import ConfigError

    with _bench_checkout():
        from bench.protect_cost import SOURCES, measure_protect_cost

        if source not in SOURCES:
            raise ConfigError(f"unknown source {source!r}; choose from {', '.join(SOURCES)}")
        record, failure = measure_protect_cost(n, fill, extra, source, quality, shared)
    typer.echo(json.dumps(record))
    if failure:
        typer.echo(failure, err=True)


def ray_protect_command(
    out: OutOption,
    n: Annotated[int, typer.Option(min=2, help="One photo each of the first N LFW people.")] = 200,
    configs: Annotated[str, typer.Option(help="Comma-separated: local, ray-1, ray-2.")] = "local,ray-1,ray-2",
) -> None:
    """Throughput of `facecloak protect` on the local backend vs Ray with 1 and 2 workers, side by side, and the
    capacity plan for a million photos a day computed from it."""
    with _bench_checkout():
        from bench.ray_protect import run_ray_protect

        run_ray_protect(n, out, parse_names(configs) or [], _command_line(), echo=typer.echo)
    typer.echo(f"wrote {out / 'results.json'} and {out / 'README.md'}")


def serve_latency_command(
    n: Annotated[int, typer.Option(min=1, help="Runs per photo at level low.")] = 5,
    n_medium: Annotated[int, typer.Option(min=1, help="Runs of the astronaut at level medium (the cloak).")] = 3,
    concurrent: Annotated[int, typer.Option(min=1, help="Uploads at once in the burst.")] = 20,
    chromium: Annotated[str | None, typer.Option(help="Chromium executable (default: chromium on PATH).")] = None,
) -> None:
    """`facecloak serve` measured from outside: drop-to-result time in headless Chromium, the JSON API, a burst of
    concurrent uploads and the server's memory; prints Markdown."""
    with _bench_checkout():
        from bench.serve_latency import DEFAULT_CHROMIUM, measure_serve

        typer.echo(measure_serve(n, n_medium, concurrent, chromium or DEFAULT_CHROMIUM))


def dlib_r29_command(
    what: Annotated[str, typer.Option(help="Comma-separated: fidelity, template, auc, lfw, timing.")] = (
        "fidelity,template,auc,timing"),
    shared: Annotated[Path, typer.Option(help="The folder holding faces/lfw and faces/deepface.")] = SHARED,
    lfw_count: Annotated[int, typer.Option(min=1, help="LFW photos for fidelity and template.")] = 20,
) -> None:
    """The `dlib-r29` port against native dlib (needs `pip install 'facecloak\\[dlib]'` and the pulled model):
    descriptor fidelity, the chip template, AUC, LFW accuracy through dlib's own pipeline, timing."""
    with _bench_checkout():
        from bench.dlib_r29 import run_dlib_r29

        run_dlib_r29(set(parse_names(what) or []), shared, lfw_count)
