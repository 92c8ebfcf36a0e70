"""results.json writing, report.md / patterns.md rendering, and the PNG figures."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bench import figures
from bench.report import (
    PAPER_PATTERNS,
    PAPER_TRANSFER,
    delta_key,
    dodge_key,
    far_label,
    render_markdown,
    render_patterns_markdown,
    summarise_cells,
    write_results,
)


def cell(source: str, target: str, budget: float, leam: float, scatter: float, **extra: object) -> dict:
    return {
        "source": source, "target": target, "budget": budget, "fill": "black", "n_pairs": 12,
        "delta_cos_leam": leam, "delta_cos_random_scatter": scatter, "delta_cos_random_shape": scatter / 2,
        "dodge_far_1e-3_leam": 0.25, "dodge_far_1e-3_random_scatter": 0.0, "dodge_photo_far_1e-3_leam": 0.125,
        "psnr": 30.0, "ssim": 0.95, "changed_share": 0.01, **extra,
    }


CELLS = [
    cell("a", "a", 1.0, 0.20, 0.05, stats={"delta_cos_leam": {"mean": 0.2, "std": 0.02, "ci95": [0.19, 0.21],
                                                              "n": 12}}),
    cell("a", "b", 1.0, 0.10, 0.05),
    cell("b", "a", 1.0, 0.06, 0.03),
    cell("b", "b", 1.0, 0.30, 0.10, by_gender={"female": {"delta_cos_leam": 0.4, "n_pairs": 6}}),
    cell("a", "b", 2.0, 0.15, 0.08),
    cell("a", "b", 1.0, 0.01, 0.01, defence="jpeg75"),
]


def payload() -> dict:
    return {
        "recipe": "tiny",
        "config": {"name": "tiny", "description": "a tiny test recipe", "budgets": [1.0, 2.0]},
        "environment": {"command": "facecloak bench run --recipe tiny", "run_time_s": 3725.0, "platform": "Linux",
                        "cpu_count": 2, "torch": "2.13.0"},
        "n_photos": 12, "n_identities": 4, "n_no_face": 1,
        "cells": CELLS,
        "summary": summarise_cells(CELLS),
        "paper": PAPER_TRANSFER,
    }


def test_key_names_follow_the_issue() -> None:
    assert far_label(0.001) == "1e-3" and far_label(0.01) == "1e-2" and far_label(0.05) == "5e-2"
    assert dodge_key(0.001, "leam") == "dodge_far_1e-3_leam"
    assert dodge_key(0.001, "random-scatter", per="photo") == "dodge_photo_far_1e-3_random_scatter"
    assert delta_key("random-shape") == "delta_cos_random_shape"


def test_summary_averages_budget_1_and_transfer_cells_only() -> None:
    s = summarise_cells(CELLS)
    assert s["n_cells"] == 4 and s["n_transfer_cells"] == 2  # the defended cell and the 2 % cell are left out
    assert s["delta_cos_leam"] == pytest.approx((0.20 + 0.10 + 0.06 + 0.30) / 4)
    assert s["transfer_delta_cos_leam"] == pytest.approx((0.10 + 0.06) / 2)
    assert s["transfer_delta_cos_random_scatter"] == pytest.approx((0.05 + 0.03) / 2)
    # Ensembles and leave-one-out sources are classified by their members.
    loo = summarise_cells([cell("all-but-T", "a", 1.0, 0.1, 0.0), cell("ensemble:a+b", "a", 1.0, 0.3, 0.0)])
    assert loo["n_transfer_cells"] == 1 and loo["transfer_delta_cos_leam"] == pytest.approx(0.1)


def test_render_markdown_has_run_tables_and_paper_column() -> None:
    md = render_markdown(payload())
    assert "`facecloak bench run --recipe tiny`" in md
    assert "1 h 2 min 5 s" in md
    assert "CPUs: 2" in md and "torch 2.13.0" in md
    assert "12 photos of 4 people; 1 photos without a detected face" in md
    assert "| Δcos LEAM | 0.1650 | 0.0800 | 0.1148 |" in md  # all cells, transfer cells, paper
    assert "ratio LEAM / random-scatter | 2.87× | 2.00× | 4.01× |" in md
    assert "### Δcos LEAM, fill black, budget 1 %" in md
    assert "0.2000 ± 0.020 ⁽ʷᵇ⁾" in md  # white-box cell with its std
    assert "n = 12 genuine pairs in every cell" in md
    assert "LEAM FAR 1e-3 (pair)" in md and "25.0 %" in md and "12.5 %" in md
    assert "| a | black | 1 % | 30.00 | 0.9500 | 1.00 % |" in md
    assert "| female | 0.4000 |" in md
    assert "## Robustness" in md and "jpeg75" in md
    assert '"description": "a tiny test recipe"' in md


def test_render_markdown_without_cells_or_paper() -> None:
    md = render_markdown({"recipe": "empty", "cells": []})
    assert "No cells were computed." in md and "paper" not in md


def test_write_results_is_atomic_and_json_safe(tmp_path: Path) -> None:
    data = payload()
    data["cells"] = [{**CELLS[0], "psnr": float("inf")}]
    path = write_results(tmp_path / "out", data)
    assert path == tmp_path / "out" / "results.json"
    back = json.loads(path.read_text(encoding="utf-8"))
    assert back["cells"][0]["psnr"] is None  # infinity is not JSON
    assert back["summary"]["delta_cos_leam"] == pytest.approx(data["summary"]["delta_cos_leam"])
    assert [p.name for p in path.parent.iterdir()] == ["results.json"]  # no temp file left


def test_render_patterns_markdown() -> None:
    same = {"mean": 0.41, "std": 0.05, "n": 30}
    diff = {"mean": 0.08, "std": 0.03, "n": 90}
    data = {
        "models": {
            "mbf-arc": {
                "bc_full": {"same": same, "different": diff, "p_value": 2e-9},
                "bc_mask": {"same": {"mean": 0.2, "std": 0.1, "n": 30}, "different": diff, "p_value": 0.004},
                "region_shares": {"nose": 0.221, "eyes": 0.3, "other": 0.479},
                "layers": {"stage1": {"region_shares": {"nose": 0.1, "eyes": 0.5}}},
                "layer_diversity": 0.35,
            }
        },
        "n_photos": 61, "n_identities": 13,
        "cross_model_bc": {"mbf-arc": {"mbf-arc": 1.0, "mobileface": 0.7}},
        "paper": PAPER_PATTERNS,
    }
    md = render_patterns_markdown(data)
    assert "61 photos of 13 people" in md
    assert "| **mbf-arc** | 0.410 ± 0.050 (n=30) | 0.080 ± 0.030 (n=90) | 2.0e-09 |" in md
    assert "| 0.004 | 22.1 % |" in md
    assert "| *paper* | 0.32–0.57 | 0.04–0.13 |" in md and "18.9–29.7 %" in md
    assert "### Per layer: mbf-arc" in md and "| stage1 | 10.0 % | 50.0 % |" in md
    assert "| mbf-arc | 0.350 |" in md
    assert "| mbf-arc | 1.000 | 0.700 |" in md


def _png(path: Path) -> tuple[int, int]:
    assert path.is_file() and path.stat().st_size > 2000
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(path) as im:
        return im.size


def test_figures_write_png_files(tmp_path: Path) -> None:
    w, h = _png(figures.transfer_heatmap(CELLS, tmp_path / "heat.png"))
    assert w > 200 and h > 100
    _png(figures.heatmap(np.array([[0.1, np.nan]]), ["s"], ["t1", "t2"], tmp_path / "h2.png"))
    _png(figures.deletion_curves_from_cells(CELLS, tmp_path / "deletion.png"))
    _png(figures.deletion_curves([0.5, 1, 2], {"LEAM": [0.1, 0.2, 0.3]}, tmp_path / "d2.png",
                                 bands={"LEAM": ([0.05, 0.15, 0.25], [0.15, 0.25, 0.35])}))
    rng = np.random.default_rng(0)
    _png(figures.bc_histograms(rng.uniform(0.3, 0.6, 50), rng.uniform(0.0, 0.2, 80), tmp_path / "bc.png"))
    _png(figures.region_share_bars({"a": {"nose": 0.2, "eyes": 0.3}, "b": {"nose": 0.25}}, tmp_path / "bars.png"))
    photos = [rng.integers(0, 256, (64, 64, 3), dtype=np.uint8) for _ in range(2)]
    masks = [np.zeros((64, 64), bool) for _ in range(2)]
    masks[0][10:12, 10:12] = True
    _png(figures.example_grid(photos, masks, tmp_path / "grid.png", titles=["p1", "p2"], protected=photos))
    assert not list(tmp_path.glob(".*.part"))


def test_overlay_mask_paints_exactly_the_mask() -> None:
    photo = np.zeros((4, 4, 3), np.uint8)
    mask = np.zeros((4, 4), bool)
    mask[1, 2] = True
    out = figures.overlay_mask(photo, mask)
    assert out[1, 2].tolist() == [255, 0, 0]
    assert int(out.sum()) == 255 and photo.sum() == 0
    with pytest.raises(ValueError, match="mask shape"):
        figures.overlay_mask(photo, mask[:2])


def test_speed_report_gives_no_ratio_for_a_marginal_that_is_noise() -> None:
    """A real run (`bench/results/speed-protect-hog-cache`): deface's folder of 4 LFW photos finished faster than its
    median one-photo start-up, so its marginal is negative; the report once divided by it (a ratio of 10^9 x)."""
    from bench.speed_protect import marginal_ratio, report

    saved = json.loads((Path(__file__).resolve().parents[1] / "bench" / "results" / "speed-protect-hog-cache"
                        / "speed_protect.json").read_text())
    assert saved["sets"]["lfw"]["deface"]["marginal_cpu_s_per_photo"] < 0
    md = report(saved["environment"], saved["sets"], saved["cloak"], saved["profile"], saved["memory"],
                saved["torch_import"], saved["levels"])
    lfw_rows = [line for line in md.splitlines() if line.startswith("| lfw") and "level high" in line]
    assert len(lfw_rows) == 2 and all("| n/a" in row for row in lfw_rows), lfw_rows
    assert "lfw: facecloak / deface:" in md and "marginal n/a" in md
    assert marginal_ratio(7.14, 0.174, ".0f") == "41x" and marginal_ratio(0.2, -0.01, ".2f").startswith("n/a")
