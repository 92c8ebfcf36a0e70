"""Measurements of `facecloak serve`: drop-to-result time in a real browser and the server's memory.

    OMP_NUM_THREADS=1 facecloak bench serve-latency [--n 5] [--n-medium 3] [--concurrent 20] [--chromium PATH]

Starts `facecloak serve --port 0` as its own process (models loaded and warmed up, as a user gets it), then:

rest       the server's resident memory (VmRSS) once it prints its address and has idled 3 s
drop       drop-to-result in headless Chromium: the page's own timer, from the moment the photo is handed to the
           page (upload starts) to the result shown (verdict + protected photo + heatmap fetched); per photo and
           level, n runs, one photo at a time on the warm server
api        the same through the JSON API only (POST -> poll every 50 ms -> GET image), n runs
burst      `--concurrent` uploads at once through the API (level low), twice; wall time until all are done
memory     peak resident memory while working (VmRSS sampled every 50 ms and the kernel's VmHWM)

Photos come from installed packages (facecloak.photos.bundled.bundled_photos): skimage's astronaut (512x512, one face)
and insightface's t1 (1280x886, six faces). Prints Markdown; every number carries its n and the machine load.
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from PIL import Image

from facecloak.errors import FacecloakError

CHROMIUM_ARGS = ["--no-sandbox", "--disable-dev-shm-usage"]


def rss_mib(pid: int, field: str = "VmRSS") -> float:
    text = Path(f"/proc/{pid}/status").read_text()
    match = re.search(rf"^{field}:\s+(\d+) kB", text, re.M)
    return int(match.group(1)) / 1024 if match else float("nan")


class Sampler:
    def __init__(self, pid: int) -> None:
        self.pid, self.peak, self._stop = pid, 0.0, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, rss_mib(self.pid))
            time.sleep(0.05)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def call(method: str, url: str, body: bytes | None = None) -> Any:
    with urllib.request.urlopen(urllib.request.Request(url, data=body, method=method), timeout=600) as r:
        data = r.read()
        return json.loads(data) if r.headers.get("content-type", "").startswith("application/json") else data


def api_round(base: str, data: bytes, level: str, name: str) -> float:
    start = time.perf_counter()
    job = call("POST", f"{base}/api/jobs?level={level}&name={name}", data)
    while job["status"] in ("queued", "running"):
        time.sleep(0.05)
        job = call("GET", f"{base}/api/jobs/{job['id']}")
    if job["status"] != "done":
        raise RuntimeError(job["error"])
    call("GET", base + job["urls"]["image"])
    elapsed = time.perf_counter() - start
    call("DELETE", f"{base}/api/jobs/{job['id']}")
    return elapsed


def summary(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.2f} s (n=1)"
    return (f"median {statistics.median(values):.2f} s, min {min(values):.2f}, max {max(values):.2f} "
            f"(n={len(values)})")  # fmt: skip


DEFAULT_CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


def measure_serve(n: int = 5, n_medium: int = 3, concurrent: int = 20, chromium: str = DEFAULT_CHROMIUM) -> str:
    """Run every measurement of the module docstring against a fresh `facecloak serve`; returns the Markdown.
    `n`: runs per photo at level low; `n_medium`: runs of the astronaut at level medium (the cloak)."""
    from facecloak.photos.bundled import bundled_photos

    photos = bundled_photos()
    tmp = Path(tempfile.mkdtemp(prefix="facecloak-measure-"))
    files = {}
    for name, fmt in (("astronaut", "PNG"), ("t1", "JPEG")):
        path = tmp / f"{name}.{fmt.lower()}"
        Image.fromarray(photos[name]).save(path, format=fmt, quality=92)
        files[name] = path

    load_before = os.getloadavg()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    t0 = time.perf_counter()
    command = [sys.executable, "-c", "from facecloak.cli import main; main()", "serve", "--port", "0"]
    server = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    base = ""
    try:
        assert server.stdout is not None
        for line in server.stdout:
            found = re.search(r"open (http://\S+?)/? in your browser", line)
            if found:
                base = found.group(1).rstrip("/")
                break
        if not base:
            raise FacecloakError("the server did not print its address")
        startup = time.perf_counter() - t0
        threading.Thread(target=lambda: [None for _ in server.stdout], daemon=True).start()  # type: ignore[union-attr]
        time.sleep(3)
        rest = rss_mib(server.pid)
        results: dict[str, list[float]] = {}

        from playwright.sync_api import sync_playwright

        with Sampler(server.pid) as sampler, sync_playwright() as p:
            browser = p.chromium.launch(executable_path=chromium, headless=True, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.goto(base + "/")
            runs = [("astronaut", "low", n), ("t1", "low", n), ("astronaut", "medium", n_medium)]
            for name, level, repeats in runs:
                page.check(f"input[name=level][value={level}]")
                for _ in range(repeats):
                    if page.is_visible("#clear"):
                        page.click("#clear")
                    page.set_input_files("#files", str(files[name]))
                    page.wait_for_selector(".card[data-status=done], .card[data-status=failed]", timeout=600_000)
                    card = page.locator(".card").first
                    if card.get_attribute("data-status") != "done":
                        raise FacecloakError(card.inner_text())
                    seconds = float(card.get_attribute("data-seconds") or "nan")
                    results.setdefault(f"drop {name} {level}", []).append(seconds)
            browser.close()
            for name in ("astronaut", "t1"):
                data = files[name].read_bytes()
                results[f"api {name} low"] = [api_round(base, data, "low", name) for _ in range(n)]
            work_peak = sampler.peak

            crop = io.BytesIO()
            Image.fromarray(photos["astronaut"][10:250, 110:350]).save(crop, format="PNG")
            settled = []  # resident memory 3 s after each burst: flat when nothing is kept
            for _ in range(2):
                start = time.perf_counter()
                with ThreadPoolExecutor(concurrent) as pool:
                    burst = list(pool.map(lambda i: api_round(base, crop.getvalue(), "low", f"b{i}"),
                                          range(concurrent)))  # fmt: skip
                burst_wall = time.perf_counter() - start
                time.sleep(3)
                settled.append(rss_mib(server.pid))
            burst_peak = sampler.peak
        hwm = rss_mib(server.pid, "VmHWM")
    finally:
        server.terminate()
        server.wait(30)
        shutil.rmtree(tmp, ignore_errors=True)
    load_after = os.getloadavg()

    lines: list[str] = []
    lines.append(f"machine: {os.cpu_count()} CPUs, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}, "
                 f"load average (1/5/15 min) before {load_before[0]:.2f}/{load_before[1]:.2f}/{load_before[2]:.2f}, "
                 f"after {load_after[0]:.2f}/{load_after[1]:.2f}/{load_after[2]:.2f}")  # fmt: skip
    lines += [f"server start (models loaded + warm-up) to address printed: {startup:.1f} s (n=1)", ""]
    lines += ["| measurement | result |", "|---|---|"]
    lines += [f"| {key} | {summary(values)} |" for key, values in results.items()]
    lines.append(f"| burst: {concurrent} concurrent uploads (240x240 crop, low), 2nd of 2 bursts | "
                 f"all done in {burst_wall:.1f} s wall; per upload {summary(burst)} |")
    lines.append(f"| memory at rest (VmRSS, warm) | {rest:.0f} MiB |")
    peak = max(work_peak, burst_peak)
    lines.append(f"| memory peak while working (VmRSS sampled / VmHWM) | {peak:.0f} MiB / {hwm:.0f} MiB |")
    lines.append(f"| memory at rest after the work, after burst 1 / burst 2 | {settled[0]:.0f} MiB / "
                 f"{settled[1]:.0f} MiB |")
    return "\n".join(lines) + "\n"
