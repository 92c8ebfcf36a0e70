"""facecloak's albumentations transform in a Ray Data pipeline: read photos, occlude, write (or yield) them.

    pip install 'facecloak[ray]'
    python examples/ray_data_transform.py PHOTOS/ -o OUT/ --workers 2 --models mbf-arc --fill black
    python examples/ray_data_transform.py PHOTOS/ --address auto        # on an existing cluster, yield only

`ray.data.read_images` reads the photos (decoded by Ray's reader: no EXIF orientation, no metadata), then
`map_batches` runs `facecloak.scale.data.LeamOcclusionBatches` on `--workers` actors, each loading the models once.
With `-o` a second `map_batches` writes every result as PNG on the workers (atomically, never over an existing
file, mirroring the input tree: OUT must be on a filesystem the workers share); without it the driver only reads
the rows. Each photo's seed comes from (--seed, its path), so the bytes equal a plain loop over
`LeamOcclusionBatches(...).one(image, path)` with 1 torch thread, whatever the batching or worker count.
Prints one JSON line per photo: path, output, changed_pixels.
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np


def pipeline(
    input_dir: Path,
    *,
    workers: int = 1,
    batch_size: int = 4,
    seed: int = 0,
    **transform: Any,
) -> Any:
    """A lazy Ray Data dataset of the occluded photos: columns image (uint8 RGB), path, changed_pixels."""
    import ray

    from facecloak.scale.data import LeamOcclusionBatches

    ds = ray.data.read_images(str(input_dir), include_paths=True, mode="RGB")
    return ds.map_batches(
        LeamOcclusionBatches,
        fn_constructor_kwargs={"seed": seed, **transform},
        concurrency=workers,
        num_cpus=1,
        batch_size=batch_size,
        batch_format="numpy",
    )


def write_batch(batch: dict[str, Any], input_dir: str, out_dir: str) -> dict[str, Any]:
    """Write each image to OUT/<relative path>.png (atomic, no overwrite); keep only small columns."""
    from facecloak.photos.io import write_image

    outputs = []
    for image, path in zip(batch["image"], batch["path"], strict=True):
        rel = Path(os.path.relpath(os.path.join(os.sep, str(path).lstrip(os.sep)), input_dir))
        target = Path(out_dir) / rel.with_suffix(".png")
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            write_image(target, np.asarray(image, np.uint8), format="PNG")
        outputs.append(str(target))
    return {"path": batch["path"], "output": np.array(outputs), "changed_pixels": batch["changed_pixels"]}


def rows(ds: Any, input_dir: Path, out_dir: Path | None) -> Iterator[dict[str, Any]]:
    """The finished rows: written (with `out_dir`) or yielded with their images (without)."""
    if out_dir is not None:
        ds = ds.map_batches(write_batch, fn_kwargs={"input_dir": str(Path(input_dir).resolve()),
                                                    "out_dir": str(Path(out_dir).resolve())},
                            batch_format="numpy")
    yield from ds.iter_rows()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("input", type=Path)
    parser.add_argument("-o", "--out", type=Path, default=None)
    parser.add_argument("--address", default=None, help="join this Ray cluster (default: start a local one)")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--models", default="mbf-arc", help="comma-separated source models")
    parser.add_argument("--budget", type=float, default=1.0)
    parser.add_argument("--fill", default="black")
    parser.add_argument("--parser", default="facemesh", choices=("facemesh", "landmarks5"))
    args = parser.parse_args(argv)

    import ray

    if args.address is None:
        ray.init(num_cpus=max(os.cpu_count() or 1, args.workers + 1), include_dashboard=False,
                 object_store_memory=512 * 2**20, log_to_driver=False)
    else:
        ray.init(address=args.address, log_to_driver=False)
    try:
        ds = pipeline(args.input, workers=args.workers, batch_size=args.batch_size, seed=args.seed,
                      models=args.models.split(","), budget=args.budget, fill=args.fill, parser=args.parser)
        for row in rows(ds, args.input, args.out):
            print(json.dumps({"path": str(row["path"]), "output": str(row.get("output", "")) or None,
                              "changed_pixels": int(row["changed_pixels"])}))
    finally:
        ray.shutdown()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
