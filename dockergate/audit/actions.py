"""Admin CLI actions in the audit log (``user add``, ``revoke``, ``purge``...).

The CLI writes straight to the store, not through a running gate, so these rows are
written here, synchronously, at the end of each command. The operator is the unix
account running the command (and the ``sudo`` caller when there is one): that is
who an investigation needs, and the CLI has no other identity to offer.

Recording is best effort on purpose: the action has already happened when the row
is written, so a store problem at that point becomes a warning on stderr, never a
failed command (which would invite the operator to run it again).
"""

from __future__ import annotations

import functools
import os
import pwd
import time
from collections.abc import Callable, Iterable
from typing import Any, TypeVar, cast

import click

from dockergate.audit.record import RequestRecord
from dockergate.audit.writer import row_of
from dockergate.config import Settings
from dockergate.store.errors import StoreError
from dockergate.store.repository import Store

F = TypeVar("F", bound=Callable[..., Any])

CLI_LISTENER = "cli"
CLI_METHOD = "CLI"


def operator() -> tuple[str, str]:
    """(name, how identified) of whoever runs this process."""
    uid = os.getuid()
    try:
        name = pwd.getpwuid(uid).pw_name
    except KeyError:
        name = f"uid{uid}"
    how = f"unix uid {uid}"
    sudo = os.environ.get("SUDO_USER")
    if sudo and sudo != name:
        how += f" (sudo from {sudo})"
    return name, how


def cli_route(action: str) -> str:
    """``user add carol`` -> ``cli.user.add``; ``purge --user bob`` -> ``cli.purge``."""
    words: list[str] = []
    for word in action.split()[:2]:
        if word.startswith("-"):
            break
        words.append(word.replace("-", "_"))
    return ".".join(["cli", *words])


def cli_record(
    action: str,
    *,
    kind: str | None = None,
    object_id: str | None = None,
    ok: bool = True,
    rule: str | None = None,
    detail: str | None = None,
    started: float | None = None,
) -> RequestRecord:
    """A record for an admin command: ``path`` is the command line that matters
    (``user add alice``), ``status`` its exit status."""
    now = time.time()
    name, how = operator()
    return RequestRecord(
        started=started if started is not None else now,
        user=name,
        identified_by=how,
        listener=CLI_LISTENER,
        method=CLI_METHOD,
        path=action,
        route=cli_route(action),
        kind=kind,
        object_id=object_id,
        decision="allow" if ok else "error",
        rule=rule,
        status=0 if ok else 1,
        seconds=max(0.0, now - (started if started is not None else now)),
        detail=detail,
    )


def record(settings: Settings, *records: RequestRecord) -> bool:
    """Store records now; on failure warn on stderr and return False."""
    try:
        with Store.open(settings) as store:
            store.append_audit([row_of(r) for r in records])
        return True
    except StoreError as exc:
        click.echo(f"warning: not recorded in the audit log: {exc}", err=True)
        return False


def _settings() -> Settings | None:
    from dockergate.cli import Context

    ctx = click.get_current_context(silent=True)
    found = ctx.find_object(Context) if ctx is not None else None
    if found is None:
        return None
    try:
        return found.settings()
    except click.ClickException:
        return None


def audited(action: str, kind: str = "user", options: Iterable[str] = ()) -> Callable[[F], F]:
    """Record a click command in the audit log when it ends (done or failed).

    Place it under ``@group.command(...)``. The command's ``name`` parameter becomes
    the object ID and part of the recorded command line; only the parameters named
    in ``options`` are added (never anything that could be a secret or a path to
    one)."""
    keep = tuple(options)

    def decorate(fn: F) -> F:
        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            started = time.time()
            ctx = click.get_current_context(silent=True)
            params = dict(ctx.params) if ctx is not None else dict(kwargs)
            target = params.get("name")
            line = " ".join([action, *([str(target)] if target is not None else [])])
            shown = [f"{key}={params[key]}" for key in keep if params.get(key) is not None]
            detail = " ".join(shown) or None
            try:
                result = fn(*args, **kwargs)
            except click.exceptions.Exit:
                raise
            except (click.ClickException, StoreError) as exc:
                settings = _settings()
                if settings is not None:
                    message = (
                        exc.format_message() if isinstance(exc, click.ClickException) else str(exc)
                    )
                    record(
                        settings,
                        cli_record(
                            line,
                            kind=kind,
                            object_id=target,
                            ok=False,
                            rule=message,
                            detail=detail,
                            started=started,
                        ),
                    )
                raise
            settings = _settings()
            if settings is not None:
                record(
                    settings,
                    cli_record(line, kind=kind, object_id=target, detail=detail, started=started),
                )
            return result

        return cast(F, wrapper)

    return decorate
