"""Per-recogniser cosine thresholds at fixed false-accept rates.

Calibrated by `facecloak models calibrate` on a large seeded sample of different-person pairs (LFW gives
millions), because a small set cannot resolve FAR 1e-3. The user's own calibration (in the cache) wins over
the table shipped with the package (`facecloak/data/thresholds.json`, produced by the same command; its
provenance is stored beside the numbers).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from facecloak import paths
from facecloak.files import atomic_write_bytes

FARS = ("0.01", "0.001", "0.0001")


@dataclass(frozen=True)
class Thresholds:
    recogniser: str
    at_far: dict[str, float]  # FAR as a string ("0.001") -> cosine threshold
    n_impostor: int
    n_photos: int
    data: str
    seed: int
    origin: str  # "user cache" or "shipped"

    def at(self, far: float | str) -> float:
        key = far if isinstance(far, str) else f"{far:g}"
        key = {"1e-02": "0.01", "1e-03": "0.001", "1e-04": "0.0001"}.get(key, key)
        if key not in self.at_far:
            raise KeyError(f"no threshold at FAR {far} for {self.recogniser} (have {', '.join(self.at_far)})")
        return self.at_far[key]


def _user_file() -> Path:
    return paths.home() / "thresholds.json"


def _read(path_text: str | None) -> dict:
    return json.loads(path_text) if path_text else {}


def _shipped() -> dict:
    ref = resources.files("facecloak") / "data" / "thresholds.json"
    return _read(ref.read_text()) if ref.is_file() else {}


def load_thresholds(recogniser: str) -> Thresholds | None:
    """The user's calibration if any, else the shipped one, else None."""
    user = _read(_user_file().read_text()) if _user_file().is_file() else {}
    for table, origin in ((user, "user cache"), (_shipped(), "shipped")):
        if recogniser in table:
            d = table[recogniser]
            return Thresholds(
                recogniser, dict(d["at_far"]), d["n_impostor"], d["n_photos"], d["data"], d["seed"], origin
            )
    return None


def save_thresholds(entries: dict[str, dict], target: Path | None = None) -> Path:
    """Merge calibration entries into the user table (or `target`, e.g. the shipped file)."""
    target = target or _user_file()
    table = _read(target.read_text()) if target.is_file() else {}
    table.update(entries)
    atomic_write_bytes(target, (json.dumps(table, indent=2, sort_keys=True) + "\n").encode())
    return target
