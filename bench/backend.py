"""What the transfer benchmark needs from the outside world: models, detector, parser, thresholds (`Backend`).

Injectable, so tests run the whole benchmark on tiny hand-made models; `default_backend()` reads the model zoo.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from torch import nn

from facecloak.faces.parse import FaceParser
from facecloak.models.blackbox import Recogniser
from facecloak.verification.embedding_cache import detector_settings
from facecloak.verification.thresholds import Thresholds


@dataclass(frozen=True)
class Network:
    """A differentiable source model: module (float RGB 0-255 (N, 3, S, S) -> (N, D)), its template, layers.

    `id` names a spec of `facecloak.models.MODELS`: the masking stage (`facecloak.masking.leamface.model_maps`)
    reads the model's template there (tests register their hand-made models' specs)."""

    id: str
    module: nn.Module
    template: str
    default_layers: tuple[str, ...]


@dataclass(frozen=True)
class Backend:
    """Models, detector, parser and thresholds the runner uses. `default_backend()` reads the model zoo."""

    network: Callable[[str], Network]  # differentiable model id -> Network (sources, cloak members)
    recogniser: Callable[[str], Recogniser]  # target name (model id or black box) -> Recogniser
    detector: Any  # `.detect(rgb) -> list[Face]`
    parser: FaceParser
    parser_name: str
    thresholds: Callable[[str], Thresholds | None]
    cache_tag: Callable[[str], str | None]  # recogniser name -> on-disk embedding cache tag (None: no cache)
    use_cache: bool = True  # detection and embedding caches under $FACECLOAK_HOME
    notes: tuple[str, ...] = ()
    device: str = "cpu"  # where the networks and the differentiable recognisers run (their inputs go there too)


def _weights_tag(name: str) -> str:
    """A tag that changes when a recogniser's weights do: converted weights' sha256, or the source file's."""
    from facecloak import paths

    info = paths.models_dir() / f"{name}.json"
    if info.is_file():
        return str(json.loads(info.read_text()).get("weights_sha256", ""))[:16]
    if name.startswith("onnx:"):
        from facecloak.models.pull import sha256_file

        return sha256_file(Path(name.removeprefix("onnx:")).expanduser())[:16]
    return "v1"


def default_backend(*, use_cache: bool = True, device: str = "cpu") -> Backend:
    """The real zoo: MTCNN, FaceMesh (landmarks5 with a note when FaceMesh is not pulled), shipped/user thresholds;
    the models on `device` (auto, cpu, cuda[:N]; detection and parsing stay on the CPU)."""
    from facecloak.faces.detect import load_detector
    from facecloak.faces.parse import get_parser, is_parser_pulled
    from facecloak.masking.stage import resolve_device
    from facecloak.models import MODELS, get_spec, load_model
    from facecloak.models.blackbox import differentiable_recogniser, get_recogniser
    from facecloak.verification.thresholds import load_thresholds

    dev = str(resolve_device(device))
    notes: list[str] = []
    if is_parser_pulled():
        parser_name = "facemesh"
    else:
        parser_name = "landmarks5"
        notes.append("FaceMesh is not pulled (`facecloak models pull`): face regions come from the approximate "
                     "landmarks5 parser")

    @cache
    def network(model_id: str) -> Network:
        spec = get_spec(model_id)
        return Network(model_id, load_model(model_id).to(dev), spec.template, tuple(spec.default_layers))

    @cache
    def recogniser(name: str) -> Recogniser:
        return differentiable_recogniser(name, device=dev) if name in MODELS else get_recogniser(name)

    detector = load_detector("mtcnn")
    det_key = hashlib.sha256(json.dumps(detector_settings(detector), sort_keys=True).encode()).hexdigest()[:8]

    def cache_tag(name: str) -> str | None:
        safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", name)[-40:]
        on = "" if dev == "cpu" or name not in MODELS else f"-{dev.replace(':', '')}"  # a GPU's floats differ a little
        return f"bench-{safe}-{_weights_tag(name)}-{det_key}{on}" if use_cache else None

    return Backend(network=network, recogniser=recogniser, detector=detector, parser=get_parser(parser_name),
                   parser_name=parser_name, thresholds=load_thresholds, cache_tag=cache_tag, use_cache=use_cache,
                   notes=tuple(notes), device=dev)

