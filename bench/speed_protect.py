"""Speed of `facecloak protect` against `deface`, side by side in one run (a benchmark, not a test).

    OMP_NUM_THREADS=1 facecloak bench speed-protect -o bench/results/speed-protect \\
        [--data ../shared/faces] [--photos 60] [--repeats 3] [--deface /tmp/deface-venv/bin/deface] \\
        [--baseline-ref GIT_REF] [--cloak-faces 4] [--levels medium,high --level-photos 20]

Photo sets (written to a temporary folder at run time, never into the repository):
  deepface-1024  the first `--photos` photos of deepface's manifest, scaled to at most 1024 px on the long side
  lfw            one photo each of the first `--photos` LFW people (250 x 250, copied unchanged)

For each set and each tool, in interleaved order so that both see the same machine load:
  start-up  wall and CPU seconds of the command on a folder holding only the set's first photo (median of
            `--repeats` runs; the disk cache is warm after the first);
  folder    wall and CPU seconds for the whole folder (median of `--repeats` runs), fresh output folder each run;
  marginal  (folder - start-up) / (photos - 1), seconds per photo;
  peak RSS  of the child process (ru_maxrss from wait4), max over its runs.
Commands: `facecloak protect DIR -o OUT` (defaults: black fill, 1 %, mbf-arc,mbf-tf,mobileface, FaceMesh parser)
and `deface DIR` (its defaults; outputs next to the inputs in a copy of the folder). deface is not a
dependency: install it in its own venv (`python -m venv /tmp/deface-venv && /tmp/deface-venv/bin/pip install
deface onnxruntime`); without it the deface columns are skipped and the script says how to get them.

`--levels a,b` also measures `facecloak protect --level X --json` (verification on: what a user of that level waits
for) in the same way on the first `--level-photos` photos of each set, with the verified-face count from its JSON
summary. The main table measures `--level low --no-verify`, the cheapest path, to compare with deface and with
older trees.

`--baseline-ref REF` also runs facecloak from `git archive REF` (e.g. the commit before a speed change) in the
same interleaved order, so before/after ratios come from one run. `--cloak-faces N` measures the sparse cloak
(`facecloak.protect(fill="cloak")`, 60 steps, early stop) in seconds per face on the first N LFW photos, for this
tree and the baseline. `--profile-photos N` profiles `protect` by stage on N photos of each set. The machine's
load average (`os.getloadavg`) is recorded at the start and the end.
"""

from __future__ import annotations

import csv
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from facecloak.errors import ConfigError
from facecloak.files import atomic_write_text

REPO = Path(__file__).resolve().parents[1]
DEFACE_HINT = "python -m venv /tmp/deface-venv && /tmp/deface-venv/bin/pip install deface onnxruntime"
DEFAULT_DEFACE = "/tmp/deface-venv/bin/deface"


def _stderr(line: str) -> None:
    print(line, file=sys.stderr)


# ----------------------------------------------------------------------------------------------------------
# Photo sets


def prepare_sets(shared: Path, tmp: Path, n: int) -> dict[str, list[Path]]:
    """Write the two photo sets under `tmp`; returns set name -> photo paths."""
    from PIL import Image

    deepface, lfw = tmp / "deepface-1024", tmp / "lfw"
    deepface.mkdir(parents=True)
    lfw.mkdir(parents=True)
    with (shared / "deepface" / "manifest.csv").open() as fh:
        rows = list(csv.DictReader(fh))[:n]
    for row in rows:
        with Image.open(shared / "deepface" / row["path"]) as im:
            rgb = im.convert("RGB")
            rgb.thumbnail((1024, 1024), Image.Resampling.LANCZOS)
            rgb.save(deepface / row["path"].replace("/", "_"), quality=95)
    seen: set[str] = set()
    with (shared / "lfw" / "manifest.csv").open() as fh:
        for row in csv.DictReader(fh):
            if row["identity"] in seen:
                continue
            seen.add(row["identity"])
            shutil.copyfile(shared / "lfw" / row["path"], lfw / Path(row["path"]).name)
            if len(seen) == n:
                break
    return {"deepface-1024": sorted(deepface.iterdir()), "lfw": sorted(lfw.iterdir())}


# ----------------------------------------------------------------------------------------------------------
# Running one command


@dataclass(frozen=True)
class Run:
    wall_s: float
    cpu_s: float
    peak_rss_mb: float
    returncode: int
    last_line: str = ""


def run(cmd: list[str], env: dict[str, str], cwd: Path) -> Run:
    """Run `cmd` to completion; wall time, CPU time (user + sys) and peak RSS of the child from wait4, and the
    last line it printed (a `--json` summary)."""
    start = time.perf_counter()
    with tempfile.TemporaryFile() as out:  # not in `cwd`: the torch floor runs in the repository
        proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=out, stderr=subprocess.PIPE)
        assert proc.stderr is not None
        err = proc.stderr.read()
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
        out.seek(0)
        printed = out.read().decode(errors="replace").strip().splitlines()
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        print(f"command failed ({proc.returncode}): {' '.join(cmd)}\n{err.decode(errors='replace')[-2000:]}",
              file=sys.stderr)
    return Run(wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024, proc.returncode,
               printed[-1] if printed else "")


class Tool:
    """A command that processes a folder of photos (facecloak from a source tree, or deface)."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], *, writes_next_to_inputs: bool) -> None:
        self.name, self.argv, self.env, self.in_place = name, argv, env, writes_next_to_inputs

    def on_folder(self, photos: list[Path], work: Path) -> Run:
        src = work / "in"
        src.mkdir(parents=True)
        for p in photos:
            shutil.copyfile(p, src / p.name)
        cmd = [*self.argv, str(src)] if self.in_place else [*self.argv, str(src), "-o", str(work / "out")]
        try:
            return run(cmd, self.env, work)
        finally:
            shutil.rmtree(work, ignore_errors=True)


# What was measured: the black 1 % fill without verification, i.e. `--level low --no-verify` today (the default
# before protection levels and verification existed, so a baseline tree older than levels runs with
# its plain defaults: `baseline_options`).
CURRENT_OPTIONS = ("--level", "low", "--no-verify")


def baseline_options(tree: Path) -> tuple[str, ...]:
    """The options that make an older tree do what `CURRENT_OPTIONS` does here: the same ones where it has levels,
    none before levels existed (its defaults were then the black 1 % fill without verification)."""
    return CURRENT_OPTIONS if (tree / "facecloak" / "protection" / "levels.py").is_file() else ()


DEVICE_VARIABLE = "FACECLOAK_BENCH_DEVICE"
# The snippets' keyword arguments of `protect`: the device where the checkout has one.
DEVICE_KWARGS = (f"import os; DEVICE = {{'device': os.environ[{DEVICE_VARIABLE!r}]}} "
                 f"if {DEVICE_VARIABLE!r} in os.environ else {{}}")


def knows_devices(tree: Path) -> bool:
    """Whether the checkout at `tree` has `--device` (and `protect(device=...)`): since the masking stage's
    `resolve_device`."""
    stage = tree / "facecloak" / "masking" / "stage.py"
    return stage.is_file() and "def resolve_device" in stage.read_text()


def child_env(source: Path, device: str) -> dict[str, str]:
    """The environment of a child running the checkout at `source`: one torch thread, and `device` for the snippets
    below (`DEVICE_VARIABLE`) where that checkout has devices (an older one runs on its CPU default)."""
    env = {**os.environ, "PYTHONPATH": str(source), "OMP_NUM_THREADS": "1"}
    env.pop(DEVICE_VARIABLE, None)
    return {**env, DEVICE_VARIABLE: device} if knows_devices(source) else env


def facecloak_tool(name: str, source: Path, options: Sequence[str] = (), device: str = "cpu") -> Tool:
    env = child_env(source, device)
    code = "import sys; from facecloak.cli import main; sys.argv[0] = 'facecloak'; sys.exit(main())"
    on = ("--device", device) if DEVICE_VARIABLE in env else ()
    return Tool(name, [sys.executable, "-c", code, "protect", *options, *on], env, writes_next_to_inputs=False)


def deface_tool(path: str) -> Tool | None:
    exe = shutil.which(path) or (path if Path(path).is_file() else None)
    if exe is None:
        return None
    return Tool("deface", [exe], {**os.environ, "OMP_NUM_THREADS": "1"}, writes_next_to_inputs=True)


# ----------------------------------------------------------------------------------------------------------
# The sparse cloak per face


CLOAK_SNIPPET = DEVICE_KWARGS + r"""
import json, sys, time
from facecloak.photos.io import read_image
from facecloak.protection.protect import protect
paths = sys.argv[1:]
protect(read_image(paths[0]).rgb, fill="cloak", **DEVICE)  # warm-up: models, impostor bank, first-call costs
faces = steps = 0
start = time.perf_counter()
for p in paths:
    r = protect(read_image(p).rgb, fill="cloak", **DEVICE)
    faces += len(r.faces)
    steps += r.cloak_steps
print(json.dumps({"faces": faces, "seconds": time.perf_counter() - start, "steps": steps}))
"""


def cloak_seconds_per_face(source: Path, photos: list[Path], device: str = "cpu") -> dict[str, float]:
    env = child_env(source, device)
    out = subprocess.run([sys.executable, "-c", CLOAK_SNIPPET, *map(str, photos)], env=env, capture_output=True,
                         text=True, check=True)
    got = json.loads(out.stdout.strip().splitlines()[-1])
    return {**got, "seconds_per_face": got["seconds"] / max(got["faces"], 1)}


PROFILE_SNIPPET = DEVICE_KWARGS + r"""
import cProfile, json, pstats, sys
from facecloak.photos.io import read_image
from facecloak.protection.protect import protect
photos = [read_image(p).rgb for p in sys.argv[1:]]
protect(photos[0], **DEVICE)  # warm-up
profiler = cProfile.Profile()
profiler.enable()
for rgb in photos:
    protect(rgb, **DEVICE)
profiler.disable()
stats = pstats.Stats(profiler).stats
wanted = {
    ("detect.py", "detect"): "detect (MTCNN)",
    ("stage.py", "align_faces"): "align_faces (matrices + crops, clean and protected)",
    ("stage.py", "embed_batch"): "embed_batch (clean and protected embeddings)",
    ("leamface.py", "model_maps"): "model_maps (flip target + LEAM forward/backward)",
    ("parse.py", "template_labels"): "template_labels (FaceMesh + rasterising)",
    ("leamface.py", "select_pixels"): "select_pixels",
    ("stage.py", "union_in_photo"): "union_in_photo (mask/heatmap back to the photo)",
    ("protect.py", "similarities"): "similarities (after)",
    ("protect.py", "protect"): "protect (total)",
}
out = {label: 0.0 for label in wanted.values()}
seen = set()
for (filename, _, function), (_, _, _, cumulative, _) in stats.items():
    label = wanted.get((filename.rsplit("/", 1)[-1], function))
    if label is not None:
        out[label] += cumulative / len(photos)
        seen.add(label)
# A stage that was renamed or moved must not show up as 0 s.
missing = sorted(set(wanted.values()) - seen)
if missing:
    sys.exit("profile: never called (renamed or moved?): " + "; ".join(missing))
print(json.dumps(out))
"""


def profile_stages(source: Path, photos: list[Path], device: str = "cpu") -> dict[str, float]:
    """Cumulative seconds per photo of each stage of `protect` under cProfile (the profiler adds overhead)."""
    env = child_env(source, device)
    out = subprocess.run([sys.executable, "-c", PROFILE_SNIPPET, *map(str, photos)], env=env, capture_output=True,
                         text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


MEMORY_SNIPPET = DEVICE_KWARGS + r"""
import json, resource, sys
from facecloak.runtime import bound_native_caches
bound_native_caches()  # as the CLI does, and as the README tells library callers to
from facecloak.photos.io import read_image
from facecloak.protection.levels import LEVELS
from facecloak.protection.protect import protect
count, level, paths = int(sys.argv[1]), sys.argv[2], sys.argv[3:]
options = LEVELS.get(level).protect_options() if level else {}
def rss_mb():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
trace = []
for i in range(count):
    protect(read_image(paths[i % len(paths)]).rgb, **options, **DEVICE)
    if (i + 1) % 10 == 0 or i == 0:
        trace.append([i + 1, round(rss_mb(), 1)])
print(json.dumps({"photos": count, "rss_mb": trace,
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def memory_trace(source: Path, photos: list[Path], count: int, level: str = "", device: str = "cpu") -> dict:
    """RSS after every 10th of `count` in-process `protect` calls cycling through `photos`, and the peak; `level`:
    a protection level's options (verification is the CLI's, not part of `protect`), "" for `protect`'s defaults."""
    env = child_env(source, device)
    out = subprocess.run([sys.executable, "-c", MEMORY_SNIPPET, str(count), level, *map(str, photos)], env=env,
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def torch_import_floor(repeats: int) -> dict[str, float]:
    """Wall and CPU seconds of `python -c "import torch"`: the part of the start-up no facecloak change can cut."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    runs = [run([sys.executable, "-c", "import torch"], env, REPO) for _ in range(repeats)]
    return summarise(runs)


def export_ref(ref: str, into: Path) -> Path:
    """The tree of git `ref` under `into` (git archive), so an older version runs side by side."""
    archive = into / "ref.tar"
    with archive.open("wb") as fh:
        subprocess.run(["git", "-C", str(REPO), "archive", ref], stdout=fh, check=True)
    tree = into / "tree"
    with tarfile.open(archive) as tar:
        tar.extractall(tree, filter="data")
    return tree


# ----------------------------------------------------------------------------------------------------------


def marginal_ratio(ours: float, theirs: float, spec: str) -> str:
    """`ours / theirs` as "N.NNx", or "n/a" where either marginal is not positive: on a few small photos a folder
    can finish faster than the median one-photo start-up, and that difference is the timer's noise, not a cost."""
    return f"{ours / theirs:{spec}}x" if ours > 0 and theirs > 0 else "n/a (a marginal <= 0: noise at this n)"


def level_report(levels: dict, results: dict, env: dict) -> list[str]:
    """The levels' table: what `facecloak protect --level X` (verification on) costs per photo, next to deface."""
    lines = ["", f"What each level costs end to end (`facecloak protect DIR -o OUT --level X --json`, verification "
             f"on, on the first {env['level_photos']} photos of each set, interleaved; deface's marginal from the "
             "table above, same run):", "",
             "| set | command | start-up wall s | start-up CPU s | folder wall s | folder CPU s | marginal s/photo | "
             "marginal CPU s/photo | marginal CPU / deface's | peak RSS MB | faces verified protected |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for set_name, tools in levels.items():
        deface = results.get(set_name, {}).get("deface")
        for name, r in tools.items():
            start, folder = r["startup"], r["folder"]
            ratio = marginal_ratio(r["marginal_cpu_s_per_photo"], deface["marginal_cpu_s_per_photo"], ".0f") \
                if deface else "-"
            verified = r.get("summary", {}).get("verification", {})
            faces = f"{verified['verified_protected']} of {verified['faces']}" if verified else "-"
            lines.append(
                f"| {set_name} (n={r['photos']}) | {name} | {start['wall_s']:.2f} | {start['cpu_s']:.2f} | "
                f"{folder['wall_s']:.1f} | {folder['cpu_s']:.1f} | {r['marginal_s_per_photo']:.2f} | "
                f"{r['marginal_cpu_s_per_photo']:.2f} | {ratio} | {folder['peak_rss_mb']:.0f} | {faces} |")
    older = [(set_name, name, tools[name], tools[f"{name}@{env['baseline_ref']}"]) for set_name, tools in levels.items()
             for name in tools if f"{name}@{env['baseline_ref']}" in tools]
    if older:
        lines += ["", f"This tree / {env['baseline_ref']} (same run, interleaved):", ""]
        for set_name, name, new, old in older:
            lines.append(
                f"- {set_name}, {name}: start-up wall {new['startup']['wall_s'] / old['startup']['wall_s']:.2f}x "
                f"({new['startup']['wall_s']:.2f} vs {old['startup']['wall_s']:.2f} s), start-up CPU "
                f"{new['startup']['cpu_s'] / old['startup']['cpu_s']:.2f}x, folder CPU "
                f"{new['folder']['cpu_s'] / old['folder']['cpu_s']:.2f}x")
    return lines


def summarise(runs: list[Run]) -> dict[str, float]:
    return {
        "wall_s": statistics.median(r.wall_s for r in runs),
        "cpu_s": statistics.median(r.cpu_s for r in runs),
        "peak_rss_mb": max(r.peak_rss_mb for r in runs),
        "failed_runs": sum(r.returncode != 0 for r in runs),
    }


def measure(tools: Sequence[Tool], sets: dict[str, list[Path]], repeats: int, folder_repeats: int,
            work: Path) -> dict[str, dict[str, dict[str, object]]]:
    """Start-up (one photo, `repeats` runs) and whole-folder (`folder_repeats` runs) of every tool on every set,
    interleaved so that the tools see the same load; set -> tool -> summary."""
    results: dict[str, dict[str, dict[str, object]]] = {}
    k = 0
    for set_name, photos in sets.items():
        one: dict[str, list[Run]] = {t.name: [] for t in tools}
        folder: dict[str, list[Run]] = {t.name: [] for t in tools}
        for _ in range(repeats):
            for tool in tools:  # interleaved: each tool sees the same load
                k += 1
                one[tool.name].append(tool.on_folder(photos[:1], work / f"w{k}"))
        for _ in range(folder_repeats):
            for tool in tools:
                k += 1
                folder[tool.name].append(tool.on_folder(photos, work / f"w{k}"))
        results[set_name] = {}
        for tool in tools:
            s1, sf = summarise(one[tool.name]), summarise(folder[tool.name])
            results[set_name][tool.name] = {
                "startup": s1,
                "folder": sf,
                "marginal_s_per_photo": (sf["wall_s"] - s1["wall_s"]) / (len(photos) - 1),
                "marginal_cpu_s_per_photo": (sf["cpu_s"] - s1["cpu_s"]) / (len(photos) - 1),
                "photos": len(photos),
                "summary": _json_summary(folder[tool.name][-1]),
            }
    return results


def _json_summary(run_: Run) -> dict:
    """The `--json` summary line of a facecloak run (empty for tools that print none)."""
    try:
        got = json.loads(run_.last_line)
    except ValueError:
        return {}
    return got if isinstance(got, dict) else {}


def level_tool_name(level: str) -> str:
    from facecloak.protection.levels import DEFAULT_LEVEL

    return f"facecloak --level {level}" + (" (the default)" if level == DEFAULT_LEVEL else "")


@dataclass(frozen=True)
class SpeedProtectOptions:
    """What `run_speed_protect` measures (see the module docstring and `facecloak bench speed-protect --help`)."""

    out: Path
    data: Path = REPO.parent / "shared" / "faces"
    photos: int = 60
    repeats: int = 3
    deface: str = DEFAULT_DEFACE
    baseline_ref: str | None = None
    cloak_faces: int = 4
    folder_repeats: int = 1
    memory_photos: int = 0
    memory_level: str = ""  # "" : protect()'s defaults (the black 1 % fill)
    profile_photos: int = 10
    command: str = "facecloak bench speed-protect"
    levels: tuple[str, ...] = ()
    level_photos: int = 20
    device: str = "auto"  # where facecloak's models and cloak run (deface runs as it does)

    def __post_init__(self) -> None:
        from facecloak.protection.levels import LEVELS

        if self.photos < 2 or (self.levels and self.level_photos < 2):
            raise ConfigError("--photos and --level-photos must be at least 2 (the marginal cost needs a folder "
                              "larger than one photo)")
        for level in (*self.levels, *([self.memory_level] if self.memory_level else [])):
            LEVELS.get(level)  # an unknown level is refused, naming the known ones
        from facecloak.masking.stage import resolve_device

        object.__setattr__(self, "device", str(resolve_device(self.device)))  # "auto" resolved once, here


def run_speed_protect(args: SpeedProtectOptions, warn: Callable[[str], None] = _stderr) -> str:
    """Run the side-by-side measurement; writes OUT/speed_protect.json and OUT/README.md, returns the markdown.
    `warn` receives one line per skipped tool or failed child command."""

    load_start = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="facecloak-speed-") as tmp_name:
        tmp = Path(tmp_name)
        sets = prepare_sets(args.data, tmp / "sets", args.photos)
        dev = args.device
        tools = [facecloak_tool("facecloak", REPO, CURRENT_OPTIONS, dev)]
        baseline = export_ref(args.baseline_ref, tmp) if args.baseline_ref else None
        if baseline is not None:
            tools.append(facecloak_tool(f"facecloak@{args.baseline_ref}", baseline, baseline_options(baseline), dev))
        deface = deface_tool(args.deface)
        if deface is None:
            warn(f"deface not found at {args.deface}; skipping it. To include it: {DEFACE_HINT}")
        else:
            tools.append(deface)

        # Warm the disk cache and every per-user cache (impostor bank, pulled weights) once, untimed.
        for tool in tools:
            tool.on_folder(sets["lfw"][:1], tmp / "warm")

        floor = torch_import_floor(args.repeats)
        results = measure(tools, sets, args.repeats, args.folder_repeats, tmp / "runs")
        # What a user waits for: each asked level end to end (verification on), on the sets' first photos.
        # The same levels from the older tree too, interleaved, where it has levels.
        trees = [("", REPO)]
        if baseline is not None and baseline_options(baseline):
            trees.append((f"@{args.baseline_ref}", baseline))
        level_tools = [facecloak_tool(level_tool_name(level) + suffix, source, ("--level", level, "--json"), dev)
                       for suffix, source in trees for level in args.levels]
        level_sets = {name: photos[: args.level_photos] for name, photos in sets.items()}
        levels = measure(level_tools, level_sets, args.repeats, args.folder_repeats, tmp / "level-runs"
                         ) if level_tools else {}
        cloak: dict[str, dict[str, float]] = {}
        if args.cloak_faces:
            for tool in tools:
                if tool.name.startswith("facecloak"):
                    cloak[tool.name] = cloak_seconds_per_face(Path(tool.env["PYTHONPATH"]),
                                                              sets["lfw"][: args.cloak_faces], dev)
        memory = memory_trace(REPO, [p for photos in sets.values() for p in photos], args.memory_photos,
                              args.memory_level, dev) if args.memory_photos else {}
        profile = {name: profile_stages(REPO, photos[: args.profile_photos], dev) for name, photos in sets.items()
                   } if args.profile_photos else {}
    load_end = os.getloadavg()
    uptime = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    env = {
        "command": args.command,
        "date_utc": time.strftime("%Y-%m-%d %H:%M", time.gmtime()),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "omp_num_threads": "1",
        "device": args.device,
        "loadavg_start": [round(v, 2) for v in load_start],
        "loadavg_end": [round(v, 2) for v in load_end],
        "uptime_end": uptime,
        "repeats": args.repeats,
        "folder_repeats": args.folder_repeats,
        "deface": None if deface is None else args.deface,
        "baseline_ref": args.baseline_ref,
        "levels": list(args.levels),
        "level_photos": args.level_photos,
        "memory_level": args.memory_level,
    }
    atomic_write_text(args.out / "speed_protect.json", json.dumps(
        {"environment": env, "sets": results, "levels": levels, "cloak": cloak, "profile": profile, "memory": memory,
         "torch_import": floor}, indent=2) + "\n")
    md = report(env, results, cloak, profile, memory, floor, levels)
    atomic_write_text(args.out / "README.md", md)
    return md


def report(env: dict, results: dict, cloak: dict, profile: dict, memory: dict, floor: dict,
           levels: dict | None = None) -> str:
    lines = [
        "# Speed of `facecloak protect` vs `deface`",
        "",
        f"Command: `OMP_NUM_THREADS=1 {env['command']}` ({env['date_utc']} UTC); {env['cpus']} CPUs, "
        f"facecloak on {env.get('device', 'cpu')}, Python "
        f"{env['python']}; load average (1, 5, 15 min) {env['loadavg_start']} at the start, {env['loadavg_end']} at "
        f"the end (`{env['uptime_end']}`). The machine was shared with other jobs: read the ratios (measured side "
        f"by side, interleaved), not the absolute seconds. Start-up: median of {env['repeats']} runs; folder: "
        f"median of {env['folder_repeats']} run(s); peak RSS is the max over runs.",
        "",
        f"Floor: `python -c 'import torch'` takes {floor['wall_s']:.2f} s wall, {floor['cpu_s']:.2f} s CPU "
        f"(median of {env['repeats']}, same run); every facecloak start-up includes it.",
        "",
        "| set | tool | start-up wall s (1 photo) | start-up CPU s | folder wall s | folder CPU s | marginal s/photo | "
        "marginal CPU s/photo | peak RSS MB |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for set_name, tools in results.items():
        for name, r in tools.items():
            start = r["startup"]
            lines.append(
                f"| {set_name} (n={r['photos']}) | {name} | {start['wall_s']:.2f} | {start['cpu_s']:.2f} | "
                f"{r['folder']['wall_s']:.2f} | {r['folder']['cpu_s']:.2f} | {r['marginal_s_per_photo']:.3f} | "
                f"{r['marginal_cpu_s_per_photo']:.3f} | {r['folder']['peak_rss_mb']:.0f} |"
            )
    lines += ["", "Ratios (facecloak / other, same run):", ""]
    for set_name, tools in results.items():
        base = tools.get("facecloak")
        for name, r in tools.items():
            if name == "facecloak" or base is None:
                continue
            startup = base["startup"]["wall_s"] / r["startup"]["wall_s"]
            lines.append(
                f"- {set_name}: facecloak / {name}: start-up {startup:.2f}x, "
                f"folder wall {base['folder']['wall_s'] / r['folder']['wall_s']:.2f}x, "
                f"folder CPU {base['folder']['cpu_s'] / r['folder']['cpu_s']:.2f}x, "
                f"marginal {marginal_ratio(base['marginal_s_per_photo'], r['marginal_s_per_photo'], '.2f')}"
            )
    if levels:
        lines += level_report(levels, results, env)
    if cloak:
        lines += ["", "Sparse cloak (`protect(fill='cloak')`, 60 steps, early stop; after one warm-up photo):", "",
                  "| tree | faces | seconds | s/face | steps |", "|---|---:|---:|---:|---:|"]
        for name, c in cloak.items():
            lines.append(f"| {name} | {c['faces']} | {c['seconds']:.1f} | {c['seconds_per_face']:.2f} | {c['steps']} |")
    if memory:
        rss = memory["rss_mb"]
        mid = rss[len(rss) // 2]
        how = f"`protect` calls at level {env['memory_level']}" if env.get("memory_level") else "`protect` calls"
        lines += ["", f"Memory: {memory['photos']} in-process {how} cycling through both sets: RSS "
                  f"{rss[0][1]:.0f} MB after the first photo, {mid[1]:.0f} MB after {mid[0]}, "
                  f"{rss[-1][1]:.0f} MB after {rss[-1][0]}; peak {memory['peak_rss_mb']:.0f} MB."]
    if profile:
        names = list(profile)
        lines += ["", "Where the time of `protect` goes (this tree, in-process, cProfile cumulative seconds per photo; "
                  "the profiler inflates Python-heavy parts):", "",
                  "| stage | " + " | ".join(names) + " |", "|---|" + "---:|" * len(names)]
        for stage in profile[names[0]]:
            lines.append(f"| {stage} | " + " | ".join(f"{profile[n][stage]:.3f}" for n in names) + " |")
    lines.append("")
    return "\n".join(lines)
