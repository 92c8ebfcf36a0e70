"""Small pieces shared by the CLI commands: name lists, progress bars on stderr, recogniser resolution."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sized
from typing import Annotated, TypeVar

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

T = TypeVar("T")
stderr = Console(stderr=True)

# The one `--device` option of protect, explain and the bench commands that run recognition models.
DeviceOption = Annotated[str, typer.Option(help="Where the recognition models (and the cloak) run: auto (CUDA when "
                                                "present), cpu, cuda or cuda:N.")]


def parse_names(value: str | None) -> list[str] | None:
    if value is None:
        return None
    names = [v.strip() for v in value.split(",") if v.strip()]
    return names or None


def progress_iter(items: Iterable[T], description: str = "working") -> Iterator[T]:
    """A rich progress bar on stderr (hidden when stderr is not a terminal, e.g. in CI logs)."""
    total = len(items) if isinstance(items, Sized) else None
    with Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=stderr,
        transient=True,
        disable=not stderr.is_terminal,
    ) as bar:
        task = bar.add_task(description, total=total)
        for item in items:
            yield item
            bar.advance(task)


def resolve_recognisers(names: list[str] | None) -> list:
    """Recognisers by name: model ids (differentiable), black-box names, or `onnx:/path/model.onnx`."""
    from facecloak.models import MODELS
    from facecloak.models.blackbox import differentiable_recogniser, get_recogniser

    names = names or MODELS.names()
    return [differentiable_recogniser(n) if n in MODELS else get_recogniser(n) for n in names]
