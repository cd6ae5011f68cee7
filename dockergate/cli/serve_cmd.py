"""``dockergate serve``: run the gate in the foreground."""

from __future__ import annotations

import asyncio
import logging
import sys

import click

from dockergate.cli import Context, pass_ctx
from dockergate.listen.identity import Authenticator, BuiltinAuthenticator
from dockergate.listen.pki import read_bundle_serial
from dockergate.logs import setup_logging


def _authenticator(ctx: Context) -> Authenticator:
    settings = ctx.settings()
    admin_serial = read_bundle_serial(settings.clients_dir / "admin")
    serials = frozenset({admin_serial}) if admin_serial is not None else frozenset()
    return BuiltinAuthenticator(settings.root_is_admin, serials)


@click.command()
@click.option("--upstream", help="Docker daemon: unix:///path or tcp://host:port.")
@click.option("--socket", "socket_path", help="Unix socket to listen on ('' for none).")
@click.option("--tls-listen", help="HOST:PORT for the TLS listener (off unless given).")
@click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"]))
@click.option("--log-json/--no-log-json", default=None, help="One JSON object per log line.")
@pass_ctx
def serve(
    ctx: Context,
    upstream: str | None,
    socket_path: str | None,
    tls_listen: str | None,
    log_level: str | None,
    log_json: bool | None,
) -> None:
    """Run the gate in front of the Docker daemon."""
    settings = ctx.settings(
        upstream=upstream,
        socket=socket_path,
        tls_listen=tls_listen,
        log_level=log_level,
        log_json=log_json,
    )
    if settings.socket == "":
        settings.socket = None
    setup_logging(settings.log_level, settings.log_json)
    if settings.tls_listen and not (settings.pki_dir / "server-cert.pem").exists():
        raise click.ClickException(
            f"no server certificate in {settings.pki_dir}: run `dockergate init` first"
        )
    from dockergate.server import run

    try:
        asyncio.run(run(settings, _authenticator(ctx)))
    except (RuntimeError, OSError, ValueError) as exc:
        logging.getLogger("dockergate").error("cannot serve: %s", exc)
        sys.exit(1)
