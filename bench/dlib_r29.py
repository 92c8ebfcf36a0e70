"""Measurements for the `dlib-r29` port against native dlib (dlib-bin + face_recognition_models).

    facecloak bench dlib-r29 [--shared ../shared] [--what fidelity,template,auc,timing] [--lfw-count 20]

fidelity  cosine between native dlib's descriptor and the port's, on the same dlib chips (LFW + deepface)
template  mean 68-point landmark positions (eye centres, nose tip, mouth corners) in dlib's 150 px / 0.25 chip,
          for checking the `dlib150` five-point template in facecloak.faces.align
auc       genuine vs impostor cosine AUC of the port on deepface (dlib chips), rank formula
lfw       LFW 10-fold accuracy (official pairs.txt) of the port on chips cut by dlib's own pipeline (HOG detector +
          5- or 68-point shape predictor + get_face_chip), the pipeline dlib's published 99.38 % comes from;
          photos where the HOG detector finds nothing get the median detected box (counted and printed)
timing    forward time of the port at batch 1 and 16 on this CPU

Needs the model pulled (`facecloak models pull dlib-r29`) and the `dlib` extra installed.
Prints plain text; every number carries its n.
"""

from __future__ import annotations

import csv
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageOps

from facecloak.errors import ConfigError

CHIP_SIZE = 150
CHIP_PADDING = 0.25
DETECT_MAX_SIDE = 800  # detect on a downscaled copy of big photos; landmarks run on the full photo


@dataclass(frozen=True)
class DlibTools:
    dlib: Any  # the module, from `facecloak.models.blackbox.import_dlib`
    detector: Any
    shape5: Any
    shape68: Any
    recogniser: Any


@dataclass(frozen=True)
class ChipResult:
    """A dlib chip (RGB uint8, 150x150) and the 68 landmarks mapped into chip pixel coordinates (x, y)."""

    chip: np.ndarray
    landmarks68_in_chip: np.ndarray | None


def load_dlib() -> DlibTools:
    from facecloak.models.blackbox import frontal_face_detector, import_dlib

    dlib, files = import_dlib("the dlib-r29 measurements")
    return DlibTools(
        dlib=dlib,
        detector=frontal_face_detector(dlib),
        shape5=dlib.shape_predictor(files.shape5),
        shape68=dlib.shape_predictor(files.shape68),
        recogniser=dlib.face_recognition_model_v1(files.descriptor),
    )


def read_rgb(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(ImageOps.exif_transpose(im).convert("RGB"))


def largest_face(tools: DlibTools, rgb: np.ndarray):  # -> dlib.rectangle | None
    dlib = tools.dlib
    factor = min(1.0, DETECT_MAX_SIDE / max(rgb.shape[:2]))
    size = (round(rgb.shape[1] * factor), round(rgb.shape[0] * factor))
    small = rgb if factor == 1.0 else np.asarray(Image.fromarray(rgb).resize(size, Image.Resampling.BILINEAR))
    boxes = list(tools.detector(small, 1))
    if not boxes:
        return None
    box = max(boxes, key=lambda r: r.width() * r.height())
    return dlib.rectangle(*(round(v / factor) for v in (box.left(), box.top(), box.right(), box.bottom())))


def mapping_to_chip(details) -> np.ndarray:
    """2x3 affine photo -> chip, as dlib's `get_mapping_to_chip` (pixel centres at integer coordinates)."""
    r = details.rect
    centre = np.array([(r.left() + r.right()) / 2, (r.top() + r.bottom()) / 2])
    cos, sin = np.cos(details.angle), np.sin(details.angle)
    rot = np.array([[cos, -sin], [sin, cos]])
    corners = np.array([[r.left(), r.top()], [r.right(), r.top()], [r.right(), r.bottom()]])
    src = (corners - centre) @ rot.T + centre
    dst = np.array([[0, 0], [details.cols - 1, 0], [details.cols - 1, details.rows - 1]], dtype=float)
    # Solve dst = A @ [src, 1] for the 2x3 matrix A.
    design = np.hstack([src, np.ones((3, 1))])
    return np.linalg.solve(design, dst).T


def dlib_chip(tools: DlibTools, rgb: np.ndarray, *, with_68: bool = False) -> ChipResult | None:
    dlib = tools.dlib
    box = largest_face(tools, rgb)
    if box is None:
        return None
    shape = tools.shape5(rgb, box)
    chip = np.asarray(dlib.get_face_chip(rgb, shape, size=CHIP_SIZE, padding=CHIP_PADDING))
    points = None
    if with_68:
        details = dlib.get_face_chip_details(shape, CHIP_SIZE, CHIP_PADDING)
        matrix = mapping_to_chip(details)
        s68 = tools.shape68(rgb, box)
        photo_pts = np.array([[p.x, p.y] for p in s68.parts()], dtype=float)
        points = photo_pts @ matrix[:, :2].T + matrix[:, 2]
    return ChipResult(chip=chip, landmarks68_in_chip=points)


def native_descriptor(tools: DlibTools, chip: np.ndarray) -> np.ndarray:
    return np.asarray(tools.recogniser.compute_face_descriptor(np.ascontiguousarray(chip), 0))


def port_descriptors(model: torch.nn.Module, chips: list[np.ndarray]) -> np.ndarray:
    x = torch.from_numpy(np.stack(chips)).permute(0, 3, 1, 2).float()
    with torch.no_grad():
        return model(x).numpy()


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a / np.linalg.norm(a, axis=-1, keepdims=True)
    b = b / np.linalg.norm(b, axis=-1, keepdims=True)
    return np.sum(a * b, axis=-1)


def rank_auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Mann-Whitney AUC with average ranks for ties: P(score of a positive > score of a negative)."""
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(len(scores))
    sorted_scores = scores[order]
    i = 0
    while i < len(scores):
        j = i
        while j + 1 < len(scores) and sorted_scores[j + 1] == sorted_scores[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2 + 1
        i = j + 1
    pos = labels.astype(bool)
    n_pos, n_neg = int(pos.sum()), int((~pos).sum())
    return float((ranks[pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def lfw_photos(lfw: Path, count: int) -> Iterator[Path]:
    """The first image of `count` people spread evenly over the name-sorted list (deterministic)."""
    people = sorted(p for p in lfw.iterdir() if p.is_dir())
    step = max(1, len(people) // count)
    for person in people[::step][:count]:
        images = sorted(person.glob("*.jpg"))
        if images:
            yield images[0]


def deepface_rows(deepface: Path) -> list[tuple[Path, str]]:
    with open(deepface / "manifest.csv", newline="") as fh:
        return [(deepface / row["path"], row["identity"]) for row in csv.DictReader(fh)]


# -------------------------------------------------------------------------------------------------------------


def measure_fidelity(tools: DlibTools, model: torch.nn.Module, photos: list[Path]) -> None:
    chips, names = [], []
    for path in photos:
        result = dlib_chip(tools, read_rgb(path))
        if result is None:
            print(f"  no face: {path.name}")
            continue
        chips.append(result.chip)
        names.append(path.name)
    native = np.stack([native_descriptor(tools, c) for c in chips])
    port = port_descriptors(model, chips)
    cos = cosine(native, port)
    print(f"fidelity: cosine(native dlib, port) min {cos.min():.5f} mean {cos.mean():.5f} n={len(cos)}")
    print(f"  native |d| mean {np.linalg.norm(native, axis=1).mean():.4f}, port |d| mean "
          f"{np.linalg.norm(port, axis=1).mean():.4f}")


def measure_template(tools: DlibTools, photos: list[Path]) -> None:
    names = ("left eye centre (36-41)", "right eye centre (42-47)", "nose tip (30)", "left mouth (48)",
             "right mouth (54)")
    rows = []
    for path in photos:
        result = dlib_chip(tools, read_rgb(path), with_68=True)
        if result is None or result.landmarks68_in_chip is None:
            continue
        p = result.landmarks68_in_chip
        rows.append([p[36:42].mean(0), p[42:48].mean(0), p[30], p[48], p[54]])
    pts = np.array(rows)  # (n, 5, 2)
    print(f"template: dlib 150 px / padding 0.25 chip, 68-point landmarks mapped into the chip, n={len(pts)}")
    for name, mean, std in zip(names, pts.mean(0), pts.std(0), strict=True):
        print(f"  {name:26s} x {mean[0]:7.2f}  y {mean[1]:7.2f}   (sd {std[0]:.2f}, {std[1]:.2f})")


def measure_auc(tools: DlibTools, model: torch.nn.Module, deepface: Path) -> None:
    chips, ids = [], []
    for path, identity in deepface_rows(deepface):
        result = dlib_chip(tools, read_rgb(path))
        if result is None:
            print(f"  no face: {path.relative_to(deepface)}")
            continue
        chips.append(result.chip)
        ids.append(identity)
    for label, emb in (("port", port_descriptors(model, chips)),
                       ("native", np.stack([native_descriptor(tools, c) for c in chips]))):
        unit = emb / np.linalg.norm(emb, axis=1, keepdims=True)
        sims = unit @ unit.T
        upper = np.triu_indices(len(ids), k=1)
        same = np.array([[a == b for b in ids] for a in ids])[upper]
        auc = rank_auc(sims[upper], same)
        print(f"auc ({label}): {auc:.5f}  faces n={len(ids)} of {len(deepface_rows(deepface))}, "
              f"genuine pairs {int(same.sum())}, impostor pairs {int((~same).sum())}")


def lfw_chips(tools: DlibTools, photos: list[Path], predictor: Any) -> tuple[dict[Path, np.ndarray], int]:
    """dlib chips of every photo; the HOG detector's misses fall back to the median box of the hits."""
    dlib = tools.dlib
    boxes: dict[Path, Any] = {}
    rgbs: dict[Path, np.ndarray] = {}
    for i, path in enumerate(photos):
        rgbs[path] = read_rgb(path)
        boxes[path] = largest_face(tools, rgbs[path])
        if i % 1000 == 0:
            print(f"  detect {i}/{len(photos)}", flush=True)
    hits = np.array([[b.left(), b.top(), b.right(), b.bottom()] for b in boxes.values() if b is not None])
    fallback = dlib.rectangle(*(int(v) for v in np.round(np.median(hits, axis=0))))
    misses = sum(b is None for b in boxes.values())
    chips = {}
    for path in photos:
        shape = predictor(rgbs[path], boxes[path] or fallback)
        chips[path] = np.asarray(dlib.get_face_chip(rgbs[path], shape, size=CHIP_SIZE, padding=CHIP_PADDING))
    return chips, misses


def measure_lfw(tools: DlibTools, model: torch.nn.Module, lfw: Path, predictors: str = "5,68") -> None:
    """10-fold accuracy with cosine and with dlib's own score (Euclidean distance of the raw descriptors), each
    also with the descriptors of the chip and its mirror image summed (flip test-time augmentation)."""
    from facecloak.photos.labelled import read_lfw_pairs
    from facecloak.verification.roc import ten_fold_accuracy

    pairs = read_lfw_pairs(lfw / "pairs.txt")
    photos = sorted({p for _, a, b, _ in pairs for p in (a, b)})
    same = np.array([s for *_, s in pairs])
    folds = np.array([f for f, *_ in pairs])
    index = {p: i for i, p in enumerate(photos)}
    a_idx = np.array([index[a] for _, a, _, _ in pairs])
    b_idx = np.array([index[b] for _, _, b, _ in pairs])
    chosen = {"5": ("5-point", tools.shape5), "68": ("68-point", tools.shape68)}
    for key in predictors.split(","):
        name, predictor = chosen[key]
        start = time.perf_counter()
        chips, misses = lfw_chips(tools, photos, predictor)
        plain, flipped = [], []
        for i in range(0, len(photos), 64):
            batch = [chips[p] for p in photos[i : i + 64]]
            plain.append(port_descriptors(model, batch))
            flipped.append(port_descriptors(model, [np.ascontiguousarray(c[:, ::-1]) for c in batch]))
        emb, emb_flip = np.concatenate(plain), np.concatenate(flipped)
        for label, e in (("", emb), (", flip TTA", emb + emb_flip)):
            for score_name, scores in (("cosine", cosine(e[a_idx], e[b_idx])),
                                       ("-euclidean", -np.linalg.norm(e[a_idx] - e[b_idx], axis=1))):
                mean, std = ten_fold_accuracy(scores, same, folds)
                print(f"lfw ({name} shape predictor, {score_name}{label}): 10-fold accuracy {mean * 100:.2f} % "
                      f"± {std * 100:.2f} (n={len(pairs)} pairs, {len(photos)} photos, HOG detector missed "
                      f"{misses}, {time.perf_counter() - start:.0f} s)", flush=True)


def measure_timing(model: torch.nn.Module, repeats: int = 10) -> None:
    """Min and median wall time per call; the min is the best estimate on a shared, busy machine."""
    gen = torch.Generator().manual_seed(0)
    for batch in (1, 16):
        x = torch.rand(batch, 3, CHIP_SIZE, CHIP_SIZE, generator=gen) * 255
        forward, backward = [], []
        for _ in range(repeats):
            start = time.perf_counter()
            with torch.no_grad():
                model(x)
            forward.append(time.perf_counter() - start)
            xg = x.clone().requires_grad_(True)
            start = time.perf_counter()
            torch.autograd.grad(model(xg).sum(), xg)
            backward.append(time.perf_counter() - start)
        print(f"timing: batch {batch:2d} forward min {min(forward) * 1000:6.1f} ms median "
              f"{np.median(forward) * 1000:6.1f} ms; forward+input-gradient min {min(backward) * 1000:6.1f} ms "
              f"median {np.median(backward) * 1000:6.1f} ms (n={repeats}, threads {torch.get_num_threads()})")


MEASUREMENTS = ("fidelity", "template", "auc", "lfw", "timing")
DEFAULT_SHARED = Path(__file__).resolve().parents[1].parent / "shared"


def run_dlib_r29(what: set[str], shared: Path = DEFAULT_SHARED, lfw_count: int = 20) -> None:
    """Print the chosen measurements (see the module docstring), each number with its n."""
    unknown = sorted(what - set(MEASUREMENTS))
    if unknown:
        raise ConfigError(f"unknown measurement(s) {', '.join(unknown)}; choose from {', '.join(MEASUREMENTS)}")

    from facecloak.models import load_model

    model = load_model("dlib-r29")
    faces = shared / "faces"
    tools = load_dlib() if what & {"fidelity", "template", "auc", "lfw"} else None
    if "fidelity" in what and tools is not None:
        photos = list(lfw_photos(faces / "lfw", lfw_count))
        photos += [p for p, _ in deepface_rows(faces / "deepface")][::6]
        measure_fidelity(tools, model, photos)
    if "template" in what and tools is not None:
        measure_template(tools, list(lfw_photos(faces / "lfw", lfw_count)))
    if "auc" in what and tools is not None:
        measure_auc(tools, model, faces / "deepface")
    if "lfw" in what and tools is not None:
        measure_lfw(tools, model, faces / "lfw")
    if "timing" in what:
        measure_timing(model)

