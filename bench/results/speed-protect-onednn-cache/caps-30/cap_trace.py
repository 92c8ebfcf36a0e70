"""The default protect (level high) in one process over N photos: CPU s per photo, RSS after each, and the peak.
ONEDNN_PRIMITIVE_CACHE_CAPACITY comes from the environment (`bound_native_caches` keeps a value that is set).

Usage: ONEDNN_PRIMITIVE_CACHE_CAPACITY=C OMP_NUM_THREADS=1 python cap_trace.py FOLDER N OUT.json"""

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from facecloak.runtime import bound_native_caches


def status() -> tuple[float, float]:
    """(VmRSS, VmHWM) of this process in MiB."""
    with open("/proc/self/status") as fh:
        found = {line.split(":")[0]: int(line.split()[1]) / 1024 for line in fh
                 if line.startswith(("VmRSS", "VmHWM"))}
    return found["VmRSS"], found["VmHWM"]


def main(folder: Path, count: int, out_path: Path) -> None:
    bound_native_caches()  # before the first convolution, as the CLI does
    import torch

    from facecloak.photos.io import read_image
    from facecloak.protection.levels import LEVELS
    from facecloak.protection.protect import protect

    torch.set_num_threads(1)
    options = LEVELS.get("high").protect_options()
    rows: list[dict[str, Any]] = []
    for path in sorted(folder.glob("*"))[:count]:
        rgb = read_image(path).rgb
        start = time.process_time()
        result = protect(rgb, **options)
        rows.append({"photo": path.name, "cpu_s": round(time.process_time() - start, 3), "faces": len(result.faces),
                     "rss_mb": round(status()[0])})
    rss, peak = status()
    out = {"cap": os.environ.get("ONEDNN_PRIMITIVE_CACHE_CAPACITY"), "photos": len(rows),
           "cpu_s": round(sum(float(r["cpu_s"]) for r in rows), 2), "faces": sum(int(r["faces"]) for r in rows),
           "rss_end_mb": round(rss), "peak_mb": round(peak), "rows": rows}
    out_path.write_text(json.dumps(out, indent=1))
    print(out["cap"], out["cpu_s"], out["faces"], out["rss_end_mb"], out["peak_mb"])


if __name__ == "__main__":
    main(Path(sys.argv[1]), int(sys.argv[2]), Path(sys.argv[3]))
