"""The pidfile a gate keeps in its state dir, and whether it names a running gate.

``policy reload`` and ``init --rotate-server-cert`` signal the gate through it. A
second ``serve`` on the same state dir (a gate per engine on one host, a try-out on
another socket) leaves a live gate's pidfile alone: taking it over, and deleting it
when it stopped, left the first gate unreachable."""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path

log = logging.getLogger("dockergate")

PIDFILE = "dockergate.pid"


def running_gate(pidfile: Path) -> int:
    """The pid of the gate serving from this state dir, from its pidfile, once its
    command line says it is one: a gate killed with SIGKILL leaves its pidfile, and
    the pid may since be another process's (SIGHUP ends most programs). Raises
    ``ValueError`` with why there is none."""
    try:
        pid = int(pidfile.read_text().strip())
    except (OSError, ValueError) as exc:
        raise ValueError(f"no running gate found through {pidfile}: {exc}") from None
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        raise ValueError(f"no running gate found through {pidfile}: pid {pid} is gone") from None
    if b"serve" not in argv or not any(b"dockergate" in part for part in argv):
        raise ValueError(
            f"no running gate found through {pidfile}: pid {pid} is another program "
            "(a stale pidfile, left by a gate that was killed)"
        )
    return pid


def claim_pidfile(pidfile: Path) -> Path | None:
    """Write this process's pid, unless a live gate's pid is there. The path if this
    gate holds it (to release at exit), else None."""
    try:
        other = running_gate(pidfile)
    except ValueError:
        pass  # none, or stale: take it
    else:
        log.warning(
            "another gate (pid %s) holds %s: policy reload and init --rotate-server-cert "
            "reach that one; signal this one (pid %s) with SIGHUP yourself",
            other,
            pidfile,
            os.getpid(),
        )
        return None
    try:
        pidfile.write_text(f"{os.getpid()}\n")
    except OSError:
        return None
    return pidfile


def release_pidfile(pidfile: Path) -> None:
    """Remove the pidfile if it still names this process."""
    with contextlib.suppress(OSError, ValueError):
        if int(pidfile.read_text().strip()) == os.getpid():
            pidfile.unlink()
