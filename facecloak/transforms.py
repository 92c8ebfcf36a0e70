"""albumentations integration: `LeamOcclusion`, a thin shell over `facecloak.protect`.

Models are named, not passed, so the transform serialises with `A.to_dict` / `A.from_dict` and pickles into
DataLoader workers; each process loads the weights it needs the first time it applies the transform.
Budget and fill may be sampled per image from a range / list, using albumentations' seeded generator, so
`A.Compose(..., seed=s)` gives the same output for the same input. Images without a face pass through
unchanged; masks, boxes and keypoints are never touched (an image-only transform).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import albumentations as A
import numpy as np

from facecloak.errors import ConfigError
from facecloak.protect import DEFAULT_MODELS, FILL_NAMES


class LeamOcclusion(A.ImageOnlyTransform):
    """Occlude (or cloak) the LEAM-selected pixels of every face.

    Args:
        models: source model ids whose relevance chooses the pixels.
        budget: percent of face pixels, a number or a (low, high) range sampled uniformly per image.
        fill: a fill name or a list of names sampled uniformly per image (see `facecloak.fills`, plus "cloak").
        cloak_steps: optimisation steps when the fill is "cloak".
        p: probability of applying the transform.
    Targets: image (uint8 RGB, H x W x 3).
    """

    def __init__(
        self,
        models: Sequence[str] = DEFAULT_MODELS,
        budget: float | tuple[float, float] = 1.0,
        fill: str | Sequence[str] = "black",
        cloak_steps: int = 20,
        p: float = 1.0,
    ) -> None:
        super().__init__(p=p)
        self.models = tuple(models)
        self.budget = tuple(budget) if isinstance(budget, (list, tuple)) else float(budget)
        self.fill = fill if isinstance(fill, str) else tuple(fill)
        self.cloak_steps = int(cloak_steps)
        lo, hi = (self.budget, self.budget) if isinstance(self.budget, float) else self.budget
        if not 0 < lo <= hi <= 100:
            raise ConfigError(f"budget must lie in (0, 100] with low <= high, got {budget}")
        for name in (self.fill,) if isinstance(self.fill, str) else self.fill:
            if name not in FILL_NAMES:
                raise ConfigError(f"unknown fill {name!r}; choose from {', '.join(FILL_NAMES)}")

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ("models", "budget", "fill", "cloak_steps")

    def get_params(self) -> dict[str, Any]:
        rng: np.random.Generator = self.random_generator
        budget = self.budget if isinstance(self.budget, float) else float(rng.uniform(*self.budget))
        fill = self.fill if isinstance(self.fill, str) else str(self.fill[int(rng.integers(len(self.fill)))])
        return {"budget": budget, "fill": fill, "seed": int(rng.integers(0, 2**31 - 1))}

    def apply(self, img: np.ndarray, budget: float = 1.0, fill: str = "black", seed: int = 0, **params: Any) -> np.ndarray:
        from facecloak.cloak import CloakSettings
        from facecloak.protect import protect

        if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
            raise ConfigError(f"LeamOcclusion expects uint8 RGB images (H, W, 3), got {img.dtype} {img.shape}")
        result = protect(
            img, models=self.models, budget=budget, fill=fill, seed=seed,
            cloak_settings=CloakSettings(steps=self.cloak_steps),
        )
        return result.image
