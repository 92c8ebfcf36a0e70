"""Throughput of `facecloak protect` on the local backend vs Ray with 1 and 2 workers, side by side (issue 12).

    facecloak bench ray-protect --n 200 -o bench/results/ray-protect

Takes one photo of each of the first N LFW people (name order) from ../shared/faces/lfw (read in place, never
copied), and runs `facecloak protect PHOTOS -o TMP --json` as a child process once per configuration, in one
invocation: `local` (OMP_NUM_THREADS=1, the thread count every Ray worker uses), `ray --workers 1`, `ray --workers
2` (the CLI starts its own local Ray each time). Default models, parser and fill (black, budget 1 %): what a user
runs by default. Each JSON line is timestamped as it arrives, so the start-up (Ray, workers, model loading, first
photo) is separated from the steady state. A sampler reads the RSS of the child's whole process tree (the CLI,
Ray's own processes and its workers) every 0.25 s. Outputs of every configuration are compared byte for byte.

Writes OUT/results.json (every number, the command, the machine and its load before/after each run) and
OUT/README.md (the table and the capacity plan for 1,000,000 photos a day, computed from these numbers).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import platform
import resource
import shlex
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from facecloak.errors import ConfigError, FacecloakError
from facecloak.files import atomic_write_text

SHARED = Path(os.environ.get("FACECLOAK_SHARED", Path(__file__).resolve().parents[2] / "shared"))
PHOTOS_PER_DAY = 1_000_000
HEADROOM = 0.7  # plan workers to run at 70 % busy: bursts, retries, uneven photo sizes
CONFIGS = {
    "local": [],
    "ray-1": ["--backend", "ray", "--workers", "1"],
    "ray-2": ["--backend", "ray", "--workers", "2"],
}


def lfw_photos(n: int) -> list[Path]:
    people = sorted(p for p in (SHARED / "faces" / "lfw").iterdir() if p.is_dir())
    firsts = [min(p.glob("*.jpg")) for p in people[: n * 2] if any(p.glob("*.jpg"))]
    if len(firsts) < n:
        raise SystemExit(f"only {len(firsts)} LFW photos under {SHARED / 'faces'}")
    return firsts[:n]


def _children() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        tree.setdefault(ppid, []).append(int(entry))
    return tree


TICK = os.sysconf("SC_CLK_TCK")


def _rss_mb_cpu_s(pid: int) -> tuple[float, float, str]:
    """(RSS MB, user + system CPU seconds so far, command line) of one process."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
        stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return 0.0, 0.0, ""
    cpu = (int(stat[11]) + int(stat[12])) / TICK  # utime, stime (fields 14 and 15 of /proc/PID/stat)
    rss = next((int(line.split()[1]) / 1024 for line in status.splitlines() if line.startswith("VmRSS:")), 0.0)
    return rss, cpu, cmd


class TreeSampler(threading.Thread):
    """Peak RSS (MB) of a process tree: the whole tree at once, and the largest single Ray worker (`ray::_Host`)."""

    def __init__(self, root: int) -> None:
        super().__init__(daemon=True)
        self.root = root
        self.stop = threading.Event()
        self.peak_tree = 0.0
        self.peak_worker = 0.0
        self.peak_driver = 0.0
        self.cpu: dict[int, tuple[float, bool]] = {}  # pid -> (last CPU seconds seen, is a worker or the CLI)

    def cpu_s(self, compute_only: bool) -> float:
        """CPU seconds so far of the whole tree, or only of the processes that protect photos."""
        return sum(c for c, compute in list(self.cpu.values()) if compute or not compute_only)

    def run(self) -> None:
        while not self.stop.wait(0.25):
            tree, todo, total = _children(), [self.root], 0.0
            while todo:
                pid = todo.pop()
                rss, cpu, cmd = _rss_mb_cpu_s(pid)
                total += rss
                if pid == self.root:
                    self.peak_driver = max(self.peak_driver, rss)
                if cmd.startswith("ray::_Host"):
                    self.peak_worker = max(self.peak_worker, rss)
                if cmd:
                    self.cpu[pid] = (cpu, pid == self.root or cmd.startswith("ray::_Host"))
                todo.extend(tree.get(pid, []))
            self.peak_tree = max(self.peak_tree, total)


def run_one(name: str, extra: list[str], photos: list[Path], out: Path) -> dict[str, Any]:
    cmd = [sys.executable, "-c", "from facecloak.cli import main; main()", "protect", *map(str, photos), "-o",
           str(out), "--json", "--level", "low", "--no-verify", *extra]  # what was measured: black 1 %, unverified
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    load_before = os.getloadavg()
    cpu_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    child = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    sampler = TreeSampler(child.pid)
    sampler.start()
    arrivals: list[float] = []
    cpu_at: list[float] = []  # CPU seconds of the protecting processes (CLI / Ray workers) at each report
    records: list[dict] = []
    compute_only = bool(extra)  # Ray: the workers; local: the CLI process itself
    assert child.stdout is not None
    for line in child.stdout:
        if line.startswith("{") and '"summary"' not in line:
            arrivals.append(time.perf_counter() - start)
            cpu_at.append(sampler.cpu_s(compute_only) if compute_only else sampler.cpu_s(False))
            records.append(json.loads(line))
    stderr = child.stderr.read() if child.stderr else ""
    code = child.wait()
    wall = time.perf_counter() - start
    sampler.stop.set()
    sampler.join()
    cpu_after = resource.getrusage(resource.RUSAGE_CHILDREN)
    # the sampler lags by up to 0.25 s: the CPU between the 10th and the last report over those photos
    first = min(10, len(cpu_at) - 2)
    cpu_steady = (cpu_at[-1] - cpu_at[first]) / (len(cpu_at) - 1 - first) if len(cpu_at) > 2 else float("nan")
    if code != 0:
        raise FacecloakError(f"{name}: exit {code}: {stderr[-2000:]}")
    seconds = [r["seconds"] for r in records]
    steady = (arrivals[-1] - arrivals[0]) / (len(arrivals) - 1) if len(arrivals) > 1 else float("nan")
    statuses: dict[str, int] = {}
    for r in records:
        statuses[r["status"]] = statuses.get(r["status"], 0) + 1
    return {
        "config": name,
        "command": shlex.join(["facecloak", "protect", "<N LFW photos>", "-o", "<tmp>", "--json", *extra]),
        "n": len(records),
        "statuses": statuses,
        "wall_s": round(wall, 2),
        "photos_per_s": round(len(records) / wall, 3),
        "first_report_s": round(arrivals[0], 2),
        "steady_s_per_photo": round(steady, 4),
        "steady_photos_per_s": round(1 / steady, 3),
        "worker_s_per_photo_mean": round(statistics.mean(seconds), 4),
        "worker_s_per_photo_median": round(statistics.median(seconds), 4),
        "worker_s_per_photo_mean_after_first": round(statistics.mean(seconds[1:]), 4),
        # CPU of the child as the OS reports it when reaped (Ray's daemons and workers are not reaped by it)
        "cpu_s_reaped": round(cpu_after.ru_utime + cpu_after.ru_stime - cpu_before.ru_utime - cpu_before.ru_stime, 1),
        # CPU of the whole process tree as sampled from /proc (start-up included), and of the protecting processes
        # per photo in the steady state (from the 10th report on): load-independent, unlike the wall times
        "cpu_s_tree": round(sampler.cpu_s(False), 1),
        "cpu_s_protecting": round(sampler.cpu_s(True) if compute_only else sampler.cpu_s(False), 1),
        "cpu_s_per_photo_steady": round(cpu_steady, 4),
        "peak_rss_tree_mb": round(sampler.peak_tree),
        "peak_rss_driver_mb": round(sampler.peak_driver),
        "peak_rss_worker_mb": round(sampler.peak_worker),
        "load_before": [round(x, 2) for x in load_before],
        "load_after": [round(x, 2) for x in os.getloadavg()],
    }


def digests(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


def capacity(results: dict[str, dict], identical: bool) -> dict[str, Any]:
    """Workers, memory and CPU-hours for 1,000,000 photos a day, from the measured CPU per photo and RSS.

    CPU per photo, not wall time: on a shared machine the wall clock also counts other jobs' turns."""
    local, ray1 = results["local"], results["ray-1"]
    ray_runs = [r for k, r in results.items() if k.startswith("ray")]
    cpu_worker = ray1["cpu_s_per_photo_steady"]  # one Ray worker's own CPU per photo
    # everything else Ray spends per photo (driver, raylet, GCS, idle workers; start-up included), vs local
    overhead_cpu = (ray1["cpu_s_tree"] - ray1["cpu_s_protecting"]) / ray1["n"] - (
        local["cpu_s_tree"] - local["cpu_s_protecting"]) / local["n"]
    per_photo = cpu_worker + max(0.0, overhead_cpu)
    rate = PHOTOS_PER_DAY / 86_400
    busy = rate * cpu_worker
    workers = math.ceil(busy / HEADROOM)
    worker_mb = max(r["peak_rss_worker_mb"] for r in ray_runs)
    return {
        "photos_per_day": PHOTOS_PER_DAY,
        "photos_per_s": round(rate, 2),
        "cpu_s_per_photo_local": local["cpu_s_per_photo_steady"],
        "cpu_s_per_photo_ray_worker": cpu_worker,
        "ray_overhead_cpu_s_per_photo": round(overhead_cpu, 4),
        "ray_overhead_wall_s_per_photo": round(ray1["steady_s_per_photo"] - local["steady_s_per_photo"], 4),
        "busy_workers": round(busy, 1),
        "workers_at_70pct": workers,
        "memory_per_worker_mb": worker_mb,
        "memory_for_workers_gb": round(workers * worker_mb / 1024, 1),
        "cpu_hours_per_million": round(PHOTOS_PER_DAY * per_photo / 3600, 1),
        "outputs_identical_across_backends": identical,
    }


def run_ray_protect(
    n: int, out: Path, configs: Sequence[str], command: str, echo: Callable[[str], None] = lambda line: None
) -> dict[str, Any]:
    """Run each configuration on the first `n` LFW people; writes OUT/results.json and OUT/README.md and returns
    the payload. `echo` receives each configuration's JSON record as it finishes."""
    unknown = sorted(set(configs) - set(CONFIGS))
    if unknown:
        raise ConfigError(f"unknown configuration(s) {', '.join(unknown)}; choose from {', '.join(CONFIGS)}")
    photos = lfw_photos(n)
    results: dict[str, dict] = {}
    hashes: dict[str, dict[str, str]] = {}
    with tempfile.TemporaryDirectory(prefix="ray-protect-") as tmp:
        for name in configs:
            written = Path(tmp) / name
            results[name] = run_one(name, CONFIGS[name], photos, written)
            hashes[name] = digests(written)
            echo(json.dumps(results[name]))
    identical = all(h == hashes[next(iter(hashes))] for h in hashes.values())
    payload = {
        "command": command,
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "data": f"one photo each of the first {n} LFW people (name order), deep-funneled 250x250 JPEG",
        "settings": "default models (mbf-arc, mbf-tf, mobileface), facemesh parser, fill black, budget 1 %, "
                    "1 torch thread per process (OMP_NUM_THREADS=1 locally; set by each Ray worker)",
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform(),
                    "memory_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)},
        "outputs_identical": identical,
        "output_files": {k: len(v) for k, v in hashes.items()},
        "runs": results,
    }
    if {"local", "ray-1"} <= set(results):
        payload["capacity"] = capacity(results, identical)
    atomic_write_text(out / "results.json", json.dumps(payload, indent=2) + "\n")
    atomic_write_text(out / "README.md", render(payload))
    return payload


def render(p: dict[str, Any]) -> str:
    rows = ["| configuration | n | wall s | photos/s (wall) | start-up to 1st report s | steady wall s/photo | "
            "worker s/photo (median) | CPU s/photo, protecting processes, steady | CPU s, whole tree | "
            "peak RSS per worker MB | peak RSS tree MB | load 1 min before → after |", "|" + "---|" * 12]
    for r in p["runs"].values():
        worker = r["peak_rss_worker_mb"] or r["peak_rss_driver_mb"]
        rows.append(f"| `{r['config']}` | {r['n']} | {r['wall_s']} | {r['photos_per_s']} | {r['first_report_s']} | "
                    f"{r['steady_s_per_photo']} | {r['worker_s_per_photo_median']} | {r['cpu_s_per_photo_steady']} | "
                    f"{r['cpu_s_tree']} | {worker} | {r['peak_rss_tree_mb']} | "
                    f"{r['load_before'][0]} → {r['load_after'][0]} |")
    text = [f"# protect throughput: local vs Ray ({p['date']})", "",
            f"`{p['command']}`", "",
            f"Data: {p['data']}. Settings: {p['settings']}. Machine: {p['machine']['cpus']} CPUs, "
            f"{p['machine']['memory_gb']} GiB, Python {p['machine']['python']}, shared with other jobs (load "
            "averages in the table: wall times are upper bounds, CPU times are not affected). Outputs "
            f"byte-identical across the configurations: **{p['outputs_identical']}** ({p['output_files']} files).",
            "", *rows, "",
            "Steady wall s/photo: time between the first and the last report divided by n − 1 (start-up excluded). "
            "Worker s/photo: the wall time `run_one` reports per photo inside its process. CPU s/photo: user + system "
            "CPU of the processes that protect photos (the CLI for `local`, the `ray::_Host` actors for Ray) from "
            "the 10th report to the last, per photo, sampled from /proc every 0.25 s. Whole tree: every process "
            "the command started (Ray's GCS, raylet, agents, idle workers), start-up included. For `local` the "
            "per-worker RSS column is the CLI process itself.", ""]
    c = p.get("capacity")
    if c:
        text += ["## Capacity plan for 1,000,000 photos a day (computed from the rows above)", "",
                 f"- Rate: {c['photos_per_s']} photos/s around the clock.",
                 f"- CPU per photo: {c['cpu_s_per_photo_ray_worker']} s in a Ray worker "
                 f"({c['cpu_s_per_photo_local']} s in the local CLI); Ray's own processes add "
                 f"{c['ray_overhead_cpu_s_per_photo']} CPU s per photo (start-up spread over n) and "
                 f"{c['ray_overhead_wall_s_per_photo']} wall s per photo for one worker in the steady state.",
                 f"- Busy workers: {c['busy_workers']}; at 70 % utilisation **{c['workers_at_70pct']} workers** "
                 "(1 CPU, 1 torch thread each).",
                 f"- Memory: {c['memory_per_worker_mb']} MB peak RSS per worker → {c['memory_for_workers_gb']} GB "
                 "for the workers, plus Ray's own processes per node (whole-tree RSS minus the workers).",
                 f"- CPU: **{c['cpu_hours_per_million']} CPU-hours per million photos** (workers + Ray overhead).",
                 ""]
    return "\n".join(text) + "\n"

