"""Peak RSS, CPU and verdicts of each run of run.sh. Usage: python summarise.py WORK"""

import json
import re
import sys
from pathlib import Path


def field(pattern: str, text: str) -> float:
    """The number `pattern`'s group captures in /usr/bin/time -v's output."""
    found = re.search(pattern, text)
    if found is None:
        sys.exit(f"no {pattern!r} in time.txt")
    return float(found.group(1))


def summary(run: Path) -> str:
    time_v = (run / "time.txt").read_text()
    seconds = sum(field(rf"{k} time \(seconds\): ([\d.]+)", time_v) for k in ("User", "System"))
    peak = field(r"Maximum resident set size \(kbytes\): (\d+)", time_v) / 1024
    samples = [line.split() for line in (run / "rss.log").read_text().splitlines() if len(line.split()) == 4]
    records = [json.loads(line) for line in (run / "run.json").read_text().splitlines() if line.startswith("{")]
    verdicts: dict[str, int] = {}
    for record in records:
        if "status" in record:
            verdicts[record["status"]] = verdicts.get(record["status"], 0) + 1
    photos = sum(verdicts.values())
    half = [int(s[2]) for s in samples if int(s[3]) <= photos // 2]
    return (
        f"| {run.name.removeprefix('cap-')} | {peak:.0f} | {max(half, default=0)} | {seconds:.0f} | "
        f"{photos} | {', '.join(f'{k} {v}' for k, v in sorted(verdicts.items()))} |"
    )


print("| ONEDNN_PRIMITIVE_CACHE_CAPACITY | peak RSS MiB | peak by half the photos | CPU s | photos | statuses |")
print("|---|---:|---:|---:|---:|---|")
for run in sorted(Path(sys.argv[1]).glob("cap-*"), key=lambda p: -int(p.name[4:]) if p.name[4:].isdigit() else 0):
    print(summary(run))
