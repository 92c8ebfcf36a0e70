"""Process-wide settings for facecloak's long-running entry points: the CLI (and the server it starts), Ray workers
and Ray Data's `LeamOcclusionBatches`. Library callers who protect many photos in one process can call
`bound_native_caches()` themselves, before their first convolution.

oneDNN, which runs torch's CPU convolutions, keeps a compiled kernel for every convolution shape it has seen, up to
1024 by default. The detector's image pyramid meets about 17 new shapes per photo size, so over a folder of photos
of many sizes that cache grew the default CLI's peak RSS by ≈ 120 MiB within 45 photos and kept it growing; a
capacity of 256 still holds the cloak's own shapes, and its CPU time did not change
(`bench/results/speed-protect-onednn-cache`).
"""

from __future__ import annotations

import os

ONEDNN_CACHE_VARIABLE = "ONEDNN_PRIMITIVE_CACHE_CAPACITY"
ONEDNN_CACHE_CAPACITY = 256


def native_cache_env() -> dict[str, str]:
    """The variables that bound the native caches: the user's value where set, else facecloak's."""
    return {ONEDNN_CACHE_VARIABLE: os.environ.get(ONEDNN_CACHE_VARIABLE, str(ONEDNN_CACHE_CAPACITY))}


def bound_native_caches() -> None:
    """Set `native_cache_env()` in this process. oneDNN reads its variable when it builds its first primitive, so
    call this before the first convolution (the CLI does it on import)."""
    os.environ.update(native_cache_env())
