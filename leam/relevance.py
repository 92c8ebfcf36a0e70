"""LEAM relevance: per-layer maps of one model for a batch of aligned crops, and their overall mean.

All maps are in the crop's own pixel grid (the model's template space), H × W, each a distribution
(non-negative, sums to 1 over the pixels).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .capture import INPUT_LAYER, capture
from .errors import LeamError, ZeroGradientTargetError
from .methods import METHODS, gradxact
from .targets import SELF_COSINE_EXPLANATION, target_rows

# Float32 rounding leaves the gradient of cos(e, e) at about 5e-7 / |e| (measured for |e| from 1e-3 to 1e3), so
# an absolute threshold alone misses it for short embeddings; ‖g‖·‖e‖ is scale-free for cosine targets.
ZERO_GRAD_ABS = 1e-8
ZERO_GRAD_REL = 1e-5


@dataclass(frozen=True, eq=False)  # tensors have no single truth value to compare by
class Relevance:
    """LEAM maps of N crops (template space, H × W pixels).

    layer_maps (N, L, H, W) float32: P_l, each a distribution, or all zeros for the pairs listed in `empty`.
    overall    (N, H, W) float32: sum_l w_l P_l over the sample's non-empty layers, weights renormalised;
               all zeros only for a sample whose every layer is empty.
    empty      (sample index, layer name) pairs whose raw map was all zero; reported, never averaged in.
    scores     (N,) the target score of each crop (detached).
    weights    the layer weights as given (normalised to sum to 1).
    """

    layers: tuple[str, ...]
    method: str
    layer_maps: Tensor
    overall: Tensor
    empty: tuple[tuple[int, str], ...]
    scores: Tensor
    weights: tuple[float, ...]

    @property
    def empty_samples(self) -> tuple[int, ...]:
        """Samples with no relevance in any layer (their overall map is all zeros)."""
        return tuple(int(i) for i in torch.nonzero(self.overall.flatten(1).sum(1) == 0).flatten())


def _layer_weights(weights: Sequence[float] | None, n_layers: int) -> Tensor:
    if weights is None:
        return torch.full((n_layers,), 1.0 / n_layers, dtype=torch.float64)
    w = torch.as_tensor(list(weights), dtype=torch.float64)
    if w.shape != (n_layers,):
        raise LeamError(f"got {w.numel()} layer weights for {n_layers} layers")
    if not torch.isfinite(w).all() or (w < 0).any() or w.sum() <= 0:
        raise LeamError(f"layer weights must be finite, non-negative and not all zero, got {list(weights)}")
    return w / w.sum()


def _check_zero_gradient(embeddings: Tensor, grad: Tensor) -> None:
    g = grad.detach().flatten(1).double().norm(dim=1)
    e = embeddings.detach().flatten(1).double().norm(dim=1)
    if bool(((g < ZERO_GRAD_ABS) | (g * e < ZERO_GRAD_REL)).all()):
        raise ZeroGradientTargetError(
            f"the target score has a zero gradient with respect to the embedding for every sample "
            f"(max ‖ds/de‖ = {g.max().item():.2e}: the reference equals the embedding to float precision); "
            f"most likely {SELF_COSINE_EXPLANATION}"
        )


def _to_distribution(raw: Tensor, size: tuple[int, int]) -> tuple[Tensor, Tensor]:
    """Upsample raw maps (N, h, w) >= 0 to `size` and normalise each to sum 1; returns (P, empty mask (N,))."""
    if not torch.isfinite(raw).all():
        raise LeamError("a relevance map contains NaN or inf; check the model's outputs for this input")
    raw = raw.detach().to(torch.float32)
    if tuple(raw.shape[-2:]) != size:
        # Bilinear interpolation is a convex combination, so the upsampled map stays >= 0.
        raw = F.interpolate(raw.unsqueeze(1), size=size, mode="bilinear", align_corners=False).squeeze(1)
    mass = raw.flatten(1).sum(dim=1, dtype=torch.float64)
    empty = mass <= 0
    p = raw.double() / torch.where(empty, 1.0, mass)[:, None, None]
    return p.to(torch.float32), empty


def _layer_map(name: str, method: Callable[[Tensor, Tensor], Tensor], a: Tensor, g: Tensor) -> Tensor:
    if a.ndim != 4:
        raise LeamError(
            f"layer {name!r} produced shape {tuple(a.shape)}, not (N, C, h, w); LEAM maps need a spatial layer"
        )
    # The input pseudo-layer is always gradient × input: a channel mean of its gradient (Grad-CAM) says nothing.
    return gradxact(a, g) if name == INPUT_LAYER else method(a.detach(), g)


def compute_relevance(
    model: nn.Module,
    x: Tensor,
    target: Callable[[Tensor], Tensor],
    layers: Sequence[str],
    method: str = "gradcam",
    weights: Sequence[float] | None = None,
    batch_size: int | None = None,
) -> Relevance:
    """LEAM maps of `model` for crops `x` (N, 3, H, W) float, in the model's own input units and template.

    target: callable (N, D) embeddings -> (N,) scores (see `leam.targets`); sliced per batch if it supports it.
    layers: dotted module paths, and/or "input" (gradient × input, summed over channels, absolute value).
    method: a name in `METHODS` ("gradcam", "layercam", "gradxact").
    weights: one non-negative weight per layer for the overall map (default: equal).
    batch_size: crops per forward (default: all at once). Each batch costs one forward and one autograd.grad.

    Raises ZeroGradientTargetError when d score / d embedding vanishes for every sample of a batch
    (‖g‖ < 1e-8 or ‖g‖·‖e‖ < 1e-5), e.g. a self-cosine target; a single such sample only shows up in `empty`.
    Maps stay on x's device.
    """
    if x.ndim != 4 or not x.is_floating_point() or x.shape[0] == 0:
        raise LeamError(f"x must be a non-empty float batch (N, 3, H, W), got {x.dtype} {tuple(x.shape)}")
    layers = tuple(layers)
    map_fn = METHODS.get(method)
    w = _layer_weights(weights, len(layers))
    n, size = x.shape[0], (int(x.shape[2]), int(x.shape[3]))
    step = batch_size or n
    if step < 1:
        raise LeamError(f"batch_size must be >= 1, got {batch_size}")

    maps, empties, scores = [], [], []
    with capture(model, layers) as cap:
        for start in range(0, n, step):
            stop = min(start + step, n)
            embeddings = cap(x[start:stop])
            score = target_rows(target, start, stop)(embeddings)
            if score.shape != (stop - start,):
                raise LeamError(f"the target returned shape {tuple(score.shape)}, expected one score per sample")
            if not score.requires_grad:
                raise ZeroGradientTargetError("the target score does not depend on the embedding (it has no gradient)")
            grads = torch.autograd.grad(score.sum(), [embeddings, *(cap.activations[name] for name in layers)])
            _check_zero_gradient(embeddings, grads[0])
            batch = [
                _to_distribution(_layer_map(nm, map_fn, cap.activations[nm], g), size)
                for nm, g in zip(layers, grads[1:], strict=True)
            ]
            maps.append(torch.stack([p for p, _ in batch], dim=1))
            empties.append(torch.stack([e for _, e in batch], dim=1))
            scores.append(score.detach())

    layer_maps, empty = torch.cat(maps), torch.cat(empties)  # (N, L, H, W), (N, L)
    used = (~empty).to(torch.float64) * w.to(empty.device)  # weights of each sample's non-empty layers
    total = used.sum(dim=1, keepdim=True)
    used = used / torch.where(total > 0, total, 1.0)
    overall = (used[:, :, None, None] * layer_maps.double()).sum(dim=1).to(torch.float32)
    return Relevance(
        layers=layers,
        method=method,
        layer_maps=layer_maps,
        overall=overall,
        empty=tuple((int(i), layers[int(j)]) for i, j in torch.nonzero(empty).tolist()),
        scores=torch.cat(scores),
        weights=tuple(float(v) for v in w),
    )
