"""Per 60 photos of rss.log (seconds, VmRSS MiB, VmHWM MiB, photos written): the RSS range and the peak so far."""
import sys
from pathlib import Path

text = Path(sys.argv[1] if sys.argv[1:] else "rss.log").read_text()
rows = [tuple(map(int, line.split())) for line in text.splitlines() if len(line.split()) == 4]
print("| photos written | RSS min–max MiB | peak so far (VmHWM) MiB |\n|---|---|---|")
for start in range(0, max(r[3] for r in rows) + 1, 60):
    block = [r for r in rows if start <= r[3] < start + 60]
    if block:
        print(f"| {start}–{start + 59} | {min(r[1] for r in block)}–{max(r[1] for r in block)} | "
              f"{max(r[2] for r in block)} |")
