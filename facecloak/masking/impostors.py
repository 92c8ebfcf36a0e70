"""A small bank of other people's faces for the `contrast` LEAM target when the data brings none.

The faces come from photos that installed packages carry (`facecloak.photos.bundled`: skimage's astronaut, insightface's
group photo of six and its portrait): 8 identities. Their embeddings are computed once per model weights and
kept in memory and in the facecloak cache (`<cache>/impostors/<model>-<weights hash>.npy`): detecting and
embedding the bundled photos costs seconds, which a run should not pay again. The file holds embeddings of
those public sample photos only, never of a user's photo. It is keyed by a hash of the model's weights and of
`BANK_VERSION` (bump it when the photos, the detector or the alignment change), so other weights never reuse
it; a cache that cannot be written is skipped (the bank is then recomputed next run).
"""

from __future__ import annotations

import hashlib
import weakref
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from facecloak import paths
from facecloak.faces.align import align
from facecloak.faces.detect import default_detector
from facecloak.files import atomic_path
from facecloak.models import embed_crops, get_spec, model_device
from facecloak.photos.bundled import bundled_photos
from facecloak.verification.thresholds import load_thresholds

FALLBACK_SAME_PERSON_COSINE = 0.5  # used when a model has no calibrated threshold
BANK_VERSION = 1

_BANKS: weakref.WeakKeyDictionary[nn.Module, torch.Tensor] = weakref.WeakKeyDictionary()


def weights_digest(model: nn.Module) -> str:
    """sha256 (hex) of a module's parameters and buffers: names, dtypes, shapes and values, in state-dict order."""
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        t = tensor.detach().cpu().contiguous()
        digest.update(f"{name}|{t.dtype}|{tuple(t.shape)};".encode())
        digest.update(t.numpy().tobytes() if t.dtype != torch.bfloat16 else t.float().numpy().tobytes())
    return digest.hexdigest()


def bank_path(model_id: str, model: nn.Module) -> Path:
    """Where the bank of `model` (aligned to `model_id`'s template) is cached; a bank computed on a GPU is kept apart
    (its floats differ a little), so CPU runs never depend on which device filled the cache first."""
    key = hashlib.sha256(f"{BANK_VERSION}|{get_spec(model_id).template}|{weights_digest(model)}".encode()).hexdigest()
    on = model_device(model).type
    return paths.home() / "impostors" / f"{model_id}-{key[:24]}{'' if on == 'cpu' else '-' + on}.npy"


def compute_bank(model_id: str, model: nn.Module) -> torch.Tensor:
    """L2-normalised embeddings (K, D) of every face MTCNN finds in the bundled photos (no cache involved)."""
    template = get_spec(model_id).template
    crops = [
        align(image, face, template).crop
        for image in bundled_photos().values()
        for face in default_detector().detect(image)
    ]
    return F.normalize(embed_crops(model, np.stack(crops)), dim=1)


def _load(path: Path) -> torch.Tensor | None:
    try:
        bank = np.load(path, allow_pickle=False)
    except (OSError, ValueError):
        return None
    return torch.from_numpy(np.asarray(bank, np.float32)) if bank.ndim == 2 and len(bank) else None


def _store(path: Path, bank: torch.Tensor) -> None:
    """Atomic write (`facecloak.files.atomic_path`), so concurrent runs never read half a file. A read-only or
    full cache only costs the recomputation next run: protecting must not fail over it."""
    try:
        with atomic_path(path, durable=False) as tmp, open(tmp, "wb") as handle:
            np.save(handle, bank.numpy().astype(np.float32), allow_pickle=False)
    except OSError:
        return


def bundled_impostors(model_id: str, model: nn.Module) -> torch.Tensor:
    """L2-normalised embeddings (K, D) of the bundled faces under `model` (aligned to `model_id`'s template)."""
    if model not in _BANKS:
        path = bank_path(model_id, model)
        bank = _load(path)
        if bank is None:
            bank = compute_bank(model_id, model)
            _store(path, bank)
        _BANKS[model] = bank
    return _BANKS[model]


def impostors_for(model_id: str, model: nn.Module, references: torch.Tensor) -> torch.Tensor:
    """The bank minus any face that the model would match to one of `references` (N, D): the photo being
    protected may itself be a bundled one, and a person is no impostor of themselves."""
    bank = bundled_impostors(model_id, model)
    thr = load_thresholds(model_id)
    limit = thr.at("0.001") if thr is not None else FALLBACK_SAME_PERSON_COSINE
    sims = F.normalize(references.float(), dim=1) @ bank.to(references.device).T  # (N, K)
    keep = (sims < limit).all(dim=0)
    return bank.to(references.device)[keep]
