"""`facecloak` command line: a thin typer shell over the library.

Errors the library raises on purpose (`FacecloakError`) become one red line on stderr and exit code 2;
tracebacks never show local variables (they hold faces and embeddings).
"""

from __future__ import annotations

import atexit
import gc
import sys

import typer
from rich.console import Console

from facecloak.errors import FacecloakError
from facecloak.runtime import bound_native_caches
from leam.errors import LeamError
from leam.registry import UnknownNameError

app = typer.Typer(
    name="facecloak",
    help="Protect people in photos from face recognition by changing only the pixels models rely on most.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
    add_completion=False,
)
err_console = Console(stderr=True)

# Python's exit-time garbage collections walk every object torch created: about 0.4 s of a one-photo run on this
# project's 2-core machine (`facecloak bench speed-protect`). Freezing them as the last exit step skips that walk;
# reference counting still frees everything, and other exit handlers (Ray's, temporary folders') run before it.
atexit.register(gc.freeze)
# Before any convolution runs: a folder of photos of many sizes otherwise grows oneDNN's kernel cache (see there).
bound_native_caches()


def _register() -> None:
    from facecloak.cli import bench, explain, measure, models, protect, serve

    app.add_typer(models.app, name="models")
    for command in (explain, protect, bench, measure, serve):
        command.register(app)


_register()


def main() -> None:
    try:
        rc = app(standalone_mode=False)
        if isinstance(rc, int) and rc:
            sys.exit(rc)
    except (FacecloakError, LeamError, UnknownNameError) as exc:
        err_console.print(f"[red]error:[/red] {exc}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except KeyboardInterrupt:
        err_console.print("[yellow]interrupted[/yellow]: finished outputs are kept; rerun to resume")
        sys.exit(130)
    except Exception as exc:  # the CLI framework's usage errors, aborts and exits (typer vendors click)
        if type(exc).__name__ == "Abort":
            sys.exit(130)
        if hasattr(exc, "show") and hasattr(exc, "exit_code"):
            exc.show()
            sys.exit(exc.exit_code)
        if type(exc).__name__ == "Exit" and hasattr(exc, "exit_code"):
            sys.exit(exc.exit_code)
        raise
