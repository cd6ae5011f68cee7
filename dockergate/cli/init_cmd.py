"""``dockergate init``: create the state directory, the CA, the server cert, the admin bundle."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import click

from dockergate.cli import Context, pass_ctx
from dockergate.listen.pki import CertificateAuthority
from dockergate.pidfile import PIDFILE, running_gate

ADMIN_BUNDLE = "admin"


SERVER_NAMES = "server-names"  # in the state dir: one name per line


def init_state(ctx: Context, hostnames: tuple[str, ...], rotate_server_cert: bool) -> list[str]:
    """Idempotent: create what is missing, keep what exists; return what was done."""
    settings = ctx.settings()
    done: list[str] = []
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(settings.state_dir, 0o700)
    ca = CertificateAuthority(settings.pki_dir)
    if ca.ensure():
        done.append(f"created CA {ca.cert_path}")
    # The names clients reach the gate by, kept beside pki/: a CA replaced as README
    # says (pki/ moved aside) must not lose them with the old server certificate.
    names_file = settings.state_dir / SERVER_NAMES
    known = names_file.read_text().split() if names_file.exists() else []
    if ca.ensure_server_cert([*hostnames, *known], rotate=rotate_server_cert):
        names = ca.server_names()
        done.append(f"issued server certificate {ca.server_cert_path} for {', '.join(names)}")
        names_file.write_text("".join(f"{n}\n" for n in names))
        if rotate_server_cert:
            done.append(_tell_running_gate(settings.state_dir / PIDFILE))
    else:
        current = ca.server_names()
        if not known:  # an install from before the file: noted from the certificate
            names_file.write_text("".join(f"{n}\n" for n in current))
        if missing := [h for h in hostnames if h not in current]:
            done.append(
                "note: the server certificate already exists and was not changed; to add "
                f"{', '.join(missing)}: dockergate init --rotate-server-cert --hostname NAME"
            )
    admin_dir = settings.clients_dir / ADMIN_BUNDLE
    stale = (admin_dir / "ca.pem").exists() and (
        (admin_dir / "ca.pem").read_bytes() != ca.cert_path.read_bytes()
    )
    if stale or not (admin_dir / "cert.pem").exists():
        issued = ca.issue_client(ADMIN_BUNDLE, days=3650)
        ca.write_bundle(admin_dir, issued)
        why = " (its CA was replaced)" if stale else ""
        done.append(f"wrote admin client bundle {admin_dir}{why}")
    from dockergate.cli import hooks

    done.extend(hooks.after_init(settings))
    return done


def _tell_running_gate(pidfile: Path) -> str:
    """A gate serving from this state dir re-reads its certificate on SIGHUP."""
    try:
        pid = running_gate(pidfile)
        os.kill(pid, signal.SIGHUP)
    except (OSError, ValueError):
        return "no running gate found (its pidfile): the next `serve` presents the new certificate"
    return f"sent SIGHUP to dockergate (pid {pid}): new connections get the new certificate"


@click.command()
@click.option(
    "--hostname",
    "hostnames",
    multiple=True,
    help="Extra DNS name or IP the TLS listener is reached by (repeatable).",
)
@click.option(
    "--rotate-server-cert",
    is_flag=True,
    help="Issue a new server certificate (same CA), e.g. to add a --hostname.",
)
@pass_ctx
def init(ctx: Context, hostnames: tuple[str, ...], rotate_server_cert: bool) -> None:
    """Create the state dir, CA, server certificate and admin bundle (idempotent)."""
    done = init_state(ctx, hostnames, rotate_server_cert)
    settings = ctx.settings()
    for line in done or [f"{settings.state_dir} is already initialised; nothing to do"]:
        click.echo(line)
    click.echo(
        f"admin bundle: DOCKER_HOST=tcp://HOST:PORT DOCKER_TLS_VERIFY=1 "
        f"DOCKER_CERT_PATH={settings.clients_dir / ADMIN_BUNDLE}"
    )
