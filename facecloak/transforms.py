"""albumentations integration: `LeamOcclusion`, a thin shell over `facecloak.protect`.

Models are named, not passed, so the transform serialises with `A.to_dict` / `A.from_dict` (import
`facecloak.transforms` before `A.from_dict`: albumentations finds classes by their registered full name) and
pickles into DataLoader workers; each process loads the weights it needs the first time it applies the transform
(`facecloak.models.cached_model`, `facecloak.protection.protect.default_detector`, one copy per process).

Budget and fill may be sampled per image from a range / list, using albumentations' seeded generator, so
`A.Compose(..., seed=s)` gives the same output for the same input. Images without a face pass through
unchanged; masks, boxes and keypoints are never touched (an image-only transform).
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from typing import Any

import albumentations as A
import numpy as np

from facecloak.errors import ConfigError
from facecloak.faces.parse import PARSERS
from facecloak.masking.leamface import check_budget
from facecloak.protection.fills import get_fill
from facecloak.protection.protect import DEFAULT_MODELS


@lru_cache(maxsize=2)
def _parser(name: str) -> Any:
    """One face parser per process and name (loaded lazily, like the models)."""
    from facecloak.faces.parse import get_parser

    return get_parser(name)


class LeamOcclusion(A.ImageOnlyTransform):
    """Occlude (or cloak) the LEAM-selected pixels of every face.

    Args:
        models: source model ids whose relevance chooses the pixels (and, for "cloak", that are optimised against).
        budget: percent of face pixels in (0, 100], a number or a (low, high) range sampled uniformly per image.
        fill: a fill name or a list of names sampled uniformly per image (`facecloak.protection.fills.FILLS`, "cloak"
        included).
        cloak_steps: optimisation steps when the fill is "cloak".
        parser: face parser bounding the face region, a name from `facecloak.faces.parse.PARSERS`: "facemesh" (default)
            or "landmarks5" (no weights).
        device: where the models (and the cloak) run: "cpu" (default: safe in forked DataLoader workers), "cuda",
            "cuda:N" or "auto"; resolved in the process that applies the transform.
        p: probability of applying the transform.
    Targets: image (uint8 RGB, H x W x 3).
    """

    def __init__(
        self,
        models: Sequence[str] = DEFAULT_MODELS,
        budget: float | tuple[float, float] = 1.0,
        fill: str | Sequence[str] = "black",
        cloak_steps: int = 20,
        parser: str = "facemesh",
        device: str = "cpu",
        p: float = 1.0,
    ) -> None:
        from facecloak.masking.stage import resolve_device
        from facecloak.models import get_spec

        super().__init__(p=p)
        self.models = tuple(models)
        self.budget: float | tuple[float, float] = (
            (check_budget(budget[0]), check_budget(budget[1])) if isinstance(budget, (list, tuple))
            else check_budget(budget)
        )
        self.fill: str | tuple[str, ...] = fill if isinstance(fill, str) else tuple(fill)
        self.cloak_steps = int(cloak_steps)
        self.parser = parser
        self.device = str(device)
        resolve_device(self.device)  # an unknown or missing device is refused here, not in a worker
        if isinstance(self.budget, tuple) and self.budget[0] > self.budget[1]:
            raise ConfigError(f"a budget range needs low <= high, got {budget}")
        fills = (self.fill,) if isinstance(self.fill, str) else self.fill
        if not fills:
            raise ConfigError("fill must name at least one fill")
        for name in fills:
            get_fill(name)
        if not self.models:
            raise ConfigError("models must name at least one source model")
        for model in self.models:
            get_spec(model)  # names only: weights load lazily, in the process that applies the transform
        if parser not in PARSERS:
            raise ConfigError(f"unknown parser {parser!r}; choose from {', '.join(PARSERS)}")
        if self.cloak_steps < 0:
            raise ConfigError(f"cloak_steps must be >= 0, got {cloak_steps}")

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ("models", "budget", "fill", "cloak_steps", "parser", "device")

    def get_params(self) -> dict[str, Any]:
        # Parameter names differ from the attributes on purpose: albumentations copies an attribute called `fill`
        # into the params of every call (for its geometric transforms), which would override a sampled value.
        rng: np.random.Generator = self.random_generator
        budget = self.budget if isinstance(self.budget, float) else float(rng.uniform(*self.budget))
        fill = self.fill if isinstance(self.fill, str) else str(self.fill[int(rng.integers(len(self.fill)))])
        return {"leam_budget": budget, "leam_fill": fill, "leam_seed": int(rng.integers(0, 2**31 - 1))}

    def apply(
        self,
        img: np.ndarray,
        leam_budget: float = 1.0,
        leam_fill: str = "black",
        leam_seed: int = 0,
        **params: Any,
    ) -> np.ndarray:
        from facecloak.protection.cloak import CloakSettings
        from facecloak.protection.protect import protect

        if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
            raise ConfigError(f"LeamOcclusion expects uint8 RGB images (H, W, 3), got {img.dtype} {img.shape}")
        result = protect(
            img,
            models=self.models,
            budget=leam_budget,
            fill=leam_fill,
            seed=leam_seed,
            cloak_settings=CloakSettings(steps=self.cloak_steps),
            parser=_parser(self.parser),
            device=self.device,
        )
        return result.image
