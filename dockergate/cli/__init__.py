"""The ``dockergate`` command: one click group, one module per sub-command family."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from dockergate.config import ConfigError, Settings, load_settings


class Context:
    """What the global options say; settings are built lazily so ``--help`` never fails."""

    def __init__(self, overrides: dict[str, Any], config_file: str | None) -> None:
        self.overrides = overrides
        self.config_file = config_file

    def settings(self, **more: Any) -> Settings:
        try:
            return load_settings(self.config_file, overrides={**self.overrides, **more})
        except ConfigError as exc:
            raise click.ClickException(str(exc)) from exc


pass_ctx = click.make_pass_decorator(Context)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--state-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="State directory (CA, keys, database). Env DOCKERGATE_STATE_DIR; "
    "default /var/lib/dockergate.",
)
@click.option("--db", help="SQLAlchemy URL of the store (default: SQLite in the state dir).")
@click.option(
    "--config",
    "config_file",
    type=click.Path(dir_okay=False),
    help="YAML config file (keys as the long options, e.g. tls_listen). Env DOCKERGATE_CONFIG.",
)
@click.version_option(package_name="dockergate")
@click.pass_context
def cli(
    ctx: click.Context, state_dir: Path | None, db: str | None, config_file: str | None
) -> None:
    """dockergate: a multi-user access-control proxy for the Docker Engine API."""
    ctx.obj = Context({"state_dir": state_dir, "db": db}, config_file)


def _register() -> None:
    from dockergate.cli import init_cmd, policy_cmd, serve_cmd

    cli.add_command(init_cmd.init)
    cli.add_command(serve_cmd.serve)
    for command in policy_cmd.COMMANDS:
        cli.add_command(command)
    from dockergate.cli import admin_cmd, user_cmd, volume_names_cmd

    for command in [*user_cmd.COMMANDS, *admin_cmd.COMMANDS, *volume_names_cmd.COMMANDS]:
        cli.add_command(command)


_register()


def main() -> None:
    try:
        cli(standalone_mode=True)
    except KeyboardInterrupt:  # pragma: no cover
        sys.exit(130)
    except PermissionError as exc:
        # The state dir is root's (0700): an admin command run as another user.
        sys.stderr.write(f"Error: {exc.strerror or exc}: {exc.filename or ''} (run as root)\n")
        sys.exit(1)
