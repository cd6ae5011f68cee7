"""The pidfile a gate keeps in its state dir, and whether it names a running gate.

``policy reload`` and ``init --rotate-server-cert`` signal the gate through it; a
second ``serve`` on the same state dir refuses to start while it names a live gate
(it would take the file over and delete it when it stops, and the first gate could
no longer be reached)."""

from __future__ import annotations

from pathlib import Path

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
