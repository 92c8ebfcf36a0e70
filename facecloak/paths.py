"""Where facecloak keeps its cache (pulled weights, thresholds, embedding caches, profiles)."""

from __future__ import annotations

import os
from pathlib import Path


def home() -> Path:
    """`$FACECLOAK_HOME`, else `$XDG_CACHE_HOME/facecloak`, else `~/.cache/facecloak`."""
    explicit = os.environ.get("FACECLOAK_HOME")
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "facecloak"


def models_dir() -> Path:
    return home() / "models"


def downloads_dir() -> Path:
    return home() / "downloads"


def embeddings_dir() -> Path:
    return home() / "embeddings"


def profiles_dir() -> Path:
    return home() / "profiles"
