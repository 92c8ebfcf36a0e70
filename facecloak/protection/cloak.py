"""The sparse cloak: optimise only the masked pixels so that source models stop recognising the face.

Projected gradient steps (Adam on a pixel offset) against an ensemble of differentiable source models. Each
face is sampled from the photo through its alignment with a differentiable warp (`grid_sample`), exactly as a
recogniser would see it, so the perturbation lives in photo pixels. Outside the mask every pixel is untouched.
A real recogniser never sees the photo through facecloak's alignment: it detects and aligns on its own,
resamples with its own filter, and the photo is often re-encoded, resized or blurred on the way. So each step
optimises the expectation over transformations of that kind (`EOT`): alignment jitter (shift, scale, rotation:
landmark noise), resamplers (bilinear or bicubic, area pre-shrink as in pyramids), JPEG re-encoding (its
gradient passed straight through), mild blur and down/up-scaling. An optional decoy term pulls the face towards
a dissimilar identity (as Fawkes does), and `margin` sets how far below each source model's threshold the
cloak keeps going: stopping at the white-box boundary leaves transfer on the table.
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from facecloak.errors import ConfigError
from facecloak.faces.align import affine_scale

# Expectation-over-transformation ingredients a step can sample (see `CloakSettings.eot`).
EOT = ("jitter", "mirror", "resample", "jpeg", "blur", "resize")


@dataclass(frozen=True)
class CloakSettings:
    """steps: optimisation steps; step_size: Adam learning rate in 0-255 pixel units;
    epsilon: optional L-inf bound on the change of each masked pixel (None: free inside [0, 255]);
    diversity: sample input transformations each step (the `eot` ingredients; False: the exact alignment);
    eot: which transformations to sample, a subset of `EOT`; samples: transformed copies per step (batched);
    sources_per_step: source models drawn (seeded) for each step's gradient, a stochastic ensemble that costs
    that share of the full one per step (0: every source every step);
    decoy: weight of the pull towards a dissimilar identity (0: off);
    grain: spatial grain of the change in 112 px crop pixels: the offset is optimised on a grid this coarse over
    the face and interpolated bilinearly in between, so it is smooth inside a blob (0: every photo pixel free;
    measured at 2 and 3 it lost most of the dodge, `bench/results/independent-look-lfw`, so no level uses it);
    look: weight of the look term, the mean structural dissimilarity (1 - SSIM, 7x7 windows, per channel) of the
    photo window to the original, so the cloak spends its change where it costs the least structure (0: off);
    features: weight of the cosine of each source's mid-depth activation (`_feature_layer`) to the clean photo's
    under the same draw, pushed down besides the embedding's (feature-level transfer, as ILA/FDA) (0: off);
    keep: share of the masked pixels that keep their change (1: all). Below 1 the cloak starts on the whole mask
    and prunes it in two rounds (after a third and two thirds of the steps, each to sqrt(keep) of the pixels it
    had), keeping the pixels it moved most: the optimiser, not the selection alone, picks the sparse support, as
    magnitude-pruned sparse attacks do;
    early_stop: stop once every source model's cosine to the reference is below its threshold minus `margin`
    for every face (checked every `check_every` steps on the rounded pixels, without transformations)."""

    steps: int = 60
    step_size: float = 12.0
    epsilon: float | None = None
    diversity: bool = True
    early_stop: bool = True
    margin: float = 0.05
    check_every: int = 5
    eot: tuple[str, ...] = ("jitter", "mirror")
    samples: int = 1
    decoy: float = 0.0
    grain: float = 0.0
    look: float = 0.0
    sources_per_step: int = 0
    features: float = 0.0
    keep: float = 1.0

    def __post_init__(self) -> None:
        if self.steps < 0 or self.step_size <= 0:
            raise ConfigError("cloak steps must be >= 0 and step_size > 0")
        if self.epsilon is not None and not 0 < self.epsilon <= 255:
            raise ConfigError(f"cloak epsilon must be in (0, 255] pixel levels, got {self.epsilon}")
        unknown = sorted(set(self.eot) - set(EOT))
        if unknown:
            raise ConfigError(f"unknown cloak transformation(s) {', '.join(unknown)}; choose from {', '.join(EOT)}")
        if self.sources_per_step < 0:
            raise ConfigError("cloak sources_per_step must be >= 0 (0: every source)")
        if self.samples < 1 or self.check_every < 1:
            raise ConfigError("cloak samples and check_every must be >= 1")
        if min(self.decoy, self.margin, self.grain, self.look, self.features) < 0:
            raise ConfigError("cloak decoy weight, margin, grain, look and features must be >= 0")
        if not 0 < self.keep <= 1:
            raise ConfigError(f"cloak keep must be in (0, 1], the share of the masked pixels changed; got {self.keep}")


@dataclass(frozen=True)
class SourceModel:
    """A differentiable source: module, its crop size and, per face, the photo->crop matrix and reference. The cloak
    runs where the references are (every source's module and references on one device): CPU or a GPU."""

    id: str
    module: nn.Module
    size: int
    matrices: np.ndarray  # (F, 2, 3) photo -> crop, cv2 convention
    references: torch.Tensor  # (F, D) identity embeddings to move away from
    threshold: float | None  # cosine threshold at the chosen FAR (None: no early stop for this model)
    decoys: torch.Tensor | None = None  # (F, D) unit embeddings to pull towards (None: chosen from the bundled bank)


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


@dataclass(frozen=True)
class _Draw:
    """One sampled transformation of the photo window and of the alignment (identity when nothing is drawn)."""

    jpeg: int | None = None  # re-encode at this quality
    blur: float = 0.0  # Gaussian sigma in photo pixels
    resize: float = 1.0  # down-scale factor (then back up)
    shrink: float = 1.0  # extra area pre-shrink before sampling (a pyramid level / another resampler)
    mode: str = "bilinear"  # grid_sample interpolation
    scale: float = 1.0
    angle: float = 0.0  # radians
    shift: tuple[float, float] = (0.0, 0.0)  # in normalised crop units
    mirror: bool = False


def _draw(eot: Sequence[str], gen: torch.Generator) -> _Draw:
    def u(lo: float, hi: float) -> float:
        return lo + (hi - lo) * float(torch.rand(1, generator=gen))

    d: dict = {}
    if "jitter" in eot:
        d.update(scale=u(0.94, 1.06), angle=math.radians(u(-6, 6)), shift=(u(-0.04, 0.04), u(-0.04, 0.04)))
    if "mirror" in eot:
        d["mirror"] = u(0, 1) < 0.5
    if "resample" in eot:
        d.update(mode="bicubic" if u(0, 1) < 0.5 else "bilinear", shrink=u(0.6, 1.0) if u(0, 1) < 0.5 else 1.0)
    if "jpeg" in eot and u(0, 1) < 0.5:
        d["jpeg"] = int(u(60, 96))
    if "blur" in eot and u(0, 1) < 0.5:
        d["blur"] = u(0.3, 1.2)
    if "resize" in eot and u(0, 1) < 0.5:
        d["resize"] = u(0.5, 0.9)
    return _Draw(**d)


def _jpeg_through(x: torch.Tensor, quality: int) -> torch.Tensor:
    """JPEG round trip of (1, 3, H, W) 0-255 with the identity as its gradient (straight-through)."""
    from PIL import Image

    img = x.detach()[0].permute(1, 2, 0).clamp(0, 255).round().to(torch.uint8).cpu().numpy()
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="JPEG", quality=quality)
    back = np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))
    y = torch.from_numpy(back.copy()).to(x.device).permute(2, 0, 1).float()[None]
    return x + (y - x).detach()


def _gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    r = max(1, math.ceil(2.5 * sigma))
    t = torch.arange(-r, r + 1, dtype=x.dtype, device=x.device)
    k = torch.exp(-(t**2) / (2 * sigma**2))
    k = k / k.sum()
    c = x.shape[1]
    x = F.pad(x, (r, r, r, r), mode="replicate")
    x = F.conv2d(x, k.view(1, 1, 1, -1).expand(c, 1, 1, -1).contiguous(), groups=c)
    return F.conv2d(x, k.view(1, 1, -1, 1).expand(c, 1, -1, 1).contiguous(), groups=c)


def _photo_transform(x: torch.Tensor, d: _Draw) -> torch.Tensor:
    """What happens to the photo before a recogniser reads it: re-encoding, blur, down/up-scaling."""
    if d.resize < 1.0:
        h, w = x.shape[-2:]
        small = F.interpolate(x, size=(max(2, round(h * d.resize)), max(2, round(w * d.resize))), mode="area")
        x = F.interpolate(small, size=(h, w), mode="bilinear", align_corners=False)
    if d.blur > 0:
        x = _gaussian_blur(x, d.blur)
    if d.jpeg is not None:
        x = _jpeg_through(x, d.jpeg)
    return x


def _jittered(grid: torch.Tensor, d: _Draw, width: int, height: int) -> torch.Tensor:
    """The sampling grid (1, S, S, 2) scaled, rotated (in pixel units of the width x height window) and shifted
    about the crop centre, optionally mirrored."""
    if d.scale == 1.0 and d.angle == 0.0 and d.shift == (0.0, 0.0) and not d.mirror:
        return grid
    centre = grid.mean(dim=(1, 2), keepdim=True)
    half = torch.tensor([width / 2, height / 2], dtype=grid.dtype, device=grid.device)
    c, s = math.cos(d.angle), math.sin(d.angle)
    rot = torch.tensor([[c, -s], [s, c]], dtype=grid.dtype, device=grid.device)
    g = ((grid - centre) * half) @ rot.T / half
    g = g * d.scale + centre + torch.tensor(d.shift, dtype=grid.dtype, device=grid.device)
    if d.mirror:
        g = torch.flip(g, dims=[2])  # mirror the crop: sample columns right-to-left
    return g


def _antialias_factors(matrices: np.ndarray) -> list[float]:
    """Per face, the area-downscale (<= 1) `facecloak.faces.align` applies before warping (photo px per crop px > 2)."""
    scales = [affine_scale(m) for m in matrices]
    return [2.0 * s if s < 0.5 else 1.0 for s in scales]


def _view_size(h: int, w: int, factor: float) -> tuple[int, int] | None:
    """Size of an (h, w) window scaled by `factor` (None: not scaled), even-rounded so near-equal sizes merge."""
    if factor >= 1.0:
        return None
    size = (max(1, round(h * factor)), max(1, round(w * factor)))
    return (size[0] // 2 * 2, size[1] // 2 * 2) if min(size) > 4 else size


def _crops(
    sources: Sequence[SourceModel], x: torch.Tensor, grids: Mapping[str, torch.Tensor], draws: Sequence[_Draw]
) -> dict[str, torch.Tensor]:
    """Crops (K * F, 3, S, S), draw-major, of every face as each source model samples it under each of the K draws,
    differentiable w.r.t. the photo window `x` (1, 3, H, W) in 0-255."""
    out: dict[str, list[torch.Tensor]] = {s.id: [] for s in sources}
    h, w = x.shape[-2:]
    for d in draws:
        views: dict[tuple[tuple[int, int] | None, tuple[int, int] | None], torch.Tensor] = {}  # shared by the models
        for s in sources:
            crops = []
            for i, factor in enumerate(_antialias_factors(s.matrices)):
                # `align` area-downscales a large face (factor < 1). Its processing (JPEG, blur, resize) runs at that
                # size, the blur radius scaled along: a fraction of the cost on the full photo, and harsher than the
                # real thing (JPEG blocks and a resize cover more of the face), which transferred better: on the 13
                # deepface probes it never lost a probe to the full-size JPEG with scaled blur and resize, and
                # gained 5 probe-cells over three verifiers (`bench/results/independent-jpeg-tables`). The draw's
                # extra shrink (another resampler) comes after the processing. Normalised grid coordinates do not
                # depend on the resolution, so every view is sampled with the same grid.
                processed, sampled = _view_size(h, w, factor), _view_size(h, w, factor * d.shrink)
                if (processed, processed) not in views:
                    small = x if processed is None else F.interpolate(x, size=processed, mode="area")
                    views[processed, processed] = _photo_transform(small, replace(d, blur=d.blur * factor))
                if (processed, sampled) not in views:
                    views[processed, sampled] = F.interpolate(views[processed, processed], size=sampled, mode="area")
                xi = views[processed, sampled]
                crops.append(F.grid_sample(xi, _jittered(grids[s.id][i : i + 1], d, w, h), mode=d.mode,
                                           padding_mode="zeros", align_corners=False))
            out[s.id].append(torch.cat(crops))
    return {s.id: torch.cat(out[s.id]).clamp(0, 255) for s in sources}


# Faces a source model reads at once in a cloak step: bounds the activations kept for the gradient on group photos.
# On a 4-face deepface photo at `high` the cloak peaked at 578 / 603 / 685 MB with 1 / 2 / 4 faces a pass, for
# 23.3 / 20.9 / 19.6 CPU s; over 40 photos through the CLI (verifiers loaded) 2 instead of 4 took the peak from
# 1052 to 968 MiB for 1.4 % more CPU (both runs with a heap trim after each cloak, since removed).
FACES_PER_PASS = 2


def _face_chunks(n: int) -> list[slice]:
    return [slice(i, min(i + FACES_PER_PASS, n)) for i in range(0, n, FACES_PER_PASS)]


def _embed(source: SourceModel, crops: torch.Tensor, draws: int, faces: slice = slice(None)) -> torch.Tensor:
    """The source's embeddings (K, f, D) of the `faces` of its `_crops` (K * F, 3, S, S)."""
    if faces != slice(None):
        crops = crops.view(draws, len(source.matrices), *crops.shape[1:])[:, faces].flatten(0, 1)
    return source.module(crops).view(draws, crops.shape[0] // draws, -1)


def _embeddings(
    sources: Sequence[SourceModel], x: torch.Tensor, grids: Mapping[str, torch.Tensor], draws: Sequence[_Draw]
) -> dict[str, torch.Tensor]:
    """Embeddings (K, F, D) of every face as each source model sees it under each of the K draws."""
    crops = _crops(sources, x, grids, draws)
    return {s.id: _embed(s, crops[s.id], len(draws)) for s in sources}


def _cosines(
    sources: Sequence[SourceModel], x: torch.Tensor, grids: Mapping[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    """Cosine (F,) of each face, as each source model sees it through the exact alignment, to its reference."""
    emb = _embeddings(sources, x, grids, [_Draw()])
    return {s.id: F.cosine_similarity(emb[s.id][0], s.references, dim=1) for s in sources}


class _LookTerm:
    """Mean 1 - SSIM of the photo window against the original over 7x7 windows per channel (as `bench.stats.ssim`
    measures the look: scikit-image's uniform window and constants), differentiable in the window.

    Windows that touch no masked pixel score exactly 1, so only the mask's bounding box (plus the window's reach) is
    filtered, and the original's statistics are computed once. (Sampling every 4th-13th window on large faces, one
    crop pixel apart, saved 20 % of the time on deepface photos but cost 0.0012 SSIM: not kept.)"""

    C1, C2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2

    def __init__(self, original: torch.Tensor, mask: np.ndarray | None = None) -> None:
        h, w = original.shape[-2:]
        self.scale = 1 / ((h - 6) * (w - 6) * original.shape[1])  # the mean over every window of the photo window
        self.rows, self.cols = slice(0, h), slice(0, w)
        if mask is not None and mask.any():
            ys, xs = np.nonzero(mask)
            self.rows = slice(max(int(ys.min()) - 6, 0), int(ys.max()) + 7)
            self.cols = slice(max(int(xs.min()) - 6, 0), int(xs.max()) + 7)
        self.y = original[..., self.rows, self.cols]
        self.my = self._mean(self.y)
        self.vy = self._mean(self.y * self.y) - self.my * self.my

    @staticmethod
    def _mean(t: torch.Tensor) -> torch.Tensor:
        """The 7x7 box filter, separably, as depthwise convolutions (4x faster than `avg_pool2d` on CPU, forward
        and backward, on a large face's window)."""
        k = torch.full((t.shape[1], 1, 7, 1), 1 / 7, dtype=t.dtype, device=t.device)
        return F.conv2d(F.conv2d(t, k, groups=t.shape[1]), k.transpose(2, 3), groups=t.shape[1])

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        x = x[..., self.rows, self.cols]
        mx, mxx, mxy = self._mean(torch.cat([x, x * x, x * self.y], dim=1)).split(x.shape[1], dim=1)
        my = self.my
        vx, cxy = mxx - mx * mx, mxy - mx * my
        c1, c2 = self.C1, self.C2
        ssim = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx * mx + my * my + c1) * (vx + self.vy + c2))
        return (1 - ssim).sum() * self.scale


def _backward(
    sources: Sequence[SourceModel],
    x: torch.Tensor,
    grids: Mapping[str, torch.Tensor],
    draws: Sequence[_Draw],
    settings: CloakSettings,
    *,
    look: _LookTerm | None = None,
    decoys: Mapping[str, torch.Tensor] | None = None,
    feats: Mapping[str, torch.Tensor] | None = None,
    clean: Mapping[str, torch.Tensor] | None = None,
) -> None:
    """Back-propagate one step's loss from the photo window `x` into its leaves: the mean over sources of each
    source's mean over draws and faces of the cosine to the reference (minus the decoy pull, plus the feature
    cosine to `clean`, whose activations the hooks put in `feats`), plus the look term.

    The gradient of that mean is the sum of its terms' gradients. Each source reads at most `FACES_PER_PASS` faces
    at a time from detached crops and is back-propagated at once, so only one model's activations for a few faces
    are alive (with every source's graph alive at once, a 4-face photo's cloak peaked at 974 instead of 744 MB with
    4 faces a pass); the window transforms the sources share are back-propagated once, at the end."""
    crops = _crops(sources, x, grids, draws)
    leaves = {k: c.detach().requires_grad_() for k, c in crops.items()}
    n_draws = len(draws)
    for s in sources:
        n_faces = len(s.matrices)
        share = 1 / (len(sources) * n_draws * n_faces)  # of one (draw, face) term in the mean
        refs = F.normalize(s.references.float(), dim=1)
        for faces in _face_chunks(n_faces):
            e = F.normalize(_embed(s, leaves[s.id], n_draws, faces), dim=-1)
            term = (e * refs[faces]).sum(-1).sum()
            if decoys:
                term = term - settings.decoy * (e * decoys[s.id][faces]).sum(-1).sum()
            if clean and feats:
                theirs = clean[s.id].view(n_draws, n_faces, -1)[:, faces].flatten(0, 1)
                term = term + settings.features * F.cosine_similarity(feats[s.id].flatten(1), theirs).sum()
            (term * share).backward()
    # One scalar whose gradient w.r.t. each crop is that crop's gradient: passing the gradients to `backward` instead
    # would import torch's symbolic-shape machinery, 0.75 s of a one-photo run.
    tail = settings.look * look(x) if look is not None else torch.zeros((), device=x.device)
    for k, c in crops.items():
        grad = leaves[k].grad
        if grad is not None:
            tail = tail + (c * grad).sum()
    tail.backward()


def _photo_px_per_crop_px(sources: Sequence[SourceModel]) -> float:
    """Median photo pixels per 112 px crop pixel over every face and source (the faces' scale in the photo)."""
    scales = [(s.size / 112) / affine_scale(m) for s in sources for m in s.matrices]
    return float(np.median(scales))


def _offset_grid(shape: tuple[int, int], step: float) -> tuple[int, int]:
    """Size of a grid whose nodes are about `step` pixels apart and span a (h, w) window corner to corner."""
    h, w = shape
    return max(2, math.ceil((h - 1) / step) + 1), max(2, math.ceil((w - 1) / step) + 1)


class Adam:
    """`torch.optim.Adam` on one tensor with its defaults (betas 0.9 / 0.999, eps 1e-8, no weight decay), the same
    floats step for step (`tests/test_independent.py` checks it against torch's). Written out because `torch.optim`'s
    first use imports `torch._dynamo`: 1.5 s of every cloaking run's start-up on this project's 2-core machine."""

    def __init__(self, param: torch.Tensor, lr: float, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8) -> None:
        self.param, self.lr, self.betas, self.eps = param, lr, betas, eps
        self.exp_avg = torch.zeros_like(param, memory_format=torch.preserve_format)
        self.exp_avg_sq = torch.zeros_like(param, memory_format=torch.preserve_format)
        self.steps = 0

    def zero_grad(self) -> None:
        self.param.grad = None

    @torch.no_grad()
    def step(self) -> None:
        grad = self.param.grad
        if grad is None:
            return
        beta1, beta2 = self.betas
        self.steps += 1
        self.exp_avg.lerp_(grad, 1 - beta1)
        self.exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
        step_size = self.lr / (1 - beta1**self.steps)
        denom = (self.exp_avg_sq.sqrt() / (1 - beta2**self.steps) ** 0.5).add_(self.eps)
        self.param.addcdiv_(self.exp_avg, denom, value=-step_size)


def _pruned(m: torch.Tensor, score: torch.Tensor, share: float) -> torch.Tensor:
    """The mask `m` (1, 1, H, W) cut to the `share` of its pixels with the highest `score` (H, W)."""
    where = torch.nonzero(m[0, 0].flatten() > 0).flatten()
    n = max(1, round(share * len(where)))
    best = where[torch.topk(score.flatten()[where], n).indices]  # exactly n: ties do not widen the mask
    kept = torch.zeros(score.numel(), device=score.device)
    kept[best] = 1.0
    return kept.view(1, 1, *score.shape)


def _prune_steps(settings: CloakSettings) -> frozenset[int]:
    """The steps after which the mask is pruned (see `CloakSettings.keep`)."""
    if settings.keep >= 1:
        return frozenset()
    return frozenset({max(1, round(settings.steps / 3)), max(1, round(2 * settings.steps / 3))})


def _decoys(sources: Sequence[SourceModel]) -> dict[str, torch.Tensor]:
    """Per source, (F, D) unit embeddings to pull towards: the given ones, else the bundled face least similar
    to each reference (the photo's own person is never its decoy)."""
    from facecloak.masking.impostors import bundled_impostors

    out = {}
    for s in sources:
        if s.decoys is not None:
            out[s.id] = F.normalize(s.decoys.float().to(s.references.device), dim=1)
            continue
        bank = bundled_impostors(s.id, s.module).to(s.references.device)
        sims = F.normalize(s.references.float(), dim=1) @ bank.T
        out[s.id] = bank[sims.argmin(dim=1)]
    return out


def _feature_layer(source: SourceModel) -> nn.Module:
    """The middle of the source's LEAM `default_layers` (mbf stage2 14x14, mobileface stage3 7x7, hse blocks.8
    14x14): deep enough to be identity-bearing, early enough to be shared by other recognisers."""
    from facecloak.models import get_spec
    from leam.capture import resolve_layer

    layers = get_spec(source.id).default_layers
    return resolve_layer(source.module, layers[len(layers) // 2])


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
    device = sources[0].references.device  # where the sources run (`SourceModel.references`); the pixels go there
    x0, y0, w, h = _window(mask, sources, image.shape[:2])
    patch = torch.from_numpy(np.array(image[y0 : y0 + h, x0 : x0 + w])).to(device).permute(2, 0, 1).float()[None]
    window_mask = mask[y0 : y0 + h, x0 : x0 + w]
    m = torch.from_numpy(window_mask).to(device).float()[None, None]
    grids = {s.id: torch.cat([crop_grid(mt, (x0, y0, w, h), s.size) for mt in s.matrices]).to(device)
             for s in sources}
    gen = torch.Generator().manual_seed(seed)
    look = _LookTerm(patch, window_mask) if settings.look > 0 else None
    step_px = settings.grain * _photo_px_per_crop_px(sources)
    coarse = step_px > 1.0  # a grain finer than a photo pixel is no constraint
    size = _offset_grid((h, w), step_px) if coarse else (h, w)
    delta = torch.zeros((1, 3, *size), device=device, requires_grad=True)
    opt = Adam(delta, lr=settings.step_size)

    def offset() -> torch.Tensor:  # the change of every window pixel (bilinear between grid nodes: within +-eps)
        return F.interpolate(delta, size=(h, w), mode="bilinear", align_corners=True) if coarse else delta

    thresholds = {s.id: s.threshold for s in sources}
    decoys = _decoys(sources) if settings.decoy > 0 else {}
    stoppable = settings.early_stop and all(t is not None for t in thresholds.values())
    used = 0
    prune_after = _prune_steps(settings)
    # The latest forward's mid-layer activation per source, captured by hooks that live only as long as the cloak.
    feats: dict[str, torch.Tensor] = {}
    hooks: list[torch.utils.hooks.RemovableHandle] = []
    try:
        for s in sources if settings.features > 0 else ():  # inside the try: a failing layer lookup leaves none
            hooks.append(_feature_layer(s).register_forward_hook(
                lambda _m, _i, out, k=s.id: feats.__setitem__(k, out)))
        for step in range(settings.steps):
            x = (patch + offset() * m).clamp(0, 255)
            draws = [_draw(settings.eot, gen) if settings.diversity else _Draw() for _ in range(settings.samples)]
            drawn = sources
            if 0 < settings.sources_per_step < len(sources):
                picked = torch.randperm(len(sources), generator=gen)[: settings.sources_per_step]
                drawn = [sources[i] for i in sorted(picked.tolist())]
            clean: dict[str, torch.Tensor] = {}
            if hooks:  # the clean photo through the same draws: the activations to move away from
                with torch.no_grad():
                    _embeddings(drawn, patch, grids, draws)
                clean = dict(feats)
            opt.zero_grad()
            _backward(drawn, x, grids, draws, settings, look=look, decoys=decoys, feats=feats, clean=clean)
            opt.step()
            with torch.no_grad():
                if settings.epsilon is not None:
                    delta.clamp_(-settings.epsilon, settings.epsilon)
                if not coarse:
                    delta.copy_((patch + delta).clamp(0, 255) - patch)  # stay inside the valid colour range
            used = step + 1
            if used in prune_after:
                with torch.no_grad():
                    m = _pruned(m, offset()[0].abs().sum(0), settings.keep**0.5)
            if stoppable and used % settings.check_every == 0:
                with torch.no_grad():
                    q = (patch + offset() * m).clamp(0, 255).round()
                    cos_now = _cosines(sources, q, grids)
                if all(bool((c < thresholds[k] - settings.margin).all()) for k, c in cos_now.items()):  # type: ignore[operator]
                    break
    finally:
        for hook in hooks:
            hook.remove()
    with torch.no_grad():
        target = max(1, round(settings.keep * int(window_mask.sum())))
        if int(m.sum()) > target:  # stopped early (or too few steps for both rounds): prune to the share asked for
            m = _pruned(m, offset()[0].abs().sum(0), target / int(m.sum()))
        new_patch = (patch + offset() * m).clamp(0, 255).round().to(torch.uint8)[0].permute(1, 2, 0).cpu().numpy()
    out = image.copy()
    kept = m[0, 0].cpu().numpy() > 0  # the window's mask after pruning
    out[y0 : y0 + h, x0 : x0 + w][kept] = new_patch[kept]
    return out, used
