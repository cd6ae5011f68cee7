"""Review round 28b: the day's diff (1426eba..4441449) read as a demanding reviewer
would before merging (correctness, consistency, names, layering, hot path).

Findings (each ``test_finding_*`` FAILS on the reviewed code, 4441449):

- Low: ``dockergate check`` dies with a Python traceback on an infinite YAML
  duration. ``policy/compose.py duration_ns`` takes a YAML number as seconds with
  ``int(value * 10**9)``; for ``.inf`` (or ``1.0e+400``) that raises
  ``OverflowError``, which ``check_file`` does not catch (it catches ``ValueError``
  around ``healthcheck()`` and the ``stop_grace_period`` reading): ``healthcheck:
  interval: .inf`` or ``stop_grace_period: .inf`` ends the command with
  ``OverflowError: cannot convert float infinity to integer`` instead of a violation
  line and exit 1 (``.nan`` does give a violation: ``int(nan)`` is a ValueError).

Held (``test_works_*``): the offline check reads compose durations as the gate does
(``1s`` and ``1m30s`` pass; ``999ms``, ``999999μs`` and ``5m1s`` are reported, naming
the field; ``disable: true`` and ``test: [NONE]`` with a fast interval pass; ``.nan``
is a violation, not a crash).

Reviewed, not reproduced as a behaviour bug here (see the round's report): the
checks.py split (function by function, AST-compared: only the new health-check
calls, ``_cap_max``/``_ranges`` renamed and the ReplicatedJob defaults changed),
``parse_duration`` against Go's ``time.ParseDuration`` line by line, ruff and mypy
clean on dockergate/.

No gate and no containers: the command runs on a fresh state dir (the shipped
profiles), so the module takes a few seconds.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.helpers import dockergate_argv

pytestmark = pytest.mark.timeout(60)

STACK = "version: '3.8'\nservices:\n  app:\n    image: busybox\n    command: sleep 600\n"
HEALTH = "    healthcheck:\n      test: [CMD, 'true']\n      interval: {}\n"


def check(tmp_path: Path, stack: str, name: str = "stack.yml") -> subprocess.CompletedProcess[str]:
    """``dockergate check --profile member`` of one stack file, on a state dir of its
    own (no running gate: the shipped profiles)."""
    path = tmp_path / name
    path.write_text(stack, encoding="utf-8")
    argv = [*dockergate_argv(), "--state-dir", str(tmp_path / "state")]
    argv += ["check", "--profile", "member", str(path)]
    return subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)


# ========================================================================= findings


def test_finding_check_dies_on_an_infinite_duration(tmp_path):
    """``interval: .inf`` and ``stop_grace_period: .inf`` are YAML floats; the
    checker's "a number is seconds" reading multiplies and converts to int, which
    raises OverflowError for infinity, and nothing catches it. Severity: Low (the
    offline checker is for CI pipelines: a traceback instead of its report).
    Expected: each file reported as a violation ("not a duration"), exit 1, no
    traceback."""
    for i, extra in enumerate(
        (HEALTH.format(".inf"), "    stop_grace_period: .inf\n", HEALTH.format("1.0e+400"))
    ):
        r = check(tmp_path, STACK + extra, f"inf{i}.yml")
        out = r.stdout + r.stderr
        assert "Traceback" not in out and r.returncode == 1, out
        assert "not a duration" in out or "violation" in out, out


# ============================================================================ works


def test_works_check_reads_compose_durations_as_the_gate(tmp_path):
    """What passes and what is reported, field by field, as the gate would decide
    (1 s health-check floor; stop grace period 0 to 300 s); ``.nan`` is a violation."""
    passing = {
        "one-second": HEALTH.format("1s"),
        "grace-90s": "    stop_grace_period: 1m30s\n",
        "disabled": "    healthcheck:\n      disable: true\n      interval: 10ms\n",
        "none": "    healthcheck:\n      test: [NONE]\n      interval: 10ms\n",
    }
    reported = {
        "fast": (HEALTH.format("999ms"), "healthcheck.Interval"),
        "greek-mu": (HEALTH.format("999999\u03bcs"), "healthcheck.Interval"),
        "grace-301s": ("    stop_grace_period: 5m1s\n", "stop_grace_period"),
        "nan": ("    stop_grace_period: .nan\n", "violation"),
    }
    for name, extra in passing.items():
        r = check(tmp_path, STACK + extra, f"{name}.yml")
        assert r.returncode == 0 and "ok:" in r.stdout, (name, r.stdout, r.stderr)
    for name, (extra, field) in reported.items():
        r = check(tmp_path, STACK + extra, f"{name}.yml")
        assert r.returncode == 1 and field in r.stdout, (name, r.stdout, r.stderr)
        assert "Traceback" not in r.stderr, (name, r.stderr)
