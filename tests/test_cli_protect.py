"""`facecloak protect` end to end (issue 4 item 3), with typer's CliRunner on real photos copied to tmp_path.

Real photos come from ../shared/faces/deepface, scaled down to 320 px so each costs about a second; every run uses
one small source model (mbf-arc), fill black and the weight-free landmarks5 parser (see `_protect_support.FAST`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from _protect_support import (
    FAST,
    by_name,
    deepface_photos,
    invoke,
    json_lines,
    need_weights,
    run_main,
    sha256,
    small_copy,
    snapshot,
    temp_leftovers,
)
from PIL import ExifTags, Image

from facecloak.photos.io import read_image

pytestmark = [pytest.mark.real, pytest.mark.shared]


@pytest.fixture(scope="module")
def weights() -> None:
    need_weights()


@pytest.fixture
def photos(deepface_dir: Path, tmp_path: Path, weights: None) -> list[Path]:
    """Three small real photos of different people in tmp_path/in (JPEG)."""
    return [small_copy(p, tmp_path / "in" / f"person{i}.jpg") for i, p in enumerate(deepface_photos(deepface_dir, 3))]


def _no_face_png(path: Path) -> Path:
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(90, 110, (120, 160, 3), dtype=np.uint8)).save(path)
    return path


def test_batch_writes_protected_copies_and_reports_every_photo(photos: list[Path], tmp_path: Path) -> None:
    src = photos[0].parent
    _no_face_png(src / "wall.png")
    (src / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    before = snapshot(src)
    result = invoke(["protect", src, "-o", tmp_path / "out", *FAST, "--json"])
    records, summary = json_lines(result.stdout)
    rows = by_name(records)
    assert result.exit_code == 1  # some failed (the broken file), the rest handled
    assert summary == {"summary": {"failed": 1, "no-face-skipped": 1, "unverified": 3}, "photos": 5, "failed": 1}
    assert rows["broken.jpg"]["status"] == "failed" and "broken.jpg" in rows["broken.jpg"]["message"]
    assert rows["wall.png"]["status"] == "no-face-skipped" and rows["wall.png"]["output"] is None
    for p in photos:
        row = rows[p.name]
        assert row["status"] == "unverified" and row["faces"] >= 1 and row["pixels_changed"] > 0
        assert row["output"] == str(tmp_path / "out" / f"{p.stem}_protected.jpg")
        assert row["fill"] == "black" and row["frames"] == 1 and row["seconds"] > 0
        cos = row["cosine"][0]["mbf-arc"]
        assert cos["before"] == pytest.approx(1.0, abs=1e-3)  # reference = the clean face itself
        assert cos["after"] < cos["before"]  # measured on the file as written
        out = read_image(row["output"])
        assert (out.width, out.height) == (read_image(p).width, read_image(p).height)
        assert out.jpeg_encoding == read_image(p).jpeg_encoding  # written back with its own tables and chroma
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(f"{p.stem}_protected.jpg" for p in photos)
    assert snapshot(src) == before  # inputs untouched


def test_only_masked_pixels_change_in_a_png(photos: list[Path], tmp_path: Path) -> None:
    png = tmp_path / "png" / "face.png"
    png.parent.mkdir()
    Image.open(photos[0]).save(png)
    result = invoke(["protect", png, "-o", tmp_path / "out", *FAST, "--save-mask", "--save-heatmap", "--json"])
    (row,), _ = json_lines(result.stdout)
    assert result.exit_code == 0
    mask_path, heat_path = (Path(p) for p in row["side_files"])
    assert mask_path.name == "face_protected.mask.png" and heat_path.name == "face_protected.heatmap.png"
    mask = read_image(mask_path).rgb[..., 0]
    assert set(np.unique(mask)) <= {0, 255}
    changed = (read_image(row["output"]).rgb != read_image(png).rgb).any(2)
    assert int(changed.sum()) == row["pixels_changed"] == int((mask == 255).sum())  # black fill changes all of them
    assert not (changed & (mask == 0)).any()  # PNG is lossless: nothing outside the mask moved
    assert read_image(heat_path).rgb.shape == read_image(png).rgb.shape


@pytest.mark.parametrize(
    ("policy", "code", "status"),
    [("skip", 0, "no-face-skipped"), ("copy", 0, "no-face-copied"), ("error", 2, "failed")],
)
def test_no_face_policy(tmp_path: Path, weights: None, policy: str, code: int, status: str) -> None:
    photo = _no_face_png(tmp_path / "wall.png")
    with Image.open(photo) as im:
        exif = Image.Exif()
        exif[ExifTags.Base.Make] = "Camera"
        im.save(photo, exif=exif)  # metadata a copy must not carry
    result = invoke(["protect", photo, "-o", tmp_path / "out", *FAST, "--no-face", policy, "--json"])
    (row,), _ = json_lines(result.stdout)
    assert result.exit_code == code and row["status"] == status
    written = tmp_path / "out" / "wall_protected.png"
    assert written.exists() == (policy == "copy")
    if policy == "copy":
        assert np.array_equal(read_image(written).rgb, read_image(photo).rgb)
        with Image.open(written) as out:
            assert len(out.getexif()) == 0
    if policy == "error":
        assert "no face" in row["message"]


def test_exit_codes_all_ok_some_failed_all_failed(photos: list[Path], tmp_path: Path) -> None:
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "a.jpg").write_bytes(b"")
    (bad / "b.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    assert invoke(["protect", photos[0], "-o", tmp_path / "o1", *FAST]).exit_code == 0
    assert invoke(["protect", photos[1], bad / "a.jpg", "-o", tmp_path / "o2", *FAST]).exit_code == 1
    assert invoke(["protect", bad, "-o", tmp_path / "o3", *FAST]).exit_code == 2
    assert not (tmp_path / "o3").exists() or not any((tmp_path / "o3").iterdir())


def test_existing_outputs_are_skipped_unless_overwrite(photos: list[Path], tmp_path: Path) -> None:
    out = tmp_path / "out"
    first = invoke(["protect", photos[0], "-o", out, *FAST, "--json"])
    assert first.exit_code == 0
    target = out / f"{photos[0].stem}_protected.jpg"
    target.write_bytes(b"user's own file")
    again = invoke(["protect", photos[0], "-o", out, *FAST, "--json"])
    (row,), _ = json_lines(again.stdout)
    assert again.exit_code == 0 and row["status"] == "exists" and "--overwrite" in row["message"]
    assert target.read_bytes() == b"user's own file"
    forced = invoke(["protect", photos[0], "-o", out, *FAST, "--json", "--overwrite"])
    (row,), _ = json_lines(forced.stdout)
    assert forced.exit_code == 0 and row["status"] == "unverified"
    assert read_image(target).width == read_image(photos[0]).width


def test_interrupted_run_resumes_without_redoing_or_partial_files(
    photos: list[Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src, out = photos[0].parent, tmp_path / "out"
    saves = {"n": 0}
    real_save = Image.Image.save

    def save_then_interrupt_on_the_second_photo(self: Image.Image, fp: object, *args: object, **kwargs: object):
        saves["n"] += 1
        if saves["n"] == 2:  # in the middle of encoding the second output: bytes already in its temp file
            getattr(fp, "write", lambda b: None)(b"\xff\xd8partial")
            raise KeyboardInterrupt
        return real_save(self, fp, *args, **kwargs)

    monkeypatch.setattr(Image.Image, "save", save_then_interrupt_on_the_second_photo)
    interrupted = invoke(["protect", src, "-o", out, *FAST, "--json"])
    monkeypatch.undo()
    assert interrupted.exit_code == 130
    assert "interrupted after 1 of 3 photos" in interrupted.stderr
    done = sorted(out.iterdir())
    assert [p.name for p in done] == [f"{photos[0].stem}_protected.jpg"]  # no partial second output, no temp
    assert temp_leftovers(out) == []
    kept = sha256(done[0])
    resumed = invoke(["protect", src, "-o", out, *FAST, "--json"])
    records, summary = json_lines(resumed.stdout)
    assert resumed.exit_code == 0
    assert summary["summary"] == {"exists": 1, "unverified": 2}
    assert by_name(records)[photos[0].name]["status"] == "exists"
    assert sha256(done[0]) == kept  # the finished output was not redone
    assert sorted(p.name for p in out.iterdir()) == sorted(f"{p.stem}_protected.jpg" for p in photos)
    assert temp_leftovers(out) == []


def _jpeg_with_gps(src: Path, dst: Path) -> Path:
    exif = Image.Exif()
    exif[ExifTags.Base.Make] = "PhoneMaker"
    exif[ExifTags.Base.Model] = "Phone 1"
    exif[ExifTags.Base.Orientation] = 1
    gps = exif.get_ifd(ExifTags.IFD.GPSInfo)
    gps[ExifTags.GPS.GPSLatitudeRef] = "N"
    gps[ExifTags.GPS.GPSLatitude] = (48.0, 51.0, 24.0)
    gps[ExifTags.GPS.GPSLongitudeRef] = "E"
    gps[ExifTags.GPS.GPSLongitude] = (2.0, 21.0, 3.0)
    with Image.open(src) as im:
        im.save(dst, exif=exif, quality=95, comment=b"taken at home")
    with Image.open(dst) as check:  # the fixture really carries GPS
        assert check.getexif().get_ifd(ExifTags.IFD.GPSInfo)[ExifTags.GPS.GPSLatitudeRef] == "N"
    return dst


def _gps_and_make(path: Path) -> tuple[dict, str | None, bytes | None]:
    with Image.open(path) as im:
        exif = im.getexif()
        return dict(exif.get_ifd(ExifTags.IFD.GPSInfo)), exif.get(ExifTags.Base.Make), im.info.get("comment")


def test_metadata_stripped_by_default_gps_kept_only_when_asked(photos: list[Path], tmp_path: Path) -> None:
    photo = _jpeg_with_gps(photos[0], tmp_path / "gps.jpg")
    runs = {
        "default": [],
        "keep": ["--keep-metadata"],
        "keep_gps": ["--keep-metadata", "--keep-gps"],
    }
    found = {}
    for name, extra in runs.items():
        result = invoke(["protect", photo, "-o", tmp_path / name, *FAST, *extra])
        assert result.exit_code == 0, result.output
        found[name] = _gps_and_make(tmp_path / name / "gps_protected.jpg")
    assert found["default"] == ({}, None, None)  # no EXIF, no GPS, no comment at all
    assert found["keep"][0] == {} and found["keep"][1] == "PhoneMaker"
    assert found["keep_gps"][0][ExifTags.GPS.GPSLatitudeRef] == "N" and found["keep_gps"][1] == "PhoneMaker"


def test_keep_gps_without_keep_metadata_is_refused(photos: list[Path], tmp_path: Path, capsys) -> None:
    code, _, err = run_main(["protect", photos[0], "-o", tmp_path / "out", *FAST, "--keep-gps"], capsys)
    assert code == 2 and "--keep-gps only makes sense with --keep-metadata" in err
    assert not (tmp_path / "out").exists()


def test_dry_run_lists_and_writes_nothing(photos: list[Path], tmp_path: Path) -> None:
    before = snapshot(tmp_path)
    result = invoke(["protect", photos[0].parent, "-o", tmp_path / "out", *FAST, "--dry-run", "--json", "--save-mask"])
    records, summary = json_lines(result.stdout)
    assert result.exit_code == 0 and summary["summary"] == {"would-write": 3}
    assert {r["output"] for r in records} == {str(tmp_path / "out" / f"{p.stem}_protected.jpg") for p in photos}
    assert all(r["side_files"][0].endswith("_protected.mask.png") for r in records)
    assert snapshot(tmp_path) == before and not (tmp_path / "out").exists()


def test_recursive_mirrors_the_tree_and_default_output_sits_beside_the_input(
    photos: list[Path], tmp_path: Path
) -> None:
    tree = tmp_path / "tree"
    (tree / "a" / "b").mkdir(parents=True)
    photos[0].rename(tree / "top.jpg")
    photos[1].rename(tree / "a" / "mid.jpg")
    photos[2].rename(tree / "a" / "b" / "deep.jpg")
    flat = invoke(["protect", tree, "-o", tmp_path / "flat", *FAST, "--json"])
    assert json_lines(flat.stdout)[1]["photos"] == 1  # without --recursive, only the top level
    deep = invoke(["protect", tree, "-o", tmp_path / "out", "-r", *FAST, "--json"])
    assert deep.exit_code == 0
    written = sorted(str(p.relative_to(tmp_path / "out")) for p in (tmp_path / "out").rglob("*") if p.is_file())
    assert written == ["a/b/deep_protected.jpg", "a/mid_protected.jpg", "top_protected.jpg"]
    # No -o: outputs land beside the inputs, and a rerun does not protect the outputs again.
    beside = invoke(["protect", tree / "a", *FAST, "--json"])
    assert beside.exit_code == 0 and (tree / "a" / "mid_protected.jpg").exists()
    rerun = invoke(["protect", tree / "a", *FAST, "--json"])
    records, summary = json_lines(rerun.stdout)
    assert summary["summary"] == {"exists": 1} and records[0]["path"] == str(tree / "a" / "mid.jpg")


def test_outputs_cannot_escape_the_output_folder(photos: list[Path], tmp_path: Path, capsys) -> None:
    tree, out, elsewhere = tmp_path / "tree", tmp_path / "out", tmp_path / "elsewhere"
    (tree / "sub").mkdir(parents=True)
    photos[0].rename(tree / "sub" / "x.jpg")
    elsewhere.mkdir()
    out.mkdir()
    (out / "sub").symlink_to(elsewhere, target_is_directory=True)  # a planted link inside the output folder
    result = invoke(["protect", tree, "-o", out, "-r", *FAST, "--json"])
    (row,), _ = json_lines(result.stdout)
    assert result.exit_code == 2 and row["status"] == "failed" and "outside the output folder" in row["message"]
    assert list(elsewhere.iterdir()) == []
    code, _, err = run_main(["protect", tree, "-o", out, "-r", *FAST, "--suffix", "/../../x"], capsys)
    assert code == 2 and "must not contain path separators" in err and "Traceback" not in err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--fill", "glitter"], "unknown fill 'glitter'"),
        (["--fill", "clok"], "did you mean cloak"),  # the cloak is a registered fill like the others
        (["--level", "hihg"], "unknown protection level 'hihg'; did you mean high"),
        (["--parser", "facemsh"], "unknown face parser 'facemsh'; did you mean facemesh"),
        (["--budget", "0"], "budget must be a percentage in (0, 100]"),
        (["--budget", "101"], "budget must be a percentage in (0, 100]"),
        (["--models", "mbf-arcc"], "mbf-arc"),  # suggestion
        (["--format", "bmpx"], "unsupported output format"),
        (["--person", "Ann"], "--person and --person-photos go together"),
    ],
)
def test_bad_options_stop_before_any_photo_with_one_line(
    photos: list[Path], tmp_path: Path, capsys, args: list[str], message: str
) -> None:
    code, _, err = run_main(["protect", photos[0], "-o", tmp_path / "out", *FAST, *args], capsys)
    assert code == 2 and message in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_format_and_suffix_options(photos: list[Path], tmp_path: Path) -> None:
    result = invoke(["protect", photos[0], "-o", tmp_path / "out", *FAST, "--format", "png", "--suffix", "", "--json"])
    (row,), _ = json_lines(result.stdout)
    assert result.exit_code == 0 and row["output"] == str(tmp_path / "out" / f"{photos[0].stem}.png")
    assert read_image(row["output"]).format == "PNG"


def test_human_output_is_a_table_on_stderr(photos: list[Path], tmp_path: Path) -> None:
    result = invoke(["protect", photos[0], "-o", tmp_path / "out", *FAST])
    assert result.exit_code == 0 and result.stdout == ""
    assert "facecloak protect" in result.stderr and "1 unverified" in result.stderr


def test_output_folder_inside_or_equal_to_the_input_tree(photos: list[Path], tmp_path: Path) -> None:
    tree = photos[0].parent
    inside = tree / "protected"
    inside.mkdir()
    (inside / "earlier.jpg").write_bytes(photos[0].read_bytes())  # an earlier output with an unsuffixed name
    nested = invoke(["protect", tree, "-o", inside, "-r", "--suffix", "", *FAST, "--dry-run", "--json"])
    records, _ = json_lines(nested.stdout)
    assert sorted(Path(r["path"]).name for r in records) == sorted(p.name for p in photos)  # outputs not re-read
    same = invoke(["protect", tree, "-o", tree, *FAST, "--dry-run", "--json"])
    records, _ = json_lines(same.stdout)
    assert sorted(Path(r["output"]).name for r in records) == sorted(f"{p.stem}_protected.jpg" for p in photos)


def test_written_file_is_verified_by_independent_recognisers(photos: list[Path], tmp_path: Path) -> None:
    """Verification on (the default): each face gets a verdict from the panel, read from the written file. A
    1 % black fill leaves a face matched to its own original (self-similarity stays far above any threshold),
    so the CLI must say so and must not call the photo protected."""
    pytest.importorskip("dlib")
    fast_verified = [a for a in FAST if a != "--no-verify"]
    result = invoke(["protect", photos[0], "-o", tmp_path / "out", *fast_verified, "--json"])
    records, summary = json_lines(result.stdout)
    row = records[0]
    assert result.exit_code == 0
    assert row["status"] == "still-recognised" and row["level"] == "custom"  # --fill/--budget replaced the level's
    verdict = row["verdict"][0]
    assert verdict["m"] >= 2 and 1 <= verdict["k"] <= verdict["m"] and not verdict["protected"]
    assert set(verdict["matched_by"]) <= {"dlib", "arcface", "hse"}
    assert "dlib" in verdict["held_out"]  # dlib's network (dlib-r29) did not make this protection
    assert all(c is None or -1 <= c <= 1 for c in verdict["cosine"].values())
    assert summary["verification"] == {"faces": 1, "verified_protected": 0}
    human = invoke(["protect", photos[1], "-o", tmp_path / "out2", *fast_verified])
    assert "still recognised" in human.stderr and "--escalate" in human.stderr
    assert "0 of 1 faces verified protected" in human.stderr


def test_escalate_raises_the_level_of_faces_still_matched(photos: list[Path], tmp_path: Path) -> None:
    pytest.importorskip("dlib")
    args = ["--models", "mbf-arc", "--parser", "landmarks5", "--level", "low", "--escalate", "--steps", "2"]
    result = invoke(["protect", photos[0], "-o", tmp_path / "out", *args, "--json"])
    row = json_lines(result.stdout)[0][0]
    # a low-level face is still matched by its own original, so it must have been raised
    assert row["face_levels"][0] in ("medium", "high", "max") and row["verdict"][0]["m"] >= 1
    assert row["status"] in ("protected", "still-recognised")
    assert result.exit_code == 0

    # The raised face carries its final level's change only: low's black dots outside it are put back.
    png = ["--format", "png", "--save-mask"]
    invoke(["protect", photos[0], "-o", tmp_path / "esc", *args, *png])
    invoke(["protect", photos[0], "-o", tmp_path / "low", *[a for a in args if a != "--escalate"], "--no-verify", *png])

    def written(folder: str) -> tuple[np.ndarray, np.ndarray]:
        out = next(p for p in (tmp_path / folder).rglob("*.png") if not p.name.endswith(".mask.png"))
        return read_image(out).rgb, read_image(next((tmp_path / folder).rglob("*.mask.png"))).rgb[..., 0] > 0

    (escalated, final), (_, low) = written("esc"), written("low")
    only_low = low & ~final
    assert only_low.any() and np.array_equal(escalated[only_low], read_image(photos[0]).rgb[only_low])
    assert np.array_equal(final, (escalated != read_image(photos[0]).rgb).any(2))  # a pruned cloak's mask: its change


def test_escalate_needs_verification(photos: list[Path], capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_main(["protect", photos[0], "--escalate", "--no-verify"], capsys)
    assert code == 2 and "--escalate needs the verification" in err


def test_help_fits_80_columns_without_cutting_names_or_defaults() -> None:
    import os
    import subprocess

    from _protect_support import subprocess_cmd

    env = {**os.environ, "COLUMNS": "80", "TERMINAL_WIDTH": "80"}
    shown = subprocess.run(subprocess_cmd("protect", "--help"), env=env, capture_output=True, text=True, timeout=120)
    assert shown.returncode == 0 and "--no-verify" in shown.stdout
    assert "…" not in shown.stdout, [line for line in shown.stdout.splitlines() if "…" in line]


def test_no_runtime_log_lines_on_stderr(photos: list[Path], tmp_path: Path) -> None:
    """The TFLite runtime (FaceMesh) announces its XNNPACK delegate from C++; users must not see it."""
    import subprocess

    from _protect_support import subprocess_cmd

    args = ["protect", photos[0], "-o", tmp_path / "out", "--models", "mbf-arc", "--fill", "black", "--no-verify",
            "--json"]
    done = subprocess.run(subprocess_cmd(*args), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "XNNPACK" not in done.stderr and "INFO:" not in done.stderr, done.stderr
