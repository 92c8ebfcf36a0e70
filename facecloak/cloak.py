"""The sparse cloak: optimise only the masked pixels so that source models stop recognising the face.

Projected gradient steps (Adam on a pixel offset) against an ensemble of differentiable source models. Each
face is sampled from the photo through its alignment with a differentiable warp (`grid_sample`), exactly as a
recogniser would see it, so the perturbation lives in photo pixels. Outside the mask every pixel is untouched.
Optional input diversity (mirror, small alignment jitter, down/up-scaling) at each step helps the cloak
transfer to models that were never used to build it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from facecloak.errors import ConfigError


@dataclass(frozen=True)
class CloakSettings:
    """steps: optimisation steps; step_size: Adam learning rate in 0-255 pixel units;
    epsilon: optional L-inf bound on the change of each masked pixel (None: free inside [0, 255]);
    diversity: random mirror / jitter / rescale each step; early_stop: stop once every source model's cosine to
    the reference is below its threshold minus `margin` for every face."""

    steps: int = 60
    step_size: float = 12.0
    epsilon: float | None = None
    diversity: bool = True
    early_stop: bool = True
    margin: float = 0.05
    check_every: int = 5

    def __post_init__(self) -> None:
        if self.steps < 0 or self.step_size <= 0:
            raise ConfigError("cloak steps must be >= 0 and step_size > 0")
        if self.epsilon is not None and not 0 < self.epsilon <= 255:
            raise ConfigError(f"cloak epsilon must be in (0, 255] pixel levels, got {self.epsilon}")


@dataclass(frozen=True)
class SourceModel:
    """A differentiable source: module, its crop size and, per face, the photo->crop matrix and reference."""

    id: str
    module: nn.Module
    size: int
    matrices: np.ndarray  # (F, 2, 3) photo -> crop, cv2 convention
    references: torch.Tensor  # (F, D) identity embeddings to move away from
    threshold: float | None  # cosine threshold at the chosen FAR (None: no early stop for this model)


def crop_grid(matrix: np.ndarray, window: tuple[int, int, int, int], size: int) -> torch.Tensor:
    """Sampling grid (1, S, S, 2) for `grid_sample(align_corners=False)` that reproduces `cv2.warpAffine`.

    matrix maps photo pixels -> crop pixels; window = (x0, y0, w, h) is the photo sub-rectangle given to
    grid_sample. Pixel centres are at integer coordinates (OpenCV), normalised as u = (2x + 1) / W - 1.
    """
    x0, y0, w, h = window
    m = np.vstack([matrix, [0, 0, 1]]).astype(np.float64)
    inv = np.linalg.inv(m)  # crop -> photo
    shift = np.array([[1, 0, -x0], [0, 1, -y0], [0, 0, 1]], np.float64)  # photo -> window
    to_norm_in = np.array([[2 / w, 0, 1 / w - 1], [0, 2 / h, 1 / h - 1], [0, 0, 1]])
    from_norm_out = np.array([[size / 2, 0, (size - 1) / 2], [0, size / 2, (size - 1) / 2], [0, 0, 1]])
    theta = (to_norm_in @ shift @ inv @ from_norm_out)[:2]
    return F.affine_grid(torch.from_numpy(theta).float()[None], [1, 3, size, size], align_corners=False)


def _window(mask: np.ndarray, sources: Sequence[SourceModel], shape: tuple[int, int]) -> tuple[int, int, int, int]:
    """Smallest photo rectangle holding every crop's footprint (what the models can see)."""
    h, w = shape
    corners = []
    for s in sources:
        for m in s.matrices:
            inv = np.linalg.inv(np.vstack([m, [0, 0, 1]]))[:2]
            pts = np.array([[0, 0, 1], [s.size, 0, 1], [0, s.size, 1], [s.size, s.size, 1]], np.float64)
            corners.append(pts @ inv.T)
    ys, xs = np.nonzero(mask)
    allpts = np.concatenate([*corners, np.stack([xs, ys], 1).astype(np.float64)])
    x0, y0 = np.floor(allpts.min(0)).astype(int) - 2
    x1, y1 = np.ceil(allpts.max(0)).astype(int) + 3
    x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)
    return int(x0), int(y0), int(x1 - x0), int(y1 - y0)


def _diverse(grid: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Random small scale/shift of the sampling grid (alignment jitter) and a random mirror."""
    scale = 1.0 + (torch.rand(1, generator=gen).item() - 0.5) * 0.1
    shift = (torch.rand(2, generator=gen) - 0.5) * 0.06
    g = grid * scale + shift
    if torch.rand(1, generator=gen).item() < 0.5:
        g = torch.flip(g, dims=[2])  # mirror the crop: sample columns right-to-left
    return g


def _antialias_factors(matrices: np.ndarray) -> list[float]:
    """Per face, the area-downscale `facecloak.align` applies before warping (photo px per crop px > 2)."""
    scales = [float(np.sqrt(abs(np.linalg.det(m[:, :2])))) for m in matrices]
    return [2.0 * s if s < 0.5 else 1.0 for s in scales]


def _cosines(
    sources: Sequence[SourceModel], x: torch.Tensor, grids: Mapping[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    """Cosine of each face (as each source model sees it) to its reference, differentiable w.r.t. `x`."""
    out = {}
    h, w = x.shape[-2:]
    shrunk: dict[tuple[int, int], torch.Tensor] = {}  # one area-downscale per size per step, shared by models
    for s in sources:
        crops = []
        for i, factor in enumerate(_antialias_factors(s.matrices)):
            # Same anti-aliasing as `align`: normalised grid coordinates do not depend on the resolution.
            size = (max(1, round(h * factor)), max(1, round(w * factor)))
            if factor == 1.0:
                xi = x
            else:
                key = (size[0] // 2 * 2, size[1] // 2 * 2) if min(size) > 4 else size  # merge near-equal sizes
                if key not in shrunk:
                    shrunk[key] = F.interpolate(x, size=key, mode="area")
                xi = shrunk[key]
            crops.append(F.grid_sample(xi, grids[s.id][i : i + 1], mode="bilinear", padding_mode="zeros",
                                       align_corners=False))
        out[s.id] = F.cosine_similarity(s.module(torch.cat(crops)), s.references, dim=1)
    return out


def cloak(
    image: np.ndarray,
    mask: np.ndarray,
    sources: Sequence[SourceModel],
    settings: CloakSettings = CloakSettings(),
    *,
    seed: int = 0,
) -> tuple[np.ndarray, int]:
    """Return (cloaked uint8 image, steps used). Pixels outside `mask` are byte-identical to `image`."""
    if image.dtype != np.uint8 or image.ndim != 3 or mask.shape != image.shape[:2]:
        raise ConfigError("cloak needs a uint8 (H, W, 3) image and a (H, W) mask")
    if not mask.any() or not sources or settings.steps == 0:
        return image.copy(), 0
    x0, y0, w, h = _window(mask, sources, image.shape[:2])
    patch = torch.from_numpy(np.array(image[y0 : y0 + h, x0 : x0 + w])).permute(2, 0, 1).float()[None]
    m = torch.from_numpy(mask[y0 : y0 + h, x0 : x0 + w]).float()[None, None]
    grids = {s.id: torch.cat([crop_grid(mt, (x0, y0, w, h), s.size) for mt in s.matrices]) for s in sources}
    gen = torch.Generator().manual_seed(seed)
    delta = torch.zeros_like(patch, requires_grad=True)
    opt = torch.optim.Adam([delta], lr=settings.step_size)
    thresholds = {s.id: s.threshold for s in sources}
    used = 0
    for step in range(settings.steps):
        x = (patch + delta * m).clamp(0, 255)
        step_grids = {k: _diverse(g, gen) for k, g in grids.items()} if settings.diversity else grids
        cos = _cosines(sources, x, step_grids)
        loss = torch.stack([c.mean() for c in cos.values()]).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        with torch.no_grad():
            if settings.epsilon is not None:
                delta.clamp_(-settings.epsilon, settings.epsilon)
            delta.copy_((patch + delta).clamp(0, 255) - patch)  # stay inside the valid colour range
        used = step + 1
        if settings.early_stop and used % settings.check_every == 0 and all(t is not None for t in thresholds.values()):
            with torch.no_grad():
                q = (patch + delta * m).clamp(0, 255).round()
                cos_now = _cosines(sources, q, grids)
            if all(bool((c < thresholds[k] - settings.margin).all()) for k, c in cos_now.items()):  # type: ignore[operator]
                break
    with torch.no_grad():
        new_patch = (patch + delta * m).clamp(0, 255).round().to(torch.uint8)[0].permute(1, 2, 0).numpy()
    out = image.copy()
    window_mask = mask[y0 : y0 + h, x0 : x0 + w]
    out[y0 : y0 + h, x0 : x0 + w][window_mask] = new_patch[window_mask]
    return out, used
