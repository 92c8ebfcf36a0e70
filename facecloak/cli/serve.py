"""`facecloak serve`: the local web page (see `facecloak.serve`). Needs `pip install 'facecloak[serve]'`."""

from __future__ import annotations

import ipaddress
import secrets
import socket
from typing import Annotated

import typer

from facecloak.cli.common import DeviceOption, parse_names
from facecloak.errors import ConfigError


def register(app: typer.Typer) -> None:
    app.command("serve")(serve_command)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def serve_command(
    port: Annotated[int, typer.Option(help="Port to listen on (0: any free port).", min=0, max=65535)] = 8000,
    host: Annotated[
        str | None,
        typer.Option(help="Address to bind (default 127.0.0.1). Anything but loopback requires the printed token."),
    ] = None,
    models: Annotated[
        str | None, typer.Option(help="Comma-separated source models (default: mbf-arc,mbf-tf,mobileface).")
    ] = None,
    max_upload_mb: Annotated[float, typer.Option(help="Largest upload accepted, in MiB.", min=0.01)] = 30.0,
    max_megapixels: Annotated[float, typer.Option(help="Largest photo (width x height), megapixels.", min=0.01)] = 50.0,
    keep_minutes: Annotated[
        float, typer.Option(help="Forget a finished photo this long after it is done, even if not deleted.", min=0)
    ] = 15.0,
    queue: Annotated[int, typer.Option(help="Photos that may wait at once; more get 503 'busy'.", min=1)] = 100,
    warm_up: Annotated[bool, typer.Option(help="Load the models and run one small photo before serving.")] = True,
    device: DeviceOption = "auto",
) -> None:
    """Start the local web page: drop photos in a browser, get protected copies back. Nothing leaves this machine."""
    try:
        import uvicorn

        from facecloak.serve.app import ServeSettings, create_app
        from facecloak.serve.jobs import JobRunner, default_protector, preload
        from facecloak.serve.policy import default_verifier
    except ImportError as exc:
        raise ConfigError(f"`facecloak serve` needs the serve extra: pip install 'facecloak[serve]' ({exc})") from None
    from facecloak.masking.stage import resolve_device
    from facecloak.models import get_spec
    from facecloak.protection.protect import DEFAULT_MODELS

    chosen = tuple(parse_names(models) or DEFAULT_MODELS)
    for m in chosen:
        get_spec(m)
    on = str(resolve_device(device))  # an unavailable device stops here, before the port is taken
    bind = host or "127.0.0.1"
    token = None if is_loopback(bind) else secrets.token_urlsafe(24)
    try:
        family = socket.AF_INET6 if ":" in bind.strip("[]") else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((bind.strip("[]"), port))
        sock.listen(128)
    except OSError as exc:
        raise ConfigError(f"cannot listen on {bind}:{port} ({exc.strerror}); choose another --port") from None

    typer.echo(f"facecloak serve: loading models {', '.join(chosen)} on {on} ...")
    preload(chosen, warm_up=warm_up, device=on)
    runner = JobRunner(
        default_protector(chosen, device=on), default_verifier(), max_pixels=int(max_megapixels * 1e6),
        keep_seconds=keep_minutes * 60.0, max_queue=queue,
    )  # fmt: skip
    settings = ServeSettings(max_upload_bytes=int(max_upload_mb * 2**20), token=token, models=chosen)
    app = create_app(runner, settings)
    shown = f"[{bind.strip('[]')}]" if family == socket.AF_INET6 else bind
    url = f"http://{shown}:{sock.getsockname()[1]}/" + (f"?token={token}" if token else "")
    typer.echo(f"facecloak serve: open {url} in your browser (photos stay on this machine; Ctrl-C stops)")
    if token:
        typer.echo(f"facecloak serve: listening on {bind}; every API request needs the access token {token}")
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on")
    uvicorn.Server(config).run(sockets=[sock])
