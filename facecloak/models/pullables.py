"""Assets pulled by `facecloak models pull` besides the recognition models: detector and face parser."""

from __future__ import annotations

from collections.abc import Callable


def extra_pullables() -> dict[str, Callable[[bool], bool]]:
    """Name -> pull function(force) returning True when work was done."""
    from facecloak.faces.detect import DETECTORS
    from facecloak.faces.parse import pull_parser
    from facecloak.models.pull import pull

    def detector(name: str) -> Callable[[bool], bool]:
        return lambda force: pull(DETECTORS.get(name), force=force)

    return {**{name: detector(name) for name in DETECTORS}, "facemesh": lambda force: pull_parser(force=force)}
