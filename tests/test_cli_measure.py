"""`facecloak bench speed | speed-protect | protect-cost | ray-protect | serve-latency | dlib-r29`: the measurement
scripts are typer commands (no argparse entry points left); option errors stop with one line before any work."""

from __future__ import annotations

from pathlib import Path

import pytest
from _protect_support import run_main

COMMANDS = ("speed", "speed-protect", "protect-cost", "ray-protect", "serve-latency", "dlib-r29")


@pytest.mark.parametrize("command", COMMANDS)
def test_every_measurement_is_a_bench_command(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_main(["bench", command, "--help"], capsys)
    assert code == 0 and f"facecloak bench {command}" in out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["ray-protect", "-o", "{tmp}/r", "--configs", "local,ray-9"], "unknown configuration(s) ray-9"),
        (["protect-cost", "--source", "flickr"], "unknown source 'flickr'"),
        (["dlib-r29", "--what", "fidelty"], "unknown measurement(s) fidelty"),
        (["speed-protect", "-o", "{tmp}/s", "--photos", "1"], "--photos"),
    ],
)
def test_bad_options_stop_before_any_work(
    args: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run_main(["bench", *(a.format(tmp=tmp_path) for a in args)], capsys)
    assert code == 2 and message in err and "Traceback" not in err
    assert list(tmp_path.iterdir()) == []


def test_no_argparse_scripts_are_left() -> None:
    root = Path(__file__).resolve().parents[1]
    scripts = [p for folder in ("facecloak", "bench", "leam", "tools") for p in (root / folder).rglob("*.py")
               if "argparse" in p.read_text()]
    # bench/variants.py becomes `facecloak bench variants` on the bench branch; nothing else may parse argv itself.
    assert {p.name for p in scripts} <= {"variants.py"}, scripts
