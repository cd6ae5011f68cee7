"""``dockergate serve``: run the gate in the foreground."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import resource
import sys
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

import click

from dockergate.cli import Context, pass_ctx
from dockergate.config import Settings
from dockergate.listen.directory import DirectoryAuthenticator
from dockergate.logs import setup_logging
from dockergate.policy.model import PolicyError
from dockergate.store.db import check_schema
from dockergate.store.errors import StoreError


@click.command()
@click.option("--upstream", help="Docker daemon: unix:///path or tcp://host:port.")
@click.option("--socket", "socket_path", help="Unix socket to listen on ('' for none).")
@click.option("--tls-listen", help="HOST:PORT for the TLS listener (off unless given).")
@click.option(
    "--policies-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Directory of profile files (default: the shipped policies/).",
)
@click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"]))
@click.option("--log-json/--no-log-json", default=None, help="One JSON object per log line.")
@pass_ctx
def serve(
    ctx: Context,
    upstream: str | None,
    socket_path: str | None,
    tls_listen: str | None,
    policies_dir: Path | None,
    log_level: str | None,
    log_json: bool | None,
) -> None:
    """Run the gate in front of the Docker daemon."""
    settings = ctx.settings(
        upstream=upstream,
        socket=socket_path,
        tls_listen=tls_listen,
        policies_dir=policies_dir,
        log_level=log_level,
        log_json=log_json,
    )
    if settings.socket == "":
        settings.socket = None
    setup_logging(settings.log_level, settings.log_json)
    if settings.tls_listen:
        for what, path in (
            ("server certificate", settings.server_cert_path),
            ("server key", settings.server_key_path),
            ("client CA certificate", settings.client_ca_path),
        ):
            if not path.exists():
                raise click.ClickException(
                    f"no {what} at {path}: run `dockergate init` first (or set tls_cert, "
                    "tls_key and tls_ca)"
                )
    try:
        check_schema(settings)
    except StoreError as exc:
        raise click.ClickException(str(exc)) from exc
    raise_fd_limit()
    try:
        run_loop(_serve(settings), settings.event_loop)
    except (RuntimeError, OSError, ValueError, PolicyError) as exc:
        logging.getLogger("dockergate").error("cannot serve: %s", exc)
        sys.exit(1)


def raise_fd_limit() -> None:
    """Every connection is a file descriptor (two while forwarded): take the hard limit,
    as Go programs such as dockerd do, instead of the 1024 a service starts with."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        hard = 1 << 20
    if soft != resource.RLIM_INFINITY and soft < hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def run_loop(main: Coroutine[Any, Any, None], choice: str) -> None:
    """uvloop (a dependency where it has wheels) unless told otherwise: it takes about
    a seventh off the gate's CPU per request. ``event_loop: asyncio`` is the fallback,
    kept working and tested (tests/integration/test_event_loops.py)."""
    if choice in ("auto", "uvloop"):
        try:
            import uvloop
        except ImportError as exc:
            if choice == "uvloop":
                raise click.ClickException(
                    "event_loop is uvloop but uvloop is not installed"
                ) from exc
        else:
            logging.getLogger("dockergate").info("event loop: uvloop")
            uvloop.run(main)
            return
    asyncio.run(main)


async def _serve(settings: Settings) -> None:
    """Users come from the store (an in-memory snapshot kept fresh by polling)."""
    from dockergate.server import run

    auth = DirectoryAuthenticator(settings)
    await auth.start()
    try:
        await run(settings, auth)
    finally:
        await auth.stop()
