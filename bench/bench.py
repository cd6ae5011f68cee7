#!/usr/bin/env python3
"""Benchmark the gate against the daemon's own socket and against HAProxy (issue 8).

One run, on this machine: starts a private dockerd (or uses --docker-host), the gate
from this repository and HAProxy configured like Tecnativa's docker-socket-proxy,
measures every scenario on the three sides in alternating rounds, prints a table of
absolute figures and side/direct ratios with the targets of issue 8, and writes JSON
for comparison between commits. Needs root (dockerd, SO_PEERCRED identities).

    .venv/bin/python bench/bench.py              # full run, about 6 minutes
    .venv/bin/python bench/bench.py --quick      # smoke run, under a minute
    .venv/bin/python bench/bench.py --compare A.json B.json

See bench/README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import linecache
import os
import platform
import resource
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import asdict, replace
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import httpload as h
import scenarios as sc
from harness import REPO, VENV_BIN, Harness, MachineLoad, SetupError, log

GROUPS = ("ping", "list", "inspect", "run", "bulk", "idle")


# -- run -------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.compare:
        return compare(Path(args.compare[0]), Path(args.compare[1]))
    if args.summarise_profile:
        src = Path(args.gate_src) if args.gate_src else REPO
        summary = summarise_stacks(Path(args.summarise_profile).read_text(), src=src)
        summary.update(file=args.summarise_profile, rps_while_profiled=0.0)
        print(render_profile(summary))
        return 0
    if os.geteuid() != 0:
        print("bench.py needs root (it starts dockerd and reads peer credentials)", file=sys.stderr)
        return 2
    _raise_fd_limit()
    signal.signal(signal.SIGTERM, _terminate)
    # Also when started with SIGINT ignored (a background job of a script).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    profile = sc.QUICK if args.quick else sc.FULL
    if args.rounds:
        profile = replace(profile, rounds=args.rounds, idle_rounds=min(args.rounds, 3))
    if args.procs:
        profile = replace(profile, load_procs=args.procs)
    only = set(args.only.split(",")) if args.only else set(GROUPS)
    if unknown := only - set(GROUPS):
        print(f"unknown --only group(s): {', '.join(sorted(unknown))}", file=sys.stderr)
        return 2

    started = time.time()
    git = git_info(args.gate_ref)
    harness = Harness(Path(args.workdir), docker_host=args.docker_host)
    if args.gate_ref:
        harness.gate_src = export_ref(git["gate_sha"], Path(args.workdir))
    have_uvloop = importlib.util.find_spec("uvloop") is not None
    if args.gate_loop == "uvloop" and not have_uvloop:
        print("--gate-loop uvloop: uvloop is not installed in the venv", file=sys.stderr)
        return 2
    harness.gate_loop = args.gate_loop
    # The loop the gate runs on ("auto" is uvloop when the venv has it, as for users).
    git["gate_loop"] = (
        args.gate_loop if args.gate_loop != "auto" else ("uvloop" if have_uvloop else "asyncio")
    )
    report: dict[str, Any] = {}
    try:
        harness.start()
        ctx = make_context(harness, profile)
        load = MachineLoad(sorted(set(ctx.pids.values())))
        run_groups(ctx, only)
        report["machine_load"] = load.result()
        if args.profile_gate:
            src = harness.gate_src or REPO
            report["gate_profile"] = profile_gate(
                ctx, args.profile_gate, args.json_out, src, args.profile_load
            )
        report.update(build_report(ctx, harness, profile, git, started, args, sorted(only)))
    except KeyboardInterrupt:
        log("interrupted: stopping everything the benchmark started")
        return 130
    except SetupError as exc:
        log(f"setup failed: {exc}")
        for logfile in harness.log_files:
            with contextlib.suppress(OSError):
                tail = logfile.read_text(errors="replace").splitlines()[-15:]
                log(f"--- {logfile} (last lines)\n" + "\n".join(tail))
        return 1
    finally:
        harness.close()

    print(render_table(report))
    out = json_path(args.json_out, git, started)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, indent=1) + "\n")
        log(f"wrote {out}")
    return 0


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="short smoke run (< 1 min)")
    ap.add_argument("--rounds", type=int, help="rounds per scenario (default 5, quick 1)")
    ap.add_argument("--procs", type=int, help="load-generator processes (default 2)")
    ap.add_argument(
        "--docker-host",
        help="unix:///path of an existing daemon to use instead of a private dockerd",
    )
    ap.add_argument(
        "--workdir",
        default="/var/tmp/dgbench",
        help="sockets, logs, dockerd data (kept between runs: the image is reused)",
    )
    ap.add_argument(
        "--gate-ref",
        help="benchmark dockergate/ as committed at this git ref (default: the work tree)",
    )
    ap.add_argument(
        "--gate-loop",
        choices=("auto", "asyncio", "uvloop"),
        default="auto",
        help="the gate's event_loop setting (default auto: uvloop, a dependency, as users run it)",
    )
    ap.add_argument("--only", help=f"comma-separated groups among {','.join(GROUPS)}")
    ap.add_argument(
        "--profile-gate",
        type=float,
        metavar="SECONDS",
        help="afterwards, py-spy the gate under the 16-connection _ping load",
    )
    ap.add_argument(
        "--profile-load",
        choices=sorted(PROFILE_LOADS),
        default="ping",
        help="the load --profile-gate samples under (default ping; the list and inspect "
        "loads need the list or inspect group in --only, which makes their containers)",
    )
    ap.add_argument(
        "--json-out",
        default="auto",
        help="JSON result file; 'auto' = bench/results/<UTC time>-<short sha>.json, '' = none",
    )
    ap.add_argument("--compare", nargs=2, metavar="JSON", help="compare two result files")
    ap.add_argument("--summarise-profile", metavar="RAW", help="summarise a py-spy raw stacks file")
    ap.add_argument("--gate-src", help=argparse.SUPPRESS)  # source root for --summarise-profile
    return ap.parse_args(argv)


def _terminate(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def _raise_fd_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = hard if hard != resource.RLIM_INFINITY else 65536
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))


def make_context(harness: Harness, profile: sc.Profile) -> sc.Context:
    s = harness.sides()
    member: sc.Side | None = None
    note = harness.member_error
    if note is None:
        side = sc.Side("member", s.gate, harness.member_uid)
        try:
            status, body = h.run_as(side.uid, h.api, s.gate, "GET", "/_ping")
            if status == 200:
                member = side
            else:
                note = f"the member's _ping got {status} {body[:160]!r}"
        except (h.BenchError, OSError) as exc:
            note = f"the member's _ping failed: {exc}"
    if note:
        log(f"member scenarios: {sc.MEMBER_NA} ({note})")
    removed = h.remove_labelled(s.direct)
    if removed:
        log(f"removed {removed} containers left by an earlier run")
    return sc.Context(
        profile=profile,
        direct=sc.Side("direct", s.direct),
        gate=sc.Side("gate", s.gate),
        haproxy=sc.Side("haproxy", s.haproxy),
        null=sc.Side("null", s.null),
        member=member,
        member_note=None if member else sc.MEMBER_NA,
        member_detail=note,
        workdir=harness.workdir,
        pids={name: h.peer_pid(path) for name, path in s.as_dict().items()},
    )


def run_groups(ctx: sc.Context, only: set[str]) -> None:
    p = ctx.profile
    if "ping" in only:
        sc.ping(ctx)
    if only & {"list", "inspect"}:
        sc.setup_member_containers(ctx)
    if "list" in only:
        for count, samples in zip(p.list_counts, p.list_samples, strict=True):
            sc.fill_containers(ctx, count)
            sc.containers_list(ctx, count, samples)
    if "inspect" in only:
        sc.fill_containers(ctx, p.list_counts[0])
        sc.inspect_by_name(ctx, len(h.labelled(ctx.direct.path)))
    if "run" in only:
        sc.docker_run(ctx)
    if "bulk" in only:
        sc.bulk(ctx)
    if "idle" in only:
        sc.idle_streams(ctx)


# -- gate source -----------------------------------------------------------------------


def _git(*args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(REPO), *args], check=True, capture_output=True, text=True
    ).stdout.strip()


def git_info(ref: str | None) -> dict[str, Any]:
    info: dict[str, Any] = {}
    try:
        info["head"] = _git("rev-parse", "HEAD")
        info["head_short"] = _git("rev-parse", "--short", "HEAD")
        if ref:
            info["gate_source"] = f"git archive {ref}"
            info["gate_sha"] = _git("rev-parse", f"{ref}^{{commit}}")
            info["short"] = _git("rev-parse", "--short", info["gate_sha"])
            info["dirty"] = False
        else:
            info["gate_source"] = "work tree"
            info["gate_sha"] = info["head"]
            info["short"] = info["head_short"]
            info["dirty"] = bool(_git("status", "--porcelain", "--", "dockergate"))
    except (OSError, subprocess.CalledProcessError) as exc:
        if ref:
            raise SystemExit(f"--gate-ref {ref}: {exc}") from exc
        info.update(gate_source="work tree", short="nogit", dirty=None)
    return info


def export_ref(sha: str, workdir: Path) -> Path:
    """The tree as committed at ``sha`` (dockergate/ and the policies/ etc. it reads),
    unpacked beside the run with git archive (read-only for the repository)."""
    dest = workdir / f"src-{sha[:12]}"
    if not (dest / "dockergate" / "__init__.py").exists():
        dest.mkdir(parents=True, exist_ok=True)
        archive = subprocess.Popen(["git", "-C", str(REPO), "archive", sha], stdout=subprocess.PIPE)
        subprocess.run(["tar", "-x", "-C", str(dest)], stdin=archive.stdout, check=True)
        if archive.wait() != 0:
            raise SystemExit(f"git archive {sha} failed")
    return dest


# -- profiling -------------------------------------------------------------------------


# What --profile-load runs: (request, connections, as the member?).
PROFILE_LOADS: dict[str, tuple[bytes, int, bool]] = {
    "ping": (sc.PING, 16, False),
    "list-admin": (sc.LIST_ALL, 4, False),
    "list-member": (sc.LIST_ALL, 4, True),
    "inspect-admin": (h.request_bytes("GET", "/containers/dgbench-c-0000/json"), 1, False),
    "inspect-member": (h.request_bytes("GET", "/containers/dgbench-m-000/json"), 1, True),
}


def profile_gate(
    ctx: sc.Context, seconds: float, json_out: str, src: Path, load_name: str = "ping"
) -> dict[str, Any]:
    """py-spy the gate while one of PROFILE_LOADS runs; summarise the stacks."""
    request, conns, as_member = PROFILE_LOADS[load_name]
    uid = None
    if as_member:
        if ctx.member is None:
            return {"error": f"--profile-load {load_name}: no member ({ctx.member_detail})"}
        uid = ctx.member.uid
    pyspy = VENV_BIN / "py-spy"
    exe = str(pyspy) if pyspy.exists() else shutil.which("py-spy")
    if exe is None:
        log("--profile-gate: py-spy missing (pip install -r bench/requirements.txt)")
        return {"error": "py-spy missing"}
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    base = Path(json_out).parent if json_out not in ("", "auto") else REPO / "bench" / "results"
    base.mkdir(parents=True, exist_ok=True)
    raw = base / f"{stamp}-gate-{load_name}.pyspy.txt"
    pid = ctx.pids["gate"]
    log(f"profiling the gate (pid {pid}) for {seconds:.0f}s under the {load_name} load")
    spy = subprocess.Popen(
        [exe, "record", "--pid", str(pid), "--rate", "50", "--duration", str(int(seconds)),
         "--format", "raw", "--output", str(raw)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    time.sleep(1.0)
    load = h.throughput(ctx.gate.path, request, conns, seconds, warmup=0, uid=uid)
    _, err = spy.communicate(timeout=60)
    if spy.returncode != 0 or not raw.exists():
        return {"error": f"py-spy failed: {err.decode(errors='replace')[-500:]}"}
    summary = summarise_stacks(raw.read_text(), src=src)
    summary.update(file=str(raw), rps_while_profiled=load.rps, seconds=seconds, load=load_name)
    return summary


def summarise_stacks(text: str, top: int = 20, src: Path = REPO) -> dict[str, Any]:
    """Self and inclusive sample shares from py-spy's collapsed stacks; the deepest
    dockergate/ line of each sample is shown with its source text (read from ``src``
    now, so summarise right after the run while the tree is the one profiled)."""
    selfs: Counter[str] = Counter()
    incl: Counter[str] = Counter()
    lines: Counter[str] = Counter()  # the deepest dockergate/ line of each sample
    total = other_threads = 0
    for line in text.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        if stack.startswith("Thread._bootstrap"):
            # Worker threads (asyncio.to_thread): mostly an idle queue wait that
            # py-spy counts as active; the event loop runs in the main thread.
            other_threads += n
            continue
        total += n
        raw_frames = stack.split(";")
        frames = [_frame(f) for f in raw_frames]
        selfs[frames[-1]] += n
        for name in set(frames):
            incl[name] += n
        for raw_frame in reversed(raw_frames):
            if "dockergate/" in raw_frame:
                lines[raw_frame[raw_frame.index("dockergate/") :].rstrip(")")] += n
                break
    if not total:
        return {"samples": 0}

    def share(counter: Counter[str], keep: bool = False) -> list[tuple[str, float]]:
        items = [(k, v) for k, v in counter.items() if not keep or "dockergate/" in k]
        items.sort(key=lambda kv: -kv[1])
        return [(k, round(100 * v / total, 1)) for k, v in items[:top]]

    def with_source(where: str) -> str:
        path, _, lineno = where.rpartition(":")
        code = linecache.getline(str(src / path), int(lineno)) if lineno.isdigit() else ""
        return f"{where}  {code.strip()}" if code else where

    return {
        "samples": total,
        "other_thread_samples": other_threads,
        "self_pct": share(selfs),
        "inclusive_dockergate_pct": share(incl, keep=True),
        "deepest_dockergate_line_pct": [(with_source(k), v) for k, v in share(lines)],
    }


def _frame(frame: str) -> str:
    """'func (path/to/file.py:123)' -> 'func (file path from the package, no line)'."""
    name, _, where = frame.partition(" (")
    path = where.rstrip(")").rsplit(":", 1)[0]
    for marker in ("/dockergate/", "/asyncio/", "/python3.11/"):
        if marker in path:
            path = marker.strip("/") + "/" + path.split(marker, 1)[1]
            break
    return f"{name} ({path})"


# -- report ----------------------------------------------------------------------------


def machine_info() -> dict[str, Any]:
    info: dict[str, Any] = {
        "kernel": platform.release(),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "loadavg_at_start": os.getloadavg(),
    }
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
    with contextlib.suppress(OSError):
        mem = Path("/proc/meminfo").read_text().splitlines()[0].split()[1]
        info["mem_gib"] = round(int(mem) / (1 << 20), 1)
    return info


def build_report(
    ctx: sc.Context,
    harness: Harness,
    profile: sc.Profile,
    git: dict[str, Any],
    started: float,
    args: argparse.Namespace,
    groups: list[str],
) -> dict[str, Any]:
    return {
        "schema": 1,
        "started": datetime.fromtimestamp(started, UTC).isoformat(timespec="seconds"),
        "seconds": round(time.time() - started, 1),
        "git": git,
        "machine": machine_info(),
        "versions": harness.versions(),
        "daemon": args.docker_host or "private dockerd",
        "profile": asdict(profile),
        "groups": groups,
        "member": {
            "available": ctx.member is not None,
            "note": ctx.member_note,
            "detail": ctx.member_detail,
            "filter": ctx.member_filter,
        },
        "calibration": ctx.calibration,
        "rows": [row.as_json() for row in ctx.rows],
    }


def _fmt(value: float | None, unit: str) -> str:
    if value is None:
        return "n/a"
    if unit in ("req/s", "MiB/s", "fds", "us"):
        return f"{value:,.0f}"
    if unit in ("ms", "s"):
        return f"{value:.3f}" if value < 10 else f"{value:.1f}"
    if unit == "MiB":
        return f"{value:.1f}"
    return f"{value:.2f}"


def _ratio_cell(row: dict[str, Any], side: str) -> str:
    ratio = row["ratios"].get(side)
    verdict = row["verdicts"].get(side)
    cell = "-" if ratio is None else f"{ratio:.2f}"
    return f"{cell} {verdict}" if verdict else cell


def _side_cell(row: dict[str, Any], side: str) -> str:
    if side in row["errors"] and row["values"].get(side) is None:
        return "error*"
    if row["note"] and side == "gate":
        return str(row["note"])
    if row["note"]:
        return "-"
    return _fmt(row["values"].get(side), row["unit"])


def render_table(report: dict[str, Any]) -> str:
    g, m = report["git"], report["machine"]
    dirty = " (dirty)" if g.get("dirty") else ""
    lines = [
        "",
        f"dockergate bench — {report['started']} — gate {g.get('gate_source')} "
        f"{g.get('short')}{dirty}"
        + f" on {g.get('gate_loop', 'asyncio')}"
        + f" — {report['profile']['name']} run, "
        f"{report['profile']['rounds']} rounds, {report['seconds']:.0f}s",
        f"machine: {m.get('cpu', '?')}, {m.get('cpus')} CPUs, {m.get('mem_gib')} GiB, "
        f"Linux {m.get('kernel')}, Python {m.get('python')}; "
        + ", ".join(f"{k} {v}" for k, v in report["versions"].items()),
    ]
    busy = report.get("machine_load") or {}
    if busy:
        lines.append(
            f"other work on the machine during the scenarios: {busy['others_pct_of_machine']}% "
            f"of its CPUs (steal {busy['steal_pct']}%)"
        )
    cal = report.get("calibration") or {}
    if cal.get("loadgen_ceiling_rps"):
        lines.append(
            f"load generator ceiling (HAProxy static 200, {cal['conns']} conns, "
            f"{cal['procs']} procs): {cal['loadgen_ceiling_rps']:,.0f} req/s"
        )
    lines += [
        "",
        "| scenario | unit | direct | gate | gate/direct | target | haproxy | haproxy/direct |",
        "|---|---|---:|---:|---:|---|---:|---:|",
    ]
    footnotes: list[str] = []
    for row in report["rows"]:
        target = row["target"]["text"] if row["target"] else ""
        lines.append(
            f"| {row['label']} | {row['unit']} | {_side_cell(row, 'direct')} | "
            f"{_side_cell(row, 'gate')} | {_ratio_cell(row, 'gate')} | {target} | "
            f"{_side_cell(row, 'haproxy')} | {_ratio_cell(row, 'haproxy')} |"
        )
        for side, err in row["errors"].items():
            note = f"* {row['label']} — {side}: {err}"
            if note not in footnotes:
                footnotes.append(note)
    lines.append("")
    member = report.get("member") or {}
    if member.get("note"):
        lines.append(f"member rows {member['note']}: {member.get('detail')}")
    elif member.get("filter"):
        lines.append(
            "member rows: direct = dockerd applying the gate's owner filter itself "
            f"(filters={member['filter']}); haproxy has no users"
        )
    lines += footnotes
    prof = report.get("gate_profile")
    if isinstance(prof, dict) and prof.get("samples"):
        lines += ["", render_profile(prof)]
    return "\n".join(lines)


def render_profile(prof: dict[str, Any]) -> str:
    lines = [
        f"gate profile under the {prof.get('load', 'ping')} load ({prof['samples']} "
        "main-thread samples, "
        f"{prof.get('other_thread_samples', 0)} in worker threads left out; "
        + (f"{rps:,.0f} req/s while sampled; " if (rps := prof.get("rps_while_profiled")) else "")
        + f"{prof['file']}):"
    ]
    for title, key in (
        ("self time", "self_pct"),
        ("inclusive, dockergate/ frames", "inclusive_dockergate_pct"),
        ("deepest dockergate/ line per sample, callees included", "deepest_dockergate_line_pct"),
    ):
        lines.append(f"  {title}:")
        lines += [f"    {pct:5.1f}%  {name}" for name, pct in prof[key][:15]]
    return "\n".join(lines)


def json_path(option: str, git: dict[str, Any], started: float) -> Path | None:
    if option == "":
        return None
    if option != "auto":
        return Path(option)
    stamp = datetime.fromtimestamp(started, UTC).strftime("%Y%m%dT%H%M%SZ")
    dirty = "-dirty" if git.get("dirty") else ""
    loop = "-asyncio" if git.get("gate_loop") == "asyncio" else ""
    name = f"{stamp}-{git.get('short', 'nogit')}{dirty}{loop}.json"
    return REPO / "bench" / "results" / name


def compare(old_path: Path, new_path: Path) -> int:
    """Side-by-side gate/direct (and haproxy/direct) ratios of two result files."""
    old, new = (json.loads(p.read_text()) for p in (old_path, new_path))
    old_rows = {r["key"]: r for r in old["rows"]}
    print(f"old: {old_path.name} ({old['git'].get('short')})")
    print(f"new: {new_path.name} ({new['git'].get('short')})")
    print("| scenario | unit | gate old | gate new | gate/direct old | new | haproxy/direct new |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for row in new["rows"]:
        prev = old_rows.get(row["key"])
        if prev is None:
            continue

        def r(x: dict[str, Any], side: str) -> str:
            v = x["ratios"].get(side)
            return "-" if v is None else f"{v:.2f}"

        print(
            f"| {row['label']} | {row['unit']} | {_fmt(prev['values'].get('gate'), row['unit'])}"
            f" | {_fmt(row['values'].get('gate'), row['unit'])} | {r(prev, 'gate')} |"
            f" {r(row, 'gate')} | {r(row, 'haproxy')} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
