"""Recognisers behind one numpy interface: black-box ones (no gradients) and wrapped differentiable models.

A `Recogniser` turns aligned uint8 RGB crops into embeddings. Black-box recognisers are the transfer targets
that protection is measured against (the original ONNX under onnxruntime, native dlib, any ArcFace-style
ONNX file a user has); `differentiable_recogniser` wraps a `MODELS` entry so the bench evaluates every
model the same way.

Names resolved by `get_recogniser`:
    `mbf-arc-onnx`        the original `fr_feature.onnx` under onnxruntime (needs `facecloak models pull mbf-arc`)
    `dlib-native`         dlib's ResNet face descriptor on 150x150 dlib chips (needs `facecloak[dlib]`)
    `onnx:/path/x.onnx`   an ArcFace-style ONNX file: RGB, (x - 127.5) / 127.5, size read from the graph
    any `MODELS` id       the PyTorch port, under `torch.no_grad`
"""

from __future__ import annotations

import contextlib
import difflib
import glob
import importlib.util
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from facecloak import paths
from facecloak.errors import ConfigError, FacecloakError, ImageError
from facecloak.files import atomic_write_bytes, sha256_file
from facecloak.models import MODELS, load_model
from facecloak.models.pull import read_record, sha256_bytes
from leam.registry import Registry, UnknownNameError

EmbedFn = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class Recogniser:
    """A face recogniser seen as a function of aligned crops.

    `embed(crops)`: crops uint8 RGB (N, input_size, input_size, 3), aligned to the template named by
    `template` -> float32 (N, D) raw embeddings (compare them with cosine similarity).
    """

    id: str
    template: str
    input_size: int
    embed_fn: EmbedFn = field(repr=False, compare=False)
    # Keys on-disk embedding caches (`facecloak.verification.embedding_cache`); None = do not cache this recogniser's
    # outputs.
    cache_tag: str | None = None

    def embed(self, crops: np.ndarray) -> np.ndarray:
        s = self.input_size
        well_formed = isinstance(crops, np.ndarray) and crops.dtype == np.uint8 and crops.shape[1:] == (s, s, 3)
        if not well_formed:
            got = f"{crops.dtype} {crops.shape}" if isinstance(crops, np.ndarray) else type(crops).__name__
            raise ImageError(
                f"recogniser {self.id!r} takes uint8 RGB crops of shape (N, {s}, {s}, 3) aligned to "
                f"{self.template}, got {got}"
            )
        if len(crops) == 0:
            raise ImageError(f"recogniser {self.id!r} got an empty batch of crops")
        out = np.asarray(self.embed_fn(crops), dtype=np.float32)
        return out.reshape(len(crops), -1)


RecogniserFactory = Callable[[], Recogniser]
RECOGNISERS: Registry[RecogniserFactory] = Registry("recogniser")


# --- ONNX under onnxruntime ----------------------------------------------------------------------------------


def onnx_recogniser(
    path: Path,
    *,
    recogniser_id: str | None = None,
    template: str = "arcface112",
    mean: float = 127.5,
    std: float = 127.5,
    colour_order: str = "RGB",
) -> Recogniser:
    """An ONNX face-embedding model run by onnxruntime on CPU.

    The graph must take one float image tensor, NCHW (N, 3, S, S) or NHWC (N, S, S, 3); S is read from the
    graph. Pixels are fed as (x - mean) / std in `colour_order`. A fixed batch dimension (e.g. 1) is honoured by
    running the crops in chunks of that size (the last chunk padded by repetition, the padding dropped).
    """
    import onnxruntime as ort

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"ONNX recogniser file not found: {path}")
    if colour_order not in ("RGB", "BGR"):
        raise ConfigError(f"colour_order must be RGB or BGR, got {colour_order!r}")
    try:
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own exception types for unreadable graphs
        raise ConfigError(f"onnxruntime cannot load {path}: {exc}") from exc
    inputs = session.get_inputs()
    if len(inputs) != 1:
        raise ConfigError(f"{path.name} has {len(inputs)} inputs; a face-embedding model takes one image")
    layout, size, fixed_batch = _image_input_layout(inputs[0].shape, path.name)
    input_name = inputs[0].name

    def embed(crops: np.ndarray) -> np.ndarray:
        x = crops[..., ::-1] if colour_order == "BGR" else crops
        x = (x.astype(np.float32) - mean) / std
        if layout == "NCHW":
            x = x.transpose(0, 3, 1, 2)
        x = np.ascontiguousarray(x)
        chunk = fixed_batch or len(x)
        outputs = []
        for start in range(0, len(x), chunk):
            part = x[start:start + chunk]
            n = len(part)
            if n < chunk:  # a graph with a fixed batch needs a full one
                part = np.concatenate([part, np.repeat(part[-1:], chunk - n, axis=0)])
            out = session.run(None, {input_name: part})[0]
            outputs.append(np.asarray(out, np.float32).reshape(chunk, -1)[:n])
        return np.concatenate(outputs)

    return Recogniser(
        id=recogniser_id or f"onnx:{path}", template=template, input_size=size, embed_fn=embed
    )


def _image_input_layout(shape: list, name: str) -> tuple[str, int, int | None]:
    """(layout, square size, fixed batch or None) of an image input shape such as [1, 3, 112, 112]."""
    if len(shape) != 4:
        raise ConfigError(f"{name}: input shape {shape} is not an image batch (N, C, H, W) or (N, H, W, C)")
    batch = shape[0] if isinstance(shape[0], int) and shape[0] > 0 else None
    if shape[1] == 3:
        layout, h, w = "NCHW", shape[2], shape[3]
    elif shape[3] == 3:
        layout, h, w = "NHWC", shape[1], shape[2]
    else:
        raise ConfigError(f"{name}: input shape {shape} has no 3-channel axis")
    if not (isinstance(h, int) and isinstance(w, int) and h == w and h > 0):
        raise ConfigError(f"{name}: input shape {shape} needs a fixed square image size")
    return layout, h, batch


def _mbf_arc_onnx() -> Recogniser:
    from facecloak.models.mbf_arc import ONNX_FILE, SOURCE
    from facecloak.models.pull import cached_source_files

    files = cached_source_files(SOURCE, "mbf-arc-onnx (the original fr_feature.onnx of `mbf-arc`)")
    # The package's JavaScript normalises with (x - 127) / 128 on RGB.
    return onnx_recogniser(files[ONNX_FILE], recogniser_id="mbf-arc-onnx", mean=127.0, std=128.0)


RECOGNISERS.register("mbf-arc-onnx", _mbf_arc_onnx)


# --- native dlib ---------------------------------------------------------------------------------------------

DLIB_CHIP_SIZE = 150


@dataclass(frozen=True)
class DlibModelFiles:
    """The dlib model files that the `face_recognition_models` package ships (its `models/` folder)."""

    folder: Path

    @property
    def shape5(self) -> str:
        return str(self.folder / "shape_predictor_5_face_landmarks.dat")

    @property
    def shape68(self) -> str:
        return str(self.folder / "shape_predictor_68_face_landmarks.dat")

    @property
    def descriptor(self) -> str:
        return str(self.folder / "dlib_face_recognition_resnet_model_v1.dat")


def import_dlib(purpose: str) -> tuple[Any, DlibModelFiles]:
    """(dlib, its model files), or a one-line install hint naming `purpose` when they are missing.

    The files are found without importing `face_recognition_models`: its `__init__` imports the deprecated
    `pkg_resources` (0.17 s of every verified protect run) only to return these paths."""
    hint = f"{purpose} needs dlib and its models: pip install 'facecloak[dlib]'"
    try:
        import dlib
    except ImportError as exc:
        raise FacecloakError(f"{hint} ({exc})") from exc
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise FacecloakError(f"{hint} (face_recognition_models is not installed)")
    files = DlibModelFiles(Path(next(iter(spec.submodule_search_locations))) / "models")
    missing = [p for p in (files.shape5, files.shape68, files.descriptor) if not Path(p).is_file()]
    if missing:
        raise FacecloakError(f"{hint} (missing {', '.join(missing)})")
    return dlib, files


def frontal_face_detector(dlib: Any) -> Any:
    """dlib's HOG face detector, `dlib.get_frontal_face_detector()`, through a copy saved in the cache.

    dlib decodes that detector from a string compiled into it on every call (0.34 s of each verified protect run's
    start-up here); the saved copy loads in about 1 ms and is the same detector (dlib saves it byte for byte the
    same each time; `tests/test_models_dlib.py` checks the detections). The copy's name carries dlib's version and
    the start of its sha256, checked on every load, so a damaged file is rebuilt, never used; where the cache cannot
    be written the detector is simply built."""
    folder = paths.home() / "dlib"
    prefix = f"frontal_face_detector-{dlib.__version__}-"
    for saved in sorted(folder.glob(f"{glob.escape(prefix)}*.svm")):
        if sha256_file(saved)[:16] == saved.stem.removeprefix(prefix):
            return dlib.fhog_object_detector(str(saved))
        saved.unlink(missing_ok=True)
    detector = dlib.get_frontal_face_detector()
    with contextlib.suppress(OSError), tempfile.TemporaryDirectory() as scratch:
        detector.save(str(Path(scratch) / "detector.svm"))
        data = (Path(scratch) / "detector.svm").read_bytes()
        atomic_write_bytes(folder / f"{prefix}{sha256_bytes(data)[:16]}.svm", data, durable=False)
    return detector


def _dlib_native() -> Recogniser:
    """dlib's ResNet face descriptor (128-d) on 150x150 chips aligned like `dlib.get_face_chip` (padding 0.25)."""
    dlib, files = import_dlib("the dlib-native recogniser")
    model = dlib.face_recognition_model_v1(files.descriptor)

    def embed(crops: np.ndarray) -> np.ndarray:
        chips = [np.ascontiguousarray(c) for c in crops]
        return np.array([np.array(d, np.float32) for d in model.compute_face_descriptor(chips, 0)], np.float32)

    return Recogniser(id="dlib-native", template="dlib150", input_size=DLIB_CHIP_SIZE, embed_fn=embed)


RECOGNISERS.register("dlib-native", _dlib_native)


# --- differentiable models through the same interface ---------------------------------------------------------


def differentiable_recogniser(model_id: str, *, batch_size: int = 32, device: str | torch.device = "cpu") -> Recogniser:
    """Wrap a `MODELS` entry (weights loaded from the cache) as a `Recogniser`; runs under `torch.no_grad`."""
    if batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
    spec = MODELS.get(model_id)
    module = load_model(model_id).to(device)

    def embed(crops: np.ndarray) -> np.ndarray:
        outputs = []
        with torch.no_grad():
            for start in range(0, len(crops), batch_size):
                x = torch.from_numpy(np.ascontiguousarray(crops[start:start + batch_size]))
                x = x.to(device).permute(0, 3, 1, 2).float()
                outputs.append(module(x).float().cpu().numpy())
        return np.concatenate(outputs)

    record = read_record(spec.id) or {}
    tag = f"{spec.id}-{str(record.get('weights_sha256', ''))[:16]}" if record else None
    return Recogniser(id=spec.id, template=spec.template, input_size=spec.input_size, embed_fn=embed, cache_tag=tag)


def get_recogniser(name: str) -> Recogniser:
    """Resolve a recogniser name: `onnx:<path>`, a `RECOGNISERS` name, or a `MODELS` id (see module doc)."""
    if name.startswith("onnx:"):
        return onnx_recogniser(Path(name.removeprefix("onnx:")).expanduser())
    if name in RECOGNISERS:
        return RECOGNISERS.get(name)()
    if name in MODELS:
        return differentiable_recogniser(name)
    known = [*RECOGNISERS.names(), *MODELS.names()]
    close = difflib.get_close_matches(name, known, n=3)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    raise UnknownNameError(
        f"unknown recogniser {name!r}{hint} (known: {', '.join(sorted(known))}, or onnx:/path/to/model.onnx)"
    )
