"""The scenarios of issue 8, each measured on every side in alternating rounds.

A *side* is a way to reach the daemon: ``direct`` (its own socket), ``gate`` (the
gate's unix socket as root, i.e. admin), ``haproxy`` (the peer) and, once users
exist, ``member`` (the gate's socket from a process running as a registered
non-admin uid). Round ``r`` visits the sides starting at ``r % len(sides)`` so that
drift of the machine (other load, caches, the daemon's growing state) is spread
over all of them alike.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import tarfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from statistics import mean, median
from typing import Any, Literal, TypeVar
from urllib.parse import quote

import httpload as h
from harness import cpu_seconds, fd_count, log, rss_kib

T = TypeVar("T")
MiB = 1 << 20

PING = h.request_bytes("GET", "/_ping")
LIST_ALL = h.request_bytes("GET", "/containers/json?all=1")
MEMBER_OWNED = 10  # containers the member creates through the gate (part of each total)
MEMBER_NA = "n/a: needs users/ownership"
ATTACH_MIB = 16  # dockerd's attach stdin path is slow (~20-40 MiB/s): keep the row short


@dataclass(frozen=True, slots=True)
class Side:
    name: str
    path: str
    uid: int | None = None  # run the client as this uid (the member)


@dataclass(frozen=True, slots=True)
class Profile:
    """How long to measure; ``full`` fits in about 10 minutes, ``quick`` in one."""

    name: str
    rounds: int
    ping_seconds: float
    ping_samples: int
    list_counts: tuple[int, int]
    list_seconds: float
    list_samples: tuple[int, int]  # 1-connection samples per side and round, per count
    inspect_samples: int
    runs_per_round: int
    bulk_mib: int
    bulk_reps: int
    idle_streams: int
    idle_rounds: int
    idle_samples: int
    ping_conns: int = 16
    list_conns: int = 4
    load_procs: int = 2


FULL = Profile(
    name="full",
    rounds=5,
    ping_seconds=3.0,
    ping_samples=2000,
    list_counts=(40, 1000),
    list_seconds=2.0,
    list_samples=(300, 20),
    inspect_samples=1000,
    runs_per_round=3,
    bulk_mib=64,
    bulk_reps=2,
    idle_streams=500,
    idle_rounds=3,
    idle_samples=2000,
)

QUICK = Profile(
    name="quick",
    rounds=1,
    ping_seconds=1.0,
    ping_samples=300,
    list_counts=(40, 200),
    list_seconds=1.0,
    list_samples=(50, 10),
    inspect_samples=300,
    runs_per_round=1,
    bulk_mib=64,
    bulk_reps=1,
    idle_streams=100,
    idle_rounds=1,
    idle_samples=300,
)

SIDES = ("direct", "gate", "haproxy")


# -- targets and rows ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Target:
    """A target of issue 8, on the ratio side/direct or on the gate's absolute value."""

    kind: Literal["ratio_min", "ratio_max", "abs_max", "peer"]
    value: float = 0.0
    source: str = ""  # the wording, when it was converted

    def text(self) -> str:
        if self.kind == "ratio_min":
            return f">= {self.value:g}"
        if self.kind == "ratio_max":
            return f"<= {self.value:g}"
        if self.kind == "abs_max":
            return f"<= {self.value:g} abs"
        return ">= haproxy/direct"


@dataclass
class Row:
    key: str  # stable across runs: compare JSON files by it
    label: str
    unit: str
    better: Literal["higher", "lower"]
    values: dict[str, float | None] = field(default_factory=dict)
    rounds: dict[str, list[float]] = field(default_factory=dict)
    target: Target | None = None
    ratio: bool = True  # False: side/direct means nothing (RSS of different programs)
    note: str | None = None  # why the row is n/a
    errors: dict[str, str] = field(default_factory=dict)

    def ratio_of(self, side: str) -> float | None:
        value, base = self.values.get(side), self.values.get("direct")
        if not self.ratio or value is None or not base:
            return None
        return value / base

    def verdict(self, side: str) -> str | None:
        t = self.target
        if t is None:
            return None
        if t.kind == "abs_max":
            value = self.values.get(side)
            return None if value is None else ("PASS" if value <= t.value else "MISS")
        ratio = self.ratio_of(side)
        if ratio is None:
            return None
        if t.kind == "ratio_min":
            ok = ratio >= t.value
        elif t.kind == "ratio_max":
            ok = ratio <= t.value
        else:
            if side != "gate":
                return None
            peer = self.ratio_of("haproxy")
            if peer is None:
                return None
            ok = ratio >= peer
        return "PASS" if ok else "MISS"

    def as_json(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "label": self.label,
            "unit": self.unit,
            "better": self.better,
            "values": self.values,
            "ratios": {s: self.ratio_of(s) for s in ("gate", "haproxy")},
            "target": None
            if self.target is None
            else {
                "kind": self.target.kind,
                "value": self.target.value,
                "text": self.target.text(),
                "source": self.target.source,
            },
            "verdicts": {s: self.verdict(s) for s in ("gate", "haproxy")},
            "rounds": self.rounds,
            "note": self.note,
            "errors": self.errors,
        }


# -- running sides in rounds -----------------------------------------------------------


class Alternation:
    """Calls ``fn(side)`` for every side in every round, rotating the order.

    A side that fails is recorded with its error and skipped in later rounds; the
    others go on, so one broken path does not cost the whole run.
    """

    def __init__(self, sides: list[Side], rounds: int) -> None:
        self.sides = sides
        self.rounds = rounds
        self.errors: dict[str, str] = {}

    def run(self, what: str, fn: Callable[[Side], T]) -> dict[str, list[T]]:
        out: dict[str, list[T]] = {s.name: [] for s in self.sides}
        errors: dict[str, str] = {}
        for r in range(self.rounds):
            k = r % len(self.sides)
            for side in self.sides[k:] + self.sides[:k]:
                if side.name in errors:
                    continue
                try:
                    out[side.name].append(fn(side))
                except (h.BenchError, OSError, ValueError, subprocess.SubprocessError) as exc:
                    errors[side.name] = f"{type(exc).__name__}: {exc}"
                    log(f"{what}: {side.name} failed: {errors[side.name]}")
                    if os.environ.get("DGBENCH_TRACE"):
                        traceback.print_exc()
        self.errors = errors
        return out


def _member_row(row: Row, member_values: dict[str, float | None], note: str | None) -> Row:
    """The member's variant of ``row``: the gate as a member against the same direct."""
    member = Row(
        key=row.key.replace(".admin.", ".member."),
        label=row.label.replace("(admin)", "(member)"),
        unit=row.unit,
        better=row.better,
        target=row.target,
        note=note,
    )
    if note is None:
        direct = member_values.pop("member_direct", None)
        if direct is None:
            direct = row.values.get("direct")
        member.values = {"direct": direct, **member_values, "haproxy": None}
    else:
        member.values = {s: None for s in SIDES}
    return member


@dataclass
class Context:
    profile: Profile
    direct: Side
    gate: Side
    haproxy: Side
    null: Side  # the load generator's ceiling
    member: Side | None
    member_note: str | None  # MEMBER_NA when the member rows cannot be measured
    member_detail: str | None  # why
    workdir: Path
    pids: dict[str, int]  # the process behind each side's socket
    rows: list[Row] = field(default_factory=list)
    calibration: dict[str, Any] = field(default_factory=dict)
    member_filter: str | None = None  # the owner label filter, to ask dockerd directly

    def sides(self, with_member: bool = False, member_direct: bool = False) -> list[Side]:
        out = [self.direct, self.gate, self.haproxy]
        if with_member and self.member is not None:
            out.append(self.member)
            if member_direct and self.member_filter is not None:
                out.append(Side("member_direct", self.direct.path))
        return out

    def alternation(
        self, with_member: bool = False, rounds: int | None = None, member_direct: bool = False
    ) -> Alternation:
        sides = self.sides(with_member, member_direct)
        return Alternation(sides, rounds or self.profile.rounds)


def _load(ctx: Context, side: Side, request: bytes, conns: int, seconds: float) -> h.Load:
    load = h.throughput(
        side.path, request, conns, seconds, procs=ctx.profile.load_procs, uid=side.uid
    )
    if load.errors:
        raise h.BenchError(f"{load.errors} non-2xx answers: {load.statuses}")
    return load


class CpuLog:
    """CPU time per request of dockerd and of the side's proxy process, per round."""

    def __init__(self) -> None:
        self.dockerd: dict[str, list[float]] = {}
        self.proxy: dict[str, list[float]] = {}

    def load(self, ctx: Context, side: Side, request: bytes, conns: int, seconds: float) -> h.Load:
        proxy_pid = ctx.pids.get("gate" if side.name == "member" else side.name, 0)
        direct = side.path == ctx.direct.path
        watched = [ctx.pids["direct"], 0 if direct else proxy_pid]
        before = [cpu_seconds(pid) for pid in watched]
        load = _load(ctx, side, request, conns, seconds)
        after = [cpu_seconds(pid) for pid in watched]
        used = [(a - b) / max(1, load.total) * 1e6 for a, b in zip(after, before, strict=True)]
        self.dockerd.setdefault(side.name, []).append(used[0])
        if not direct:
            self.proxy.setdefault(side.name, []).append(used[1])
        return load

    def add_rows(self, ctx: Context, key: str, label: str, dockerd: bool = False) -> None:
        rows = [(f"{key}.cpu.proxy", f"{label}: proxy CPU/request", self.proxy, False)]
        if dockerd:
            rows.append((f"{key}.cpu.dockerd", f"{label}: dockerd CPU/request", self.dockerd, True))
        for row_key, row_label, per_side, ratio in rows:
            values = {s: median(per_side[s]) if per_side.get(s) else None for s in SIDES}
            rounds = {s: per_side.get(s, []) for s in SIDES}
            ctx.rows.append(Row(row_key, row_label, "us", "lower", values, rounds, ratio=ratio))


def _latencies(side: Side, request: bytes, count: int, warmup: int = 20) -> list[float]:
    return h.run_as(side.uid, h.latencies, side.path, request, count, warmup)


def _ms(values: list[float], q: float) -> float | None:
    return h.percentile(values, q) * 1000 if values else None


def _pooled(samples: dict[str, list[list[float]]]) -> dict[str, list[float]]:
    return {side: [x for chunk in chunks for x in chunk] for side, chunks in samples.items()}


def _rows_from(
    alt: Alternation,
    key: str,
    label: str,
    unit: str,
    better: Literal["higher", "lower"],
    per_side: dict[str, float | None],
    rounds: dict[str, list[float]],
    target: Target | None,
    ctx: Context,
    member_key: bool,
) -> None:
    admin = {s: per_side.get(s) for s in SIDES}
    row = Row(key, label, unit, better, admin, {s: rounds.get(s, []) for s in SIDES}, target)
    row.errors = {s: e for s, e in alt.errors.items() if s in SIDES}
    ctx.rows.append(row)
    if member_key:
        values = {"gate": per_side.get("member")}
        if "member_direct" in per_side:
            values["member_direct"] = per_side["member_direct"]
        member = _member_row(row, values, ctx.member_note)
        member.rounds = {"gate": rounds.get("member", [])}
        if "member_direct" in rounds:
            member.rounds["direct"] = rounds["member_direct"]
        for side, name in (("member", "gate"), ("member_direct", "direct")):
            if side in alt.errors:
                member.errors[name] = alt.errors[side]
        ctx.rows.append(member)


# -- 1. _ping --------------------------------------------------------------------------


def ping(ctx: Context) -> None:
    p = ctx.profile
    sides = [*ctx.sides(), ctx.null]
    alt = Alternation(sides, p.rounds)
    log(f"_ping: {p.ping_conns} keep-alive connections, {p.rounds} x {p.ping_seconds}s per side")
    cpu = CpuLog()

    def one(side: Side) -> float:
        return cpu.load(ctx, side, PING, p.ping_conns, p.ping_seconds).rps

    rps = alt.run("_ping rps", one)
    ceiling = rps.pop("null", [])
    ctx.calibration = {
        "what": "HAProxy answering 200 itself (http-request return) on a unix socket",
        "conns": p.ping_conns,
        "procs": p.load_procs,
        "loadgen_ceiling_rps": median(ceiling) if ceiling else None,
        "rounds": ceiling,
    }
    alt.errors.pop("null", None)
    _rows_from(
        alt,
        f"ping.rps.c{p.ping_conns}",
        f"_ping rps, {p.ping_conns} conns",
        "req/s",
        "higher",
        {s: median(v) if v else None for s, v in rps.items()},
        rps,
        Target("peer", source="_ping 16 conns >= the HAProxy peer's ratio"),
        ctx,
        member_key=False,
    )
    cpu.add_rows(ctx, "ping", f"_ping {p.ping_conns} conns", dockerd=True)
    alt = ctx.alternation()
    log(f"_ping: latency, 1 connection, {p.rounds} x {p.ping_samples} requests per side")
    lat = _pooled(alt.run("_ping latency", lambda s: _latencies(s, PING, p.ping_samples)))
    target = Target("ratio_max", 2.0, source="_ping latency ratio >= 0.5 (direct/gate)")
    for q in (50, 99):
        _rows_from(
            alt,
            f"ping.p{q}.c1",
            f"_ping p{q} latency, 1 conn",
            "ms",
            "lower",
            {s: _ms(v, q) for s, v in lat.items()},
            {},
            target,
            ctx,
            member_key=False,
        )


# -- 2. containers/json and 3. inspect by name -----------------------------------------


def setup_member_containers(ctx: Context) -> None:
    """The member creates its own containers through the gate (ownership is recorded
    by the gate however it does it); on failure the member rows become n/a."""
    if ctx.member is None:
        return
    names = [f"dgbench-m-{i:03d}" for i in range(MEMBER_OWNED)]
    try:
        h.run_as(ctx.member.uid, h.create_containers, ctx.gate.path, names, ["true"], 4)
    except h.BenchError as exc:
        ctx.member_note = MEMBER_NA
        ctx.member_detail = f"the member's container create through the gate failed: {exc}"
        ctx.member = None
        log(f"member scenarios: {MEMBER_NA} ({ctx.member_detail})")
        return
    # Labels the gate added on create (its owner label): the direct baseline of the
    # member's list is dockerd applying the same filter itself.
    status, body = h.api(ctx.direct.path, "GET", f"/containers/{names[0]}/json")
    labels = json.loads(body).get("Config", {}).get("Labels") or {} if status == 200 else {}
    added = sorted(f"{k}={v}" for k, v in labels.items() if k != h.LABEL)
    if added:
        ctx.member_filter = json.dumps({"label": added})
        log(f"member: the gate labelled its containers {added}; direct baseline filters on it")
    else:
        log("member: no owner label found; the member rows compare with the unfiltered list")


def fill_containers(ctx: Context, total: int) -> None:
    existing = h.labelled(ctx.direct.path)
    admin = sum(1 for c in existing if any(n.startswith("/dgbench-c-") for n in c["Names"]))
    want = total - len(existing)
    if want <= 0:
        return
    names = [f"dgbench-c-{i:04d}" for i in range(admin, admin + want)]
    log(f"creating {want} containers (busybox true) through the direct socket")
    t0 = time.monotonic()
    h.create_containers(ctx.direct.path, names, ["true"])
    log(f"  ... {time.monotonic() - t0:.1f}s; {total} labelled containers now")


def containers_list(ctx: Context, count: int, samples: int) -> None:
    p = ctx.profile
    filtered = LIST_ALL
    if ctx.member_filter is not None:
        filtered = h.request_bytes(
            "GET", f"/containers/json?all=1&filters={quote(ctx.member_filter, safe='')}"
        )

    def request(side: Side) -> bytes:
        return filtered if side.name == "member_direct" else LIST_ALL

    alt = ctx.alternation(with_member=True, member_direct=True)
    log(f"containers/json with {count} containers: rps with {p.list_conns} conns")
    cpu = CpuLog()
    rps = alt.run(
        f"list {count} rps",
        lambda s: cpu.load(ctx, s, request(s), p.list_conns, p.list_seconds).rps,
    )
    _rows_from(
        alt,
        f"list{count}.admin.rps.c{p.list_conns}",
        f"containers/json {count} (admin) rps, {p.list_conns} conns",
        "req/s",
        "higher",
        {s: median(v) if v else None for s, v in rps.items()},
        rps,
        Target("ratio_min", 0.95, source="containers/json >= 0.95 with filtering"),
        ctx,
        member_key=True,
    )
    cpu.add_rows(ctx, f"list{count}", f"containers/json {count}, {p.list_conns} conns")
    alt = ctx.alternation(with_member=True, member_direct=True)
    log(f"containers/json with {count} containers: p50 latency, 1 connection")
    lat = _pooled(alt.run(f"list {count} latency", lambda s: _latencies(s, request(s), samples, 3)))
    _rows_from(
        alt,
        f"list{count}.admin.p50.c1",
        f"containers/json {count} (admin) p50, 1 conn",
        "ms",
        "lower",
        {s: _ms(v, 50) for s, v in lat.items()},
        {},
        None,
        ctx,
        member_key=True,
    )


def inspect_by_name(ctx: Context, count: int) -> None:
    p = ctx.profile
    own = {"member": "dgbench-m-000"}
    alt = ctx.alternation(with_member=True)
    log(f"inspect by name ({count} containers): {p.rounds} x {p.inspect_samples} per side")

    def one(side: Side) -> list[float]:
        name = own.get(side.name, "dgbench-c-0000")
        request = h.request_bytes("GET", f"/containers/{name}/json")
        return _latencies(side, request, p.inspect_samples)

    lat = _pooled(alt.run("inspect", one))
    target = Target("ratio_max", 1.2, source="inspect-by-name <= 1.2x direct latency")
    for q in (50, 99):
        _rows_from(
            alt,
            f"inspect.admin.p{q}.c1",
            f"inspect by name (admin) p{q}, 1 conn",
            "ms",
            "lower",
            {s: _ms(v, q) for s, v in lat.items()},
            {},
            target,
            ctx,
            member_key=True,
        )


# -- 4. docker run through the CLI -----------------------------------------------------


def docker_run(ctx: Context) -> None:
    p = ctx.profile
    config = ctx.workdir / "docker-config"
    config.mkdir(exist_ok=True)
    base = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("DOCKER_") or k in ("DOCKER_API_VERSION",)
    }
    base["DOCKER_CONFIG"] = str(config)  # no contexts or helpers from the caller's ~/.docker

    def one(side: Side) -> list[float]:
        env = {**base, "DOCKER_HOST": f"unix://{side.path}"}
        times = []
        for _ in range(p.runs_per_round):
            t0 = time.perf_counter()
            done = subprocess.run(
                ["docker", "run", "--rm", "busybox", "true"],
                env=env,
                capture_output=True,
                text=True,
                timeout=120,
            )
            times.append(time.perf_counter() - t0)
            if done.returncode != 0:
                raise h.BenchError(f"docker run exited {done.returncode}: {done.stderr.strip()}")
        return times

    log(f"docker run --rm busybox true: {p.rounds} x {p.runs_per_round} per side")
    one(ctx.direct)  # warm the image and the CLI's caches once
    alt = ctx.alternation()
    runs = _pooled(alt.run("docker run", one))
    _rows_from(
        alt,
        "run.mean",
        "docker run --rm busybox true, mean wall",
        "s",
        "lower",
        {s: mean(v) if v else None for s, v in runs.items()},
        runs,
        Target("ratio_max", round(1 / 0.97, 3), source="run lifecycle >= 0.97 (direct/gate)"),
        ctx,
        member_key=False,
    )


# -- 5. bulk streams -------------------------------------------------------------------


def _bulk_container(ctx: Context, size: int) -> str:
    path = ctx.direct.path
    status, body = h.api(
        path,
        "POST",
        "/containers/create?name=dgbench-bulk",
        {"Image": "busybox:latest", "Cmd": ["sleep", "1000000"], "Labels": {h.LABEL: "1"}},
    )
    if status != 201:
        raise h.BenchError(f"create dgbench-bulk: {status} {body[:200]!r}")
    cid = str(json.loads(body)["Id"])
    status, body = h.api(path, "POST", f"/containers/{cid}/start")
    if status not in (204, 304):
        raise h.BenchError(f"start dgbench-bulk: {status} {body[:200]!r}")
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo("big")
        info.size = size
        info.mode = 0o644
        tar.addfile(info, io.BytesIO(os.urandom(1 << 16) * (size >> 16)))
    conn = h.UnixHTTPConnection(path, timeout=120)
    try:
        conn.request("PUT", f"/containers/{cid}/archive?path=/", body=buf.getvalue())
        resp = conn.getresponse()
        resp.read()
        if resp.status != 200:
            raise h.BenchError(f"PUT archive: {resp.status}")
    finally:
        conn.close()
    return cid


def bulk(ctx: Context) -> None:
    p = ctx.profile
    size = p.bulk_mib * MiB
    log(f"bulk: putting a {p.bulk_mib} MiB file in a running busybox container")
    cid = _bulk_container(ctx, size)

    def archive(side: Side) -> list[float]:
        out = []
        for _ in range(p.bulk_reps):
            got, seconds = h.archive_get(side.path, cid, "/big")
            if got < size:
                raise h.BenchError(f"archive body {got} bytes < {size}")
            out.append(got / MiB / seconds)
        return out

    def echo(side: Side) -> list[float]:
        out = []
        for _ in range(p.bulk_reps):
            payload, raw, seconds = h.exec_echo(side.path, cid, size)
            if payload != size:
                raise h.BenchError(f"exec echoed {payload} bytes of {size} ({raw} raw)")
            out.append(payload / MiB / seconds)
        return out

    attach_size = min(size, ATTACH_MIB * MiB)

    def attach(side: Side) -> list[float]:
        name = f"dgbench-attach-{side.name}-{time.monotonic_ns()}"
        other = _cat_container(ctx.direct.path, name)
        try:
            payload, raw, seconds = h.attach_echo(side.path, ctx.direct.path, other, attach_size)
        finally:
            h.api(ctx.direct.path, "DELETE", f"/containers/{other}?force=1")
        if payload != attach_size:
            raise h.BenchError(f"attach echoed {payload} bytes of {attach_size} ({raw} raw)")
        return [payload / MiB / seconds]

    target = Target("ratio_min", 0.9, source="bulk >= 0.9")
    for key, label, fn in (
        ("bulk.archive", f"GET archive, {p.bulk_mib} MiB file", archive),
        ("bulk.exec", f"exec hijack echo {p.bulk_mib} MiB", echo),
        ("bulk.attach", f"attach hijack echo {attach_size // MiB} MiB", attach),
    ):
        log(f"bulk: {label}, {p.rounds} x {p.bulk_reps} per side")
        alt = ctx.alternation()
        rates = _pooled(alt.run(label, fn))
        _rows_from(
            alt,
            key,
            label,
            "MiB/s",
            "higher",
            {s: median(v) if v else None for s, v in rates.items()},
            rates,
            target,
            ctx,
            member_key=False,
        )


def _cat_container(path: str, name: str) -> str:
    """A created (not started) ``cat`` whose stdin closes when the attach ends."""
    status, body = h.api(
        path,
        "POST",
        f"/containers/create?name={name}",
        {
            "Image": "busybox:latest",
            "Cmd": ["cat"],
            "OpenStdin": True,
            "StdinOnce": True,
            "AttachStdin": True,
            "AttachStdout": True,
            "AttachStderr": True,
            "Labels": {h.LABEL: "1"},
        },
    )
    if status != 201:
        raise h.BenchError(f"create {name}: {status} {body[:200]!r}")
    return str(json.loads(body)["Id"])


# -- 6. idle event streams -------------------------------------------------------------


@dataclass(slots=True)
class IdleRound:
    rss0: float  # MiB before the streams
    fds0: float
    rss: float  # MiB with the streams open
    fds: float
    left: float  # fds still open 1 s after the clients closed their streams
    without: list[float]  # _ping latencies (s)
    with_: list[float]


def _idle_round(ctx: Context, side: Side, streams_first: bool) -> IdleRound:
    p = ctx.profile
    pid = ctx.pids[side.name]
    rss0, fds0 = rss_kib(pid) / 1024, float(fd_count(pid))
    rss = fds = left = 0.0
    lat: dict[bool, list[float]] = {}
    for with_streams in (True, False) if streams_first else (False, True):
        if not with_streams:
            lat[False] = _latencies(side, PING, p.idle_samples)
            continue
        streams = h.IdleStreams.open(side.path, p.idle_streams)
        try:
            time.sleep(0.5)
            rss, fds = rss_kib(pid) / 1024, float(fd_count(pid))
            lat[True] = _latencies(side, PING, p.idle_samples)
        finally:
            streams.close()
        time.sleep(1.0)
        left = fd_count(pid) - fds0
        _flush_dead_streams(ctx, pid, fds0)
    return IdleRound(rss0, fds0, rss, fds, left, lat[False], lat[True])


def _flush_dead_streams(ctx: Context, pid: int, fds0: float) -> None:
    """dockerd (and HAProxy in front of it) notice that an idle events client left
    only when the next event is written. Emit one, so that the next measurement
    does not carry this one's dead streams."""
    name = f"dgbench-nudge-{time.monotonic_ns()}"
    h.create_containers(ctx.direct.path, [name], ["true"], workers=1)
    h.api(ctx.direct.path, "DELETE", f"/containers/{name}?force=1")
    deadline = time.monotonic() + 10
    while fd_count(pid) > fds0 + 5 and time.monotonic() < deadline:
        time.sleep(0.1)


def idle_streams(ctx: Context) -> None:
    p = ctx.profile
    n = p.idle_streams
    log(f"{n} idle /events streams per side: RSS, fds, _ping latency meanwhile")
    visits = [0]

    def one(side: Side) -> IdleRound:
        visits[0] += 1  # alternate which phase comes first
        return _idle_round(ctx, side, streams_first=visits[0] % 2 == 0)

    alt = ctx.alternation(rounds=p.idle_rounds)
    res = alt.run("idle streams", one)

    def per_round(get: Callable[[IdleRound], float]) -> dict[str, list[float]]:
        return {s: [get(r) for r in rs] for s, rs in res.items()}

    def pooled_p99(get: Callable[[IdleRound], list[float]]) -> dict[str, float | None]:
        return {s: _ms([x for r in rs for x in get(r)], 99) for s, rs in res.items()}

    without = pooled_p99(lambda r: r.without)
    with_ = pooled_p99(lambda r: r.with_)
    effect: dict[str, float | None] = {}
    for s in res:
        a, b = with_.get(s), without.get(s)
        effect[s] = a / b if a is not None and b else None

    def add(
        key: str,
        label: str,
        unit: str,
        values: dict[str, float | None],
        rounds: dict[str, list[float]],
        target: Target | None = None,
        ratio: bool = False,
    ) -> None:
        row = Row(key, label, unit, "lower", values, rounds, target, ratio=ratio)
        row.errors = dict(alt.errors)
        ctx.rows.append(row)

    def summary(
        get: Callable[[IdleRound], float], agg: Callable[[list[float]], float]
    ) -> tuple[dict[str, float | None], dict[str, list[float]]]:
        rounds = per_round(get)
        return {s: agg(v) if v else None for s, v in rounds.items()}, rounds

    add("idle.rss0", "idle: process RSS before", "MiB", *summary(lambda r: r.rss0, min))
    add(
        "idle.rss",
        f"idle: process RSS, {n} streams",
        "MiB",
        *summary(lambda r: r.rss, max),
        Target("abs_max", 150.0, source="500 idle streams <= 150 MB RSS"),
    )
    add("idle.fds", f"idle: process fds, {n} streams", "fds", *summary(lambda r: r.fds, max))
    add(
        "idle.fds_left",
        "idle: fds left 1 s after clients closed",
        "fds",
        *summary(lambda r: r.left, max),
    )
    p99_rounds = per_round(lambda r: h.percentile(r.without, 99) * 1000)
    add(
        "idle.p99_without", "idle: _ping p99 without streams", "ms", without, p99_rounds, None, True
    )
    p99_rounds = per_round(lambda r: h.percentile(r.with_, 99) * 1000)
    add("idle.p99_with", f"idle: _ping p99 with {n} streams", "ms", with_, p99_rounds, None, True)
    add(
        "idle.p99_effect",
        "idle: _ping p99 with/without",
        "x",
        effect,
        {},
        Target("abs_max", 1.2, source="no effect on other requests' p99 (<= 1.2x)"),
    )
