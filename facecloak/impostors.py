"""A small bank of other people's faces for the `contrast` LEAM target when the data brings none.

The faces come from photos that installed packages carry (skimage's astronaut, insightface's group photo of six
and its portrait): 8 identities. Their embeddings are computed on first use, per model and per process, and
kept in memory only: nothing is written to disk.
"""

from __future__ import annotations

import weakref
from functools import cache

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from facecloak.align import align
from facecloak.models import get_spec
from facecloak.thresholds import load_thresholds

FALLBACK_SAME_PERSON_COSINE = 0.5  # used when a model has no calibrated threshold


@cache
def _bank_faces() -> tuple[tuple[np.ndarray, object], ...]:
    from facecloak.demo import bundled_photos
    from facecloak.protection import default_detector

    faces = []
    for image in bundled_photos().values():
        for face in default_detector().detect(image):
            faces.append((image, face))
    return tuple(faces)


_BANKS: weakref.WeakKeyDictionary[nn.Module, torch.Tensor] = weakref.WeakKeyDictionary()


def bundled_impostors(model_id: str, model: nn.Module) -> torch.Tensor:
    """L2-normalised embeddings (K, D) of the bundled faces under `model` (aligned to `model_id`'s template)."""
    from facecloak.leamface import embed_crops

    if model not in _BANKS:
        template = get_spec(model_id).template
        crops = np.stack([align(image, face, template).crop for image, face in _bank_faces()])  # type: ignore[arg-type]
        _BANKS[model] = F.normalize(embed_crops(model, crops), dim=1)
    return _BANKS[model]


def impostors_for(model_id: str, model: nn.Module, references: torch.Tensor) -> torch.Tensor:
    """The bank minus any face that the model would match to one of `references` (N, D): the photo being
    protected may itself be a bundled one, and a person is no impostor of themselves."""
    bank = bundled_impostors(model_id, model)
    thr = load_thresholds(model_id)
    limit = thr.at("0.001") if thr is not None else FALLBACK_SAME_PERSON_COSINE
    sims = F.normalize(references.float(), dim=1) @ bank.T  # (N, K)
    keep = (sims < limit).all(dim=0)
    return bank[keep]
