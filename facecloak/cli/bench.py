"""`facecloak bench ...`: the transfer benchmark (`run`), the LEAM pattern analysis (`patterns`), the LEAM variant
study (`variants`) and the independent-recogniser measurements.

A thin shell: it reads the recipe and overrides (precedence CLI > recipe > defaults, see bench.config), then calls
`bench.transfer.run_transfer` / `bench.patterns.run_patterns`. The `bench` package ships with the source checkout.
"""

from __future__ import annotations

import contextlib
import shlex
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from facecloak.cli.common import DeviceOption, progress_iter
from facecloak.errors import FacecloakError

bench_app = typer.Typer(help="Measure LEAM: transfer benchmark, pattern analysis, variant study (needs the source "
                             "checkout).",
                        no_args_is_help=True)
console = Console()
err = Console(stderr=True)


def register(app: typer.Typer) -> None:
    app.add_typer(bench_app, name="bench")


@contextlib.contextmanager
def _bench_checkout() -> Iterator[None]:
    """Imports of `bench` inside this block fail with one line when the source checkout's `bench/` is missing."""
    try:
        yield
    except ModuleNotFoundError as exc:
        if exc.name is not None and (exc.name == "bench" or exc.name.startswith("bench.")):
            raise FacecloakError(
                f"{exc.name} is not available: `facecloak bench` runs from a source checkout of facecloak "
                "(the `bench/` folder beside `facecloak/`)"
            ) from None
        raise


def _command_line() -> str:
    return " ".join(["facecloak", *map(shlex.quote, sys.argv[1:])])


SetOption = Annotated[
    list[str] | None,
    typer.Option("--set", help="Override a recipe key, TOML value: --set data.identities=5 --set budgets=[1,2]."),
]


@bench_app.command("run")
def run_command(
    recipe: Annotated[str, typer.Option(help="Recipe name (paper, cloak, quick, robustness) or path to a .toml.")],
    data: Annotated[Path, typer.Option(help="Labelled folder: manifest.csv (path,identity[,gender]) or one "
                                             "sub-folder per identity.")],
    out: Annotated[Path, typer.Option("-o", "--out", help="Output folder (results.json, report.md, figures; "
                                                          "rerun the same command to resume).")],
    seed: Annotated[int | None, typer.Option(help="Seed of sampling, controls and bootstrap (overrides the "
                                                  "recipe's `seed`).")] = None,
    overrides: SetOption = None,
    no_examples: Annotated[bool, typer.Option("--no-examples", help="Do not draw example photos with masks.")] = False,
    no_cache: Annotated[bool, typer.Option(help="Do not read or write detection/embedding caches.")] = False,
    backend: Annotated[str, typer.Option(help="local, or ray: units on Ray workers (pip install "
                                              "'facecloak[ray]'; data, OUT and models on paths every worker sees).")
                       ] = "local",
    ray_address: Annotated[str | None, typer.Option(help="With --backend ray: join this cluster (default: a local "
                                                         "Ray sized to this machine).")] = None,
    workers: Annotated[int | None, typer.Option(min=1, help="With --backend ray: Ray workers (default: one per "
                                                            "CPU).")] = None,
    device: DeviceOption = "auto",
) -> None:
    """Transfer benchmark: Δcos and dodging on every target for masks chosen with every source, vs controls."""
    from facecloak.masking.stage import resolve_device

    resolve_device(device)  # an unavailable device stops here, before any photo (Ray workers resolve "auto" alone)
    with _bench_checkout():
        from bench import config, transfer
    items = config.parse_overrides(overrides or [])
    if seed is not None:
        items["seed"] = str(seed)
    rec = config.load_recipe(recipe, items)
    units = _units_executor(backend, ray_address, workers, use_cache=not no_cache, device=device)
    models = transfer.default_backend(use_cache=not no_cache, device=device)
    payload = transfer.run_transfer(rec, data, out, backend=models, examples=not no_examples,
                                    command=_command_line(), progress=progress_iter, units=units)
    s = payload["summary"]
    env = payload["environment"]
    err.print(f"{payload['n_photos']} photos, {payload['n_identities']} people, {payload['n_pairs']} genuine pairs, "
              f"{payload['n_no_face']} without a face; {env['units_computed']} units computed, "
              f"{env['units_resumed']} resumed; {env['run_time_s']:.0f} s")
    parts = [f"{k.removeprefix('delta_cos_')} {v:.4f}" for k, v in s.items()
             if k.startswith("delta_cos_") and isinstance(v, float)]
    if parts:
        console.print(f"Δcos at {s['budget']:g} %, fill {s['fill']} (mean of {s['n_cells']} cells): "
                      + ", ".join(parts))
    console.print(f"wrote {out / 'results.json'} and {out / 'report.md'}")


def _units_executor(backend: str, address: str | None, workers: int | None, *, use_cache: bool,
                    device: str = "cpu") -> Any:
    """None (local units) or the Ray executor of bench.scale."""
    if backend == "local":
        if address is not None or workers is not None:
            raise FacecloakError("--ray-address and --workers go with --backend ray")
        return None
    if backend != "ray":
        raise FacecloakError(f"unknown --backend {backend!r}; choose local or ray")
    import functools

    from facecloak.scale.ray import RayConfig, import_ray

    import_ray()  # without the extra, stop before any work with the install command
    with _bench_checkout():
        from bench import scale, transfer
    return scale.ray_units(RayConfig(address=address, workers=workers),
                           functools.partial(transfer.default_backend, use_cache=use_cache, device=device))


@bench_app.command("patterns")
def patterns_command(
    data: Annotated[Path, typer.Option(help="Labelled folder: manifest.csv or one sub-folder per identity.")],
    out: Annotated[Path, typer.Option("-o", "--out", help="Output folder (patterns.json, patterns.md, figures).")],
    identities: Annotated[int | None, typer.Option(help="Sample this many people (seeded).")] = None,
    per_identity: Annotated[int | None, typer.Option(help="At most this many photos per person.")] = None,
    models: Annotated[str | None, typer.Option(help="Comma-separated model ids (default: all).")] = None,
    seed: int = 0,
    overrides: Annotated[list[str] | None, typer.Option(
        "--set", help="Override a LEAM setting, TOML value: --set method=layercam --set budget=2.")] = None,
    device: DeviceOption = "auto",
) -> None:
    """LEAM patterns: person-specificity (Bhattacharyya coefficient), region shares, layer diversity."""
    with _bench_checkout():
        from bench import config, patterns
    from facecloak.cli.common import parse_names

    settings = {k: config.parse_value(v) for k, v in config.parse_overrides(overrides or []).items()}
    patterns.run_patterns(data, out, identities=identities, per_identity=per_identity, models=parse_names(models),
                          seed=seed, overrides=settings, progress=progress_iter, device=device)


@bench_app.command("variants")
def variants_command(
    data: Annotated[Path, typer.Option(help="Labelled folder: manifest.csv or one sub-folder per identity.")],
    out: Annotated[Path, typer.Option("-o", "--out", help="Output folder (variants.json, variants.md).")],
    sources: Annotated[str, typer.Option(help="Comma-separated models that make the masks.")] = "mbf-arc,dlib-r29",
    targets: Annotated[str, typer.Option(help="Comma-separated models the occlusion is measured on.")] = (
        "mbf-arc,dlib-r29,mbf-tf"),
    budget: Annotated[float, typer.Option(help="Percent of the face region.")] = 1.0,
    seed: int = 0,
    probes_per_identity: Annotated[int, typer.Option(min=0, help="Probes per person (0: every photo).")] = 2,
    identities: Annotated[int | None, typer.Option(min=1, help="Sample this many people (seeded).")] = None,
    combinations: Annotated[int, typer.Option(min=0, help="Combinations of the best levels to add.")] = 2,
    variants: Annotated[str | None, typer.Option(help="Explicit ';'-separated method/layers/selection/target "
                                                      "list instead of the design.")] = None,
    extra: Annotated[str | None, typer.Option(help="';'-separated variants added to the design.")] = None,
    device: DeviceOption = "auto",
) -> None:
    """Which LEAM variant (method, layers, selection, target) makes the paper's findings hold."""
    import json

    from facecloak.cli.common import parse_names

    with _bench_checkout():
        from bench import variants as study

    payload = study.run_variants(
        data, out, sources=parse_names(sources) or [], targets=parse_names(targets) or [], budget=budget, seed=seed,
        probes_per_identity=probes_per_identity or None, identities=identities, n_combinations=combinations,
        variants=study.parse_variants(variants) or None, extra=study.parse_variants(extra),
        log=lambda msg: err.print(msg, highlight=False), command=_command_line(), device=device,
    )
    console.print(json.dumps(payload["recommendation"], indent=2))
    console.print(f"wrote {out / 'variants.json'} and {out / 'variants.md'}")


@bench_app.command("independent")
def independent_command(
    data: Annotated[Path, typer.Option(help="Labelled folder with manifest.csv (path,identity), e.g. LFW.")],
    out: Annotated[Path, typer.Option("-o", "--out", help="Output folder (independent.json, report.md).")],
    people: Annotated[int, typer.Option(help="People drawn (seeded) among those with at least two photos.")] = 60,
    probes_per_person: Annotated[int, typer.Option(help="Protected probes per person.")] = 1,
    setting: Annotated[list[str] | None, typer.Option(
        "--setting", help="Protection levels or ablation settings to measure (repeatable; default: every level). "
                          "Append +random for the equal-area random-pixel control, e.g. high+random.")] = None,
    pipelines: Annotated[str, typer.Option(help="Independent recognisers (own detection and alignment).")] = (
        "dlib,arcface,hse"),
    seed: int = 0,
    shard: Annotated[str, typer.Option(help="i/n: measure every n-th probe starting at i (parallel runs).")] = "0/1",
    defence: Annotated[list[str] | None, typer.Option(
        "--defence", help="Processing applied to each written file before the recognisers read it (repeatable): "
                          "jpeg<quality>, resize<percent>, blur<sigma>, inpaint-mask.")] = None,
    device: DeviceOption = "auto",
) -> None:
    """Protect photos, write and decode them, and let independent recognisers read them their own way."""
    from facecloak.cli.common import parse_names
    from facecloak.masking.stage import resolve_device

    resolve_device(device)  # an unavailable device stops here, before any photo

    with _bench_checkout():
        from bench import independent
        from bench.config import parse_defence
    defences = [parse_defence(d) for d in defence or []]
    settings = independent.settings_by_name(setting or independent.default_setting_names())
    probes = independent.choose_probes(data, people=people, seed=seed, probes_per_person=probes_per_person)
    i, n = (int(v) for v in shard.split("/"))
    probes = probes[i::n]
    result = independent.run(probes, settings, parse_names(pipelines) or [], seed=seed, progress=progress_iter,
                             checkpoint=out / "rows.jsonl", defences=defences, device=device)
    independent.write_outputs(result, out, _command_line())
    console.print(independent.markdown(result))
    console.print(f"wrote {out / 'independent.json'} and {out / 'report.md'}")


@bench_app.command("independent-report")
def independent_report_command(
    out: Annotated[Path, typer.Option("-o", "--out", help="Output folder (independent.json, report.md).")],
    checkpoints: Annotated[list[Path], typer.Argument(help="rows.jsonl files of the shards of one configuration.")],
) -> None:
    """Combine the checkpoints of sharded or interrupted `bench independent` runs into one table."""
    with _bench_checkout():
        from bench import independent
    result = independent.combine(checkpoints)
    independent.write_outputs(result, out, _command_line())
    console.print(independent.markdown(result))
    console.print(f"wrote {out / 'independent.json'} and {out / 'report.md'}")


@bench_app.command("calibrate-independent")
def calibrate_independent_command(
    data: Annotated[Path, typer.Option(help="Labelled folder with manifest.csv (one photo per person is used).")],
    photos: Annotated[int, typer.Option(help="People (one photo each); their different-person pairs set the "
                                             "thresholds.")] = 1000,
    pipelines: Annotated[str, typer.Option(help="Independent recognisers to calibrate.")] = "dlib,arcface,hse",
    seed: int = 0,
    shipped: Annotated[bool, typer.Option(help="Write into the package's shipped table (maintainers).")] = False,
) -> None:
    """Thresholds at FAR 1e-2 / 1e-3 / 1e-4 for the independent recognisers, through their own pipelines."""
    from facecloak.cli.common import parse_names

    with _bench_checkout():
        from bench import independent
    entries = independent.calibrate(data, photos=photos, pipelines=parse_names(pipelines) or [], seed=seed,
                                    progress=progress_iter)
    path = independent.save_calibration(entries, shipped)
    for name, e in entries.items():
        console.print(f"{name}: FAR 1e-3 cosine {e['at_far']['0.001']:.4f} ({e['n_photos']} photos, "
                      f"{e['n_impostor']} pairs)")
    console.print(f"wrote {path}")
