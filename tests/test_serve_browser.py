"""`facecloak serve` driven in a real headless Chromium (Debian's `chromium`, through Playwright's Python API).

Uploads a real photo through the page, waits for the result, checks that the verdict and the heatmap are shown,
downloads the protected file and checks it against `facecloak.protect` (changed only inside the mask, no
metadata), downloads the zip, and checks that a dropped non-image shows a readable error.

Skips with the reason when Playwright, Chromium or the model weights are missing; CI installs all three
(`.ci/run`). Set FACECLOAK_SCREENSHOTS=docs/serve to refresh the README's screenshots.
"""

from __future__ import annotations

import io
import os
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
from _protect_support import need_default_weights
from PIL import Image, PngImagePlugin

pytest.importorskip("starlette", reason="the serve extra is not installed: pip install 'facecloak[serve]'")
playwright = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (serve extra)")

pytestmark = [pytest.mark.real, pytest.mark.slow]
CHROMIUM_ARGS = ["--no-sandbox", "--disable-dev-shm-usage"]  # root in CI; small /dev/shm in containers


def chromium_path() -> str:
    found = os.environ.get("FACECLOAK_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if not found:
        pytest.skip("chromium not found (CI installs Debian's `chromium`; or set FACECLOAK_CHROMIUM)")
    return found


def test_page_protects_a_photo_in_a_real_browser(tmp_path: Path) -> None:
    executable = chromium_path()
    need_default_weights()
    from facecloak.photos.bundled import bundled_photos
    from facecloak.protection.protect import DEFAULT_MODELS, protect
    from facecloak.serve.app import ServeSettings, create_app, running
    from facecloak.serve.jobs import JobRunner, default_protector
    from facecloak.serve.policy import LEVELS, panel_verdicts

    rgb = bundled_photos()["astronaut"]
    upload = tmp_path / "astronaut.png"
    meta = PngImagePlugin.PngInfo()
    meta.add_text("Author", "Jane Doe")
    meta.add_text("Location", "48.8584 N, 2.2945 E")
    exif = Image.Exif()
    exif[0x010F] = "SecretCam"
    Image.fromarray(rgb).save(upload, pnginfo=meta, exif=exif.tobytes())
    assert Image.open(upload).info.get("Author") == "Jane Doe"

    shots = Path(os.environ.get("FACECLOAK_SCREENSHOTS") or tmp_path / "shots")
    shots.mkdir(parents=True, exist_ok=True)
    pytest.importorskip("dlib")  # the verdict comes from the independent local recognisers
    runner = JobRunner(default_protector(DEFAULT_MODELS), panel_verdicts)
    app = create_app(runner, ServeSettings(models=DEFAULT_MODELS))
    with running(app) as url, playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=executable, headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900}, accept_downloads=True)
            outside: list[str] = []
            local = (url, "blob:", "data:")
            page.on("request", lambda r: None if r.url.startswith(local) else outside.append(r.url))
            page.goto(url + "/")
            page.check("input[name=level][value=low]")
            page.set_input_files("#files", str(upload))
            card = page.locator(".card").first
            page.wait_for_selector(".card[data-status=done], .card[data-status=failed]", timeout=240_000)
            assert card.get_attribute("data-status") == "done", card.inner_text()

            verdict = card.locator(".verdict").inner_text()
            assert "Face 1: still matched by" in verdict and "of 3 local recognisers" in verdict, verdict
            for verifier in ("dlib", "arcface", "hse"):
                assert verifier in verdict
            for img in ("original", "protected", "heatmap"):
                width = card.locator(f"img.{img}").evaluate("e => e.complete ? e.naturalWidth : 0")
                assert width == 512, (img, width)
            page.screenshot(path=str(shots / "page-result.jpg"), full_page=True, quality=80)

            with page.expect_download() as info:
                card.locator("a.download").click()
            saved = tmp_path / "download.png"
            info.value.save_as(saved)
            assert info.value.suggested_filename == "astronaut_protected.png"

            with page.expect_download() as info:
                page.click("#zip")
            zipped = tmp_path / "all.zip"
            info.value.save_as(zipped)

            # A non-image dropped on the page: a readable error on its card, the other card untouched.
            data_transfer = page.evaluate_handle(
                "() => { const dt = new DataTransfer();"
                " dt.items.add(new File(['hello, not a photo'], 'notes.txt', {type: 'text/plain'})); return dt; }"
            )
            page.dispatch_event("#drop", "drop", {"dataTransfer": data_transfer})
            page.wait_for_selector(".card[data-status=failed]", timeout=30_000)
            error = page.locator(".card[data-status=failed] .error").inner_text()
            assert "notes.txt" in error and "not a photo facecloak can read" in error, error
            assert page.locator(".card[data-status=done]").count() == 1
            assert "2 of 2 photos finished" in page.inner_text("#summary")
            page.screenshot(path=str(shots / "page-error.jpg"), full_page=False, quality=80)
            assert outside == [], outside  # every request went to this server
        finally:
            browser.close()
        assert runner.counts() == {"queued": 0, "running": 0, "done": 0, "failed": 0}  # the page deleted its job

    downloaded = Image.open(saved)
    assert downloaded.format == "PNG"
    assert not downloaded.getexif() and not {"Author", "Location", "exif"} & set(downloaded.info), downloaded.info
    expected = protect(rgb, models=DEFAULT_MODELS, fill=LEVELS["low"].fill, budget=LEVELS["low"].budget, seed=0)
    got = np.asarray(downloaded.convert("RGB"))
    changed = (got != rgb).any(2)
    assert changed.any() and not (changed & ~expected.mask).any()  # differs from the original only inside the mask
    np.testing.assert_array_equal(got, expected.image)
    with zipfile.ZipFile(zipped) as archive:
        assert archive.testzip() is None and archive.namelist() == ["astronaut_protected.png"]
        assert archive.read("astronaut_protected.png") == saved.read_bytes()
    assert np.asarray(Image.open(io.BytesIO(saved.read_bytes())).convert("RGB")).shape == rgb.shape
