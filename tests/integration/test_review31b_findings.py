"""Review round 31b: a fuzz campaign against the JSON bodies of the inspected routes, as
a member and an intern over the gate's unix socket (shipped profiles, dockerd 20.10,
a Swarm manager).

The campaign (a throw-away fuzzer, not kept): 4557 mutated requests from bodies the
docker CLI sends (container create with HostConfig, Mounts, Binds, NetworkingConfig,
Healthcheck, Labels; container update; exec create; service create and update with
TaskTemplate, Resources, Placement, Mode, Update/RollbackConfig, Networks,
EndpointSpec; volume, network, secret and config create; commit bodies), each with
one to three mutations (null, booleans, numbers around 2**31/2**32/2**53/2**63/2**64,
floats, 1e308, long, NUL, lone-surrogate and Kelvin/long-s strings, arrays for
objects and back, wrapped values, deleted, renamed, case- and Unicode-folded keys,
raw duplicate and fold-duplicate keys, unknown keys) and 7 % byte-level damage (BOM,
invalid UTF-8, truncation, trailing data). Every 2xx object was inspected on the
daemon against the profile (owner label, privileged, host namespaces, caps, devices,
binds, memory/CPU/pids defaults and caps, swap, health-check floor, stop timeout, log
cap, intern placement, ports, sysctls, start-first...). Answers: 3181 gate 400s, 262
gate 403s, 1 gate 409, 931 2xx, 143 dockerd 4xx, 39 dockerd 5xx; no 500 from the
gate (no "internal error" in its log), no hang, no connection dropped without an
answer, no created object outside the profile. Besides, ~140 hand-written container
bodies, 36 commit ``changes`` lines and 17 transport variants (chunked, trailers,
``Expect: 100-continue``, content types, lengths).

Findings (each ``test_finding_*`` FAILS on the reviewed code, 14cd6b7):

- Low: a JSON ``null`` in a list of strings the gate rewrites is forwarded as the
  string ``"None"`` (Python's ``str(None)``), not as Go's ``""``. ``HostConfig.
  VolumesFrom: [null]`` and ``Links: [null]`` are resolved to the caller's container
  *named* ``None`` and pinned to its ID: dockerd creates a container with that
  container's volumes (or a link to it), where the client's bytes give dockerd's
  400 ("volumes-from specification cannot be an empty string", "empty string
  specified for links"). ``Binds: [null]`` reaches dockerd as ``"None"`` (its 500
  then names ``'None'``, a bind the client never wrote). Only the caller's own
  containers can be named, so no escape, but what is forwarded is not what the client
  sent nor what was validated as such (``api/containers.py check_references`` and
  ``own_anonymous_volumes``: ``str(entry)``; the schema lets ``null`` items of
  ``[str]`` lists through, ``schema.py _walk``).

Held (``test_works_*``): key spellings (lower case, Kelvin sign, long s, a NUL or a
space appended), duplicate and fold-duplicate keys at nested levels, unknown keys,
wrong JSON types at every level, out-of-int64 numbers, floats for integers, lone
surrogate escapes, invalid UTF-8, a BOM, trailing data and nesting past 64 levels are
a ``dockergate:`` 400 naming the field; odd values on create (negative memory and
CPUs, zero pids, a null owner label, a null log config) get the profile's defaults
and the owner label; a chunked or ``Expect: 100-continue`` body is inspected like any
other; an intern's service with a tab-spelled ``node.role==manager`` constraint still
gets ``node.role==worker``.

Checked and left alone (dockerd's own answers): dockerd answers 500 for what its Go
decoder or runc refuses (``BlkioWeight`` -1 or 2**31 into a uint16, ``ConsoleSize``
-1, ``TmpfsOptions.Mode`` 2**40, ``Isolation`` other than default,
``IOMaximumBandwidth``, ``docker update`` of ``CpuShares`` 1 or 999999 and of
``NanoCpus`` under 0.01 CPU, a ``Volumes`` key with a NUL); the gate's int64 schema
cannot tell unsigned fields. ``commit`` with ``changes=LABEL
com.docker.swarm.service.id=x`` makes an image every container create from it is then
refused for (the gate refuses the label at create, not at the commit).
``NetworkingConfig.EndpointsConfig: {"host": {}}`` with the default network mode gives
a container of its own network namespace (only ``lo``), not the host's.

Only ``busybox``; loopback only; one module gate; one container and one service kept
briefly.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import Gate, api_as, policies_gate, remove_owned

pytestmark = pytest.mark.timeout(90)

MEMBER, INTERN = "r31b-m", "r31b-i"
OWNER = "dockergate.owner"
GIB = 1 << 30


def _rand() -> str:
    return uuid.uuid4().hex[:6]


@pytest.fixture(scope="module")
def g31(session_dir: Path, docker_host: str) -> Iterator[Gate]:
    with policies_gate(session_dir, docker_host) as g:
        yield g


@pytest.fixture(scope="module")
def people(g31, unix_user, direct_client) -> Iterator[dict[str, Any]]:
    m, i = unix_user("r31bm"), unix_user("r31bi")
    g31.dockergate("user", "add", MEMBER, "--profile", "member", "--uid", str(m.uid))
    g31.dockergate("user", "add", INTERN, "--profile", "intern", "--uid", str(i.uid))
    g31.settle()
    yield {"member": m, "intern": i}
    remove_owned(direct_client, MEMBER, INTERN)


def raw_bytes(gate: Gate, user: Any, path: str, body: bytes) -> tuple[int, Any]:
    """A POST whose body is these exact bytes (invalid UTF-8 included), as ``user``."""
    fd, name = tempfile.mkstemp(prefix="r31b-", dir="/tmp")
    try:
        os.write(fd, body)
        os.close(fd)
        os.chmod(name, 0o644)
        argv = ["setpriv", f"--reuid={user.uid}", f"--regid={user.gid}", "--init-groups"]
        argv += ["curl", "-sS", "--unix-socket", str(gate.socket), "-X", "POST"]
        argv += ["-w", "\n%{http_code}", "-H", "Content-Type: application/json"]
        argv += ["--data-binary", f"@{name}", f"http://gate/v1.41{path}"]
        out = subprocess.run(argv, capture_output=True, text=True, timeout=30).stdout
    finally:
        with contextlib.suppress(OSError):
            os.unlink(name)
    text, _, code = out.rpartition("\n")
    try:
        return int(code), json.loads(text) if text else None
    except ValueError:
        return int(code or 0), text


def message(answer: Any) -> str:
    return str(answer.get("message", "")) if isinstance(answer, dict) else str(answer)


def created_then_removed(direct_client, answer: tuple[int, Any]) -> dict[str, Any] | None:
    """The container dockerd made for a 201 (inspected, then removed), else None."""
    code, body = answer
    if code != 201 or not isinstance(body, dict) or "Id" not in body:
        return None
    found = direct_client.api.inspect_container(body["Id"])
    direct_client.api.remove_container(body["Id"], force=True, v=True)
    return found


@pytest.fixture(scope="module")
def none_container(g31, people, direct_client) -> Iterator[str]:
    """The member's container named ``None`` (with an anonymous volume at /vol)."""
    with contextlib.suppress(Exception):
        direct_client.api.remove_container("None", force=True, v=True)
    code, body = api_as(
        g31,
        people["member"],
        "POST",
        "/containers/create?name=None",
        {"Image": "busybox", "Cmd": ["sleep", "60"], "Volumes": {"/vol": {}}},
    )
    assert code == 201, (code, body)
    yield body["Id"]
    with contextlib.suppress(Exception):
        direct_client.api.remove_container(body["Id"], force=True, v=True)


# ======================================================================== findings


@pytest.mark.parametrize(
    ("field", "dockerd_says"),
    [
        ("VolumesFrom", "volumes-from specification cannot be an empty string"),
        ("Links", "empty string specified for links"),
    ],
)
def test_finding_null_reference_item_is_resolved_as_container_named_None(
    g31, people, none_container, direct_client, field, dockerd_says
):
    """``HostConfig.VolumesFrom: [null]`` (or ``Links: [null]``): Go decodes the item as
    ``""``, which dockerd refuses (``dockerd_says``). The gate's ``check_references``
    reads it as ``str(None)`` = ``"None"``, finds the caller's container of that name
    and forwards its full ID: dockerd creates a container with ``None``'s volumes (or
    a link ``/None:/<name>/None``). Severity: Low (only the caller's own container can
    be named; the created object is not what the client's bytes ask for, against
    "forward what you validated"). Expected: no container made; a ``dockergate:`` 400
    for the null item, or the body forwarded with ``""`` and dockerd's own refusal
    (``dockerd_says``)."""
    answer = api_as(
        g31,
        people["member"],
        "POST",
        "/containers/create",
        data=json.dumps({"Image": "busybox", "Cmd": ["true"], "HostConfig": {field: [None]}}),
    )
    made = created_then_removed(direct_client, answer)
    stored = (made or {}).get("HostConfig", {}).get(field)
    assert made is None, (
        f"{field}: [null] made a container with {field}={stored} (the container named "
        f"None is {none_container[:12]}); dockerd itself answers: {dockerd_says}"
    )
    code, body = answer
    gate_refusal = 400 <= code < 500 and message(body).startswith("dockergate: ")
    assert gate_refusal or dockerd_says in message(body), (code, body)


def test_finding_null_bind_is_forwarded_as_the_string_None(g31, people, direct_client):
    """``HostConfig.Binds: [null]`` reaches dockerd as ``"None"``: its answer (a 500 of
    dockerd 20.10) is about a volume ``'None'`` the client never wrote; with the
    client's bytes dockerd says ``invalid volume specification: ''``. Severity: Low.
    Expected: a ``dockergate:`` 400 for the null item, or dockerd's own answer about
    the empty bind; never a bind named ``None``."""
    answer = api_as(
        g31,
        people["member"],
        "POST",
        "/containers/create",
        data='{"Image":"busybox","Cmd":["true"],"HostConfig":{"Binds":[null]}}',
    )
    made = created_then_removed(direct_client, answer)
    code, body = answer
    assert made is None, (code, body)
    assert "None" not in message(body), (code, body)
    gate_refusal = 400 <= code < 500 and message(body).startswith("dockergate: ")
    assert gate_refusal or "invalid volume specification: ''" in message(body), (code, body)


# ============================================================================= held


REFUSED_BODIES = [
    # (label, raw body, a word the refusal must name)
    ("lower-case key", '{"Image":"busybox","hostconfig":{"Privileged":true}}', "hostconfig"),
    (
        "Kelvin sign",
        '{"Image":"busybox","HostConfig":{"\\u212aernelMemory":1}}',
        "KernelMemory",
    ),
    ("long s", '{"Image":"busybox","HostConfig":{"\\u017fecurityOpt":[]}}', "SecurityOpt"),
    ("NUL in key", '{"Image":"busybox","HostConfig\\u0000":{}}', "unknown field"),
    ("space in key", '{"Image":"busybox","Image ":"x"}', "unknown field"),
    (
        "nested duplicate",
        '{"Image":"busybox","HostConfig":{"Privileged":false,"Privileged":true}}',
        "duplicate",
    ),
    (
        "fold duplicate",
        '{"Image":"busybox","HostConfig":{"Memory":1,"memory":2}}',
        "Memory",
    ),
    (
        "duplicate object",
        '{"Image":"busybox","HostConfig":{},"HostConfig":{"Privileged":true}}',
        "duplicate",
    ),
    ("unknown key", '{"Image":"busybox","Foo":1}', "Foo"),
    ("list for object", '{"Image":"busybox","HostConfig":[]}', "HostConfig"),
    ("object for list", '{"Image":"busybox","Env":{}}', "Env"),
    ("string for int", '{"Image":"busybox","HostConfig":{"Memory":"1g"}}', "Memory"),
    ("float for int", '{"Image":"busybox","HostConfig":{"Memory":1.5}}', "Memory"),
    ("past int64", '{"Image":"busybox","HostConfig":{"Memory":9223372036854775808}}', "range"),
    ("1e400", '{"Image":"busybox","HostConfig":{"Memory":1e400}}', "range"),
    ("NaN", '{"Image":"busybox","HostConfig":{"Memory":NaN}}', "NaN"),
    ("lone surrogate", '{"Image":"busybox","Hostname":"\\ud800"}', "surrogate"),
    ("trailing data", '{"Image":"busybox"} {}', "after the JSON value"),
    ("deep", '{"Image":"busybox","Labels":{"a":"b"},"X":' + "[" * 70 + "]" * 70 + "}", "deeper"),
    ("null item of objects", '{"Image":"busybox","HostConfig":{"Mounts":[null]}}', "null"),
]


def test_works_mutated_bodies_get_a_named_refusal(g31, people):
    """Distilled from the campaign: each mutation is a ``dockergate:`` 400 that names
    what is wrong, before anything reaches dockerd."""
    wrong = {}
    for label, body, word in REFUSED_BODIES:
        code, answer = api_as(g31, people["member"], "POST", "/containers/create", data=body)
        text = message(answer)
        if code != 400 or not text.startswith("dockergate: ") or word not in text:
            wrong[label] = (code, text[:160])
    for label, body in [
        ("invalid UTF-8", b'{"Image":"busy\xffbox"}'),
        ("BOM", b'\xef\xbb\xbf{"Image":"busybox"}'),
        ("overlong NUL", b'{"Image":"busybox","Hostname":"\xc0\x80"}'),
    ]:
        code, answer = raw_bytes(g31, people["member"], "/containers/create", body)
        if code != 400 or not message(answer).startswith("dockergate: "):
            wrong[label] = (code, message(answer)[:160])
    assert not wrong, wrong


def test_works_odd_values_get_the_profile_defaults(g31, people, direct_client):
    """Negative memory and CPUs, zero pids, a null owner label and a null log config:
    the member's container gets the profile's defaults (2g, 4 CPUs, 4096 pids, swap
    pinned, max-size 100m) and their owner label."""
    body = {
        "Image": "busybox",
        "Cmd": ["true"],
        "Labels": {OWNER: None, "a": None},
        "HostConfig": {
            "Memory": -1,
            "NanoCpus": -1,
            "PidsLimit": 0,
            "LogConfig": {"Type": "json-file", "Config": None},
            "Privileged": None,
        },
    }
    answer = api_as(g31, people["member"], "POST", "/containers/create", body)
    made = created_then_removed(direct_client, answer)
    assert made is not None, answer
    host = made["HostConfig"]
    assert made["Config"]["Labels"].get(OWNER) == MEMBER, made["Config"]["Labels"]
    assert (host["Memory"], host["MemorySwap"]) == (2 * GIB, 2 * GIB), host
    assert host["NanoCpus"] > 0 and host["PidsLimit"] == 4096, host
    assert host["LogConfig"]["Config"].get("max-size") == "100m", host["LogConfig"]
    assert host["Privileged"] is False


def test_works_chunked_and_expect_bodies_are_inspected(g31, people):
    """A chunked body and one behind ``Expect: 100-continue`` are read and checked like
    any other (a privileged container refused in both)."""
    m = people["member"]
    body = '{"Image":"busybox","HostConfig":{"Privileged":true}}'
    answers = {}
    for label, headers in [
        ("chunked", ["-H", "Transfer-Encoding: chunked"]),
        ("expect", ["-H", "Expect: 100-continue"]),
    ]:
        argv = ["setpriv", f"--reuid={m.uid}", f"--regid={m.gid}", "--init-groups"]
        argv += ["curl", "-sS", "--unix-socket", str(g31.socket), "-X", "POST", *headers]
        argv += ["-H", "Content-Type: application/json", "--data-binary", body]
        argv += ["-w", "\n%{http_code}", "http://gate/v1.41/containers/create"]
        out = subprocess.run(argv, capture_output=True, text=True, timeout=30).stdout
        text, _, code = out.rpartition("\n")
        answers[label] = (code, text)
    for label, (code, text) in answers.items():
        assert code == "403" and "Privileged" in text, (label, code, text)


def test_works_intern_service_is_kept_off_managers_whatever_the_spelling(
    g31, people, direct_client
):
    """A tab-spelled ``node.role==\\tmanager`` is no exact match for the gate's list of
    manager constraints, but the gate adds ``node.role==worker`` whatever the others
    say: Swarm ANDs them, so the task can only pend, never run on a manager."""
    spec = {
        "Name": f"r31b-svc-{_rand()}",
        "TaskTemplate": {
            "ContainerSpec": {"Image": "busybox", "Command": ["sleep", "60"]},
            "Placement": {"Constraints": ["node.role==\tmanager"]},
        },
        "Mode": {"Replicated": {"Replicas": 0}},
    }
    code, body = api_as(g31, people["intern"], "POST", "/services/create", spec)
    if code == 201:
        stored = direct_client.api.inspect_service(body["ID"])["Spec"]
        direct_client.api.remove_service(body["ID"])
        constraints = stored["TaskTemplate"]["Placement"]["Constraints"]
        assert "node.role==worker" in constraints, constraints
        limits = stored["TaskTemplate"]["Resources"]["Limits"]
        assert 0 < limits["MemoryBytes"] <= 8 * GIB, limits
        assert stored["Labels"].get(OWNER) == INTERN
    else:
        assert code in (400, 403), (code, body)
