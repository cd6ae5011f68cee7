"""Review round 30a: the very last fixes (953d7c5, 7a5fde9, 8a70571) attacked quickly.

Findings (each ``test_finding_*`` FAILS on the reviewed code, a06412a):

- Medium: a stage's own ``HEALTHCHECK CMD true`` (no ``--interval``) over an
  admin's fast-check image builds (200) an image probing every 100 ms:
  ``dockerfile.healthcheck_covered`` counts any HEALTHCHECK as replacing the
  base's whole check, but the classic builder fills the line's zero intervals from
  the base's (as commit does, which 29a fixed for commit only). Both
  ``FROM fast AS a`` / ``HEALTHCHECK CMD true`` / ``FROM a`` and the single stage
  ``FROM fast`` / ``HEALTHCHECK CMD true``. 29a's ``test_works`` used
  ``--interval=2s``, which hides it.
- Low: ``dockergate check`` counts a service's ``deploy.replicas`` as 1 unless the
  YAML value is already an int: ``replicas: ${REPLICAS}`` (interpolated to the
  *string* "11") and ``replicas: 11.0`` pass an intern's check ("ok"), while
  ``docker stack deploy`` casts both to 11 and the gate refuses the service
  (quota.containers 10). ``policy/compose.py:quota_violations``.
- Low: ``dockergate check`` dies with a traceback on a service whose ``deploy:``
  is not a mapping (``deploy: x``): ``host_config`` (older) and the new
  ``quota_violations`` call ``.get`` on it. Expected: a "value" violation.
- Low: ``user token`` and ``user cert`` change the store (a new credential the gate
  only accepts once it reaches that revision) but print no store revision, while
  the other user commands now do (8a70571, ``cli/user_cmd.py:applies``).

Held (``test_works_*``): ``changes`` with two HEALTHCHECK lines, the last ``NONE``,
commits an image with ``NONE``; a member's container and service from a fast-check
image are refused at create; ``deploy.mode: replicated-job`` counts its replicas
in ``check``.

One module gate on a copy of the shipped profiles, an intern and a member as unix
users; no running containers; only ``busybox``; loopback only.
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from tests.helpers import Gate, admin_image, dockergate_argv, policies_gate, remove_owned
from tests.helpers import api_as as api
from tests.integration.test_review28a_findings import build, image_health

pytestmark = pytest.mark.timeout(120)

INTERN = "r30a-i"
MEMBER = "r30a-m"
FAST = 100 * 10**6  # 100 ms in nanoseconds
SERVICE = "  {}:\n    image: busybox\n    command: sleep 600\n"


def _rand() -> str:
    return uuid.uuid4().hex[:6]


@pytest.fixture(scope="module")
def g30(session_dir: Path, docker_host: str) -> Iterator[Gate]:
    with policies_gate(session_dir, docker_host) as g:
        yield g


def dg(g: Gate, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``dockergate --state-dir <gate's> ARGS`` as root, with ``env`` added."""
    full = {k: v for k, v in os.environ.items() if not k.startswith(("DOCKER_", "DOCKERGATE_"))}
    full["DOCKERGATE_UPSTREAM"] = g.upstream
    full.update(env or {})
    argv = [*dockergate_argv(), "--state-dir", str(g.state_dir), *args]
    return subprocess.run(
        argv, env=full, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60
    )


@pytest.fixture(scope="module")
def people(g30: Gate, unix_user, direct_client) -> Iterator[dict[str, Any]]:
    out = {}
    for short, name, profile in (("r30ai", INTERN, "intern"), ("r30am", MEMBER, "member")):
        u = unix_user(short)
        r = dg(g30, "user", "add", name, "--profile", profile, "--uid", str(u.uid))
        assert r.returncode == 0, r.stderr
        out[name] = u
    g30.settle()
    yield out
    remove_owned(direct_client, INTERN, MEMBER)
    for image in direct_client.images.list():
        for tag in image.tags:
            if tag.startswith("r30a-"):
                with contextlib.suppress(Exception):
                    direct_client.images.remove(tag, force=True)


def write_stack(g: Gate, name: str, text: str) -> Path:
    """In a directory the test users can read (pytest's tmp_path is root's 0700)."""
    d = Path(g.socket).parent / "stacks"
    d.mkdir(exist_ok=True)
    d.chmod(0o755)
    path = d / name
    path.write_text(text)
    path.chmod(0o644)
    return path


@pytest.fixture(scope="module")
def fast_image(direct_client, people) -> str:
    """An admin's image (as a registry's could be) probing every 100 ms."""
    health = {"Healthcheck": {"Test": ["CMD", "true"], "Interval": FAST}}
    tag = admin_image(direct_client, f"r30a-{_rand()}/fast:1", health)
    return tag


# ======================================================================== findings


def test_finding_check_counts_interpolated_or_float_replicas_as_one(cli, g30, people):
    """Low. ``policy/compose.py:quota_violations`` takes ``deploy.replicas`` only when
    it is a YAML int (``count if isinstance(count, int) ... else 1``). But
    ``check_file`` interpolates ``${VAR}`` first, which leaves the *string* "11", and
    ``docker stack deploy`` casts an interpolated replicas to an int (and decodes
    ``11.0`` as 11). Steps: as intern (quota.containers 10), ``REPLICAS=11 docker
    stack deploy -c s.yml`` with ``replicas: ${REPLICAS}``: the gate refuses
    (quota.containers); ``REPLICAS=11 dockergate check --profile intern s.yml``:
    "ok", exit 0. Same for ``replicas: 11.0``. Expected: exit 1 naming
    quota.containers ("11 tasks"). Fix: read replicas as docker's loader does (an
    integral float, a string of digits after interpolation) and report a value that
    is neither as a violation instead of counting 1."""
    env = {"R30A_REPLICAS": "11"}
    var = write_stack(g30, "var.yml", "services:\n" + SERVICE.format("app") + (
        "    deploy:\n      replicas: ${R30A_REPLICAS}\n"
    ))  # fmt: skip
    flt = write_stack(g30, "float.yml", "services:\n" + SERVICE.format("app") + (
        "    deploy:\n      replicas: 11.0\n"
    ))  # fmt: skip
    for path, stack in ((var, "r30a-var"), (flt, "r30a-flt")):
        argv = ["stack", "deploy", "-c", str(path), stack]
        r = cli(argv, user=people[INTERN], gate=g30, env=env)
        # The gate's verdict: the CLI asked for 11 tasks.
        assert r.returncode != 0 and "quota.containers" in r.stderr, (path.name, r.stderr)
    verdicts = {
        p.name: dg(g30, "check", "--profile", "intern", str(p), env=env) for p in (var, flt)
    }
    for name, r in verdicts.items():
        assert r.returncode == 1 and "quota.containers" in r.stdout, (name, r.stdout, r.stderr)


def test_finding_check_traceback_on_a_deploy_that_is_not_a_mapping(g30, people):
    """Low. ``dockergate check --profile intern`` on a service with ``deploy: x``
    prints a Python traceback (AttributeError: 'str' object has no attribute 'get')
    instead of a violation: ``policy/compose.py:host_config`` (``(service.get(
    "deploy") or {}).get("resources")``) raises past ``check_file``'s ``except
    ValueError``, and the new ``quota_violations`` does the same
    (``deploy.get("mode")``). Expected: exit 1 with a "value" violation for the
    service (``docker stack deploy`` refuses the file: "deploy must be a mapping").
    Fix: refuse a non-mapping ``deploy`` (and ``resources``/``limits``) with
    ValueError in host_config; skip such services in quota_violations."""
    bad = write_stack(g30, "bad.yml", "services:\n" + SERVICE.format("app") + "    deploy: x\n")
    r = dg(g30, "check", "--profile", "intern", str(bad))
    assert "Traceback" not in r.stderr, r.stderr[-400:]
    assert r.returncode == 1 and "violation" in r.stdout, (r.stdout, r.stderr[-300:])


def test_finding_token_and_cert_print_no_store_revision(g30, people, tmp_path):
    """Low. 8a70571 has user commands print the store revision of their change
    (README: health shows "the store revision the gate applies: a ``dockergate user
    ...`` change is in force once it is reached"), but ``user token`` and ``user
    cert`` (which add a credential the gate refuses until it reaches that revision)
    print none. Expected: both say ``store revision N`` like ``user add`` (on
    stderr, the token alone staying on stdout). Fix: ``cli/user_cmd.py`` ``token``
    and ``cert``: ``applies(store)`` inside ``opened`` and print it with the rest."""
    said = dg(g30, "user", "disable", MEMBER)
    assert re.search(r"store revision \d+", said.stdout), said.stdout  # the fixed ones do
    dg(g30, "user", "enable", MEMBER)
    token = dg(g30, "user", "token", MEMBER)
    out = tmp_path / "bundle"
    cert = dg(g30, "user", "cert", MEMBER, "--out", str(out))
    assert token.returncode == 0 and cert.returncode == 0, (token.stderr, cert.stderr)
    assert re.search(r"store revision \d+", token.stdout + token.stderr), token.stderr
    assert re.search(r"store revision \d+", cert.stdout + cert.stderr), cert.stderr


# ============================================================================ works


def test_finding_own_healthcheck_without_interval_keeps_the_fast_bases_interval(
    g30, people, fast_image, direct_client
):
    """Medium. api/dockerfile.py ``healthcheck_covered`` (and its caller
    api/images.py ``check_dockerfile``) take a stage's own HEALTHCHECK as replacing
    the base's *whole* check, but the classic builder fills the fields the line
    leaves at zero from the base image's check (the step's container is created
    from the base: dockerd's ``merge`` of image config, as for a commit). Steps, as
    a member: build ``FROM fast AS a`` / ``HEALTHCHECK CMD true`` / ``FROM a`` (fast:
    an admin's image with ``Interval`` 100 ms), and ``FROM fast`` / ``HEALTHCHECK CMD
    true``. Got: 200 both, and both images have ``{"Test": ["CMD-SHELL", "true"],
    "Interval": 100000000}``, the image 29a's first finding (Medium) was about.
    Expected: 403 naming the base's HEALTHCHECK (as ``FROM fast`` alone is), or an
    image without the 100 ms interval. Fix: count a stage's HEALTHCHECK as covering
    its base only when its last one is ``NONE`` or sets ``--interval`` (the value is
    checked by ``refuse_fast_healthchecks``); otherwise check the base's check, or
    check own-over-base with ``check_inherited_healthcheck`` as commit does."""
    alias, one = f"r30a-{_rand()}/alias:1", f"r30a-{_rand()}/one:1"
    texts = {
        alias: f"FROM {fast_image} AS a\nHEALTHCHECK CMD true\nFROM a\n",
        one: f"FROM {fast_image}\nHEALTHCHECK CMD true\n",
    }
    got = {}
    for tag, text in texts.items():
        code, answer = build(g30, people[MEMBER], text, tag)
        got[tag] = (code, answer[-200:], image_health(direct_client, tag))
    for tag, (code, answer, health) in got.items():
        assert code == 403 or (health or {}).get("Interval") != FAST, (tag, code, answer, health)


def test_works_commit_changes_last_healthcheck_none(g30, people, direct_client):
    """Two HEALTHCHECK lines in ``changes``, the last ``NONE``: committed (201) and the
    image's check is ``NONE`` (dockerd applies them in order)."""
    name = f"r30a-c-{_rand()}"
    code, _ = api(g30, people[MEMBER], "POST", f"/containers/create?name={name}",
                  {"Image": "busybox", "Cmd": ["true"]})  # fmt: skip
    assert code == 201
    repo = f"r30a-{_rand()}/none"
    query = "&".join(
        f"changes={quote(c)}" for c in ("HEALTHCHECK --interval=5s CMD true", "HEALTHCHECK NONE")
    )
    code, answer = api(
        g30, people[MEMBER], "POST", f"/commit?container={name}&repo={repo}&tag=1&{query}", {}
    )
    assert code == 201, answer
    assert (image_health(direct_client, f"{repo}:1") or {}).get("Test") == ["NONE"]


def test_works_create_from_an_image_with_a_fast_check_is_refused(g30, people, fast_image):
    """The image's check is read at create: a member's container and service from
    the fast image are refused (403 naming its HEALTHCHECK.Interval)."""
    c = api(g30, people[MEMBER], "POST", "/containers/create",
            {"Image": fast_image, "Cmd": ["true"]})  # fmt: skip
    spec = {"Name": f"r30a-s-{_rand()}", "TaskTemplate": {"ContainerSpec": {"Image": fast_image}}}
    s = api(g30, people[MEMBER], "POST", "/services/create", spec)
    for code, answer in (c, s):
        assert code == 403 and "HEALTHCHECK.Interval" in str(answer), (code, answer)


def test_works_check_counts_replicated_job(g30, people):
    """``deploy.mode: replicated-job`` with ``replicas: 11`` (the CLI's MaxConcurrent)
    is past an intern's quota.containers in ``check``."""
    job = write_stack(g30, "job.yml", "services:\n" + SERVICE.format("job") + (
        "    deploy:\n      mode: replicated-job\n      replicas: 11\n"
    ))  # fmt: skip
    r = dg(g30, "check", "--profile", "intern", str(job))
    assert r.returncode == 1 and "11 tasks" in r.stdout, r.stdout
