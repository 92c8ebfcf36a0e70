"""The one progress protocol: library code takes `progress`, an iterable wrapper, and never draws bars itself.

    def embed_all(photos, *, progress: Progress = no_progress): for p in progress(photos, "embedding"): ...

The CLI passes `facecloak.cli.common.progress_iter` (a rich bar on stderr); tests and APIs pass nothing.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol, TypeVar

T = TypeVar("T")


class Progress(Protocol):
    def __call__(self, items: Iterable[T], description: str = ..., /) -> Iterable[T]: ...


def no_progress(items: Iterable[T], description: str = "", /) -> Iterable[T]:
    """The silent `Progress`: the items unchanged."""
    return items
