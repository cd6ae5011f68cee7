"""Host paths a container reaches: bind mounts against the profile's allowlist
(symlinks, read-only roots, read-write mounts below a read-only bind), ``Mounts``
entries, named volumes and their drivers.

dockerd resolves a bind's source on the host when it creates the container, so the
gate resolves it the same way (``realpath``) and reads the host's mount table;
``dockergate check`` runs offline (:data:`OFFLINE`) and checks the paths as written.
"""

from __future__ import annotations

import contextvars
import os
import posixpath
import re
from typing import Any

from dockergate.policy.model import BindRule, Profile
from dockergate.policy.rules import Denied


def resolve_host_path(path: str) -> str:
    """Normalise a host path the way the kernel will see it: ``..``, ``//``, trailing
    slashes and symlinks resolved on this host (``ln -s / ~/root`` does not help).
    A path with a NUL byte names nothing the kernel can open: "" (allowed nowhere)."""
    if "\x00" in path:
        return ""
    return os.path.realpath(posixpath.normpath(path))


# True while ``dockergate check`` reads files on an admin's machine, where the team's
# bind paths need not exist; the gate itself must see them (see check_bind).
OFFLINE: contextvars.ContextVar[bool] = contextvars.ContextVar("offline", default=False)


def _below(path: str, base: str) -> bool:
    return path == base or path.startswith(base.rstrip("/") + "/")


def check_bind(
    profile: Profile, source: str, read_only: bool, field: str, recursive: bool = True
) -> None:
    """``recursive`` False for a ``NonRecursive`` bind (``bind``, not ``rbind``): the
    mounts below its source are not in the container at all."""
    real = resolve_host_path(source)
    rules = [(resolve_host_path(rule.path), rule) for rule in profile.binds]
    found = _deciding_rule(rules, real)
    if found is None:
        allowed = ", ".join(f"{r.path}{' (ro)' if r.read_only else ''}" for r in profile.binds)
        raise Denied(
            profile,
            "bind-mounting this host path",
            field,
            source,
            f"allowed below: {allowed}" if allowed else "use a named volume instead",
        )
    base, rule = found
    if not OFFLINE.get() and not os.path.isdir(base):
        # Symlinks below the allowed path are resolved in the gate's own file
        # system; if it cannot see that tree (a gate in a container without
        # it), a link planted there (data/x -> /) would pass unseen.
        raise Denied(
            profile,
            "bind-mounting a path the gate cannot see",
            field,
            source,
            f"the gate has no {rule.path} to check symlinks in: mount it into the "
            "gate at the same path (read-only) or create it",
        )
    if rule.read_only and not read_only:
        raise Denied(
            profile,
            "a writable bind mount of a read-only path",
            field,
            source,
            f"mount {rule.path} read-only (:ro / readonly)",
        )
    if not read_only:
        inner = [r.path for b, r in rules if r.read_only and b != real and _below(b, real)]
        if inner:
            raise Denied(
                profile,
                "a writable bind mount over a read-only path",
                field,
                source,
                f"{inner[0]} below it is read-only: mount it read-only (:ro / "
                "readonly), or bind a path beside the read-only one",
            )
    elif recursive and not OFFLINE.get():
        # dockerd before 25 makes only the top of a read-only bind read-only:
        # a read-write mount below it stays writable, which matters where the
        # most specific rule for that mount says read-only.
        below = [
            point
            for point in writable_mounts_below(real)
            if (_deciding_rule(rules, point) or found)[1].read_only
        ]
        if below:
            more = f" (and {len(below) - 1} more)" if len(below) > 1 else ""
            raise Denied(
                profile,
                "a read-only bind mount with writable mounts below it",
                field,
                source,
                f"dockerd makes only the top of a read-only bind read-only, and "
                f"{below[0]}{more}, in a read-only path, is mounted read-write below "
                "it on this host: bind that mount read-only by itself, bind "
                "non-recursively (--mount ...,readonly,bind-nonrecursive), or have an "
                "admin remount it read-only",
            )
    follows = None if OFFLINE.get() or real == base else follows_symlinks(base, real)
    if follows is not None:
        raise Denied(
            profile,
            "bind-mounting below an allowed path whose mount follows symlinks",
            field,
            source,
            f"bind {rule.path} itself, or have an admin mount it nosymfollow "
            f"(mount --bind {follows} {follows} && mount -o remount,bind,nosymfollow "
            f"{follows}): a directory below it can be swapped for a symlink "
            "between this check and the container's start",
        )


def _deciding_rule(rules: list[tuple[str, BindRule]], path: str) -> tuple[str, BindRule] | None:
    """The most specific rule holding ``path`` (its resolved path, and the rule): a
    read-only path listed inside a writable one stays read-only whichever comes first
    in the profile."""
    holding = [(base, rule) for base, rule in rules if _below(path, base)]
    return max(holding, key=lambda found: len(found[0])) if holding else None


MOUNTINFO = "/proc/self/mountinfo"

_OCTAL_ESCAPE = re.compile(r"\\([0-7]{3})")


def writable_mounts_below(path: str) -> list[str]:
    """Mount points strictly below ``path`` that are mounted read-write here.

    dockerd before 25 (API 1.44's ``ReadOnlyForceRecursive``) makes a ``:ro`` bind
    read-only with one remount of its top: file systems mounted below the source (an
    NFS export inside the team's read-only tree) stay writable in the container."""
    prefix = path.rstrip("/") + "/"
    visible: dict[str, bool] = {}  # mount point -> read-write, top-most mount only
    try:
        with open(MOUNTINFO, encoding="utf-8", errors="surrogateescape") as lines:
            for line in lines:
                fields = line.split(" ", 6)
                if len(fields) < 6:
                    continue
                point = _OCTAL_ESCAPE.sub(lambda m: chr(int(m.group(1), 8)), fields[4])
                if not (point.startswith(prefix) or _below(prefix, point)):
                    continue  # neither below the path nor covering it
                # Mounts are listed in the order they were made: a later one at a
                # point, or above it, covers what was mounted there before (an
                # admin's read-only bind over a read-write export).
                inside = point.rstrip("/") + "/"
                for seen in [p for p in visible if p == point or p.startswith(inside)]:
                    del visible[seen]
                # Writable if this mount and its file system (the super options,
                # after the " - " separator) both are.
                super_options = line.partition(" - ")[2].split(" ")[2:3]
                visible[point] = "rw" in fields[5].split(",") and "ro" not in (
                    super_options[0].strip().split(",") if super_options else []
                )
    except OSError:
        return []
    return [point for point, writable in visible.items() if writable and point.startswith(prefix)]


ST_NOSYMFOLLOW = getattr(os, "ST_NOSYMFOLLOW", 0x2000)  # Linux 5.10's MS_NOSYMFOLLOW


def follows_symlinks(base: str, real: str) -> str | None:
    """The first directory from ``base`` down to ``real``'s parent on a mount that
    follows symlinks, or None.

    The gate resolves a bind source when the container is created; dockerd resolves
    it again at every start. Whoever can write below ``base`` (the user, or any of
    their containers with a writable bind there) can swap a directory on the way for
    a symlink to ``/`` in between. On a ``nosymfollow`` mount the kernel refuses to
    follow it, so the mount fails instead."""
    parts = real[len(base) :].strip("/").split("/")[:-1]
    path = base
    for part in ["", *parts]:
        path = os.path.join(path, part) if part else path
        try:
            flags = os.statvfs(path).f_flag
        except OSError:
            break  # not there yet: dockerd creates it, as root, at start
        if not flags & ST_NOSYMFOLLOW:
            return path
    return None


def bind_options(spec: str) -> tuple[str, str, bool]:
    """Split ``src:dst[:opts]`` into (src, dst, read_only)."""
    parts = spec.split(":")
    source = parts[0]
    dest = parts[1] if len(parts) > 1 else ""
    return source, dest, "ro" in bind_modes(spec)


def bind_modes(spec: str) -> set[str]:
    """The options of ``src:dst:opts`` (``ro``, ``z``, ``nocopy``...)."""
    parts = spec.split(":")
    return set(parts[2].split(",")) if len(parts) > 2 else set()


def check_own_volume(profile: Profile, name: str, field: str) -> None:
    """``mounts.own_volumes: false``: the user mounts only the profile's shared volumes,
    so neither a mount of a volume of their own nor a volume create is allowed."""
    if not profile.own_volumes:
        allowed = ", ".join(v.name for v in profile.shared_volumes) or "none"
        raise Denied(
            profile, "named volumes of your own", field, name, f"shared volumes: {allowed}"
        )


def check_volume_driver(
    profile: Profile, driver: str, options: dict[str, Any] | None, field: str
) -> None:
    driver = driver or "local"
    if driver not in profile.volume_drivers:
        raise Denied(
            profile,
            "this volume driver",
            field,
            driver,
            f"allowed: {', '.join(profile.volume_drivers) or 'none'}",
        )
    if options and not profile.volume_driver_opts:
        raise Denied(
            profile,
            "volume driver options (a local volume with type/o=bind/device is a bind mount)",
            field,
            ",".join(f"{k}={v}" for k, v in options.items()),
            "create volumes without --opt",
        )


MOUNT_TYPES = ("bind", "volume", "tmpfs")


def check_mount(profile: Profile, mount: Any, field: str) -> None:
    if not isinstance(mount, dict):
        return
    kind = mount.get("Type")
    if kind not in MOUNT_TYPES:
        # Swarm upper-cases the type and reads an empty or unknown one as a bind:
        # only the exact spellings are let through, each checked as what it is.
        raise Denied(
            profile,
            "this mount type",
            f"{field}.Type",
            kind,
            f"give Type exactly: {', '.join(MOUNT_TYPES)}",
        )
    if kind == "bind":
        check_bind(
            profile,
            str(mount.get("Source") or ""),
            bool(mount.get("ReadOnly")),
            f"{field}.Source",
            recursive=not (mount.get("BindOptions") or {}).get("NonRecursive"),
        )
    elif kind == "volume":
        driver_config = (mount.get("VolumeOptions") or {}).get("DriverConfig") or {}
        check_volume_driver(
            profile,
            str(driver_config.get("Name") or ""),
            driver_config.get("Options"),
            f"{field}.VolumeOptions.DriverConfig",
        )


def check_present_binds(
    profile: Profile,
    container: dict[str, Any],
    field: str,
    read_only: bool = False,
    flat: frozenset[str] = frozenset(),
) -> None:
    """The bind mounts a container has (inspect's ``Mounts``), checked as new ones.

    dockerd binds each source again, recursively, at every start, and ``VolumesFrom``
    copies another container's binds into a new one: a bind that passed at create (no
    read-write mount below a read-only root then, or a profile since tightened) is
    checked again when it is used again. ``read_only``: ``VolumesFrom=<id>:ro``.
    ``flat``: the targets of its ``NonRecursive`` binds (inspect's ``Mounts`` does not
    say; the caller collects them, through ``VolumesFrom`` too)."""
    if profile.admin:
        return
    for mount in container.get("Mounts") or []:
        if not isinstance(mount, dict) or mount.get("Type") != "bind":
            continue
        target = str(mount.get("Destination") or "")
        check_bind(
            profile,
            str(mount.get("Source") or ""),
            read_only or not mount.get("RW"),
            f"{field}[{target}]",
            recursive=posixpath.normpath(target) not in flat,
        )


def flat_bind_targets(container: dict[str, Any]) -> set[str]:
    """The targets of a container's own ``NonRecursive`` binds, normalised as dockerd
    shows them (``/d/`` is ``/d``)."""
    return {
        posixpath.normpath(str(m.get("Target") or ""))
        for m in (container.get("HostConfig") or {}).get("Mounts") or []
        if isinstance(m, dict) and (m.get("BindOptions") or {}).get("NonRecursive")
    }
