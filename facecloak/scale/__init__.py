"""Running facecloak beyond one process: the optional Ray backend (`pip install 'facecloak[ray]'`).

`facecloak.scale.ray` starts or joins a Ray cluster and maps work over long-lived actors that each build their
state (loaded, sha256-verified models) once. Nothing here imports `ray` at import time, so the package imports
without the extra; the first call that needs Ray raises `RayUnavailableError` with the install command.
"""

from __future__ import annotations

from facecloak.scale.ray import RayConfig, RayUnavailableError, actor_map, ray_session

__all__ = ["RayConfig", "RayUnavailableError", "actor_map", "ray_session"]
