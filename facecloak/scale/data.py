"""`LeamOcclusion` on batches: the callable class for Ray Data's `map_batches` (or any dict-of-arrays batcher).

    ds = ray.data.read_images(folder, include_paths=True, mode="RGB")
    ds = ds.map_batches(LeamOcclusionBatches, fn_constructor_kwargs={"models": ["mbf-arc"], "fill": "black"},
                        concurrency=2, num_cpus=1, batch_size=8, batch_format="numpy")

Ray builds one instance per worker, so each worker loads the models once (lazily, on its first face). Every image
gets its own seed from (seed, its path), so a result depends neither on batch boundaries nor on how many workers
there are nor on their order: `LeamOcclusionBatches(...).one(image, path)` in a plain loop gives the same bytes
with the same torch thread count (`torch_threads`, default 1). Nothing here imports Ray.
"""

from __future__ import annotations

import zlib
from typing import Any

import albumentations as A
import numpy as np


def photo_seed(seed: int, key: str) -> int:
    """A per-photo seed from the run's seed and a stable key (its path): independent of order and batching."""
    return int(np.random.SeedSequence([seed, zlib.crc32(key.encode())]).generate_state(1)[0] >> 1)


class LeamOcclusionBatches:
    """Apply `LeamOcclusion(**transform)` to the `image` column of a batch (uint8 RGB arrays, any sizes).

    Adds `changed_pixels` (pixels that differ from the input, per image). `path` names each image's seed key.
    """

    def __init__(
        self,
        seed: int = 0,
        torch_threads: int = 1,
        image_column: str = "image",
        path_column: str = "path",
        **transform: Any,
    ) -> None:
        import torch

        from facecloak.runtime import bound_native_caches
        from facecloak.transforms import LeamOcclusion

        bound_native_caches()  # a worker lives for many images of many sizes (see facecloak.runtime)
        torch.set_num_threads(torch_threads)
        self.seed = seed
        self.image_column = image_column
        self.path_column = path_column
        self.transform = LeamOcclusion(**transform)

    def one(self, image: np.ndarray, key: str) -> np.ndarray:
        """One image through the transform with its own seed."""
        return A.Compose([self.transform], seed=photo_seed(self.seed, key))(image=np.ascontiguousarray(image))["image"]

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        images = list(batch[self.image_column])
        keys = [str(k) for k in batch[self.path_column]]
        out = [self.one(image, key) for image, key in zip(images, keys, strict=True)]
        changed = [int(np.any(a != b, axis=-1).sum()) for a, b in zip(images, out, strict=True)]
        result = dict(batch)
        result[self.image_column] = _array_of(out)
        result["changed_pixels"] = np.array(changed, np.int64)
        return result


def _array_of(images: list[np.ndarray]) -> np.ndarray:
    """One (N, H, W, 3) array when all images share a shape, else an object array (Ray Data takes both)."""
    if len({i.shape for i in images}) == 1:
        return np.stack(images)
    holder = np.empty(len(images), dtype=object)
    for k, image in enumerate(images):
        holder[k] = image
    return holder
