"""``dockergate user ...`` and ``dockergate db ...``: manage who may use the gate.

Every change is one transaction that bumps the store's revision counter, so a
running gate applies it within a second (revocations included) without being
restarted. Output for humans is plain aligned text; ``--json`` on ``list`` and
``show`` is for scripts. Anything wrong is one line on stderr and exit status 1.
"""

from __future__ import annotations

import datetime as dt
import json
import pwd
import socket
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import click
from sqlalchemy.exc import SQLAlchemyError

from dockergate.audit.actions import audited
from dockergate.cli import Context, pass_ctx
from dockergate.config import Settings
from dockergate.listen.pki import CLIENT_DAYS, CertificateAuthority, prepare_bundle_dir
from dockergate.logs import printable
from dockergate.policy.location import not_loaded_note
from dockergate.store.db import (
    check_schema,
    current_revision,
    describe_url,
    head_revision,
    make_engine,
    unavailable,
    upgrade,
)
from dockergate.store.errors import StoreError
from dockergate.store.models import CERT, TOKEN
from dockergate.store.profiles import check_profile
from dockergate.store.repository import MAX_UID, CredentialInfo, Store, serial_hex

TLS_PORT = 2376
APPLIES = "running gates apply it within a second"


def applies(store: Store) -> str:
    """The change's store revision (a gate's /_dockergate/health shows the one it
    applies) and when it is in force."""
    return f"store revision {store.revision()}; {APPLIES}"


@contextmanager
def opened(ctx: Context) -> Iterator[tuple[Settings, Store]]:
    """Settings and an open store at the right schema; store errors become exit 1."""
    settings = ctx.settings()
    try:
        with Store.open(settings) as store:
            yield settings, store
    except StoreError as exc:
        raise click.ClickException(str(exc)) from exc


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    cells = [[str(h) for h in headers]] + [
        ["-" if c is None else printable(str(c)) for c in r] for r in rows
    ]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in cells
    )


def when(value: dt.datetime | None) -> str:
    return "-" if value is None else value.strftime("%Y-%m-%d %H:%M")


def profile_ok(settings: Settings, profile: str) -> None:
    try:
        check_profile(settings, profile)
    except StoreError as exc:
        raise click.ClickException(str(exc)) from exc


def docker_host(settings: Settings) -> tuple[str, bool]:
    """DOCKER_HOST for the TLS listener, and whether it is only a placeholder."""
    if not settings.tls_listen:
        return f"tcp://GATE_HOST:{TLS_PORT}", True
    host, _, port = settings.tls_listen.rpartition(":")
    host = host.strip("[]")
    if host in ("", "0.0.0.0", "::"):
        host = socket.getfqdn()
    if ":" in host:
        host = f"[{host}]"
    return f"tcp://{host}:{port or TLS_PORT}", False


# -- user ------------------------------------------------------------------------------


@click.group()
def user() -> None:
    """Register users, their profile, unix uid, certificates and tokens."""


def root_uid_ok(settings: Settings, uid: int | None) -> None:
    """uid 0 on the socket is the built-in admin while ``root_is_admin`` holds: a user
    registered with it would never be who the gate sees."""
    if uid == 0 and settings.root_is_admin:
        raise click.ClickException(
            "uid 0 is root, which the gate treats as the built-in admin (root_is_admin = "
            "true): a user registered with it would never apply; set root_is_admin = false "
            "first, or register another uid"
        )


@user.command("add")
@audited("user add", options=("profile", "login", "uid"))
@click.argument("name")
@click.option(
    "--profile",
    required=True,
    help="PROFILE.yaml in the running gate's policies directory (refused while the "
    "profiles do not load).",
)
@click.option("--unix-user", "login", help="Unix login whose uid identifies NAME on the socket.")
@click.option("--uid", type=click.IntRange(0, MAX_UID), help="Unix uid (instead of --unix-user).")
@pass_ctx
def add(ctx: Context, name: str, profile: str, login: str | None, uid: int | None) -> None:
    """Register NAME with PROFILE (and the unix uid that identifies them)."""
    if login is not None and uid is not None:
        raise click.ClickException("give --unix-user or --uid, not both")
    if login is not None:
        try:
            uid = pwd.getpwnam(login).pw_uid
        except KeyError:
            raise click.ClickException(
                f"unknown unix user {login!r}: not in this host's passwd database "
                "(use --uid N for a uid without a local account)"
            ) from None
    with opened(ctx) as (settings, store):
        profile_ok(settings, profile)
        root_uid_ok(settings, uid)
        info = store.add_user(name, profile, uid)
        done = applies(store)
    where = f", unix uid {info.unix_uid}" if info.unix_uid is not None else ""
    click.echo(f"added user {info.name!r} (profile {info.profile}{where}; {done})")
    note = not_loaded_note(settings, profile)
    if note:
        click.echo(note, err=True)


@user.command("list")
@click.option("--json", "as_json", is_flag=True, help="JSON for scripts.")
@pass_ctx
def list_(ctx: Context, as_json: bool) -> None:
    """List users."""
    with opened(ctx) as (_settings, store):
        users = store.list_users()
    if as_json:
        click.echo(json.dumps([u.as_dict() for u in users], indent=2))
        return
    if not users:
        click.echo("no users; add one: dockergate user add NAME --profile member --unix-user LOGIN")
        return
    rows = [
        (
            u.name,
            u.profile,
            "enabled" if u.enabled else "disabled",
            u.unix_uid,
            len(u.active(CERT)),
            len(u.active(TOKEN)),
            when(u.created_at),
        )
        for u in users
    ]
    click.echo(table(("NAME", "PROFILE", "STATUS", "UID", "CERTS", "TOKENS", "CREATED"), rows))


def _credential_row(c: CredentialInfo) -> tuple[object, ...]:
    ident = c.cert_serial if c.kind == CERT else c.token_id
    return (c.kind, ident, c.state(), when(c.issued_at), when(c.expires_at), when(c.revoked_at))


@user.command("show")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="JSON for scripts.")
@pass_ctx
def show(ctx: Context, name: str, as_json: bool) -> None:
    """Show NAME, with their certificates and tokens."""
    with opened(ctx) as (_settings, store):
        info = store.get_user(name)
    if as_json:
        click.echo(json.dumps(info.as_dict(), indent=2))
        return
    click.echo(
        table(
            ("", ""),
            [
                ("name:", info.name),
                ("profile:", info.profile),
                ("status:", "enabled" if info.enabled else "disabled"),
                ("unix uid:", info.unix_uid),
                ("created:", when(info.created_at)),
                ("updated:", when(info.updated_at)),
            ],
        ).strip("\n")
    )
    if info.credentials:
        click.echo("")
        rows = [_credential_row(c) for c in info.credentials]
        click.echo(table(("KIND", "SERIAL/ID", "STATE", "ISSUED", "EXPIRES", "REVOKED"), rows))
    else:
        click.echo(f"\nno certificates or tokens; dockergate user cert {name} --out DIR")


@user.command("set-profile")
@audited("user set-profile", options=("profile",))
@click.argument("name")
@click.argument("profile")
@pass_ctx
def set_profile(ctx: Context, name: str, profile: str) -> None:
    """Give NAME another PROFILE."""
    with opened(ctx) as (settings, store):
        profile_ok(settings, profile)
        before = store.get_user(name)
        store.set_profile(name, profile)
        done = applies(store)
    click.echo(f"user {name!r}: profile {before.profile} -> {profile} ({done})")
    note = not_loaded_note(settings, profile)
    if note:
        click.echo(note, err=True)


def _set_enabled(ctx: Context, name: str, enabled: bool) -> str:
    with opened(ctx) as (_settings, store):
        store.set_enabled(name, enabled)
        return applies(store)


@user.command("disable")
@audited("user disable")
@click.argument("name")
@pass_ctx
def disable(ctx: Context, name: str) -> None:
    """Refuse NAME everywhere (keeps their credentials; `enable` undoes it)."""
    click.echo(f"disabled user {name!r} ({_set_enabled(ctx, name, False)})")


@user.command("enable")
@audited("user enable")
@click.argument("name")
@pass_ctx
def enable(ctx: Context, name: str) -> None:
    """Let NAME in again."""
    click.echo(f"enabled user {name!r} ({_set_enabled(ctx, name, True)})")


@user.command("remove")
@audited("user remove")
@click.argument("name")
@pass_ctx
def remove(ctx: Context, name: str) -> None:
    """Delete NAME and all their certificates and tokens (their objects keep their label)."""
    with opened(ctx) as (_settings, store):
        info = store.remove_user(name)
        done = applies(store)
    click.echo(
        f"removed user {name!r} and {len(info.credentials)} credential(s) ({done}); "
        f"their objects remain, labelled dockergate.owner={name}"
    )


@user.command("cert")
@audited("user cert", options=("days",))
@click.argument("name")
@click.option(
    "--out",
    "out_dir",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Directory for ca.pem, cert.pem, key.pem (a DOCKER_CERT_PATH).",
)
@click.option("--days", type=click.IntRange(1, 3650), default=CLIENT_DAYS, show_default=True)
@pass_ctx
def cert(ctx: Context, name: str, out_dir: Path, days: int) -> None:
    """Issue a client certificate (CN=NAME) signed by dockergate's CA into DIR."""
    with opened(ctx) as (settings, store):
        ca = CertificateAuthority(settings.pki_dir)
        if not ca.exists():
            raise click.ClickException(f"no CA in {settings.pki_dir}: run `dockergate init` first")
        info = store.get_user(name)
        out = out_dir.absolute()
        try:
            prepare_bundle_dir(out)
        except OSError as exc:
            raise click.ClickException(f"cannot write the bundle to {out}: {exc}") from exc
        issued = ca.issue_client(name, days=days)
        # Recorded before the files are written: a bundle on disk is always usable.
        store.add_certificate(name, issued.serial, issued.fingerprint, issued.not_after)
        done = applies(store)
    try:
        ca.write_bundle(out, issued)
    except OSError as exc:
        raise click.ClickException(f"cannot write the bundle to {out}: {exc}") from exc
    host, placeholder = docker_host(settings)
    click.echo(
        f"wrote {out}/{{ca,cert,key}}.pem for {name!r}: serial {serial_hex(issued.serial)}, "
        f"valid until {when(issued.not_after)} UTC ({done})",
        err=True,
    )
    if not info.enabled:
        click.echo(f"note: {name!r} is disabled; dockergate user enable {name}", err=True)
    if placeholder:
        click.echo(
            "note: tls_listen is not in the configuration (a `serve --tls-listen` flag is "
            "not seen from here); replace GATE_HOST (and the port, if not 2376) with the "
            "gate's TLS address",
            err=True,
        )
    click.echo(f"export DOCKER_HOST={host}")
    click.echo("export DOCKER_TLS_VERIFY=1")
    click.echo(f"export DOCKER_CERT_PATH={out}")


@user.command("token")
@audited("user token", options=("days",))
@click.argument("name")
@click.option("--days", type=click.IntRange(1, 3650), help="Expire after N days (default: never).")
@pass_ctx
def token(ctx: Context, name: str, days: int | None) -> None:
    """Print a new API token for NAME (alone on stdout; shown once, stored hashed)."""
    expires = dt.datetime.now(dt.UTC) + dt.timedelta(days=days) if days else None
    with opened(ctx) as (settings, store):
        issued = store.add_token(name, expires)
        done = applies(store)
    host, _ = docker_host(settings)
    snippet = json.dumps({"HttpHeaders": {"X-Dockergate-Token": issued.token}})
    click.echo(issued.token)
    click.echo(
        f"token {issued.token_id} for {name!r}"
        + (f", valid until {when(expires)} UTC" if expires else "")
        + f" ({done}); it is not stored in clear and cannot be shown again.\n"
        "Use it over TLS without a client certificate: put this in ~/.docker/config.json\n"
        f"(or in $DOCKER_CONFIG/config.json):\n\n  {snippet}\n\n"
        f"then: export DOCKER_HOST={host} DOCKER_TLS_VERIFY=1 and DOCKER_CERT_PATH=<a directory "
        f"holding only the gate's ca.pem, from {settings.pki_dir / 'ca.pem'}>",
        err=True,
    )


@user.command("revoke")
@audited("user revoke")
@click.argument("name")
@pass_ctx
def revoke(ctx: Context, name: str) -> None:
    """Revoke all of NAME's certificates and tokens."""
    with opened(ctx) as (_settings, store):
        counts = store.revoke_all(name)
        done = applies(store)
    click.echo(
        f"revoked {counts[CERT]} certificate(s) and {counts[TOKEN]} token(s) of {name!r} ({done})"
    )


# -- db --------------------------------------------------------------------------------


@click.group()
def db() -> None:
    """The store's database schema."""


@db.command("upgrade")
@pass_ctx
def db_upgrade(ctx: Context) -> None:
    """Apply the migrations this dockergate ships (creates the SQLite file if needed)."""
    settings = ctx.settings()
    try:
        before, after = upgrade(settings)
    except StoreError as exc:
        raise click.ClickException(str(exc)) from exc
    where = describe_url(settings.db_url())
    if before == after:
        click.echo(f"{where}: schema is up to date ({after})")
    else:
        click.echo(f"{where}: schema upgraded from {before or 'empty'} to {after}")


@db.command("status")
@pass_ctx
def db_status(ctx: Context) -> None:
    """Show the schema revision; exit status 1 unless it is the one the code needs."""
    settings = ctx.settings()
    url = settings.db_url()
    click.echo(f"database:   {describe_url(url)}")
    click.echo(f"code needs: {head_revision()}")
    try:
        engine = make_engine(url)
        try:
            try:
                click.echo(f"schema:     {current_revision(engine) or 'empty'}")
            except SQLAlchemyError as exc:
                raise unavailable(exc, url) from exc
            check_schema(settings, engine)
        finally:
            engine.dispose()
    except StoreError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo("status:     up to date")


COMMANDS = [user, db]
