"""Findings of the third security review round (routes open to members, the listeners,
HTTP framing and the splice path). Every attack here succeeded on cd316c0.

They reuse the first round's gate and profile (tests/integration/test_review_findings.py)
and raw requests as members, as tests/integration/test_review2_findings.py does.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from tests.integration import test_review_findings as first_round

# The first round's gate, profile, users and cleanup (module-scoped: a gate of our own).
area = first_round.area
shared_name = first_round.shared_name
rgate = first_round.rgate
users = first_round.users
cleanup = first_round.cleanup
_rand, build, created = first_round._rand, first_round.build, first_round.created

pytestmark = pytest.mark.timeout(180)

CONTAINER_EVENTS = "%7B%22type%22%3A%5B%22container%22%5D%7D"  # {"type":["container"]}


# --------------------------------------------------------------- name/ID leaks


def test_rename_to_a_name_taken_by_another_user_does_not_leak_its_id(users, cleanup):
    """Round 2 made ``create ?name=<taken>`` answer without the holder's ID, but
    ``POST /containers/{own}/rename?name=<taken>`` has no handler: dockerd's conflict
    answer ("... is already in use by container <full ID>") reaches the member, who
    learns the full ID of another user's container for any name they guess."""
    name = f"rv3-name-{_rand()}"
    victim_id = created(users["victim"], {"Image": "busybox", "Cmd": ["true"]}, cleanup, name=name)
    mine = created(users["mallory"], {"Image": "busybox", "Cmd": ["true"]}, cleanup)
    r = users["mallory"].request("POST", f"/v1.41/containers/{mine}/rename?name={name}")
    assert r.status == 409, (r.status, r.body)
    assert victim_id.encode() not in r.body and b"by container" not in r.body, r.body


def test_rename_of_ones_own_container_works(users, cleanup):
    mine = created(users["mallory"], {"Image": "busybox", "Cmd": ["true"]}, cleanup)
    r = users["mallory"].request("POST", f"/v1.41/containers/{mine}/rename?name=rv3-{_rand()}")
    assert r.status == 204, (r.status, r.body)


# --------------------------------------------------------------- imprinted owner labels


def _during_victim_build(users, base: str, probe) -> list[str]:
    """Run a victim build from ``base`` (a RUN step whose command holds a marker);
    call ``probe(marker)`` as mallory while it runs until it reports something."""
    return first_round.during_victim_build(users, base, probe)


def _onbuild_base(users, cleanup) -> str | None:
    base = f"dgt-review3-onbuild-{_rand()}:1"
    r = build(
        users["mallory"],
        f"t={base}&nocache=1",
        "FROM busybox\nONBUILD LABEL dockergate.owner=rv-mallory\n",
    )
    cleanup.append(("image", base))
    if r.status != 200 or b"errorDetail" in r.body:
        return None  # refused: secure
    return base


def test_system_df_does_not_show_build_containers_imprinted_by_onbuild(users, cleanup):
    """Round 2 dropped containers whose owner label may come from their image from
    ``/containers/json`` and from owner checks, but ``/system/df`` still filters on the
    bare label: during the victim's build mallory reads the victim's RUN container,
    its full ID and its ``Command`` (build commands, often with tokens in them)."""
    base = _onbuild_base(users, cleanup)
    if base is None:
        return

    def probe(marker: str) -> list[str]:
        r = users["mallory"].request("GET", "/v1.41/system/df")
        assert r.status == 200, (r.status, r.body)
        containers = json.loads(r.body).get("Containers") or []
        return [c["Id"] for c in containers if marker in (c.get("Command") or "")]

    seen = _during_victim_build(users, base, probe)
    assert not seen, f"mallory sees the victim's build container {seen[0][:12]} in system df"


def test_events_do_not_show_build_containers_imprinted_by_onbuild(users, cleanup):
    """Same through ``/events``: container events pass on the bare owner label, so
    mallory follows the victim's build containers (IDs, names, image, lifecycle)."""
    base = _onbuild_base(users, cleanup)
    if base is None:
        return
    since = int(time.time()) - 1

    def probe(marker: str) -> list[str]:
        return []  # just let the build run; the events are read afterwards

    _during_victim_build(users, base, probe)
    until = int(time.time()) + 1
    r = users["mallory"].request(
        "GET", f"/v1.41/events?since={since}&until={until}&filters={CONTAINER_EVENTS}"
    )
    assert r.status == 200, (r.status, r.body)
    events = [json.loads(line) for line in r.body.splitlines() if line.strip()]
    image_built_from = [
        e
        for e in events
        if e.get("Type") == "container"
        and (e.get("Actor") or {}).get("Attributes", {}).get("image", "").startswith("sha256:")
    ]
    assert not image_built_from, (
        f"mallory sees {len(image_built_from)} events of the victim's build containers: "
        f"{image_built_from[0]}"
    )


# --------------------------------------------------------------- daemon-side fetches


SERVER = textwrap.dedent(
    """
    import http.server, sys
    log = open(sys.argv[2], "a", buffering=1)
    class H(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            log.write(self.path + "\\n")
            body = b"INTERNAL-ONLY-SECRET\\n"
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        do_HEAD = do_GET
        def log_message(self, *a):
            pass
    srv = http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), H)
    print("ready", flush=True)
    srv.serve_forever()
    """
)


@pytest.fixture
def daemon_loopback_server(session_dir: Path):
    """An HTTP server on 127.0.0.1 *inside the private dockerd's network namespace*
    (scripts/test.sh's run dir holds it): what the daemon's host can reach, the way
    a cloud metadata service or an internal admin page would be. Yields (port, hits)."""
    run_dir = os.environ.get("DOCKERGATE_TEST_RUN_DIR")
    netns = Path(run_dir or "/nonexistent") / "netns"
    if not netns.exists():
        pytest.skip("needs scripts/test.sh's private network namespace")
    port = 18000 + int(_rand()[:4], 16) % 1000
    hits = session_dir / f"hits-{_rand()}.log"
    hits.touch()
    proc = subprocess.Popen(
        ["nsenter", f"--net={netns}", sys.executable, "-c", SERVER, str(port), str(hits)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        yield port, hits
    finally:
        proc.terminate()
        proc.wait(10)


def test_build_add_url_does_not_fetch_what_the_daemons_host_reaches(
    users, cleanup, daemon_loopback_server, direct_client
):
    """``/images/create?fromSrc=<url>`` and ``/build?remote=<url>`` are refused to
    members because the daemon would fetch any URL its host can reach. A Dockerfile
    ``ADD http://...`` (classic builder) is exactly that fetch, done by dockerd in the
    host's network, and puts the answer into an image the member reads: a full-read
    SSRF (metadata credentials, loopback-only admin pages)."""
    port, hits = daemon_loopback_server
    tag = f"dgt-review3-ssrf-{_rand()}:1"
    r = build(
        users["mallory"],
        f"t={tag}&nocache=1",
        f"FROM busybox\nADD http://127.0.0.1:{port}/latest/meta-data/iam /loot\nRUN cat /loot\n",
    )
    cleanup.append(("image", tag))
    fetched = hits.read_text()
    assert not fetched, (
        f"the daemon fetched {fetched.split()} for mallory's build: {r.body[-300:]!r}"
    )
    assert b"INTERNAL-ONLY-SECRET" not in r.body, r.body[-300:]


def test_build_copy_from_the_context_works(users, cleanup):
    tag = f"dgt-review3-copy-{_rand()}:1"
    r = build(users["mallory"], f"t={tag}", "FROM busybox\nCOPY Dockerfile /Dockerfile\n")
    cleanup.append(("image", tag))
    assert r.status == 200 and b"errorDetail" not in r.body, r.body[-300:]
