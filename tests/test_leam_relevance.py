"""LEAM capture, targets, methods and relevance on a tiny hand-weighted net whose maps are computed by hand here."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from leam import (
    INPUT_LAYER,
    METHODS,
    Contrast,
    CosineTo,
    LayerCaptureError,
    SelfCosine,
    UnknownLayerError,
    ZeroGradientTargetError,
    capture,
    compute_relevance,
    embed,
    flip_target,
    reference_target,
)

# conv: 1×1, 3 -> 2 channels, so A_conv[c] = sum_k CONV[c, k] x[k] at every pixel.
CONV = np.array([[1.0, -0.5, 0.25], [-0.75, 0.5, 1.0]])
# fc: embedding (3,) from the 2×2×2 average-pooled feature map, flattened channel-major.
FC = np.array(
    [
        [0.9, -0.4, 0.3, 0.7, -0.2, 0.5, -0.6, 0.8],
        [0.1, 0.6, -0.3, 0.2, 0.4, -0.5, 0.3, 0.2],
        [-0.7, 0.2, 0.5, -0.1, 0.3, 0.6, 0.1, -0.4],
    ]
)
# Bilinear 2 -> 4 upsampling with align_corners=False: source coordinate (i + 0.5) / 2 - 0.5, clamped at the edges.
UP = np.array([[1.0, 0.0], [0.75, 0.25], [0.25, 0.75], [0.0, 1.0]])


class TinyNet(nn.Module):
    """x (N, 3, 4, 4) -> conv (N, 2, 4, 4) -> pool (N, 2, 2, 2) -> fc -> e (N, 3)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 2, kernel_size=1, bias=False)
        self.pool = nn.AvgPool2d(2)
        self.fc = nn.Linear(8, 3, bias=False)
        self.shared = nn.Identity()
        with torch.no_grad():
            self.conv.weight.copy_(torch.tensor(CONV, dtype=torch.float32).view(2, 3, 1, 1))
            self.fc.weight.copy_(torch.tensor(FC, dtype=torch.float32))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(self.conv(x)).flatten(1))


class TwiceNet(TinyNet):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.shared(self.pool(self.shared(self.conv(x)))).flatten(1))


class Pair(nn.Module):
    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return x, x


class TupleNet(TinyNet):
    def __init__(self) -> None:
        super().__init__()
        self.pair = Pair()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(self.pair(self.conv(x))[0]).flatten(1))


def first_coordinate(e: torch.Tensor) -> torch.Tensor:
    """Linear target s = e[:, 0]: then G_pool = FC[0] reshaped (2, 2, 2) and G_conv = G_pool spread / 4."""
    return e[:, 0]


def hand_activations(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    conv = np.einsum("ck,nkhw->nchw", CONV, x)
    pool = conv.reshape(len(x), 2, 2, 2, 2, 2).mean(axis=(3, 5))
    return conv, pool


def hand_grads(ds_de: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Given ds/de (N, 3): gradients at pool (N, 2, 2, 2) and conv (N, 2, 4, 4) of the linear/avg-pool net."""
    g_pool = (ds_de @ FC).reshape(-1, 2, 2, 2)
    g_conv = np.repeat(np.repeat(g_pool, 2, axis=2), 2, axis=3) / 4
    return g_pool, g_conv


def normalise(m: np.ndarray) -> np.ndarray:
    return m / m.sum(axis=(-2, -1), keepdims=True)


def hand_gradcam(a: np.ndarray, g: np.ndarray) -> np.ndarray:
    alpha = g.mean(axis=(2, 3), keepdims=True)
    return np.maximum((alpha * a).sum(axis=1), 0)


@pytest.fixture
def model() -> TinyNet:
    return TinyNet()


@pytest.fixture
def x() -> torch.Tensor:
    return torch.rand(2, 3, 4, 4, generator=torch.Generator().manual_seed(0)) + 0.1


# --- capture ---------------------------------------------------------------------------------------------------


def test_capture_records_activations_and_removes_hooks(model: TinyNet, x: torch.Tensor) -> None:
    with capture(model, ["conv", "pool"]) as cap:
        e = cap(x)
        assert len(model.conv._forward_hooks) == 1
        conv, pool = hand_activations(x.numpy())
        np.testing.assert_allclose(cap.activations["conv"].detach().numpy(), conv, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(cap.activations["pool"].detach().numpy(), pool, rtol=1e-5, atol=1e-6)
        grads = cap.gradients(e[:, 0])
        np.testing.assert_allclose(grads["pool"].numpy(), hand_grads(np.eye(3)[[0, 0]])[0], rtol=1e-6)
    assert not model.conv._forward_hooks and not model.pool._forward_hooks
    assert cap.activations == {}


def test_capture_restores_mode_and_requires_grad_after_exception(model: TinyNet, x: torch.Tensor) -> None:
    model.train()
    model.pool.eval()  # a mixed state must come back exactly
    model.fc.weight.requires_grad_(False)
    with pytest.raises(RuntimeError, match="boom"), capture(model, ["conv"]) as cap:
        cap(x)
        assert not model.training and not model.conv.training
        assert not any(p.requires_grad for p in model.parameters())
        raise RuntimeError("boom")
    assert not model.conv._forward_hooks
    assert model.training and model.conv.training and not model.pool.training
    assert model.conv.weight.requires_grad and not model.fc.weight.requires_grad


def test_capture_removes_hooks_when_the_forward_fails(x: torch.Tensor) -> None:
    model = TupleNet()
    model.train()
    with (
        pytest.raises(LayerCaptureError, match="returned tuple, not a tensor"),
        capture(model, ["conv", "pair"]) as cap,
    ):
        cap(x)  # the hook on `pair` raises in the middle of the forward
    assert not model.pair._forward_hooks and not model.conv._forward_hooks
    assert model.training and all(p.requires_grad for p in model.parameters())


def test_unknown_layer_suggests_close_names(model: TinyNet) -> None:
    with pytest.raises(UnknownLayerError, match="close names: conv"), capture(model, ["cnov"]):
        pass
    assert not model.conv._forward_hooks


def test_layer_running_twice_is_refused(x: torch.Tensor) -> None:
    model = TwiceNet()
    with pytest.raises(LayerCaptureError, match="more than once"), capture(model, ["shared"]) as cap:
        cap(x)
    assert not model.shared._forward_hooks


def test_input_pseudo_layer_is_the_input(model: TinyNet, x: torch.Tensor) -> None:
    with capture(model, [INPUT_LAYER]) as cap:
        cap(x)
        torch.testing.assert_close(cap.activations[INPUT_LAYER].detach(), x)


# --- methods ---------------------------------------------------------------------------------------------------


def test_methods_by_hand() -> None:
    a = torch.tensor([[[[1.0, 2.0]], [[3.0, -1.0]]]])  # (1, 2, 1, 2)
    g = torch.tensor([[[[0.5, -1.5]], [[2.0, 1.0]]]])
    # gradcam: alpha = (-0.5, 1.5) -> -0.5*[1, 2] + 1.5*[3, -1] = [4, -2.5] -> ReLU [4, 0]
    torch.testing.assert_close(METHODS.get("gradcam")(a, g), torch.tensor([[[4.0, 0.0]]]))
    # layercam: ReLU(G) = [[0.5, 0], [2, 1]] -> [0.5*1 + 2*3, 0*2 + 1*(-1)] = [6.5, -1] -> [6.5, 0]
    torch.testing.assert_close(METHODS.get("layercam")(a, g), torch.tensor([[[6.5, 0.0]]]))
    # gradxact: |[0.5 + 6, -3 - 1]| = [6.5, 4]
    torch.testing.assert_close(METHODS.get("gradxact")(a, g), torch.tensor([[[6.5, 4.0]]]))


@pytest.mark.parametrize("name", METHODS.names())
def test_every_method_returns_non_negative_maps_of_the_layer_grid(name: str) -> None:
    gen = torch.Generator().manual_seed(1)
    a, g = torch.randn(3, 5, 6, 7, generator=gen), torch.randn(3, 5, 6, 7, generator=gen)
    m = METHODS.get(name)(a, g)
    assert m.shape == (3, 6, 7)
    assert (m >= 0).all() and m.sum() > 0


# --- targets ---------------------------------------------------------------------------------------------------


def test_reference_target_is_the_leave_one_out_centroid() -> None:
    e = torch.tensor([[3.0, 0.0], [0.0, 2.0], [1.0, 1.0]])
    target = reference_target(e)
    s = 0.5**0.5
    # r_0 = normalise(([0, 1] + [s, s]) / 2): direction (s, 1 + s)
    expected0 = torch.tensor([s, 1 + s]) / torch.tensor([s, 1 + s]).norm()
    torch.testing.assert_close(target.reference[0], expected0)
    torch.testing.assert_close(target.reference[2], torch.tensor([s, s]))  # mean of [1, 0] and [0, 1]
    scores = target(e)
    torch.testing.assert_close(scores[2], torch.tensor(1.0))
    torch.testing.assert_close(target[1:3].reference, target.reference[1:3])


def test_contrast_by_hand() -> None:
    e = torch.tensor([[1.0, 0.0]])
    target = Contrast(torch.tensor([1.0, 1.0]), torch.tensor([[0.0, 1.0], [-1.0, 0.0]]))
    # cos(e, r) = 1/sqrt(2); impostors cos 0 and -1 -> mean -0.5
    torch.testing.assert_close(target(e), torch.tensor([0.5**0.5 + 0.5]))


def test_self_cosine_is_refused_at_construction() -> None:
    with pytest.raises(ZeroGradientTargetError, match="zero"):
        SelfCosine()


def test_self_cosine_reference_is_refused_numerically(model: TinyNet, x: torch.Tensor) -> None:
    target = CosineTo(embed(model, x))  # the embedding's own detached copy
    with pytest.raises(ZeroGradientTargetError, match="zero gradient"):
        compute_relevance(model, x, target, ["conv"])
    assert not model.conv._forward_hooks


def test_target_without_gradient_is_refused(model: TinyNet, x: torch.Tensor) -> None:
    with pytest.raises(ZeroGradientTargetError):
        compute_relevance(model, x, lambda e: torch.zeros(len(e)), ["conv"])


def test_flip_target_of_a_mirror_symmetric_crop_is_refused(model: TinyNet, x: torch.Tensor) -> None:
    symmetric = torch.cat([x[..., :2], torch.flip(x[..., :2], dims=[3])], dim=3)
    with pytest.raises(ZeroGradientTargetError):
        compute_relevance(model, symmetric, flip_target(model, symmetric), ["conv"])
    torch.testing.assert_close(flip_target(model, x).reference, embed(model, torch.flip(x, dims=[3])))


# --- relevance -------------------------------------------------------------------------------------------------


def test_gradcam_matches_the_hand_computation(model: TinyNet, x: torch.Tensor) -> None:
    rel = compute_relevance(model, x, first_coordinate, ["conv", "pool"], method="gradcam")
    conv, pool = hand_activations(x.numpy().astype(np.float64))
    g_pool, g_conv = hand_grads(np.eye(3)[[0, 0]])
    p_conv = normalise(hand_gradcam(conv, g_conv))
    p_pool = normalise(UP @ hand_gradcam(pool, g_pool) @ UP.T)
    np.testing.assert_allclose(rel.layer_maps[:, 0].numpy(), p_conv, atol=1e-6)
    np.testing.assert_allclose(rel.layer_maps[:, 1].numpy(), p_pool, atol=1e-6)
    np.testing.assert_allclose(rel.overall.numpy(), (p_conv + p_pool) / 2, atol=1e-6)
    np.testing.assert_allclose(rel.scores.numpy(), (pool.reshape(2, 8) @ FC.T)[:, 0], rtol=1e-5)
    assert rel.empty == () and rel.layers == ("conv", "pool") and rel.method == "gradcam"
    assert rel.layer_maps.dtype == torch.float32 and rel.layer_maps.shape == (2, 2, 4, 4)


def test_gradcam_with_a_cosine_target_matches_the_hand_computation(model: TinyNet, x: torch.Tensor) -> None:
    reference = torch.tensor([0.3, -1.0, 0.5])
    rel = compute_relevance(model, x, CosineTo(reference), ["pool"], method="gradcam")
    _, pool = hand_activations(x.numpy().astype(np.float64))
    e = pool.reshape(2, 8) @ FC.T
    r = reference.numpy().astype(np.float64)
    e_norm = np.linalg.norm(e, axis=1, keepdims=True)
    cos = (e @ r)[:, None] / (e_norm * np.linalg.norm(r))
    ds_de = (r / np.linalg.norm(r) - cos * e / e_norm) / e_norm  # gradient of the cosine
    g_pool, _ = hand_grads(ds_de)
    expected = normalise(UP @ hand_gradcam(pool, g_pool) @ UP.T)
    np.testing.assert_allclose(rel.layer_maps[:, 0].numpy(), expected, atol=1e-6)
    np.testing.assert_allclose(rel.scores.numpy(), cos[:, 0], rtol=1e-5)


def test_layercam_gradxact_and_input_by_hand(model: TinyNet, x: torch.Tensor) -> None:
    conv, _ = hand_activations(x.numpy().astype(np.float64))
    _, g_conv = hand_grads(np.eye(3)[[0, 0]])
    layercam = compute_relevance(model, x, first_coordinate, ["conv"], method="layercam")
    expected = normalise(np.maximum((np.maximum(g_conv, 0) * conv).sum(axis=1), 0))
    np.testing.assert_allclose(layercam.overall.numpy(), expected, atol=1e-6)
    gradxact = compute_relevance(model, x, first_coordinate, ["conv", INPUT_LAYER], method="gradxact")
    np.testing.assert_allclose(gradxact.layer_maps[:, 0].numpy(), normalise(np.abs((g_conv * conv).sum(1))), atol=1e-6)
    g_x = np.einsum("nchw,ck->nkhw", g_conv, CONV)  # back through the 1×1 conv
    expected_input = normalise(np.abs((g_x * x.numpy()).sum(axis=1)))
    np.testing.assert_allclose(gradxact.layer_maps[:, 1].numpy(), expected_input, atol=1e-6)


def test_empty_layer_maps_are_reported_and_left_out_of_the_overall(model: TinyNet) -> None:
    # For s = -e0 the Grad-CAM weights at conv are alpha = -(0.375, 0.125) / 4, so the map is
    # ReLU(sum_k beta_k x_k) with beta = alpha @ CONV = (-0.0703, 0.0313, -0.0547): all zero when channel 1 is small
    # and channels 0, 2 are large; the negated crop gives a map that is positive everywhere.
    x = torch.rand(1, 3, 4, 4, generator=torch.Generator().manual_seed(4)) * 0.5 + 0.5
    x[:, 1] *= 0.1
    batch = torch.cat([x, -x])
    rel = compute_relevance(model, batch, lambda e: -e[:, 0], ["conv", INPUT_LAYER], weights=[3, 1])
    assert rel.empty == ((0, "conv"),)
    assert rel.empty_samples == ()
    assert float(rel.layer_maps[0, 0].abs().sum()) == 0
    torch.testing.assert_close(rel.overall[0], rel.layer_maps[0, 1])  # weights renormalised over the input layer
    torch.testing.assert_close(rel.overall[1], 0.75 * rel.layer_maps[1, 0] + 0.25 * rel.layer_maps[1, 1])
    torch.testing.assert_close(rel.overall.sum(dim=(1, 2)), torch.ones(2))
    only_conv = compute_relevance(model, batch, lambda e: -e[:, 0], ["conv"])
    assert only_conv.empty_samples == (0,) and float(only_conv.overall[0].sum()) == 0


def test_maps_are_distributions_and_deterministic(model: TinyNet, x: torch.Tensor) -> None:
    a = compute_relevance(model, x, CosineTo(torch.tensor([0.3, -1.0, 0.5])), ["conv", "pool", INPUT_LAYER])
    b = compute_relevance(model, x.clone(), CosineTo(torch.tensor([0.3, -1.0, 0.5])), ["conv", "pool", INPUT_LAYER])
    assert torch.equal(a.layer_maps, b.layer_maps) and torch.equal(a.overall, b.overall)
    assert (a.layer_maps >= 0).all()
    torch.testing.assert_close(a.layer_maps.sum(dim=(2, 3)), torch.ones(2, 3))


def test_batches_give_the_same_maps_as_one_pass(model: TinyNet) -> None:
    x = torch.rand(5, 3, 4, 4, generator=torch.Generator().manual_seed(3)) - 0.3
    target = reference_target(embed(model, x))
    whole = compute_relevance(model, x, target, ["conv", "pool"], method="layercam")
    batched = compute_relevance(model, x, target, ["conv", "pool"], method="layercam", batch_size=2)
    torch.testing.assert_close(whole.layer_maps, batched.layer_maps)
    torch.testing.assert_close(whole.scores, batched.scores)


def test_relevance_leaves_the_model_as_it_was(model: TinyNet, x: torch.Tensor) -> None:
    model.train()
    compute_relevance(model, x, first_coordinate, ["conv"])
    assert model.training and all(p.requires_grad for p in model.parameters())
    assert all(p.grad is None for p in model.parameters())
    assert not model.conv._forward_hooks


def test_non_spatial_layer_and_bad_weights_are_refused(model: TinyNet, x: torch.Tensor) -> None:
    with pytest.raises(Exception, match="not \\(N, C, h, w\\)"):
        compute_relevance(model, x, first_coordinate, ["fc"])
    with pytest.raises(Exception, match="2 layer weights for 1 layers"):
        compute_relevance(model, x, first_coordinate, ["conv"], weights=[1, 2])
    with pytest.raises(KeyError, match="did you mean gradcam"):
        compute_relevance(model, x, first_coordinate, ["conv"], method="gradcma")


def test_upsampling_matches_torch_bilinear() -> None:
    m = torch.rand(1, 1, 2, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    up = F.interpolate(m, size=(4, 4), mode="bilinear", align_corners=False)[0, 0].numpy()
    np.testing.assert_allclose(up, UP @ m[0, 0].numpy() @ UP.T)
