"""The Starlette application of `facecloak serve`: the page, its assets and the JSON API (see the README).

    GET    /                         the page (static HTML, CSS, JS from this package; no CDN)
    GET    /api/info                 levels, output formats, limits, models, queue counts
    POST   /api/jobs?level=&fill=&budget=&output=&name=   body: the photo's bytes -> 202 {"id", ...}
    GET    /api/jobs/{id}            status, stage, queue position, per-face verdicts, error
    GET    /api/jobs/{id}/image      the protected photo (add ?download=1 for an attachment)
    GET    /api/jobs/{id}/heatmap    the LEAM heatmap over the photo (PNG)
    GET    /api/jobs/{id}/mask       the pixels that were allowed to change, white (PNG)
    DELETE /api/jobs/{id}            forget the job and its photos now

Every API error is JSON `{"error": "..."}` with a 4xx/5xx status. With an access token (non-loopback `--host`),
every /api request must carry it (`Authorization: Bearer TOKEN`, `X-Facecloak-Token` or `?token=`). Without one,
only requests addressed to a loopback host name are answered (DNS-rebinding guard). Requests coming from another
web origin (an `Origin` header that is not this server) are refused in both cases.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.base import BaseHTTPMiddleware
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from facecloak.errors import ConfigError
from facecloak.serve.jobs import OUTPUT_CHOICES, READABLE, Job, JobRunner, Rejected, safe_name
from facecloak.serve.policy import DEFAULT_LEVEL, LEVELS, strength_for

STATIC = Path(__file__).resolve().parent / "static"
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1", "[::1]"})


@dataclass(frozen=True)
class ServeSettings:
    """Limits and access rules of one server."""

    max_upload_bytes: int = 30 * 1024 * 1024
    token: str | None = None  # required on /api when set (non-loopback --host)
    models: tuple[str, ...] = ()


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers={"Cache-Control": "no-store"})


def job_json(job: Job, runner: JobRunner) -> dict[str, Any]:
    base = f"/api/jobs/{job.id}"
    out: dict[str, Any] = {
        "id": job.id,
        "name": job.name,
        "status": job.status,
        "stage": job.stage,
        "queue_position": runner.queue_position(job.id),
        "fill": job.strength.fill,
        "budget": job.strength.budget,
        "width": job.width,
        "height": job.height,
        "output_format": job.output_format,
        "seconds": None if job.finished is None or job.started is None else round(job.finished - job.started, 3),
        "error": job.error,
        "notes": list(job.notes),
    }
    if job.status == "done":
        out["pixels_changed"] = job.pixels_changed
        out["faces"] = [v.as_json() for v in job.verdicts]
        out["download_name"] = job.download_name
        out["urls"] = {"image": f"{base}/image", "heatmap": f"{base}/heatmap" if job.heatmap else None,
                       "mask": f"{base}/mask" if job.mask else None}  # fmt: skip
    return out


def create_app(runner: JobRunner, settings: ServeSettings) -> Starlette:
    """The application; it starts `runner` on startup and stops it (forgetting every photo) on shutdown."""

    async def index(request: Request) -> Response:
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-store"})

    def info(request: Request) -> Response:
        return JSONResponse({
            "levels": {name: s.as_json() for name, s in LEVELS.items()},
            "default_level": DEFAULT_LEVEL,
            "outputs": list(OUTPUT_CHOICES),
            "readable": READABLE,
            "limits": {"max_upload_bytes": settings.max_upload_bytes, "max_pixels": runner.max_pixels,
                       "keep_seconds": runner.keep_seconds, "max_queue": runner.max_queue},
            "models": list(settings.models),
            "jobs": runner.counts(),
        })  # fmt: skip

    async def submit(request: Request) -> Response:
        query = request.query_params
        name = safe_name(query.get("name"))
        try:
            budget = float(query["budget"]) if "budget" in query else None
        except ValueError:
            return _error(400, f"budget must be a number, got {query['budget']!r}")
        try:
            strength = strength_for(query.get("level"), query.get("fill"), budget)
        except ConfigError as exc:
            return _error(400, str(exc))
        output = query.get("output", "same")
        if output not in OUTPUT_CHOICES:
            return _error(400, f"unknown output {output!r}; choose one of {', '.join(OUTPUT_CHOICES)}")
        length = request.headers.get("content-length")
        limit = settings.max_upload_bytes
        if length is None:
            return _error(411, "send the photo as the request body, with a Content-Length header")
        if not length.isdigit() or int(length) > limit:
            return _error(413, f"{name}: the upload is larger than this server's limit of "
                               f"{settings.max_upload_bytes / 2**20:.0f} MiB (facecloak serve --max-upload-mb)")
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > limit:
                return _error(413, f"{name}: the upload is larger than the limit")

        def decode_and_queue() -> Job:
            data = bytes(body)
            photo = runner.decode(data, name)  # refuses here (4xx) what cannot be protected
            return runner.submit(photo, name, strength, output, source=data)

        try:
            job = await run_in_threadpool(decode_and_queue)
        except Rejected as exc:
            return _error(exc.status, str(exc))
        return JSONResponse(job_json(job, runner), status_code=202, headers={"Location": f"/api/jobs/{job.id}"})

    def _job(request: Request) -> Job:
        job = runner.get(request.path_params["job_id"])
        if job is None:
            raise HTTPException(404, "no such job (finished jobs are forgotten after a while or when deleted)")
        return job

    def status(request: Request) -> Response:
        return JSONResponse(job_json(_job(request), runner), headers={"Cache-Control": "no-store"})

    def _file(request: Request, kind: str) -> Response:
        job = _job(request)
        if job.status == "failed":
            return _error(409, f"{job.name}: failed ({job.error})")
        data = getattr(job, kind)
        if job.status != "done":
            return _error(409, f"{job.name}: not finished yet ({job.stage})")
        if data is None:
            return _error(404, f"{job.name}: no {kind} (no face was found)")
        if kind == "image":
            media, filename = job.media_type, job.download_name
        else:
            media, filename = "image/png", f"{job.download_name.rsplit('.', 1)[0]}_{kind}.png"
        disposition = "attachment" if request.query_params.get("download") == "1" else "inline"
        return Response(data, media_type=media, headers={
            "Content-Disposition": f'{disposition}; filename="{filename}"', "Cache-Control": "no-store"})

    def image(request: Request) -> Response:
        return _file(request, "image")

    def heatmap(request: Request) -> Response:
        return _file(request, "heatmap")

    def mask(request: Request) -> Response:
        return _file(request, "mask")

    def delete(request: Request) -> Response:
        if not runner.delete(request.path_params["job_id"]):
            return _error(404, "no such job")
        return Response(status_code=204)

    async def http_error(request: Request, exc: Exception) -> Response:
        code = getattr(exc, "status_code", 500)
        detail = getattr(exc, "detail", "error")
        if request.url.path.startswith("/api/") or code != 404:
            return _error(code, str(detail))
        return Response("not found", status_code=404, media_type="text/plain")

    async def server_error(request: Request, exc: Exception) -> Response:
        return _error(500, f"internal server error ({type(exc).__name__}); the server keeps running")

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        runner.start()
        try:
            yield
        finally:
            runner.stop()

    routes = [
        Route("/", index),
        Route("/api/info", info),
        Route("/api/jobs", submit, methods=["POST"]),
        Route("/api/jobs/{job_id}", status, methods=["GET"]),
        Route("/api/jobs/{job_id}", delete, methods=["DELETE"]),
        Route("/api/jobs/{job_id}/image", image),
        Route("/api/jobs/{job_id}/heatmap", heatmap),
        Route("/api/jobs/{job_id}/mask", mask),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]
    guard = Middleware(BaseHTTPMiddleware, dispatch=_guard(settings))
    return Starlette(routes=routes, middleware=[guard], lifespan=lifespan,
                     exception_handlers={HTTPException: http_error, Exception: server_error})  # fmt: skip


_SECURITY_HEADERS = {
    # Everything comes from this server; the page shows photos through blob: URLs it makes itself.
    "Content-Security-Policy": "default-src 'self'; img-src 'self' blob: data:; object-src 'none'; "
    "base-uri 'none'; frame-ancestors 'none'; form-action 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}


def host_name(host_header: str) -> str:
    """The host part of a Host header: '127.0.0.1:8000' -> '127.0.0.1', '[::1]:8000' -> '[::1]'."""
    if host_header.startswith("["):
        return host_header.split("]", 1)[0] + "]"
    return host_header.rsplit(":", 1)[0]


_Next = Callable[[Request], Awaitable[Response]]


def _guard(settings: ServeSettings) -> Callable[[Request, _Next], Awaitable[Response]]:
    async def dispatch(request: Request, call_next: _Next) -> Response:
        if settings.token is None and host_name(request.headers.get("host", "")) not in LOOPBACK_HOSTS:
            return _error(400, "this server only answers requests addressed to 127.0.0.1 or localhost")
        origin = request.headers.get("origin")
        if origin is not None:
            own = f"{request.url.scheme}://{request.headers.get('host', '')}"
            if origin.rstrip("/") != own:
                return _error(403, "requests from other web sites are refused")
        if settings.token is not None and request.url.path.startswith("/api/"):
            given = request.headers.get("x-facecloak-token") or request.query_params.get("token") or ""
            auth = request.headers.get("authorization", "")
            if auth.lower().startswith("bearer "):
                given = auth[7:].strip()
            if not secrets.compare_digest(given.encode(), settings.token.encode()):
                return _error(401, "missing or wrong access token (printed by `facecloak serve` at start)")
        response = await call_next(request)
        for key, value in _SECURITY_HEADERS.items():
            response.headers.setdefault(key, value)
        return response

    return dispatch


@contextmanager
def running(app: Starlette, host: str = "127.0.0.1", port: int = 0) -> Iterator[str]:
    """Serve `app` with uvicorn in a background thread (tests, scripts); yields its base URL, stops on exit."""
    import socket
    import threading
    import time

    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(128)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the facecloak server did not start")
            time.sleep(0.02)
        yield f"http://{host}:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(30)
        sock.close()
