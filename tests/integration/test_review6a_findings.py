"""Findings of review round 6a (a member's classic build: meta ARGs, base-image
ONBUILD triggers, and commit). Every attack here succeeded on 126df34.

They reuse the build-check gate and profile (tests/integration/test_build_checks.py:
registries docker.io and 127.0.0.1:9) and raw requests as members; a daemon-side
fetch is proven with an HTTP server on 127.0.0.1 inside the private dockerd's
network namespace (tests/integration/test_review3_findings.py).
"""

from __future__ import annotations

import contextlib
import json
import urllib.parse
import uuid

import pytest

from tests.integration import test_build_checks as bc
from tests.integration.test_hostile import Raw
from tests.integration.test_review3_findings import daemon_loopback_server
from tests.integration.test_review4a_findings import assert_no_fetch, built, raw_build

bgate, people, images, ctxdir = bc.bgate, bc.people, bc.images, bc.ctxdir
__all__ = ["daemon_loopback_server"]

pytestmark = pytest.mark.timeout(180)


def _rand() -> str:
    return uuid.uuid4().hex[:8]


# --------------------------------------------------------------- ARG names are expanded


def test_meta_arg_names_are_expanded_by_dockerd(bgate, people, images, daemon_loopback_server):
    """dockerd's ``processMetaArg`` runs ``ArgCommand.Expand``, which expands the
    *name* of each ARG as well as its value (``ProcessWord(v.Key)``): ``ARG
    IMG$NOPE=...`` declares ``IMG`` (``$NOPE`` is unset, so empty). The gate's
    ``meta_args`` records the name as written (``IMG$NOPE``, not plain, so None) and
    keeps ``IMG=busybox`` from the line above; ``unsure`` only looks for quotes and
    escapes. So the gate checks ``FROM busybox`` while dockerd builds ``FROM
    127.0.0.1:<port>/evil:1``: a pull from a registry outside the profile's list, of
    an image not on the engine whose ONBUILD triggers nobody read."""
    port, hits = daemon_loopback_server
    df = f"ARG IMG=busybox\nARG IMG$NOPE=127.0.0.1:{port}/evil:1\nFROM $IMG\nRUN true\n"
    r = raw_build(bgate, people, images, df)
    assert_no_fetch(r, hits)
    assert r.status == 403 or not built(r), r.body[-300:]


def test_meta_arg_name_from_another_arg(bgate, people, images, daemon_loopback_server):
    """Same, with the name spelt by an earlier ARG's value (``ARG K=IMG`` then
    ``ARG ${K}=...``)."""
    port, hits = daemon_loopback_server
    df = (
        f"ARG K=IMG\nARG IMG=busybox\nARG ${{K}}=127.0.0.1:{port}/evil:1\nFROM ${{IMG}}\nRUN true\n"
    )
    r = raw_build(bgate, people, images, df)
    assert_no_fetch(r, hits)
    assert r.status == 403 or not built(r), r.body[-300:]


# --------------------------------------------------------------- ONBUILD triggers


def test_trigger_with_a_byte_order_mark(bgate, people, images, daemon_loopback_server):
    """dockerd stores ``ONBUILD \\ufeffADD http://... /loot`` as the trigger
    ``\\ufeffADD http://...`` (an unknown instruction to the base build's parser and
    to the gate: its keyword is ``\\ufeffadd``), and a child build parses *each*
    trigger with ``parser.Parse`` on its own, which strips a byte-order mark from the
    first line: the trigger is ``ADD http://...`` there, and dockerd fetches it. The
    gate reads a base's triggers as one text (``"\\n".join(triggers)``): the BOM is
    only stripped from the first trigger, so with any trigger before it the ADD stays
    hidden."""
    port, hits = daemon_loopback_server
    base = raw_build(
        bgate,
        people,
        images,
        f"FROM busybox\nONBUILD RUN true\nONBUILD \ufeffADD http://127.0.0.1:{port}/latest/meta-data /loot\n",
    )
    if not built(base):  # refused at the base: secure
        return
    child = raw_build(bgate, people, images, f"FROM {base.tag}\nRUN cat /loot\n")  # type: ignore[attr-defined]
    assert_no_fetch(child, hits)
    assert child.status == 403 or not built(child), child.body[-300:]


@pytest.fixture
def containers(direct_client):
    made: list[str] = []
    yield made
    for cid in made:
        with contextlib.suppress(Exception):
            direct_client.containers.get(cid).remove(force=True)


def _container(raw: Raw, containers) -> str:
    r = raw.request("POST", "/v1.41/containers/create", {"Image": "busybox", "Cmd": ["true"]})
    assert r.status == 201, (r.status, r.body)
    cid = json.loads(r.body)["Id"]
    containers.append(cid)
    return cid


def _commit(raw: Raw, cid: str, repo: str, changes=(), body=None):
    query = urllib.parse.urlencode(
        [("container", cid), ("repo", repo), ("tag", "1")] + [("changes", c) for c in changes]
    )
    return raw.request("POST", f"/v1.41/commit?{query}", body if body is not None else {})


def test_triggers_are_parsed_one_by_one(bgate, people, images, containers, daemon_loopback_server):
    """A commit's body config goes into the image as it is (the gate only stamps its
    labels), ``OnBuild`` included, so a member can give an image any trigger
    strings. The gate reads them joined by newlines as one Dockerfile, where a first
    trigger ending in the escape character continues into the next: ``["RUN true
    \\\\", "ADD http://... /loot"]`` is one RUN to the gate. dockerd parses each
    trigger alone (``dispatchTriggeredOnBuild``) and fetches the ADD in any build
    FROM that image."""
    port, hits = daemon_loopback_server
    raw = Raw(str(bgate.socket), people["bcann"].uid)
    cid = _container(raw, containers)
    repo = f"dgt-r6a-{_rand()}"
    images.append(f"{repo}:1")
    triggers = ["RUN true \\", f"ADD http://127.0.0.1:{port}/latest/meta-data /loot"]
    r = _commit(raw, cid, repo, body={"OnBuild": triggers})
    if r.status != 201:  # refused at the commit: secure
        return
    child = raw_build(bgate, people, images, f"FROM {repo}:1\nRUN cat /loot\n")
    assert_no_fetch(child, hits)
    assert child.status == 403 or not built(child), child.body[-300:]


# --------------------------------------------------------------- commit changes


@pytest.mark.parametrize(
    "changes",
    [
        ["ENV A=1\nLABEL dockergate.owner=bc-bcann dockergate.built-by=bc-bcbob"],
        ["# escape=`", "LABEL a=b `", "dockergate.owner=bc-bcann dockergate.built-by=bc-bcbob"],
    ],
    ids=["newline-in-a-change", "escape-directive-across-changes"],
)
def test_changes_cannot_write_gate_labels(
    bgate, people, images, containers, direct_client, changes
):
    """``check_changes`` looks at each ``changes`` value alone, and for labels only
    at its first word; dockerd joins them all with newlines and parses the result as
    one Dockerfile (``BuildFromConfig``), applied over the body's (stamped) labels.
    A change ``ENV A=1\\nLABEL dockergate.owner=...`` starts with ENV; or ``# escape=```
    makes the backtick continue ``LABEL a=b ``` into the next change, which does not
    start with LABEL. Either way the committed image carries a forged
    ``dockergate.owner`` (every container made from it, other users' build RUN
    containers included, then belongs to the committer) and a forged
    ``dockergate.built-by``."""
    raw = Raw(str(bgate.socket), people["bcann"].uid)
    cid = _container(raw, containers)
    repo = f"dgt-r6a-{_rand()}"
    images.append(f"{repo}:1")
    r = _commit(raw, cid, repo, changes)
    if r.status != 201:  # refused: secure
        return
    labels = direct_client.images.get(f"{repo}:1").attrs["Config"]["Labels"] or {}
    assert labels.get("dockergate.owner", "") == "", labels
    assert labels.get("dockergate.built-by") == "bc-bcann", labels
