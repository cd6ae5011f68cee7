"""Resource defaults and caps: memory, CPUs, pids, ulimits, OOM score, log files and
stop waits.

Defaults are filled in where a request sets none, so every non-admin container and
service gets a memory limit; caps take the smaller of the profile's number and its
share of the node (``NodeFacts``).
"""

from __future__ import annotations

from typing import Any

from dockergate.policy.model import UNLIMITED, Profile, human, parse_size
from dockergate.policy.rules import NANO, Denied, NodeFacts


def cap_max(
    profile: Profile, limit_max: float | None, share: float | None, total: float
) -> float | None:
    caps = [c for c in (limit_max, share * total if share and total else None) if c]
    return min(caps) if caps else None


def apply_memory(
    profile: Profile, res: dict[str, Any], facts: NodeFacts, field: str, *, update: bool = False
) -> None:
    """Default and cap ``Memory``; pin ``MemorySwap`` to it unless swap is allowed."""
    memory = int(res.get("Memory") or 0)
    if memory <= 0 and not update and profile.memory.default:
        # A soft limit alone (--memory-reservation) raises the default hard limit to
        # it: dockerd refuses a reservation above the limit, which the user never set.
        memory = max(int(profile.memory.default), int(res.get("MemoryReservation") or 0))
        if memory > int(profile.memory.default):
            field = field.replace("Memory", "MemoryReservation")
        res["Memory"] = memory
    cap = cap_max(profile, profile.memory.max, profile.memory.max_share, facts.mem_total)
    if cap and memory > cap:
        raise Denied(profile, "this much memory", field, human(memory), f"at most {human(cap)}")
    if not profile.swap and memory > 0:
        swap = res.get("MemorySwap")
        if swap not in (None, 0) and swap != memory:
            # Pinned silently, an explicit --memory-swap would look granted.
            raise Denied(
                profile,
                "swap",
                field.replace("Memory", "MemorySwap"),
                human(swap) if isinstance(swap, int) and swap > 0 else swap,
                "leave --memory-swap out (or equal to --memory): memory and swap stay equal",
            )
        res["MemorySwap"] = memory


def apply_pids(
    profile: Profile,
    res: dict[str, Any],
    field: str,
    facts: NodeFacts,
    *,
    update: bool = False,
    key: str = "PidsLimit",
) -> None:
    """Default and cap ``PidsLimit`` (``key``). Absent or null: the profile's default
    (on update: no change). Negative, or 0 on update, is dockerd's "unlimited":
    refused where the profile has a maximum. 0 on create is how older clients say
    "not set". The maximum is the profile's number or its share of the node's tasks,
    whichever is lower."""
    top = cap_max(profile, profile.pids.max, profile.pids.max_share, facts.tasks_max)
    pids = res.get(key)
    if pids is None or (pids == 0 and not update):
        if update:
            return
        if profile.pids.default:
            default = int(profile.pids.default)
            res[key] = min(default, int(top)) if top else default
        pids = res.get(key) or 0
    if not isinstance(pids, int | float):
        return  # the schema check refuses a non-number
    if pids <= 0 and top:
        raise Denied(
            profile, "an unlimited number of processes", field, int(pids), f"at most {int(top)}"
        )
    if top and pids > top:
        share = ""
        if profile.pids.max_share and facts.tasks_max:
            share = (
                f" ({profile.pids.max_share * 100:g}% of the {facts.tasks_max} processes "
                "this node can run, resources.pids.max)"
            )
        raise Denied(profile, "this many processes", field, pids, f"at most {int(top)}{share}")


def container_cpus(res: dict[str, Any]) -> float:
    if res.get("NanoCpus"):
        return int(res["NanoCpus"]) / NANO
    quota = int(res.get("CpuQuota") or 0)
    if quota > 0:
        return quota / int(res.get("CpuPeriod") or 100_000)
    return 0.0


def apply_cpus(
    profile: Profile, res: dict[str, Any], facts: NodeFacts, field: str, *, update: bool = False
) -> None:
    cap = cap_max(profile, profile.cpus.max, profile.cpus.max_share, facts.ncpu)
    if cap and int(res.get("CpuQuota") or 0) < 0:
        # A negative quota is "no limit" to the kernel (and to docker update).
        raise Denied(profile, "an unlimited CPU quota", field, res["CpuQuota"], f"at most {cap:g}")
    cpus = container_cpus(res)
    if cpus <= 0 and not update and profile.cpus.default:
        # Never more than the node has: dockerd refuses that (and it limits nothing).
        cpus = min(profile.cpus.default, facts.ncpu) if facts.ncpu else profile.cpus.default
        period = int(res.get("CpuPeriod") or 0)
        if period > 0:
            # dockerd takes no NanoCpus beside a period (--cpu-period alone): the same
            # limit as a quota of that period.
            res["CpuQuota"] = int(cpus * period)
        else:
            res["NanoCpus"] = int(cpus * NANO)
    if cap and cpus > cap:
        raise Denied(profile, "this many CPUs", field, f"{cpus:g}", f"at most {cap:g}")


STOP_WAIT_MAX = 300  # seconds a container may ask dockerd (or Swarm) to wait at stop


def check_stop_wait(profile: Profile, value: Any, unit: int, field: str) -> None:
    """A container's own stop timeout, or a service's grace period (``unit``: 1 for
    seconds, 10**9 for nanoseconds). Negative is "wait for ever": dockerd's stop, its
    own shutdown (it waits for the longest timeout) and Swarm's task removal, scaling
    and node drain would hang on one user's container until systemd kills dockerd."""
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int):
        raise Denied(profile, "this stop timeout", field, value, "a whole number")
    if value < 0:
        why = "a negative one never ends: dockerd and Swarm wait for the container for ever"
    elif value > STOP_WAIT_MAX * unit:
        why = f"not {value / unit:g} s: dockerd's own shutdown waits for the longest"
    else:
        return
    shown = value if unit == 1 else f"{value / unit:g}s" if value > 0 else f"{value}ns"
    raise Denied(profile, "this stop timeout", field, shown, f"0 to {STOP_WAIT_MAX} s ({why})")


HEALTH_INTERVAL_MIN = NANO  # nanoseconds between two health probes, at the least


def check_healthcheck(profile: Profile, health: Any, field: str, *, image: bool = False) -> None:
    """Each health probe is an exec that dockerd and containerd run, outside the
    container's CPU limit and the gate's exec cap: an ``Interval`` of 1 ms (dockerd's
    minimum) keeps them busy back to back, for every replica. At most one probe a
    second; 0 is dockerd's default (30 s, 5 s while starting); negative too, which
    dockerd refuses in a request but not in an image (its monitor then waits no time).
    A disabled check (``Test: ["NONE"]``) probes nothing, unless it describes an
    ``image``: a container or task that sets only a ``Test`` of its own takes the
    image's intervals."""
    if not isinstance(health, dict) or (health.get("Test") == ["NONE"] and not image):
        return
    for key in ("Interval", "StartInterval"):
        value = health.get(key)
        if type(value) is int and value != 0 and value < HEALTH_INTERVAL_MIN:
            raise Denied(
                profile,
                "health checks more often than once a second",
                f"{field}.{key}",
                f"{value / 1e6:g}ms" if value > 0 else f"{value}ns",
                "an interval of 1s or more (0: dockerd's default, 30s)",
            )


def check_inherited_healthcheck(
    profile: Profile, own: Any, image: Any, field: str, *, into_image: bool = False
) -> None:
    """dockerd takes each health check setting a container (a service's task, a
    commit) leaves at zero from its image's (the committed container's) ``HEALTHCHECK``,
    which a build may have set to ``--interval=1ms``: the merged check must pass as the
    request's own does (``into_image``: the result is an image, see above)."""
    if not isinstance(image, dict) or not image:
        return
    own = own if isinstance(own, dict) else {}
    merged = {k: own.get(k) or image.get(k) for k in ("Test", "Interval", "StartInterval")}
    check_healthcheck(profile, merged, field, image=into_image)


# Log drivers that write files on the node's disk, with their own rotation options.
FILE_LOG_DRIVERS = frozenset({"json-file", "local"})

LOCAL_DEFAULT_FILES = 5  # the local driver's max-file when none is given

LOCAL_DEFAULT_SIZE = 20 << 20  # and its max-size


def capped_log_options(
    profile: Profile, driver: str, options: Any, field: str
) -> dict[str, Any] | None:
    """The options of a file log driver within the profile's caps, ``max-size`` filled
    in when missing (json-file's default is to keep everything: a chatty container
    fills the node's disk, outside every cgroup); None when nothing changes.

    Docker reads these sizes in decimal units (``100m`` = 10^8 bytes) and the gate
    in binary ones: a value that passes is never larger than the gate thought."""
    if driver not in FILE_LOG_DRIVERS or profile.admin:
        return None
    opts = dict(options) if isinstance(options, dict) else {}
    changed = False
    cap, files_cap = profile.log_max_size, profile.log_max_files
    if cap is not None:
        size_text = opts.get("max-size")
        if size_text in (None, ""):
            # The local driver keeps 20m files by default: set only to be smaller.
            if driver == "json-file" or cap < LOCAL_DEFAULT_SIZE:
                opts["max-size"] = human(cap)
                changed = True
        else:
            try:
                size = parse_size(size_text)
            except ValueError:
                size = -1
            if not 0 < size <= cap:
                raise Denied(
                    profile, "logs this large", f"{field}.max-size", size_text,
                    f"at most {human(cap)} per file (resources.logs.max_size)",
                )  # fmt: skip
    if files_cap is not None:
        files_text = opts.get("max-file")
        if files_text in (None, ""):
            if driver == "local" and files_cap < LOCAL_DEFAULT_FILES:
                opts["max-file"] = str(files_cap)
                changed = True
        else:
            try:
                files = int(str(files_text))
            except ValueError:
                files = -1
            if not 0 < files <= files_cap:
                raise Denied(
                    profile, "this many log files", f"{field}.max-file", files_text,
                    f"at most {files_cap} (resources.logs.max_files)",
                )  # fmt: skip
    return opts if changed else None


def check_oom_score_adj(profile: Profile, value: Any, field: str) -> None:
    """A negative score makes the kernel kill the node's own processes before the
    container's (the OOM that took a manager down killed the wrong things)."""
    if value is None:
        return
    if not isinstance(value, int) or isinstance(value, bool):
        raise Denied(profile, "this OOM score", field, value, "a whole number")
    if value < profile.oom_score_adj_min:
        raise Denied(
            profile,
            "shielding the container from the OOM killer",
            field,
            value,
            f"at least {profile.oom_score_adj_min}",
        )


# The ulimit names dockerd knows (go-units' ParseUlimit).
DOCKER_ULIMITS = frozenset(
    {
        "core", "cpu", "data", "fsize", "locks", "memlock", "msgqueue", "nice",
        "nofile", "nproc", "rss", "rtprio", "rttime", "sigpending", "stack",
    }
)  # fmt: skip


def check_ulimits(profile: Profile, ulimits: Any, field: str) -> None:
    """Each ulimit must be allowed by the profile, soft and hard at most its maximum
    (Docker's -1 is unlimited, so it exceeds every finite maximum)."""
    if profile.ulimits is None or not ulimits:
        return
    if not isinstance(ulimits, list):
        raise Denied(profile, "these ulimits", field, ulimits, "a list of {Name, Soft, Hard}")
    for i, entry in enumerate(ulimits):
        here = f"{field}[{i}]"
        if not isinstance(entry, dict):
            raise Denied(profile, "these ulimits", here, entry, "{Name, Soft, Hard}")
        name = str(entry.get("Name") or "")
        if name not in profile.ulimits:
            allowed = ", ".join(sorted(profile.ulimits)) or "none"
            # The rule names only ulimits Docker knows: it labels the refusal in the
            # audit summary and the metrics, where a made-up name per request would be a
            # new series each time (round 32a); the message still shows the name.
            what = f"the {name} ulimit" if name in DOCKER_ULIMITS else "this ulimit"
            raise Denied(profile, what, here, name, f"allowed: {allowed}")
        top = profile.ulimits[name]
        if top == UNLIMITED:
            continue
        for part in ("Soft", "Hard"):
            value = entry.get(part)
            if value is None:
                continue
            if not isinstance(value, int) or isinstance(value, bool):
                raise Denied(profile, "these ulimits", f"{here}.{part}", value, "a whole number")
            if value < 0 or value > top:
                shown = "unlimited" if value < 0 else value
                raise Denied(
                    profile, f"this {name} ulimit", f"{here}.{part}", shown, f"at most {top}"
                )
