"""`facecloak serve`: the JSON API over a real uvicorn server on 127.0.0.1 (ephemeral port, background thread).

Most tests swap `facecloak.protect` for a tiny fake (the web layer is what they test); the ones marked `real` run
the real pipeline with the black fill on photos that installed packages carry (facecloak.photos.bundled.bundled_photos).
"""

from __future__ import annotations

import http.client
import io
import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any

import numpy as np
import pytest
from _protect_support import need_default_weights
from PIL import Image

pytest.importorskip("starlette", reason="the serve extra is not installed: pip install 'facecloak[serve]'")
pytest.importorskip("uvicorn", reason="the serve extra is not installed: pip install 'facecloak[serve]'")

from facecloak.errors import NoFaceError
from facecloak.faces.face import Face
from facecloak.protection.protect import FaceOutcome, ProtectResult
from facecloak.serve.app import ServeSettings, create_app, running
from facecloak.serve.jobs import JobRunner, Rejected, safe_name
from facecloak.serve.policy import LEVELS, FaceVerdict, ModelCheck, Strength, face_verdicts, strength_for

BOX = (slice(4, 12), slice(6, 14))  # the fake protector blacks out these pixels


def png_bytes(rgb: np.ndarray, **info: Any) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG", **info)
    return buf.getvalue()


def photo(seed: int, side: int = 32) -> np.ndarray:
    return np.random.default_rng(seed).integers(30, 255, (side, side, 3), dtype=np.uint8)


def fake_protect(rgb: np.ndarray, strength: Strength) -> ProtectResult:
    """Blacks out BOX; a photo whose first pixel is (1, 2, 3) raises, one with (4, 5, 6) has 'no face'."""
    if tuple(rgb[0, 0]) == (1, 2, 3):
        raise RuntimeError("boom")
    if tuple(rgb[0, 0]) == (4, 5, 6):
        raise NoFaceError("the fake found no face where one was required")
    mask = np.zeros(rgb.shape[:2], bool)
    mask[BOX] = True
    out = rgb.copy()
    out[mask] = 0
    face = Face((6.0, 4.0, 14.0, 12.0), 0.99, np.zeros((5, 2), np.float32))
    outcome = FaceOutcome(face, int(mask.sum()), {"m": 1.0}, {"m": 0.5})
    heat = mask.astype(np.float32)
    return ProtectResult(out, mask, (outcome,), heat, strength.fill, strength.budget, ("m",))


def fake_verify(original: np.ndarray, result: Any, written: np.ndarray) -> tuple[FaceVerdict, ...]:
    # The verdict must be measured on the decoded file: record a property of `written` to check that it was.
    after = float(written[BOX].mean())
    return (FaceVerdict(0, (6.0, 4.0, 14.0, 12.0), 64, (ModelCheck("m", 1.0, after, 0.5, after >= 0.5),),
                        int(after >= 0.5), 1),)  # fmt: skip


class Client:
    def __init__(self, base: str, headers: dict[str, str] | None = None) -> None:
        self.base = base
        self.headers = headers or {}

    def call(self, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None
             ) -> tuple[int, dict[str, str], bytes]:  # fmt: skip
        request = urllib.request.Request(self.base + path, data=body, method=method,
                                         headers={**self.headers, **(headers or {})})  # fmt: skip
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                return response.status, dict(response.headers), response.read()
        except urllib.error.HTTPError as exc:
            return exc.code, dict(exc.headers), exc.read()

    def json(self, method: str, path: str, body: bytes | None = None, **kw: Any) -> tuple[int, Any]:
        status, _, data = self.call(method, path, body, **kw)
        return status, json.loads(data) if data else None

    def wait(self, job_id: str, timeout: float = 120.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            status, job = self.json("GET", f"/api/jobs/{job_id}")
            assert status == 200, job
            if job["status"] in ("done", "failed"):
                return job
            assert time.monotonic() < deadline, f"job {job_id} still {job['status']}"
            time.sleep(0.05)


@contextmanager
def server(protector: Any = fake_protect, verifier: Any = face_verdicts, *, token: str | None = None,
           max_upload_bytes: int = 1 << 20, headers: dict[str, str] | None = None, **runner_options: Any
           ) -> Iterator[tuple[Client, JobRunner]]:  # fmt: skip
    runner = JobRunner(protector, verifier, **runner_options)
    app = create_app(runner, ServeSettings(max_upload_bytes=max_upload_bytes, token=token, models=("m",)))
    with running(app) as url:
        yield Client(url, headers), runner
    assert runner.workdir is None  # stopped: the private folder is gone


@pytest.fixture
def fake() -> Iterator[tuple[Client, JobRunner]]:
    with server(fake_protect, fake_verify) as pair:
        yield pair


# ------------------------------------------------------------------------------------------------ the happy path


def test_submit_poll_fetch_delete(fake: tuple[Client, JobRunner]) -> None:
    client, runner = fake
    rgb = photo(0)
    status, job = client.json("POST", "/api/jobs?level=low&name=../../etc/me.png", png_bytes(rgb))
    assert status == 202, job
    assert job["name"] == "me.png" and job["fill"] == "black" and job["budget"] == 1.0
    done = client.wait(job["id"])
    assert done["status"] == "done" and done["download_name"] == "me_protected.png"
    assert done["faces"][0]["summary"] == "still matched by 0 of 1 source models"
    assert done["faces"][0]["models"][0]["after"] == 0.0  # measured on the written file: the box is black there

    status, headers, data = client.call("GET", done["urls"]["image"] + "?download=1")
    assert status == 200 and headers["content-type"] == "image/png"
    assert headers["content-disposition"] == 'attachment; filename="me_protected.png"'
    out = np.asarray(Image.open(io.BytesIO(data)))
    expected = rgb.copy()
    expected[BOX] = 0
    np.testing.assert_array_equal(out, expected)
    for kind in ("heatmap", "mask"):
        status, headers, data = client.call("GET", done["urls"][kind])
        assert status == 200 and Image.open(io.BytesIO(data)).size == (32, 32)
    assert np.asarray(Image.open(io.BytesIO(data)).convert("L"))[BOX].min() == 255  # the mask is white in BOX

    assert client.call("DELETE", f"/api/jobs/{job['id']}")[0] == 204
    assert client.json("GET", f"/api/jobs/{job['id']}")[0] == 404
    assert client.call("GET", done["urls"]["image"])[0] == 404
    assert runner.workdir is not None and list(runner.workdir.iterdir()) == []  # nothing left on disk


def test_page_and_assets_are_served_locally(fake: tuple[Client, JobRunner]) -> None:
    client, _ = fake
    status, headers, page = client.call("GET", "/")
    assert status == 200 and b"<title>facecloak" in page
    assert "default-src 'self'" in headers["content-security-policy"]
    for asset in (b"/static/app.js", b"/static/style.css"):
        assert asset in page
        assert client.call("GET", asset.decode())[0] == 200
    assert b"http" not in page.replace(b"http-equiv", b"")  # no CDN, no external link of any kind
    status, info = client.json("GET", "/api/info")
    assert status == 200 and set(info["levels"]) == set(LEVELS) and info["default_level"] in LEVELS


def test_output_format_and_metadata_stripped(fake: tuple[Client, JobRunner]) -> None:
    client, _ = fake
    exif = Image.Exif()
    exif[0x010F] = "SecretCam"  # Make
    exif[0x8825] = {1: "N", 2: (1.0, 2.0, 3.0)}  # GPS IFD
    buf = io.BytesIO()
    Image.fromarray(photo(1)).save(buf, format="JPEG", quality=80, exif=exif.tobytes())
    assert Image.open(io.BytesIO(buf.getvalue())).getexif()  # the upload does carry EXIF
    for output, media in (("same", "image/jpeg"), ("png", "image/png"), ("webp", "image/webp")):
        _, job = client.json("POST", f"/api/jobs?level=low&output={output}&name=a.jpg", buf.getvalue())
        done = client.wait(job["id"])
        _, headers, data = client.call("GET", done["urls"]["image"])
        assert headers["content-type"] == media
        out = Image.open(io.BytesIO(data))
        assert not out.getexif() and "exif" not in out.info and "xmp" not in out.info, out.info
        if output == "same":  # a JPEG upload comes back with its own quantisation tables, as from the CLI
            assert out.quantization == Image.open(io.BytesIO(buf.getvalue())).quantization


# ------------------------------------------------------------------------------------------------ refusals


@pytest.mark.parametrize(
    ("query", "body", "status", "words"),
    [
        ("name=notes.txt", b"hello, this is text", 415, "not a photo"),
        ("name=empty.png", b"", 400, "empty upload"),
        ("name=garbage.png", b"\x89PNG\r\n\x1a\n" + b"\x00" * 100, 415, "garbage.png: not a photo"),
        ("name=cut.png", png_bytes(photo(2, side=64))[:-200], 400, "cut.png: cannot decode"),
        ("level=extreme", None, 400, "unknown level"),
        ("budget=lots", None, 400, "budget must be a number"),
        ("budget=0", None, 400, "budget must be"),
        ("fill=glitter", None, 400, "unknown fill"),
        ("output=bmp", None, 400, "unknown output"),
    ],
)
def test_refused_uploads_get_json_errors(fake: tuple[Client, JobRunner], query: str, body: bytes | None,
                                         status: int, words: str) -> None:  # fmt: skip
    client, runner = fake
    got, error = client.json("POST", f"/api/jobs?{query}", png_bytes(photo(2)) if body is None else body)
    assert got == status and words in error["error"], error
    assert "facecloak-serve-" not in error["error"]  # the private folder's path never leaks
    assert runner.workdir is not None and list(runner.workdir.iterdir()) == []


def test_size_and_pixel_limits() -> None:
    with server(max_upload_bytes=2000, max_pixels=40 * 40) as (client, _):
        status, error = client.json("POST", "/api/jobs?name=big.png", png_bytes(photo(3, side=64)))
        assert status == 413 and "larger than this server's limit" in error["error"]
    with server(max_pixels=40 * 40) as (client, _):
        status, error = client.json("POST", "/api/jobs?name=big.png", png_bytes(photo(3, side=64)))
        assert status == 413 and "4,096 pixels" in error["error"] and "at most 1,600 pixels" in error["error"], error
        assert "big.png" in error["error"]


def test_chunked_upload_without_length_is_refused(fake: tuple[Client, JobRunner]) -> None:
    client, _ = fake
    host = client.base.removeprefix("http://")
    conn = http.client.HTTPConnection(host, timeout=30)
    conn.request("POST", "/api/jobs", body=iter([png_bytes(photo(4))]), encode_chunked=True)
    response = conn.getresponse()
    assert response.status == 411 and "Content-Length" in json.loads(response.read())["error"]
    conn.close()


def test_unknown_or_hostile_job_ids(fake: tuple[Client, JobRunner]) -> None:
    client, _ = fake
    for job_id in ("nope", "..%2F..%2Fetc%2Fpasswd", "A" * 22, "%00"):
        status, _, data = client.call("GET", f"/api/jobs/{job_id}/image")
        assert status == 404 and "error" in json.loads(data)
    assert client.call("DELETE", "/api/jobs/" + "B" * 22)[0] == 404


def test_other_hosts_and_origins_are_refused(fake: tuple[Client, JobRunner]) -> None:
    client, _ = fake
    status, error = client.json("GET", "/api/info", headers={"Host": "attacker.example"})
    assert status == 400 and "127.0.0.1" in error["error"]  # DNS rebinding
    status, error = client.json("POST", "/api/jobs", png_bytes(photo(5)), headers={"Origin": "http://evil.example"})
    assert status == 403
    status, _ = client.json("POST", "/api/jobs", png_bytes(photo(5)), headers={"Origin": client.base})
    assert status == 202


def test_token_required_on_non_loopback_binding() -> None:
    with server(token="s3cret-token") as (client, _):
        assert client.call("GET", "/")[0] == 200  # the page itself holds nothing; the API does
        status, error = client.json("GET", "/api/info")
        assert status == 401 and "token" in error["error"]
        assert client.json("GET", "/api/info", headers={"Authorization": "Bearer wrong"})[0] == 401
        assert client.json("GET", "/api/info", headers={"Authorization": "Bearer s3cret-token"})[0] == 200
        assert client.json("GET", "/api/info", headers={"X-Facecloak-Token": "s3cret-token"})[0] == 200
        assert client.json("GET", "/api/info?token=s3cret-token")[0] == 200
        # With a token, any Host name is answered (the server was bound to a LAN address on purpose).
        assert client.json("GET", "/api/info?token=s3cret-token", headers={"Host": "192.168.1.5:8000"})[0] == 200


# ------------------------------------------------------------------------------------------------ robustness


def test_failed_photos_do_not_affect_the_others(fake: tuple[Client, JobRunner]) -> None:
    client, _ = fake
    crash, noface, good = photo(6), photo(7), photo(8)
    crash[0, 0] = (1, 2, 3)
    noface[0, 0] = (4, 5, 6)
    ids = [client.json("POST", "/api/jobs?level=low", png_bytes(p))[1]["id"] for p in (crash, noface, good)]
    jobs = [client.wait(i) for i in ids]
    assert [j["status"] for j in jobs] == ["failed", "failed", "done"]
    assert "internal error" in jobs[0]["error"] and "other photos are not affected" in jobs[0]["error"]
    assert "no face" in jobs[1]["error"]
    assert client.call("GET", f"/api/jobs/{ids[0]}/image")[0] == 409
    assert client.json("GET", "/api/info")[1]["jobs"] == {"queued": 0, "running": 0, "done": 1, "failed": 2}


def test_queue_full_is_503_and_queue_positions_are_reported() -> None:
    release = threading.Event()
    protected: list[np.ndarray] = []

    def slow(rgb: np.ndarray, strength: Strength) -> ProtectResult:
        release.wait(30)
        protected.append(rgb)
        return fake_protect(rgb, strength)

    with server(slow, fake_verify, max_queue=2) as (client, _):
        first = client.json("POST", "/api/jobs?level=low", png_bytes(photo(9)))[1]["id"]
        while client.json("GET", f"/api/jobs/{first}")[1]["status"] != "running":
            time.sleep(0.02)
        waiting = [client.json("POST", "/api/jobs?level=low", png_bytes(photo(10 + i)))[1] for i in range(2)]
        assert [client.json("GET", f"/api/jobs/{w['id']}")[1]["queue_position"] for w in waiting] == [0, 1]
        status, error = client.json("POST", "/api/jobs?level=low", png_bytes(photo(12)))
        assert status == 503 and "busy" in error["error"]
        assert client.call("DELETE", f"/api/jobs/{waiting[0]['id']}")[0] == 204  # deleting a waiting job
        release.set()
        assert client.wait(first)["status"] == "done" and client.wait(waiting[1]["id"])["status"] == "done"
    assert len(protected) == 2  # the job deleted while waiting was never protected


def test_finished_jobs_are_forgotten_after_keep_seconds() -> None:
    now = [1000.0]
    runner = JobRunner(fake_protect, fake_verify, keep_seconds=60.0, clock=lambda: now[0])
    runner.start()
    try:
        from facecloak.photos.io import Photo

        rgb = photo(13)
        job = runner.submit(Photo(rgb, None, "PNG", "RGB", runner.workdir), "x.png", LEVELS["low"])  # type: ignore[arg-type]
        while runner.get(job.id) is not None and runner.get(job.id).status != "done":  # type: ignore[union-attr]
            time.sleep(0.01)
        assert runner.sweep(now=1059.0) == 0 and runner.get(job.id) is not None
        assert runner.sweep(now=1061.0) == 1 and runner.get(job.id) is None
        assert job.image is None  # the bytes are dropped, not only the table entry
    finally:
        workdir = runner.workdir
        runner.stop()
    assert workdir is not None and not workdir.exists()


def test_strength_mapping_and_names() -> None:
    assert strength_for(None).fill == "cloak"
    assert strength_for("low") == LEVELS["low"]
    assert (strength_for("high", budget=0.5).fill, strength_for("high", budget=0.5).budget) == ("cloak", 0.5)
    assert strength_for("low", fill="blur").fill == "blur"
    for bad in ({"level": "extreme"}, {"level": "low", "budget": 150.0}, {"level": "low", "fill": "x"}):
        with pytest.raises(Exception, match=r"unknown|budget"):
            strength_for(bad["level"], bad.get("fill"), bad.get("budget"))  # type: ignore[arg-type]
    assert safe_name("../../etc/passwd") == "passwd"
    assert safe_name("C:\\Users\\me\\IMG 1.jpg") == "IMG 1.jpg"
    assert safe_name("\x00;rm -rf $(x).png") == "_rm -rf _x_.png"
    assert safe_name("..") == "photo" and safe_name(None) == "photo"
    with pytest.raises(Rejected):
        JobRunner(fake_protect, fake_verify).decode(b"\x89PNG\r\n\x1a\n", "x")  # not started: no private folder


def test_cli_serve_registered_and_loopback_rule() -> None:
    from typer.testing import CliRunner

    from facecloak.cli import app
    from facecloak.cli.serve import is_loopback

    result = CliRunner().invoke(app, ["serve", "--help"])
    assert result.exit_code == 0 and "--port" in result.output and "--host" in result.output
    assert all(is_loopback(h) for h in ("127.0.0.1", "localhost", "::1", "[::1]", "127.8.8.8"))
    assert not any(is_loopback(h) for h in ("0.0.0.0", "192.168.1.2", "::", "example.com"))


# ------------------------------------------------------------------------------------------------ real pipeline


def real_server(**options: Any) -> Any:
    from facecloak.protection.protect import DEFAULT_MODELS
    from facecloak.serve.jobs import default_protector

    return server(default_protector(DEFAULT_MODELS), face_verdicts, max_upload_bytes=30 << 20, **options)


def variants(n: int) -> list[np.ndarray]:
    """n distinct real photos: the bundled portraits, mirrored, brightened and framed differently."""
    import cv2

    from facecloak.photos.bundled import bundled_photos

    photos = bundled_photos()
    base = [cv2.resize(photos["astronaut"][10:250, 110:350], (160, 160), interpolation=cv2.INTER_AREA)]
    if "Tom_Hanks_54745" in photos:
        base.append(cv2.resize(photos["Tom_Hanks_54745"], (160, 160), interpolation=cv2.INTER_CUBIC))
    out = []
    for i in range(n):
        rgb = base[i % len(base)]
        rgb = rgb[:, ::-1] if (i // len(base)) % 2 else rgb
        rgb = np.clip(rgb.astype(np.int16) + (i % 5) * 6 - 12, 0, 255).astype(np.uint8)
        pad = 4 + 3 * (i % 7)
        out.append(np.ascontiguousarray(np.pad(rgb, ((pad, pad), (pad + i % 3, pad), (0, 0)), mode="edge")))
    return out


@pytest.mark.real
def test_real_photo_changes_only_inside_the_mask_and_has_no_metadata() -> None:
    need_default_weights()
    from facecloak.photos.bundled import bundled_photos

    rgb = bundled_photos()["astronaut"]
    info = {"pnginfo": __import__("PIL.PngImagePlugin", fromlist=["PngInfo"]).PngInfo()}
    info["pnginfo"].add_text("Author", "Jane Doe, GPS 48.85N 2.35E")
    with real_server() as (client, _):
        status, job = client.json("POST", "/api/jobs?level=low&name=astronaut.png", png_bytes(rgb, **info))
        assert status == 202
        done = client.wait(job["id"])
        assert done["status"] == "done", done
        face = done["faces"][0]
        assert len(done["faces"]) == 1 and face["judged"] == 3 and 0 <= face["matched_by"] <= 3
        assert {m["model"] for m in face["models"]} == {"mbf-arc", "mbf-tf", "mobileface"}
        assert all(m["before"] > 0.99 and m["threshold"] > 0 for m in face["models"])
        _, _, data = client.call("GET", done["urls"]["image"])
        _, _, mask_png = client.call("GET", done["urls"]["mask"])
        _, _, heat_png = client.call("GET", done["urls"]["heatmap"])
    out = Image.open(io.BytesIO(data))
    assert out.format == "PNG" and not out.info.get("Author") and not out.getexif()
    protected = np.asarray(out.convert("RGB"))
    mask = np.asarray(Image.open(io.BytesIO(mask_png)).convert("L")) > 127
    changed = (protected != rgb).any(2)
    assert changed.any() and not (changed & ~mask).any()  # changed somewhere, and only inside the mask
    assert done["pixels_changed"] == int(mask.sum())
    assert Image.open(io.BytesIO(heat_png)).size == (512, 512)


@pytest.mark.real
@pytest.mark.slow
def test_twenty_concurrent_uploads_no_error_no_mix_up() -> None:
    need_default_weights()
    photos = variants(20)
    with real_server() as (client, _):
        def one(i: int) -> tuple[int, dict[str, Any], bytes, bytes]:
            status, job = client.json("POST", f"/api/jobs?level=low&name=p{i}.png", png_bytes(photos[i]))
            assert status == 202, job
            done = client.wait(job["id"], timeout=600)
            image = client.call("GET", done["urls"]["image"])[2] if done["status"] == "done" else b""
            mask = client.call("GET", done["urls"]["mask"])[2] if done["status"] == "done" else b""
            return i, done, image, mask

        with ThreadPoolExecutor(20) as pool:
            results = list(pool.map(one, range(20)))
    for i, done, image, mask_png in results:
        assert done["status"] == "done" and done["name"] == f"p{i}.png", done
        out = np.asarray(Image.open(io.BytesIO(image)).convert("RGB"))
        mask = np.asarray(Image.open(io.BytesIO(mask_png)).convert("L")) > 127
        assert out.shape == photos[i].shape
        # This upload's own photo outside the mask: a mixed-up result would differ almost everywhere.
        np.testing.assert_array_equal(out[~mask], photos[i][~mask])
        assert (out != photos[i]).any(2).sum() > 0


@pytest.mark.parametrize(("host", "wants_token"), [(None, False), ("127.0.0.1", False), ("0.0.0.0", True)])
def test_cli_serve_prints_address_and_token_only_off_loopback(monkeypatch: pytest.MonkeyPatch, host: str | None,
                                                               wants_token: bool) -> None:  # fmt: skip
    import re

    import uvicorn
    from typer.testing import CliRunner

    import facecloak.serve.jobs
    from facecloak.cli import app

    served: list[Any] = []
    monkeypatch.setattr(facecloak.serve.jobs, "preload", lambda models, warm_up=True, device="cpu": None)
    monkeypatch.setattr(uvicorn.Server, "run", lambda self, sockets=None: served.append((self.config.app, sockets)))
    args = ["serve", "--port", "0"] + ([] if host is None else ["--host", host])
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    url = re.search(r"open (http://\S+) in your browser", result.output)
    assert url is not None, result.output
    token = re.search(r"\?token=([A-Za-z0-9_-]{32})$", url.group(1))
    assert (token is not None) == wants_token, url.group(1)
    assert url.group(1).startswith(f"http://{host or '127.0.0.1'}:")
    (served_app, sockets), = served
    assert sockets[0].getsockname()[0] == (host or "127.0.0.1")
    sockets[0].close()
    monkeypatch.undo()  # the real uvicorn again
    if token is not None:  # the served app demands exactly the printed token
        with running(served_app) as base:
            client = Client(base)
            assert client.json("GET", "/api/info")[0] == 401
            assert client.json("GET", f"/api/info?token={token.group(1)}")[0] == 200


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="CUDA is available here: --device cuda would run")
def test_cli_serve_refuses_a_missing_device_before_loading_or_listening(monkeypatch: pytest.MonkeyPatch) -> None:
    """`facecloak serve --device` as `protect --device`: a device this machine lacks stops the command with the
    reason, before any model is loaded or the port is taken."""
    import uvicorn
    from typer.testing import CliRunner

    import facecloak.serve.jobs
    from facecloak.cli import app
    from facecloak.errors import ConfigError

    monkeypatch.setattr(facecloak.serve.jobs, "preload", lambda *a, **k: pytest.fail("models loaded"))
    monkeypatch.setattr(uvicorn.Server, "run", lambda *a, **k: pytest.fail("served"))
    result = CliRunner().invoke(app, ["serve", "--port", "0", "--device", "cuda"])
    assert isinstance(result.exception, ConfigError) and "CUDA is not available" in str(result.exception)


def test_heatmap_of_a_large_photo_is_scaled_for_display() -> None:
    from facecloak.serve.jobs import HEATMAP_SIDE, _for_display

    rgb = np.zeros((2000, 4000, 3), np.uint8)
    heat = np.zeros((2000, 4000), np.float32)
    heat[:, 2000:] = 1.0
    small, small_heat = _for_display(rgb, heat)
    assert small.shape == (800, HEATMAP_SIDE, 3) and small_heat.shape == (800, HEATMAP_SIDE)
    assert small_heat[:, :790].max() == 0.0 and small_heat[:, 810:].min() == 1.0
    assert _for_display(rgb[:100, :100], heat[:100, :100])[0].shape == (100, 100, 3)  # small photos untouched


def test_a_level_can_carry_its_own_models_and_cloak_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    import facecloak.protection.protect
    from facecloak.serve.jobs import default_protector

    calls: list[dict[str, Any]] = []
    monkeypatch.setattr(facecloak.protection.protect, "protect", lambda rgb, **kw: calls.append(kw))
    run = default_protector(("mbf-arc",))
    run(photo(0), Strength("cloak", 2.0, "x", models=("mbf-tf", "hse-mnv1"), cloak="SETTINGS"))
    run(photo(0), LEVELS["low"])
    assert calls[0] == {"models": ("mbf-tf", "hse-mnv1"), "budget": 2.0, "fill": "cloak", "seed": 0,
                        "cloak_settings": "SETTINGS", "device": "cpu"}  # fmt: skip
    default_protector(("mbf-arc",), device="cuda:1")(photo(0), LEVELS["low"])
    assert calls[-1]["device"] == "cuda:1"  # `serve --device` reaches every protect call
    # the library's low level carries its own source models and no cloak settings (black fill)
    assert calls[1]["models"] == LEVELS["low"].models and calls[1]["cloak_settings"] is None


def test_verdict_json_allows_unmeasured_values() -> None:
    checks = (ModelCheck("a", None, None, 0.5, None), ModelCheck("b", 1.0, 0.71234567, 0.5, True))
    face = FaceVerdict(0, (1.0, 2.0, 3.0, 4.0), 7, checks, 1, 1).as_json()
    assert face["summary"] == "still matched by 1 of 1 source models"
    assert face["models"][0] == {"model": "a", "before": None, "after": None, "threshold": 0.5, "matched": None}
    assert face["models"][1]["after"] == 0.7123
