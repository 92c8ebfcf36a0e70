"""Peak RSS, CPU, verdicts and start-up of each checkout's runs of run.sh, and whether their outputs and verdicts
agree. Usage: python summarise.py WORK"""

import json
import re
import statistics
import sys
from pathlib import Path


def field(pattern: str, text: str) -> float:
    """The number `pattern`'s group captures in /usr/bin/time -v's output."""
    found = re.search(pattern, text)
    if found is None:
        sys.exit(f"no {pattern!r} in the time output")
    return float(found.group(1))


def seconds(time_file: Path) -> tuple[float, float]:
    """Wall and CPU (user + system) seconds of one /usr/bin/time -v run."""
    text = time_file.read_text()
    clock = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): ([\d:.]+)", text)
    if clock is None:
        sys.exit(f"no wall-clock time in {time_file}")
    parts = [float(p) for p in clock.group(1).split(":")]
    wall = sum(p * 60**i for i, p in enumerate(reversed(parts)))
    return wall, sum(field(rf"{k} time \(seconds\): ([\d.]+)", text) for k in ("User", "System"))


def records(json_lines: Path) -> dict[str, dict]:
    """The per-photo records of one run, by input file name."""
    out = {}
    for line in json_lines.read_text().splitlines():
        if line.startswith("{") and "status" in (record := json.loads(line)):
            out[Path(record["path"]).name] = record
    return out


def digests(run: Path) -> dict[str, str]:
    """Output file name -> sha256, from the `out.sha256` run.sh writes."""
    lines = (run / "out.sha256").read_text().splitlines()
    return {name: digest for digest, name in (line.split(maxsplit=1) for line in lines)}


def main(work: Path) -> None:
    runs = sorted(p for p in work.iterdir() if (p / "out.time").is_file())
    print("| checkout | photos | peak RSS MiB | CPU s | statuses | start-up wall s (median) | start-up CPU s |")
    print("|---|---:|---:|---:|---|---:|---:|")
    for run in runs:
        time_v = (run / "out.time").read_text()
        peak = field(r"Maximum resident set size \(kbytes\): (\d+)", time_v) / 1024
        statuses: dict[str, int] = {}
        for record in records(run / "out.json").values():
            statuses[record["status"]] = statuses.get(record["status"], 0) + 1
        starts = [seconds(t) for t in sorted(run.glob("startup-*.time"))]
        wall = statistics.median(s[0] for s in starts) if starts else float("nan")
        cpu = statistics.median(s[1] for s in starts) if starts else float("nan")
        print(f"| {run.name} | {sum(statuses.values())} | {peak:.0f} | {seconds(run / 'out.time')[1]:.0f} | "
              f"{', '.join(f'{k} {v}' for k, v in sorted(statuses.items()))} | {wall:.2f} (n={len(starts)}) | "
              f"{cpu:.2f} |")
    if len(runs) == 2:
        a, b = runs
        da, db = digests(a), digests(b)
        same_files = sum(da[k] == db.get(k) for k in da)
        ra, rb = records(a / "out.json"), records(b / "out.json")
        same_verdicts = sum(ra[k]["status"] == rb[k]["status"] for k in ra)
        diffs = [abs(x - y) for k in ra for va, vb in zip(ra[k]["verdict"], rb[k]["verdict"], strict=True)
                 for x, y in zip(va["cosine"].values(), vb["cosine"].values(), strict=True)]
        print(f"\n{a.name} vs {b.name}: outputs byte-identical {same_files} of {len(ra)}; statuses equal "
              f"{same_verdicts} of {len(ra)}; verifier cosines differ by at most {max(diffs, default=0):.4f} "
              f"({len(diffs)} face-verifier cosines)")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
