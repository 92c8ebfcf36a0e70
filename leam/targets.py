"""Targets: callables turning raw embeddings (N, D) into one identity score per sample (N,).

A target that holds one reference per sample supports `target[start:stop]`, which returns the target for those
rows; `compute_relevance` uses it to work in batches. A plain function is used unchanged for every batch.

References are detached: gradients flow only through the embeddings of the forward being explained.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol, runtime_checkable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .errors import LeamError, ZeroGradientTargetError

SELF_COSINE_EXPLANATION = (
    "the cosine of an embedding with (a copy of) itself is 1 whatever the input, so its gradient is zero and every "
    "relevance map would be empty; use a reference that is not this photo's own embedding: reference_target "
    "(other photos of the person), flip_target (the mirrored photo) or Contrast (against impostors)"
)


@runtime_checkable
class Target(Protocol):
    def __call__(self, embeddings: Tensor) -> Tensor: ...


def _cos(embeddings: Tensor, others: Tensor) -> Tensor:
    return F.cosine_similarity(embeddings, others, dim=-1, eps=1e-8)


def _check_rows(kind: str, reference: Tensor, embeddings: Tensor) -> None:
    if embeddings.ndim != 2:
        raise LeamError(f"{kind} expects embeddings of shape (N, D), got {tuple(embeddings.shape)}")
    if reference.shape[-1] != embeddings.shape[1]:
        raise LeamError(f"{kind}: reference has dimension {reference.shape[-1]}, embeddings {embeddings.shape[1]}")
    if reference.ndim >= 2 and reference.shape[0] != embeddings.shape[0]:
        raise LeamError(
            f"{kind} holds one reference per sample ({reference.shape[0]} rows) but got {embeddings.shape[0]} "
            "embeddings; slice the target with target[start:stop] or pass a single (D,) reference"
        )


class CosineTo:
    """s = cos(e, r) with a fixed reference `r`: (D,) shared by all samples, or (N, D) one per sample."""

    def __init__(self, reference: Tensor) -> None:
        if reference.ndim not in (1, 2):
            raise LeamError(f"CosineTo reference must be (D,) or (N, D), got {tuple(reference.shape)}")
        self.reference = reference.detach()

    def __call__(self, embeddings: Tensor) -> Tensor:
        _check_rows("CosineTo", self.reference, embeddings)
        return _cos(embeddings, self.reference.to(embeddings))

    def __getitem__(self, rows: slice) -> CosineTo:
        return self if self.reference.ndim == 1 else CosineTo(self.reference[rows])

    def __repr__(self) -> str:
        return f"CosineTo(reference={tuple(self.reference.shape)})"


class Contrast:
    """s = cos(e, r) − mean_j cos(e, c_j): identity against a few impostor centroids.

    `reference` is (D,) or (N, D); `impostors` is (K, D) shared by all samples or (N, K, D) per sample.
    Subtracting the impostors removes what all faces share, so the map shows what is specific to this person.
    """

    def __init__(self, reference: Tensor, impostors: Tensor) -> None:
        if reference.ndim not in (1, 2):
            raise LeamError(f"Contrast reference must be (D,) or (N, D), got {tuple(reference.shape)}")
        if impostors.ndim not in (2, 3) or impostors.shape[-2] == 0:
            raise LeamError(f"Contrast impostors must be (K, D) or (N, K, D) with K >= 1, got {tuple(impostors.shape)}")
        if impostors.shape[-1] != reference.shape[-1]:
            raise LeamError("Contrast: reference and impostors have different embedding dimensions")
        self.reference = reference.detach()
        self.impostors = impostors.detach()

    def __call__(self, embeddings: Tensor) -> Tensor:
        _check_rows("Contrast", self.reference, embeddings)
        _check_rows("Contrast", self.impostors if self.impostors.ndim == 3 else self.impostors[0], embeddings)
        impostors = self.impostors.to(embeddings)
        if impostors.ndim == 2:
            impostors = impostors.unsqueeze(0)  # (1, K, D), broadcast over the batch
        genuine = _cos(embeddings, self.reference.to(embeddings))
        return genuine - _cos(embeddings.unsqueeze(1), impostors).mean(dim=1)

    def __getitem__(self, rows: slice) -> Contrast:
        reference = self.reference if self.reference.ndim == 1 else self.reference[rows]
        impostors = self.impostors if self.impostors.ndim == 2 else self.impostors[rows]
        return Contrast(reference, impostors)

    def __repr__(self) -> str:
        return f"Contrast(reference={tuple(self.reference.shape)}, impostors={tuple(self.impostors.shape)})"


class SelfCosine:
    """The cosine of an embedding with itself. It exists only to refuse it, with the reason."""

    def __init__(self) -> None:
        raise ZeroGradientTargetError(f"SelfCosine is not a usable target: {SELF_COSINE_EXPLANATION}")


def reference_target(embeddings: Tensor) -> CosineTo:
    """Leave-this-photo-out centroid target for N >= 2 photos of one person (embeddings (N, D), same order as x).

    For photo i the reference is r_i = normalise(mean_{j != i} normalise(e_j)): each embedding is L2-normalised
    first so that no photo weighs more because its raw embedding is longer.
    """
    if embeddings.ndim != 2:
        raise LeamError(f"reference_target expects embeddings (N, D), got {tuple(embeddings.shape)}")
    n = embeddings.shape[0]
    if n < 2:
        raise LeamError("reference_target needs at least 2 photos of the person; with a single photo use flip_target")
    unit = F.normalize(embeddings.detach().double(), dim=1)
    others = (unit.sum(dim=0, keepdim=True) - unit) / (n - 1)
    return CosineTo(F.normalize(others, dim=1).to(embeddings.dtype))


@torch.no_grad()
def embed(model: nn.Module, x: Tensor, batch_size: int | None = None) -> Tensor:
    """Embeddings of `x` in eval mode without gradients (the model's train/eval flags are restored)."""
    training = [(m, m.training) for m in model.modules()]
    try:
        model.eval()
        step = batch_size or x.shape[0]
        return torch.cat([model(x[i : i + step]) for i in range(0, x.shape[0], step)])
    finally:
        for module, mode in training:
            module.training = mode


def flip_target(model: nn.Module, x: Tensor, batch_size: int | None = None) -> CosineTo:
    """Single-photo target: r_i = embedding of the horizontally mirrored crop x_i (N, 3, H, W), detached.

    A perfectly mirror-symmetric crop gives r_i = e_i, which `compute_relevance` refuses as a zero gradient.
    """
    if x.ndim != 4:
        raise LeamError(f"flip_target expects a batch (N, 3, H, W), got {tuple(x.shape)}")
    return CosineTo(embed(model, torch.flip(x, dims=[3]), batch_size))


def target_rows(target: Callable[[Tensor], Tensor], start: int, stop: int) -> Callable[[Tensor], Tensor]:
    """The target for rows start:stop of a batch (per-sample targets are sliced, plain functions are shared)."""
    getitem = getattr(target, "__getitem__", None)
    return getitem(slice(start, stop)) if getitem is not None else target
