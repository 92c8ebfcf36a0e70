"""`facecloak bench run`: how much does recognition by model T drop when the pixels are chosen with model S?

Protocol (docs LEAM.md, "Validation occlusion" and "Beyond the paper"; issue 5):

1. Sample the labelled folder (seeded), detect every photo once (cached), keep people with >= 2 faces; parse each
   main face into regions rasterised in the common template (`leam.common_template`; `parse.template_labels`).
2. For every source model, every photo (aligned by `masking.align_faces`): the LEAM overall map
   (`leamface.model_maps`) against the leave-this-photo-out centroid of the person's other photos on that model
   (contrast target: minus seeded centroids of other people of the set), and the Grad-CAM map of its last default
   layer, both in the common template; computed once and reused by every target, budget and fill (cached under
   OUT/cache/).
   Ensembles (`ensemble:a+b`, `all-but-T`) average their members' maps.
3. Per unit (source, fill, budget) and probe photo: the LEAM mask (`leamface.select_pixels` with the recipe's
   selector, inside the face region) and
   the seeded controls of the same pixel count (bench.controls) are warped to the photo, filled (an occlusion
   fill, or the sparse cloak against the source's members), encoded in the recipe's format and decoded again as a
   user's photo would be, aligned with the original detection (or re-detected) and embedded by every target.
4. Genuine pairs (probe i, clean reference j): Δcos = cos(T(x_i), T(x_j)) − cos(T(protected x_i), T(x_j)); dodging
   at each FAR per pair and per photo; PSNR / SSIM / changed share of the protected probe inside its face box;
   per-gender splits; mean / std / 95 % bootstrap interval / n of every metric (bench.stats.summaries). Every
   cell also gives the dodging shares of the clean probes (variant `clean`, the target's false rejections), the
   floor a protected share is read against.
5. Robustness (recipe `[robustness] defences`): every decoded probe variant is additionally passed through each
   defence (bench.defences: JPEG, resize, blur applied to the whole photo; inpainting of exactly that variant's
   mask) and evaluated like step 4; each (source, target, budget, fill) then has one cell per defence, `defence`
   set ("none" = the photo as written). A defended cell also carries the variant `defence-only` for the blind
   defences: the clean probe under the same defence, i.e. what the defence alone does to recognition.

Each finished unit is written to OUT/cells/ as a JSON shard keyed by the recipe's cell fingerprint, the data, the
parser, `bench.units.UNIT_VERSION` and the unit's names; a rerun skips finished shards and computes only what is
missing (e.g. an added target).

Coordinates: template masks and maps are (S, S) in the common template; photo masks are (H, W) photo pixels.
Images are uint8 RGB. Cosines are plain floats.

Modules (this one is the orchestration, `run_transfer`):

- `bench.backend`: models, detector, parser, thresholds (`Backend`, injectable; `default_backend` is the zoo);
- `bench.transfer_run`: `TransferRun`, the caches around the masking stage (`facecloak.masking.stage`: alignment,
  maps, regions, selection), the masks and controls;
- `bench.cells`: the metrics of a cell (Δcos, dodging, image quality);
- `bench.probes`: fills, encoding, defences, re-detection and quality of one probe;
- `bench.units`: units, shards (resume) and executors (`local_units`; `bench.scale.ray_units` for Ray);
- `bench.transfer_figures`: figures and the report's notes.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from bench.backend import Backend, Network, default_backend
from bench.cells import cell_key
from bench.config import Recipe
from bench.probes import CLEAN, CLOAK, DEFENCE_ONLY, LEAM, NONE, encode_decode, face_box_slices, own_pipeline
from bench.report import (
    MAIN_BUDGET,
    PAPER_TRANSFER,
    environment_info,
    main_budget,
    render_markdown,
    summarise_cells,
    write_results,
    write_text,
)
from bench.transfer_figures import notes_section, write_figures
from bench.transfer_run import TransferRun, ensemble_map, loo_centroids
from bench.units import UnitExecutor, UnitJob, compute_unit, local_units, run_units, unit_key
from facecloak.errors import FacecloakError
from facecloak.progress import Progress, no_progress

__all__ = [  # the runner's public names, importable from here as before the split
    "CLEAN", "CLOAK", "DEFENCE_ONLY", "LEAM", "NONE", "Backend", "Network", "TransferRun", "UnitExecutor", "UnitJob",
    "cell_key", "compute_unit", "default_backend", "encode_decode", "ensemble_map", "face_box_slices",
    "local_units", "loo_centroids", "own_pipeline", "run_transfer", "unit_key",
]


def run_transfer(
    recipe: Recipe,
    data_dir: Path,
    out_dir: Path,
    *,
    backend: Backend | None = None,
    examples: bool = True,
    command: str = "",
    progress: Progress = no_progress,
    units: UnitExecutor | None = None,
) -> dict[str, Any]:
    """Run (or resume) a transfer benchmark; writes OUT/results.json, OUT/report.md, figures; returns the payload.
    units: where the units are computed (default `local_units`; `bench.scale.ray_units` for Ray)."""
    start = time.perf_counter()
    started = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    run = TransferRun(recipe, Path(data_dir), out, backend or default_backend(), progress)
    if not run.pairs:
        raise FacecloakError("no genuine pairs: every person needs two photos with a detected face")
    cells, counts = run_units(run, units)
    summary = summarise_cells(cells, main_budget(cells) or MAIN_BUDGET, recipe.fills[0] if recipe.fills else None)
    figures_written = write_figures(run, cells, examples)
    data = run.data
    payload: dict[str, Any] = {
        "recipe": recipe.name,
        "config": recipe.to_dict(),
        "environment": {**environment_info(), "command": command, "started": started,
                        "run_time_s": round(time.perf_counter() - start, 1),
                        "units_computed": counts["computed"], "units_resumed": counts["skipped"],
                        # compute time of every unit, earlier resumed runs included (run_time_s is this run's)
                        "unit_seconds_total": counts["unit_seconds"]},
        "data": {"root": data.root.name, "fingerprint": run.fingerprint, "parser": run.backend.parser_name,
                 "n_sampled": data.n_sampled, "no_face": list(data.no_face), "unreadable": list(data.unreadable),
                 "single_photo": list(data.single)},
        "n_photos": len(data.photos),
        "n_identities": len(data.identities),
        "n_no_face": len(data.no_face),
        "n_pairs": len(run.pairs),
        "n_probes": len(run.probes),
        "notes": run.notes,
        "figures": figures_written,
        "cells": cells,
        "summary": summary,
    }
    if "black" in recipe.fills:
        payload["paper"] = PAPER_TRANSFER
    write_results(out, payload)
    write_text(out, "report.md", render_markdown(payload) + notes_section(payload))
    return payload

