"""What the page offers and what it reports: protection levels and the per-face verdict.

`LEVELS` are the library's levels (`facecloak.protection.levels`, the same as `facecloak protect --level`); the
verdict is the library's verification panel (`panel_verdicts`: independent local recognisers, each with its own
detection and alignment, re-reading the written file), or, where dlib is not installed, the source models
re-measuring it (`face_verdicts`, which says so).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from facecloak.errors import ConfigError
from facecloak.protection.levels import DEFAULT_LEVEL as LIBRARY_DEFAULT_LEVEL


@dataclass(frozen=True)
class Strength:
    """One protection choice: the fill and the budget (percent of each face's pixels that may change)."""

    fill: str
    budget: float
    label: str = ""
    models: tuple[str, ...] | None = None  # source models (None: the server's --models)
    cloak: Any = None  # facecloak.protection.cloak.CloakSettings for the cloak fill (None: its defaults)

    def as_json(self) -> dict[str, Any]:
        return {"fill": self.fill, "budget": self.budget, "label": self.label,
                **({"models": list(self.models)} if self.models else {})}  # fmt: skip


def _levels() -> dict[str, Strength]:
    from facecloak.protection.levels import LEVELS as LIBRARY_LEVELS
    from facecloak.protection.levels import ORDER

    out = {}
    for name in ORDER:
        lv = LIBRARY_LEVELS.get(name)
        out[name] = Strength(lv.fill, lv.budget, f"{name.title()}: {lv.summary}", lv.models,
                             lv.cloak if lv.fill == "cloak" else None)
    return out


LEVELS: dict[str, Strength] = _levels()
DEFAULT_LEVEL = LIBRARY_DEFAULT_LEVEL


def strength_for(level: str | None, fill: str | None = None, budget: float | None = None) -> Strength:
    """The strength of a request: a level name, or an explicit fill and/or budget (which override the level's)."""
    name = level or DEFAULT_LEVEL
    if name not in LEVELS:
        raise ConfigError(f"unknown level {name!r}; choose one of {', '.join(LEVELS)}")
    base = LEVELS[name]
    if fill is None and budget is None:
        return base
    from facecloak.masking.leamface import check_budget
    from facecloak.protection.fills import get_fill

    chosen_budget = base.budget if budget is None else check_budget(budget)
    chosen_fill = base.fill if fill is None else get_fill(fill).name
    return Strength(chosen_fill, chosen_budget, f"custom: {chosen_fill} {chosen_budget:g} %")


@dataclass(frozen=True)
class ModelCheck:
    """One source model on one face: cosine of the clean face and of the written file's face to the clean one.

    `threshold` is the model's calibrated cosine at FAR 1e-3 (None when uncalibrated); `matched` says whether the
    written face is still above it (None when there is no threshold).
    """

    model: str
    before: float | None  # None: not measured (e.g. a recogniser that compares with the original directly)
    after: float | None  # None: the model did not find the face in the written file
    threshold: float | None
    matched: bool | None


@dataclass(frozen=True)
class FaceVerdict:
    """Per face: which models still match it after protection, `matched_by` of `judged` models."""

    index: int
    box: tuple[float, float, float, float]  # (x1, y1, x2, y2) photo pixels
    pixels_changed: int
    checks: tuple[ModelCheck, ...]
    matched_by: int
    judged: int  # models with a calibrated threshold

    kind: str = "source models"  # who judged: "source models" or "local recognisers" (the independent panel)

    @property
    def summary(self) -> str:
        return f"still matched by {self.matched_by} of {self.judged} {self.kind}"

    def as_json(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "box": [round(v, 1) for v in self.box],
            "pixels_changed": self.pixels_changed,
            "matched_by": self.matched_by,
            "judged": self.judged,
            "summary": self.summary,
            "models": [
                {"model": c.model, "before": _round(c.before), "after": _round(c.after),
                 "threshold": _round(c.threshold), "matched": c.matched}
                for c in self.checks
            ],
        }  # fmt: skip


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


def face_verdicts(original: np.ndarray, result: Any, written: np.ndarray, far: float = 1e-3) -> tuple[FaceVerdict, ...]:
    """Re-measure each face of `written` (the protected file as decoded back from its bytes) on the source models.

    `original` is the unprotected photo (unused here: the clean references below already come from it; a panel of
    independent recognisers needs it to find and embed each face its own way). `result` is the
    `facecloak.ProtectResult` the file came from (its faces and clean references, kept in memory);
    the cosine after is measured on the written file, so JPEG re-encoding is accounted for. The fallback of
    `default_verifier` where the verification panel (`panel_verdicts`) cannot load (dlib not installed).
    """
    from facecloak.protection.protect import similarities
    from facecloak.verification.thresholds import load_thresholds

    faces = [outcome.face for outcome in result.faces]
    if not faces:
        return ()
    after = similarities(written, faces, result.models, result.references)
    thresholds = {m: load_thresholds(m) for m in result.models}
    verdicts = []
    for i, outcome in enumerate(result.faces):
        checks = []
        for m in result.models:
            table = thresholds[m]
            thr = table.at(far) if table is not None else None
            cos = float(after[m][i])
            checks.append(ModelCheck(m, float(outcome.cosine_before[m]), cos, thr, None if thr is None else cos >= thr))
        judged = [c for c in checks if c.matched is not None]
        x1, y1, x2, y2 = (float(v) for v in outcome.face.box)
        verdicts.append(FaceVerdict(
            i, (x1, y1, x2, y2), outcome.pixels_changed, tuple(checks),
            sum(bool(c.matched) for c in judged), len(judged),
        ))  # fmt: skip
    return tuple(verdicts)


def panel_verdicts(original: np.ndarray, result: Any, written: np.ndarray) -> tuple[FaceVerdict, ...]:
    """The library's verdict: each face of `written` (decoded from the file's bytes) as the independent local
    recognisers of `facecloak.verification.panel` see it, each with its own detection and alignment, against the
    same face in `original`. `before` is not measured (None): the reference is the original itself."""
    from facecloak.verification.panel import default_panel

    faces = [outcome.face for outcome in result.faces]
    if not faces:
        return ()
    panel = default_panel()
    boxes = [f.box for f in faces]
    verdicts = panel.verify(written, boxes, panel.references(original, boxes), sources=result.models)
    out = []
    for i, (outcome, v) in enumerate(zip(result.faces, verdicts, strict=True)):
        checks = tuple(
            ModelCheck(name, None, v.cosine.get(name), panel.thresholds[name],
                       (name in v.matched_by) if name in v.judged_by else None)
            for name in panel.names
        )
        x1, y1, x2, y2 = (float(c) for c in outcome.face.box)
        out.append(FaceVerdict(i, (x1, y1, x2, y2), outcome.pixels_changed, checks, v.k, v.m, "local recognisers"))
    return tuple(out)


def default_verifier() -> Any:
    """`panel_verdicts` when the verification panel loads (dlib installed), else `face_verdicts`."""
    from facecloak.errors import FacecloakError
    from facecloak.verification.panel import default_panel

    try:
        default_panel()
    except FacecloakError:
        return face_verdicts
    return panel_verdicts
