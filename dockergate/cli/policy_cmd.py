"""``dockergate policy ...`` and ``dockergate check``: the profiles, for operators and CI."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import click
import yaml

from dockergate.audit import actions
from dockergate.cli import Context, pass_ctx
from dockergate.config import POLICY_STATUS, Settings
from dockergate.pidfile import PIDFILE, running_gate
from dockergate.policy.compose import check_file
from dockergate.policy.location import policies_directory, policy_status
from dockergate.policy.model import PolicyError, ProfileSet, parse_size
from dockergate.policy.rules import NodeFacts


def load_profiles(ctx: Context) -> ProfileSet:
    try:
        return ProfileSet(policies_directory(ctx.settings()))
    except PolicyError as exc:
        raise click.ClickException(str(exc)) from exc


@click.group()
def policy() -> None:
    """Profiles: show the effective rules, validate, reload the running gate."""


@policy.command("list")
@click.option("--json", "as_json", is_flag=True, help="JSON for scripts.")
@pass_ctx
def policy_list(ctx: Context, as_json: bool) -> None:
    """The profiles in the policies directory (the running gate's, unless given)."""
    profiles = load_profiles(ctx)
    if as_json:
        listed = [
            {"name": name, "description": p.description, "admin": p.admin}
            for name, p in sorted(profiles.profiles.items())
        ]
        click.echo(json.dumps(listed, indent=2))
        return
    for name, profile in sorted(profiles.profiles.items()):
        click.echo(f"{name:<12} {profile.description}")


@policy.command("show")
@click.argument("profile")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@pass_ctx
def policy_show(ctx: Context, profile: str, as_json: bool) -> None:
    """The effective rules of PROFILE after ``extends``."""
    profiles = load_profiles(ctx)
    if profiles.get(profile) is None:
        known = ", ".join(sorted(profiles.profiles))
        raise click.ClickException(f"unknown profile {profile!r}; known: {known}")
    rules = profiles.effective(profile)
    rules.pop("extends", None)
    if as_json:
        click.echo(json.dumps(rules, indent=2, sort_keys=True, default=str))
    else:
        click.echo(f"# profile {profile} ({profiles.directory / (profile + '.yaml')})")
        click.echo(yaml.safe_dump(rules, sort_keys=True).rstrip())


@policy.command("validate")
@pass_ctx
def policy_validate(ctx: Context) -> None:
    """Load every profile; exit 1 with file, line and key on the first error."""
    profiles = load_profiles(ctx)
    click.echo(f"ok: {', '.join(sorted(profiles.profiles))} in {profiles.directory}")


@policy.command("reload")
@pass_ctx
def policy_reload(ctx: Context) -> None:
    """Make the running gate re-read its profiles (SIGHUP); connections stay open."""
    settings = ctx.settings()
    status_path = settings.state_dir / POLICY_STATUS
    before = policy_status(status_path)
    if before.get("directory"):
        # The running gate's directory (a serve --policies-dir flag is not seen here).
        try:
            ProfileSet(Path(before["directory"]))
        except PolicyError as exc:
            _audit(settings, False, f"not reloaded: {exc}")
            raise click.ClickException(f"not reloaded: {exc}") from exc
    else:
        try:
            load_profiles(ctx)  # refuse to signal a gate with profiles that do not load
        except click.ClickException as exc:
            _audit(settings, False, f"not reloaded: {exc.message}")
            raise
    pidfile = settings.state_dir / PIDFILE
    try:
        pid = running_gate(pidfile)
        os.kill(pid, signal.SIGHUP)
    except (ValueError, OSError) as exc:
        message = str(exc) if isinstance(exc, ValueError) else f"{pidfile}: {exc}"
        _audit(settings, False, f"not reloaded: {message}")
        raise click.ClickException(
            message if isinstance(exc, ValueError) else f"no running gate found through {message}"
        ) from exc
    deadline = time.monotonic() + 3
    after = before
    while time.monotonic() < deadline and after.get("at") == before.get("at"):
        time.sleep(0.1)
        after = policy_status(status_path)
    if after.get("at") == before.get("at"):
        _audit(settings, True, f"SIGHUP sent to pid {pid}, reload not confirmed")
        click.echo(f"sent SIGHUP to dockergate (pid {pid}); it has not confirmed the reload")
        return
    if after.get("error"):
        _audit(settings, False, f"the gate kept its previous rules: {after['error']}")
        raise click.ClickException(
            f"the gate kept its previous rules: {after['error']} (see its log)"
        )
    done = f"{', '.join(after.get('profiles') or [])} from {after.get('directory')}"
    _audit(settings, True, f"reloaded {done}")
    click.echo(f"reloaded dockergate (pid {pid}): {done}")


def _audit(settings: Settings, ok: bool, detail: str) -> None:
    """The reload goes into the audit log like the other admin commands."""
    record = actions.cli_record("policy reload", kind="policy", ok=ok, detail=detail)
    actions.record(settings, record)


@click.command()
@click.option("--profile", required=True, help="The profile to check against.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--node-memory", help="RAM of the target nodes, for limits given as a share.")
@click.option("--node-cpus", type=int, default=0, help="CPUs of the target nodes, likewise.")
@click.argument("files", nargs=-1, required=True, type=click.Path(path_type=Path))
@pass_ctx
def check(
    ctx: Context,
    profile: str,
    as_json: bool,
    node_memory: str | None,
    node_cpus: int,
    files: tuple[Path, ...],
) -> None:
    """Check compose/stack FILES offline against PROFILE; exit 1 on any violation."""
    profiles = load_profiles(ctx)
    chosen = profiles.get(profile)
    if chosen is None:
        known = ", ".join(sorted(profiles.profiles))
        raise click.ClickException(f"unknown profile {profile!r}; known: {known}")
    facts = NodeFacts(parse_size(node_memory) if node_memory else 0, node_cpus)
    found = [v for path in files for v in check_file(chosen, path, facts)]
    if as_json:
        click.echo(json.dumps([v.__dict__ for v in found], indent=2))
    else:
        for v in found:
            click.echo(f"{v.file}: {v.service}: {v.message}")
        click.echo(
            f"{len(found)} violation(s) of profile {profile!r} in {len(files)} file(s)"
            if found
            else f"ok: {len(files)} file(s) pass profile {profile!r}"
        )
    if found:
        raise SystemExit(1)


COMMANDS = [policy, check]
