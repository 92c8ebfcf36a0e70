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


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="CUDA is available here: --device cuda would run")
@pytest.mark.parametrize(
    "args",
    [
        ["run", "--recipe", "quick", "--data", "{tmp}/none", "-o", "{tmp}/r"],
        ["patterns", "--data", "{tmp}/none", "-o", "{tmp}/p"],
        ["variants", "--data", "{tmp}/none", "-o", "{tmp}/v"],
        ["independent", "--data", "{tmp}/none", "-o", "{tmp}/i"],
        ["speed-protect", "-o", "{tmp}/s"],
    ],
    ids=lambda args: args[0],
)
def test_every_bench_command_that_runs_models_takes_a_device_and_refuses_a_missing_one_first(
    args: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`--device` reaches the bench as it reaches protect and explain; a device this machine lacks is one line and
    exit 2, before any photo is read (the data folders here do not even exist) or any output is written."""
    code, _, err = run_main(["bench", *(a.format(tmp=tmp_path) for a in args), "--device", "cuda"], capsys)
    assert code == 2 and "CUDA is not available" in err and "Traceback" not in err, err
    assert list(tmp_path.iterdir()) == []


def test_speed_protect_runs_each_checkout_on_the_device_where_it_has_devices(tmp_path: Path) -> None:
    """This checkout gets `--device` (and the snippets their device); an older one without devices runs as it did."""
    from bench.speed_protect import DEVICE_KWARGS, DEVICE_VARIABLE, REPO, facecloak_tool

    new = facecloak_tool("facecloak", REPO, ("--level", "low"), "cpu")
    assert new.argv[-4:] == ["--level", "low", "--device", "cpu"] and new.env[DEVICE_VARIABLE] == "cpu"
    (tmp_path / "facecloak" / "masking").mkdir(parents=True)  # a checkout from before `resolve_device`
    old = facecloak_tool("old", tmp_path, (), "cuda")
    assert "--device" not in old.argv and DEVICE_VARIABLE not in old.env
    for env, kwargs in ((new.env, {"device": "cpu"}), (old.env, {})):
        scope: dict = {}
        exec(DEVICE_KWARGS.replace("os.environ", "ENV"), {"ENV": env}, scope)
        assert scope["DEVICE"] == kwargs
