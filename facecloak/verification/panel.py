"""Is a protected photo still recognised? The verdict of a panel of independent local recognisers.

Each panel member reads the photo through its own detection, landmarks and alignment
(`facecloak.verification.independent`), never through facecloak's crops. A face is *matched* by a member when that
member finds it in the protected photo and its embedding reaches the member's FAR 1e-3 threshold against the
reference: the person's reference photos when given, otherwise the unprotected original itself. Matching a photo to
its own original is the strictest test there is (another photo of the person is always further away), so "not
matched by any" here is a conservative "protected". A member that cannot find the face in the original either cannot
judge it and is left out of that face's count.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from facecloak.errors import ConfigError
from facecloak.verification.independent import (
    NETWORK_OF,
    SeenFace,
    get_independent,
    match_faces,
    read_photo,
    threshold_id,
)
from facecloak.verification.thresholds import load_thresholds

DEFAULT_PANEL = ("dlib", "arcface", "hse")
FAR = 1e-3


@dataclass(frozen=True)
class FaceVerdict:
    """One face: which panel members still match it (k of m able to judge) and their cosines."""

    box: tuple[float, float, float, float]
    matched_by: tuple[str, ...]
    judged_by: tuple[str, ...]  # members that found the face in the reference (m = len)
    cosine: dict[str, float | None] = field(default_factory=dict)  # None: the member found no face there
    held_out: tuple[str, ...] = ()  # members whose network did not make the protection

    @property
    def k(self) -> int:
        return len(self.matched_by)

    @property
    def m(self) -> int:
        return len(self.judged_by)

    @property
    def protected(self) -> bool:
        """Verified protected: at least one member could judge the face and none matched it."""
        return self.m > 0 and self.k == 0

    def as_json(self) -> dict:
        return {"matched_by": list(self.matched_by), "k": self.k, "m": self.m, "protected": self.protected,
                "cosine": {n: (None if c is None else round(c, 4)) for n, c in self.cosine.items()},
                "held_out": list(self.held_out)}

    def text(self) -> str:
        return verdict_text(self.matched_by, self.m)


def verdict_text(matched_by: Sequence[str], m: int) -> str:
    """One line for a face's verdict: who of the `m` panel members able to judge it still match it. Works on
    `FaceVerdict` and on its JSON form (`as_json()["matched_by"]`, `["m"]`), which is what reports keep."""
    if m == 0:
        return "not verifiable (no panel recogniser finds this face in the original)"
    who = f" ({', '.join(matched_by)})" if matched_by else ""
    return f"matched by {len(matched_by)} of {m} local recognisers{who}"


class Panel:
    """Independent recognisers with their thresholds, loaded once; `verify` judges one protected photo."""

    def __init__(self, names: Sequence[str] = DEFAULT_PANEL) -> None:
        if not names:
            raise ConfigError("the verification panel needs at least one recogniser")
        self.recognisers = [get_independent(n) for n in names]
        self.thresholds: dict[str, float] = {}
        for r in self.recognisers:
            t = load_thresholds(threshold_id(r.id))
            if t is None:
                raise ConfigError(f"no calibrated threshold for the {r.id!r} verifier; reinstall facecloak or run "
                                  "`facecloak bench calibrate-independent`")
            self.thresholds[r.id] = t.at(FAR)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(r.id for r in self.recognisers)

    def read(self, rgb: np.ndarray) -> dict[str, list[SeenFace]]:
        return read_photo(rgb, self.recognisers)

    def references(
        self, original: np.ndarray | Mapping[str, list[SeenFace]], boxes: Sequence[Sequence[float]]
    ) -> list[dict[str, np.ndarray]]:
        """Per face box, each member's embedding of that face in the unprotected photo (members that do not
        find it are absent)."""
        seen = self.read(original) if isinstance(original, np.ndarray) else original
        out: list[dict[str, np.ndarray]] = [{} for _ in boxes]
        for name, faces in seen.items():
            for i, f in enumerate(match_faces(boxes, faces)):
                if f is not None:
                    out[i][name] = f.embedding[None]
        return out

    def verify(
        self,
        protected: np.ndarray,
        boxes: Sequence[Sequence[float]],
        references: Sequence[Mapping[str, np.ndarray]],
        *,
        sources: Sequence[str] = (),
    ) -> tuple[FaceVerdict, ...]:
        """Verdict per face of `protected` (uint8 RGB, as decoded from the written file). `references[i]`:
        member -> (R, D) unit embeddings of face i's identity; `sources`: the models that made the protection."""
        seen = self.read(protected)
        matched = {name: match_faces(boxes, faces) for name, faces in seen.items()}
        held_out = tuple(n for n in self.names if NETWORK_OF.get(n) not in set(sources))
        verdicts = []
        for i, box in enumerate(boxes):
            judged, hits, cos = [], [], {}
            for name in self.names:
                ref = references[i].get(name)
                if ref is None:
                    continue
                judged.append(name)
                face = matched[name][i]
                c = None if face is None else float(np.max(ref @ face.embedding))
                cos[name] = c
                if c is not None and c >= self.thresholds[name]:
                    hits.append(name)
            verdicts.append(FaceVerdict(tuple(float(v) for v in box[:4]), tuple(hits), tuple(judged),  # type: ignore[arg-type]
                                        cos, held_out))
        return tuple(verdicts)


def verify(
    original: np.ndarray,
    protected: np.ndarray,
    *,
    boxes: Sequence[Sequence[float]] | None = None,
    panel: Panel | None = None,
    sources: Sequence[str] = (),
) -> tuple[FaceVerdict, ...]:
    """The panel's verdict on `protected` (uint8 RGB as decoded from the file you will publish) against
    `original`, per face: `boxes` (x0, y0, x1, y1 photo pixels, e.g. `[f.face.box for f in result.faces]`),
    or every face the panel finds in the original. `sources`: the models that made the protection."""
    panel = panel or default_panel()
    seen = panel.read(original)
    if boxes is None:
        boxes = [f.box for f in max(seen.values(), key=len)] if seen else []
    return panel.verify(protected, boxes, panel.references(seen, boxes), sources=sources)


_PANELS: dict[tuple[str, ...], Panel] = {}


def default_panel(names: Sequence[str] = DEFAULT_PANEL) -> Panel:
    """The panel of `names`, loaded once per process."""
    key = tuple(names)
    if key not in _PANELS:
        _PANELS[key] = Panel(key)
    return _PANELS[key]
