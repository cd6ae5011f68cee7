"""``dockergate volume-names``: who holds which volume name on the cluster.

A volume name is held by the first user who used it through a gate of this store
(see ``store.models.VolumeName``): removing the volume does not free the name, since
a copy may remain on another node. An admin lists the names and frees them once the
volumes are gone everywhere (``purge --volumes`` frees a user's names by itself).
"""

from __future__ import annotations

import json

import click

from dockergate.audit import actions
from dockergate.cli import Context, pass_ctx
from dockergate.cli.user_cmd import opened, table, when


@click.group("volume-names")
def volume_names() -> None:
    """Volume names held cluster-wide by their first user."""


@volume_names.command("ls")
@click.option("--user", "owner", metavar="NAME", help="Only the names NAME holds.")
@click.option("--json", "as_json", is_flag=True, help="JSON for scripts.")
@pass_ctx
def ls(ctx: Context, owner: str | None, as_json: bool) -> None:
    """List held volume names."""
    with opened(ctx) as (_, store):
        rows = store.volume_names(owner)
    if as_json:
        listed = [{"name": n, "holder": o, "since": at.isoformat()} for n, o, at in rows]
        click.echo(json.dumps(listed, indent=2))
        return
    click.echo(table(["NAME", "HOLDER", "SINCE"], [(n, o, when(at)) for n, o, at in rows]))


@volume_names.command("release")
@click.argument("names", nargs=-1)
@click.option("--user", "owner", metavar="NAME", help="Every name NAME holds.")
@pass_ctx
def release(ctx: Context, names: tuple[str, ...], owner: str | None) -> None:
    """Free NAMES (or every name of --user) for anyone to use. Do it once the volumes
    of those names are gone on every node: a user who takes a name gets that node's
    volume of the name, whoever made it."""
    if not names and owner is None:
        raise click.UsageError("give volume NAMES, or --user NAME")
    with opened(ctx) as (settings, store):  # a store error is exit 1 (opened)
        count = store.release_volume_names(owner, names)
        what = " ".join(names) + (f" --user {owner}" if owner else "")
        actions.record(
            settings,
            actions.cli_record(
                f"volume-names release {what.strip()}",
                kind="volume",
                object_id=owner or names[0],
                detail=f"released {count} name(s)",
            ),
        )
    click.echo(f"released {count} volume name(s)")


COMMANDS = [volume_names]
