"""Forward hooks that live only inside one `with capture(...)` block.

    with capture(model, ["layer2", "layer4.1.conv2", "input"]) as cap:
        embeddings = cap(x)                        # one forward; activations of this forward only
        grads = cap.gradients(target(embeddings))  # torch.autograd.grad on the captured activations

While the block runs the model is in eval mode and no parameter requires a gradient (gradients are taken with
respect to activations only, which is cheaper and leaves `.grad` of the parameters untouched). On the way out
—also when an exception is raised, which is never swallowed— every hook is removed, and each module's
train/eval flag and each parameter's `requires_grad` flag are restored to what they were.
"""

from __future__ import annotations

import difflib
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import Tensor, nn

from .errors import LayerCaptureError, UnknownLayerError

INPUT_LAYER = "input"
"""Pseudo-layer name: the model's input itself (its map is gradient × input at pixel resolution)."""


def resolve_layer(model: nn.Module, name: str) -> nn.Module:
    """The submodule at dotted path `name`; an unknown name raises `UnknownLayerError` listing close names."""
    try:
        return model.get_submodule(name)
    except AttributeError:
        known = [n for n, _ in model.named_modules() if n]
        close = difflib.get_close_matches(name, known, n=5, cutoff=0.5)
        hint = f"; close names: {', '.join(close)}" if close else ""
        raise UnknownLayerError(
            f"{type(model).__name__} has no layer {name!r}{hint}. Layers are dotted module paths as listed by "
            f"model.named_modules(), or {INPUT_LAYER!r} for the input pixels."
        ) from None


class Capture:
    """Activations of the named layers during the most recent forward run through `__call__`."""

    def __init__(self, model: nn.Module, layer_names: Sequence[str]) -> None:
        self.model = model
        self.layer_names: tuple[str, ...] = tuple(layer_names)
        self.activations: dict[str, Tensor] = {}
        self._calls: Counter[str] = Counter()

    def __call__(self, x: Tensor) -> Tensor:
        """Run one forward of the model on `x` with gradients enabled and return its output.

        `x` is detached and made to require a gradient, so every activation downstream of it is differentiable
        even though the parameters are frozen. The activations of earlier forwards are dropped.
        """
        self.activations = {}
        self._calls.clear()
        x = x.detach().requires_grad_(True)
        if INPUT_LAYER in self.layer_names:
            self.activations[INPUT_LAYER] = x
        with torch.enable_grad():
            output = self.model(x)
        self._check_complete()
        return output

    def gradients(self, score: Tensor) -> dict[str, Tensor]:
        """d score.sum() / d activation for every captured layer (one `torch.autograd.grad` call)."""
        names = list(self.activations)
        grads = torch.autograd.grad(score.sum(), [self.activations[n] for n in names])
        return dict(zip(names, grads, strict=True))

    def _record(self, name: str, output: object) -> Tensor:
        if not isinstance(output, Tensor):
            raise LayerCaptureError(
                f"layer {name!r} returned {type(output).__name__}, not a tensor; pick a module whose output is the "
                "(N, C, h, w) feature map"
            )
        self._calls[name] += 1
        # A clone, returned as the module's output: later in-place ops (ReLU(inplace=True)) then act on the copy
        # and the captured tensor stays exactly this module's output, with its own gradient.
        activation = output.clone()
        self.activations[name] = activation
        return activation

    def _check_complete(self) -> None:
        modules = [n for n in self.layer_names if n != INPUT_LAYER]
        missing = [n for n in modules if self._calls[n] == 0]
        if missing:
            raise LayerCaptureError(f"layers {', '.join(missing)} did not run during the forward pass")
        repeated = [n for n in modules if self._calls[n] > 1]
        if repeated:
            raise LayerCaptureError(
                f"layers {', '.join(repeated)} ran more than once in one forward (a shared module, e.g. one ReLU "
                "reused by several blocks); its activation is ambiguous, name a module that runs once"
            )


@contextmanager
def capture(model: nn.Module, layer_names: Sequence[str]) -> Iterator[Capture]:
    """Hook the named layers of `model` for the duration of the block (see the module docstring)."""
    names = tuple(layer_names)
    if not names:
        raise LayerCaptureError("no layers to capture; name at least one layer")
    duplicates = sorted(n for n, c in Counter(names).items() if c > 1)
    if duplicates:
        raise LayerCaptureError(f"layers named more than once: {', '.join(duplicates)}")
    modules = {n: resolve_layer(model, n) for n in names if n != INPUT_LAYER}

    cap = Capture(model, names)
    training = [(m, m.training) for m in model.modules()]
    requires_grad = [(p, p.requires_grad) for p in model.parameters()]
    handles = []
    try:
        for name, module in modules.items():
            handles.append(module.register_forward_hook(lambda _m, _i, out, name=name: cap._record(name, out)))
        model.eval()
        for p, _ in requires_grad:
            p.requires_grad_(False)
        yield cap
    finally:
        for handle in handles:
            handle.remove()
        for module, mode in training:
            module.training = mode
        for p, flag in requires_grad:
            p.requires_grad_(flag)
        cap.activations = {}  # drop references to the graph so its memory is freed with the block
