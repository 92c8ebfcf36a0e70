"""Protection measured the way the world meets it: `facecloak.protect` writes a file, independent recognisers
read the decoded file through their own detection, landmarks, alignment and resampling
(`facecloak.verification.independent`) and compare it with the person's other, unprotected photos.

    facecloak bench independent --data ../shared/faces/lfw --people 200 -o out/independent \
        --setting default --setting cloak2

A probe is *dodged* by a pipeline when no face that pipeline finds in the protected file reaches its threshold
(FAR 1e-3, calibrated on LFW through the same pipeline: `facecloak bench calibrate-independent`) against any
gallery photo of the person. Probes whose unprotected file the pipeline cannot read (no face, or no gallery
photo it can read) are left out, so every rate is over probes the recogniser could match before protection;
`clean` is the share of those it already fails to match (the floor). Rates come with Wilson 95 % intervals and
every LEAM setting can carry its equal-area random-pixel control (`+random`).
"""

from __future__ import annotations

import csv
import json
import math
import tempfile
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from bench.config import Defence
from bench.defences import apply_defence
from bench.stats import psnr, ssim_local_change
from facecloak.errors import DataError
from facecloak.files import atomic_write_text
from facecloak.masking.leamface import LeamSettings
from facecloak.masking.stage import resolve_device
from facecloak.photos.io import Photo, read_image, write_image
from facecloak.progress import Progress, no_progress
from facecloak.protection.cloak import CloakSettings
from facecloak.protection.protect import DEFAULT_MODELS
from facecloak.verification.independent import IndependentRecogniser, get_independent, read_photo, threshold_id
from facecloak.verification.panel import FAR, Panel
from facecloak.verification.thresholds import save_thresholds


@dataclass(frozen=True)
class Setting:
    """One way of protecting: a fill over a LEAM (or random, the control) selection of `budget` % of the face."""

    name: str
    fill: str = "black"
    budget: float = 1.0
    models: tuple[str, ...] = DEFAULT_MODELS
    cloak: CloakSettings = field(default_factory=CloakSettings)
    random: bool = False  # the control: the same number of pixels drawn uniformly in the face region

    def leam(self) -> LeamSettings:
        if self.random:
            return LeamSettings(budget=self.budget, selection="sampled", gamma=0.0)
        return LeamSettings(budget=self.budget)

    def as_control(self) -> Setting:
        return replace(self, name=f"{self.name}+random", random=True)


@dataclass(frozen=True)
class Probe:
    identity: str
    probe: Path
    gallery: tuple[Path, ...]


def read_manifest(root: Path) -> dict[str, list[Path]]:
    """identity -> photo paths (manifest order) of a faces folder with a `manifest.csv` (path, identity, ...)."""
    manifest = root / "manifest.csv"
    if not manifest.is_file():
        raise DataError(f"{root} has no manifest.csv (columns path, identity)")
    people: dict[str, list[Path]] = {}
    with open(manifest, newline="") as fh:
        for row in csv.DictReader(fh):
            people.setdefault(row["identity"], []).append(root / row["path"])
    return people


def choose_probes(
    root: Path, *, people: int, seed: int = 0, max_gallery: int = 3, probes_per_person: int = 1
) -> list[Probe]:
    """`people` identities with at least two photos, drawn with `seed`; each probe's gallery is up to
    `max_gallery` of the person's other photos."""
    by_id = {k: v for k, v in sorted(read_manifest(root).items()) if len(v) >= 2}
    rng = np.random.default_rng(seed)
    names = sorted(by_id)
    chosen = [names[i] for i in rng.permutation(len(names))[:people]]
    out = []
    for name in sorted(chosen):
        photos = by_id[name]
        for k in range(min(probes_per_person, len(photos))):
            others = [p for p in photos if p != photos[k]][:max_gallery]
            out.append(Probe(name, photos[k], tuple(others)))
    return out


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95 % Wilson score interval of a proportion k / n."""
    if n == 0:
        return (math.nan, math.nan)
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (max(0.0, centre - half), min(1.0, centre + half))


def gmsd(a: np.ndarray, b: np.ndarray) -> float:
    """Gradient Magnitude Similarity Deviation (Xue et al. 2014) of two uint8 RGB images: 0 = identical, larger
    is worse (~0.05 is clearly visible). A weight-free perceptual metric, so it runs offline."""
    def luma(x: np.ndarray) -> np.ndarray:
        y = x.astype(np.float64) @ np.array([0.299, 0.587, 0.114])
        h, w = (y.shape[0] // 2) * 2, (y.shape[1] // 2) * 2
        return y[:h, :w].reshape(h // 2, 2, w // 2, 2).mean(axis=(1, 3))  # the paper's 2x average down-sampling

    def magnitude(y: np.ndarray) -> np.ndarray:
        from scipy.ndimage import convolve

        k = np.array([[1, 0, -1], [1, 0, -1], [1, 0, -1]], np.float64) / 3.0
        return np.hypot(convolve(y, k, mode="nearest"), convolve(y, k.T, mode="nearest"))

    ma, mb = magnitude(luma(a)), magnitude(luma(b))
    c = 170.0
    gms = (2 * ma * mb + c) / (ma**2 + mb**2 + c)
    return float(gms.std())


class Reader:
    """Independent pipelines with a memo of each gallery file's faces (read once per run)."""

    def __init__(self, names: Sequence[str]) -> None:
        panel = Panel(names)  # the verdict's recognisers and thresholds, loaded the same way
        self.recognisers: list[IndependentRecogniser] = panel.recognisers
        self.thresholds = panel.thresholds
        self._memo: dict[Path, dict[str, np.ndarray]] = {}

    def gallery(self, paths: Iterable[Path]) -> dict[str, np.ndarray]:
        """Per pipeline, unit embeddings (G, D) of the largest face it finds in each gallery photo."""
        out: dict[str, list[np.ndarray]] = {r.id: [] for r in self.recognisers}
        for p in paths:
            if p not in self._memo:
                seen = read_photo(read_image(p).rgb, self.recognisers)
                self._memo[p] = {
                    k: max(v, key=lambda f: f.area).embedding
                    for k, v in seen.items() if v
                }
            for k, e in self._memo[p].items():
                out[k].append(e)
        return {k: np.stack(v) for k, v in out.items() if v}

    def faces(self, rgb: np.ndarray) -> dict[str, np.ndarray]:
        """Per pipeline, the unit embeddings (F, D) of every face it finds in `rgb` (absent: none found)."""
        return {k: np.stack([f.embedding for f in v]) for k, v in read_photo(rgb, self.recognisers).items() if v}

    @staticmethod
    def best_match(seen: Mapping[str, np.ndarray], gallery: Mapping[str, np.ndarray]) -> dict[str, float | None]:
        """Per pipeline, the highest cosine between any face seen and the gallery (None: no face seen)."""
        return {r: (float(np.max(seen[r] @ gallery[r].T)) if r in seen and r in gallery else None)
                for r in gallery}


def written_copy(rgb: np.ndarray, like: Photo, folder: Path) -> np.ndarray:
    """`rgb` written the way `facecloak protect` writes the photo `like` (same format, a JPEG with its own
    quantisation tables and chroma subsampling, metadata stripped) and decoded again: what a recogniser downloads."""
    target = folder / f"probe{like.source_path.suffix.lower()}"
    write_image(target, rgb, source=like, overwrite=True)
    return read_image(target).rgb


def protect_probe(rgb: np.ndarray, setting: Setting, seed: int, device: str = "cpu"
                  ) -> tuple[np.ndarray, dict[str, Any]]:
    """The protected photo and what it cost: faces, pixels changed (share of the face boxes), CPU seconds (this
    process's; on a GPU `device` the GPU's own time is not in them)."""
    import facecloak

    t0 = time.process_time()
    result = facecloak.protect(rgb, models=setting.models, budget=setting.budget, fill=setting.fill, seed=seed,
                               settings=setting.leam(), cloak_settings=setting.cloak, device=device)
    cpu = time.process_time() - t0
    box_area = sum(max(1.0, (f.face.box[2] - f.face.box[0]) * (f.face.box[3] - f.face.box[1])) for f in result.faces)
    changed = int((result.image != rgb).any(2).sum())
    return result.image, {"faces": len(result.faces), "cpu_s": cpu, "steps": result.cloak_steps,
                          "changed_of_face": changed / box_area if result.faces else 0.0}


def run(
    probes: Sequence[Probe],
    settings: Sequence[Setting],
    pipelines: Sequence[str],
    *,
    seed: int = 0,
    progress: Progress = no_progress,
    checkpoint: Path | None = None,
    defences: Sequence[Defence] = (),
    device: str = "cpu",
) -> dict[str, Any]:
    """Per probe: the clean and each protected file read by every pipeline. Returns the raw rows and the table.
    `device`: where `protect`'s models and cloak run (`facecloak.masking.stage.resolve_device`: auto, cpu, cuda[:N]);
    the independent recognisers read on the CPU, as they would on a user's machine.

    `defences` (`bench.config.parse_defence`: jpeg75, resize50, blur1, inpaint-mask) are applied to the decoded
    file before the pipelines read it, to the unprotected file too (`unprotected@jpeg75`: what the processing alone
    does) and to each protected one (`high@jpeg75`); inpaint-mask gets exactly the pixels the protection changed.

    With `checkpoint` (a .jsonl file), each finished probe is appended there and a rerun skips the probes it
    already holds for the same settings, pipelines, seed and defences (a long run survives an interruption)."""
    dev = str(resolve_device(device))  # an unavailable device stops here, before any probe
    reader = Reader(pipelines)
    rows: list[dict[str, Any]] = []
    config: list[Any] = [[_setting_json(s) for s in settings], list(pipelines), seed]
    config += [[d.name for d in defences]] if defences else []
    config += [["device", dev]] if dev != "cpu" else []  # CPU runs resume from checkpoints written before the option
    key = json.dumps(config, sort_keys=True, default=str)
    done: dict[str, dict[str, Any]] = {}
    if checkpoint is not None and checkpoint.is_file():
        for line in checkpoint.read_text().splitlines():
            saved = json.loads(line)
            if saved.get("key") == key:
                done[saved["row"]["probe_path"]] = saved["row"]
    with tempfile.TemporaryDirectory(prefix="facecloak-independent-") as tmp:
        for probe in progress(probes, "probes"):
            if str(probe.probe) in done:
                rows.append(done[str(probe.probe)])
                continue
            photo = read_image(probe.probe)
            rgb = photo.rgb
            gallery = reader.gallery(probe.gallery)
            row: dict[str, Any] = {"identity": probe.identity, "probe": probe.probe.name,
                                   "probe_path": str(probe.probe),
                                   }
            unprotected = written_copy(rgb, photo, Path(tmp))
            clean = reader.faces(unprotected)
            row["clean"] = reader.best_match(clean, gallery)

            untouched = np.zeros(rgb.shape[:2], bool)
            no_cost = {"faces": 0, "cpu_s": 0.0, "steps": 0, "changed_of_face": 0.0}
            for d in defences:
                seen = apply_defence(d, unprotected, untouched)
                row[f"unprotected@{d.name}"] = {**no_cost, **_reading(reader, rgb, seen, None, gallery, clean)}
            for s in settings:
                protected, cost = protect_probe(rgb, s, seed, dev)
                decoded = written_copy(protected, photo, Path(tmp))
                box = _face_box(rgb, cost)
                row[s.name] = {**cost, **_reading(reader, rgb, decoded, box, gallery, clean)}
                changed = (protected != rgb).any(axis=-1)
                for d in defences:
                    seen = apply_defence(d, decoded, changed)
                    row[f"{s.name}@{d.name}"] = {**cost, **_reading(reader, rgb, seen, box, gallery, clean)}
            rows.append(row)
            if checkpoint is not None:
                checkpoint.parent.mkdir(parents=True, exist_ok=True)
                with checkpoint.open("a") as fh:
                    fh.write(json.dumps({"key": key, "row": row}, default=float) + "\n")
    names = column_names([s.name for s in settings], [d.name for d in defences])
    return {"rows": rows, "table": table(rows, names, reader.thresholds),
            "thresholds": reader.thresholds, "pipelines": list(pipelines),
            "settings": [_setting_json(s) for s in settings], "seed": seed, "far": FAR,
            "defences": [d.name for d in defences], "device": dev}


def _reading(reader: Reader, rgb: np.ndarray, seen: np.ndarray, box: tuple[slice, slice] | None,
             gallery: Mapping[str, np.ndarray], clean: Mapping[str, np.ndarray]) -> dict[str, Any]:
    """What the pipelines make of a written file `seen` of the input `rgb`: its best match to the gallery and to
    the unprotected original (`clean`'s faces: "self", what `protect`'s verdict uses), and its image quality."""
    faces = reader.faces(seen)
    return {"match": reader.best_match(faces, gallery), "self": reader.best_match(faces, clean),
            "psnr_photo": psnr(rgb, seen), "ssim_photo": ssim_local_change(rgb, seen),
            "gmsd_face": gmsd(rgb[box], seen[box]) if box else 0.0}


def column_names(settings: Sequence[str], defences: Sequence[str]) -> list[str]:
    """The table's settings: each setting, then per defence the unprotected file and each setting under it."""
    return [*settings, *(f"{name}@{d}" for d in defences for name in ("unprotected", *settings))]


def _face_box(rgb: np.ndarray, cost: Mapping[str, Any]) -> tuple[slice, slice] | None:
    """The region GMSD is measured on: the whole photo when it is small, its centre half otherwise (the face of
    a portrait); GMSD of a whole large photo dilutes a face-sized change to nothing."""
    if not cost["faces"]:
        return None
    h, w = rgb.shape[:2]
    return (slice(h // 4, h - h // 4), slice(w // 4, w - w // 4)) if min(h, w) > 400 else (slice(0, h), slice(0, w))


def _setting_json(s: Setting) -> dict[str, Any]:
    d = asdict(s)
    d["cloak"] = asdict(s.cloak) if s.fill == "cloak" else None
    return d


def table(rows: Sequence[Mapping[str, Any]], names: Sequence[str], thresholds: Mapping[str, float]) -> list[dict]:
    """One line per (setting, pipeline): n readable probes, dodge rate with its interval, the clean floor, quality."""
    out = []
    for pipe, thr in thresholds.items():
        readable = [r for r in rows if r["clean"].get(pipe) is not None]
        n = len(readable)
        clean_k = sum(r["clean"][pipe] < thr for r in readable)
        for name in ["clean", *names]:
            if name == "clean":
                k = clean_k
                extra: dict[str, Any] = {}
            else:
                k = sum((r[name]["match"].get(pipe) is None) or (r[name]["match"][pipe] < thr) for r in readable)
                prot = [r[name] for r in rows]
                extra = {
                    "ssim_photo": float(np.mean([p["ssim_photo"] for p in prot])),
                    "ssim_photo_min": float(np.min([p["ssim_photo"] for p in prot])),
                    "psnr_photo": float(np.mean([p["psnr_photo"] for p in prot if math.isfinite(p["psnr_photo"])]
                                                or [math.inf])),
                    "gmsd_face": float(np.mean([p["gmsd_face"] for p in prot])),
                    "changed_of_face": float(np.mean([p["changed_of_face"] for p in prot])),
                    "changed_of_face_max": float(np.max([p["changed_of_face"] for p in prot])),
                    "cpu_s_per_face": float(sum(p["cpu_s"] for p in prot) / max(1, sum(p["faces"] for p in prot))),
                    "steps": float(np.mean([p["steps"] for p in prot])),
                    "no_face_found": int(sum(p["match"].get(pipe) is None for p in (r[name] for r in readable))),
                    # the CLI verdict's view: no longer matched to its own unprotected original
                    "self_dodged": int(sum((r[name].get("self", {}).get(pipe) is None)
                                           or r[name]["self"][pipe] < thr for r in readable)),
                }
            lo, hi = wilson(k, n)
            out.append({"pipeline": pipe, "setting": name, "n": n, "dodged": int(k),
                        "rate": k / n if n else math.nan, "ci95": [lo, hi], **extra})
    return out


def markdown(result: Mapping[str, Any]) -> str:
    lines = ["| pipeline | setting | n | photo dodge (95 % CI) | no face found | unmatched to own original "
             "| whole-photo SSIM (min) | PSNR dB | GMSD (face) | changed / face box | CPU s per face |",
             "|---" * 11 + "|"]
    for t in result["table"]:
        rate = f"{100 * t['rate']:.1f} % ({100 * t['ci95'][0]:.0f}–{100 * t['ci95'][1]:.0f})"
        if t["setting"] == "clean":
            lines.append(f"| {t['pipeline']} | unprotected | {t['n']} | {rate} | | | | | | | |")
            continue
        lines.append(
            f"| {t['pipeline']} | {t['setting']} | {t['n']} | {rate} | {t['no_face_found']} | "
            f"{100 * t['self_dodged'] / max(1, t['n']):.1f} % | "
            f"{t['ssim_photo']:.4f} ({t['ssim_photo_min']:.4f}) | {t['psnr_photo']:.1f} | {t['gmsd_face']:.4f} | "
            f"{100 * t['changed_of_face']:.2f} % (max {100 * t['changed_of_face_max']:.2f} %) | "
            f"{t['cpu_s_per_face']:.2f} |")
    return "\n".join(lines) + "\n"


def calibrate(
    root: Path, *, photos: int, pipelines: Sequence[str], seed: int = 0,
    progress: Progress = no_progress,
) -> dict[str, dict]:
    """Thresholds of each pipeline from the different-person pairs of one photo each of `photos` people."""
    by_id = read_manifest(root)
    rng = np.random.default_rng(seed)
    names = sorted(by_id)
    chosen = [names[i] for i in rng.permutation(len(names))[:photos]]
    recognisers = [get_independent(n) for n in pipelines]
    emb: dict[str, list[np.ndarray]] = {r.id: [] for r in recognisers}
    for name in progress(chosen, "calibrating"):
        seen = read_photo(read_image(by_id[name][0]).rgb, recognisers)
        for k, faces in seen.items():
            if faces:
                emb[k].append(max(faces, key=lambda f: f.area).embedding)
    entries = {}
    for k, e in emb.items():
        x = np.stack(e)
        sims = (x @ x.T)[np.triu_indices(len(x), 1)]
        entries[threshold_id(k)] = {
            "at_far": {f: float(np.quantile(sims, 1 - float(f))) for f in ("0.01", "0.001", "0.0001")},
            "data": root.name, "n_impostor": int(sims.size), "n_photos": len(x), "seed": seed,
        }
    return entries


def save_calibration(entries: Mapping[str, dict], shipped: bool) -> Path:
    from importlib import resources

    target = Path(str(resources.files("facecloak") / "data" / "thresholds.json")) if shipped else None
    return save_thresholds(dict(entries), target)


def write_outputs(result: Mapping[str, Any], out: Path, command: str) -> None:
    atomic_write_text(out / "independent.json", json.dumps(result, indent=1, default=float) + "\n")
    atomic_write_text(out / "report.md", f"# Independent evaluation\n\n`{command}`\n\n{markdown(result)}")


def _ablation() -> dict[str, Setting]:
    """The named settings of the ablation: each adds one ingredient to the one before (30 steps each, so every
    cloak costs the same number of model evaluations)."""
    from facecloak.protection.levels import CLOAK_SOURCES, TRANSFER_EOT

    old = CloakSettings(steps=30)  # the cloak before this study: stop at the sources' thresholds - 0.05
    s = {"black1": Setting("black1", "black", 1.0), "black2": Setting("black2", "black", 2.0)}

    def add(name: str, budget: float, cloak: CloakSettings, models: tuple[str, ...] = DEFAULT_MODELS) -> None:
        s[name] = Setting(name, "cloak", budget, models, cloak)

    add("cloak2-old", 2.0, old)
    add("cloak2-noearly", 2.0, replace(old, early_stop=False))
    eot = replace(old, early_stop=False, eot=TRANSFER_EOT)
    add("cloak2-eot", 2.0, eot)
    add("cloak2-eot-4src", 2.0, eot, CLOAK_SOURCES)
    add("cloak2-eot-4src-decoy", 2.0, replace(eot, decoy=0.5), CLOAK_SOURCES)
    add("cloak5-eot-4src", 5.0, eot, CLOAK_SOURCES)
    add("cloak5-eot-4src-60", 5.0, replace(eot, steps=60), CLOAK_SOURCES)
    # The look: an L-inf bound on each pixel's change (0-255 levels), with more pixels where the bound is tighter.
    for budget, eps in ((5.0, 32.0), (10.0, 24.0), (10.0, 16.0), (15.0, 16.0)):
        add(f"cloak{budget:g}-eot-4src-eps{eps:g}", budget, replace(eot, epsilon=eps), CLOAK_SOURCES)
    # Smooth inside a blob: the offset on a grid `grain` crop pixels apart, bilinear in between.
    for budget, eps in ((15.0, 16.0), (10.0, 16.0), (10.0, 24.0)):
        for grain in (2, 3):
            add(f"cloak{budget:g}-eot-4src-eps{eps:g}-g{grain}", budget,
                replace(eot, epsilon=eps, grain=float(grain)), CLOAK_SOURCES)
    # The look in the loss: structural dissimilarity (1 - SSIM) of the photo weighed against the cosines.
    for budget, eps in ((10.0, 16.0), (15.0, 16.0), (15.0, 24.0), (20.0, 16.0), (25.0, 16.0)):
        for look in (2, 4, 8, 16, 32):
            add(f"cloak{budget:g}-eot-4src-eps{eps:g}-look{look}", budget,
                replace(eot, epsilon=eps, look=float(look)), CLOAK_SOURCES)
    # The cost of the look-weighted cloak (`cloak25-eot-4src-eps16-look16`, the level `high`): a stochastic ensemble
    # (k of the four sources drawn for each step), fewer and larger steps, or the three 112 px sources only.
    subtle = replace(eot, epsilon=16.0, look=16.0)
    for k in (1, 2):
        add(f"cloak25-eot-4src-eps16-look16-k{k}", 25.0, replace(subtle, sources_per_step=k), CLOAK_SOURCES)
    add("cloak25-eot-4src-eps16-look16-k1-20", 25.0, replace(subtle, sources_per_step=1, steps=20), CLOAK_SOURCES)
    add("cloak25-eot-4src-eps16-look16-15", 25.0, replace(subtle, steps=15, step_size=18.0), CLOAK_SOURCES)
    add("cloak25-eot-3src-eps16-look16-15", 25.0, replace(subtle, steps=15, step_size=18.0))
    # Leave one source out of `high`'s four: what each source model adds on the held-out verifiers.
    for left_out in CLOAK_SOURCES:
        add(f"cloak25-eot-eps16-look16-without-{left_out}", 25.0, subtle,
            tuple(m for m in CLOAK_SOURCES if m != left_out))
    # The cost: three 112 px sources (hse-mnv1 reads 224 px, the dearest) and fewer, larger steps.
    add("cloak5-eot-3src-15", 5.0, replace(eot, steps=15, step_size=18.0))
    add("cloak5-eot-3src-8", 5.0, replace(eot, steps=8, step_size=24.0))
    # Feature-level transfer: each source's mid-depth activation pushed away from the clean photo's as well.
    for w in (1, 4, 16):
        add(f"cloak5-eot-4src-feat{w}", 5.0, replace(eot, features=float(w)), CLOAK_SOURCES)
    # Stronger than `high`, for faces it leaves matched: a looser bound, more pixels, or more steps.
    add("cloak25-eot-4src-eps24-look16", 25.0, replace(subtle, epsilon=24.0), CLOAK_SOURCES)
    add("cloak35-eot-4src-eps16-look16", 35.0, subtle, CLOAK_SOURCES)
    add("cloak25-eot-4src-eps16-look16-60", 25.0, replace(subtle, steps=60), CLOAK_SOURCES)
    # Cheaper than `medium` on large faces: 10 larger steps of the three 112 px sources, within +-16 or +-24.
    for eps in (16.0, 24.0):
        add(f"cloak25-eot-3src-eps{eps:g}-look16-10", 25.0, replace(subtle, epsilon=eps, steps=10, step_size=24.0))
    # Sparse by pruning: the cloak starts on a quarter of the face region and keeps the fifth of those pixels it
    # moved most (as many as `cloak5-eot-4src` changes), unbounded, with and without the look term.
    add("cloak25-eot-4src-keep20", 25.0, replace(eot, keep=0.2), CLOAK_SOURCES)
    add("cloak25-eot-4src-look16-keep20", 25.0, replace(eot, look=16.0, keep=0.2), CLOAK_SOURCES)
    # ... a quarter of them (about 5 % of the face box), with the look term at 8, 16 and 32.
    for look in (8, 16, 32):
        add(f"cloak25-eot-4src-look{look}-keep25", 25.0, replace(eot, look=float(look), keep=0.25), CLOAK_SOURCES)
    for eps in (32, 48):  # ... each change within +-eps levels: fewer saturated dots
        add(f"cloak25-eot-4src-eps{eps}-look16-keep25", 25.0, replace(eot, epsilon=float(eps), look=16.0, keep=0.25),
            CLOAK_SOURCES)
    # `high` chosen by pruning: its +-16 subtle cloak starts on half of the face region and keeps the half of those
    # pixels it moved most (as many as `high` changes).
    add("cloak50-eot-4src-eps16-look16-keep50", 50.0, replace(subtle, keep=0.5), CLOAK_SOURCES)
    # ... and `medium` (three 112 px sources, 10 steps of 24) the same way.
    add("cloak50-eot-3src-eps16-look16-10-keep50", 50.0, replace(subtle, keep=0.5, steps=10, step_size=24.0))
    return s


def level_setting(name: str) -> Setting:
    from facecloak.protection.levels import LEVELS

    lv = LEVELS.get(name)
    return Setting(name, lv.fill, lv.budget, lv.models, lv.cloak)


def default_setting_names() -> list[str]:
    from facecloak.protection.levels import ORDER

    return list(ORDER)


def settings_by_name(names: Sequence[str]) -> list[Setting]:
    """Levels (`low`, `medium`, `high`) and ablation settings by name; `NAME+random` is NAME's random control."""
    from facecloak.protection.levels import LEVELS

    ablation = _ablation()
    out = []
    for full in names:
        name, _, control = full.partition("+")
        if control not in ("", "random"):
            raise DataError(f"unknown setting suffix {control!r} in {full!r}; only +random exists")
        if name in ablation:
            s = ablation[name]
        elif name in LEVELS:
            s = level_setting(name)
        else:
            known = ", ".join([*LEVELS.names(), *ablation])
            raise DataError(f"unknown setting {name!r} (known: {known})")
        out.append(s.as_control() if control else s)
    return out


def combine(checkpoints: Sequence[Path]) -> dict[str, Any]:
    """One result from the `rows.jsonl` checkpoints of several shards (or of an interrupted run) of the same
    settings, pipelines and seed: the table over every probe they hold."""
    rows: list[dict[str, Any]] = []
    keys = set()
    for path in checkpoints:
        for line in Path(path).read_text().splitlines():
            saved = json.loads(line)
            keys.add(saved["key"])
            rows.append(saved["row"])
    if len(keys) != 1:
        raise DataError(f"the checkpoints hold {len(keys)} different configurations; combine one at a time")
    settings_json, pipelines, seed, *rest = json.loads(keys.pop())
    defences = rest[0] if rest else []
    reader = Reader(pipelines)
    names = column_names([s["name"] for s in settings_json], defences)
    return {"rows": rows, "table": table(rows, names, reader.thresholds), "thresholds": reader.thresholds,
            "pipelines": pipelines, "settings": settings_json, "seed": seed, "far": FAR, "defences": defences}
