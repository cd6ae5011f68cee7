"""Findings of review round 8b (attacks on identity, HTTP framing, exec, archive,
container updates, services, secrets/configs and the JSON key rules).

They reuse the first round's gate, profile, users and cleanup
(tests/integration/test_review_findings.py) and raw requests as members.
"""

from __future__ import annotations

import io
import json
import tarfile

import pytest

from tests.integration import test_review_findings as first_round

# The first round's gate, profile, users and cleanup (module-scoped: a gate of our own).
area = first_round.area
shared_name = first_round.shared_name
rgate = first_round.rgate
users = first_round.users
cleanup = first_round.cleanup
_rand, created, start = first_round._rand, first_round.created, first_round.start

pytestmark = pytest.mark.timeout(180)


def _tar(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


# --------------------------------------------------------------- exec.root: false


PASSWD = (
    b"root:x:0:0:root:/root:/bin/sh\n"
    b"5 :x:0:0:trailing space:/root:/bin/sh\n"
    b"\xc2\xb2:x:0:0:superscript two:/root:/bin/sh\n"
    b"nobody:x:1000:1000:nobody:/:/bin/sh\n"
)


def _non_root_container_with_passwd(m, cleanup) -> str:
    cid = created(m, {"Image": "busybox", "Cmd": ["sleep", "120"], "User": "1000"}, cleanup)
    assert start(m, cid).status == 204
    r = m.request(
        "PUT",
        f"/v1.41/containers/{cid}/archive?path=/etc",
        _tar({"passwd": PASSWD}),
        ctype="application/x-tar",
    )
    assert r.status == 200, (r.status, r.body)
    return cid


@pytest.mark.parametrize("user", ["5 ", "\u00b2"])
def test_exec_root_refused_for_names_that_look_numeric(users, cleanup, direct_client, user):
    """``check_exec`` lets a user through when ``user.split(":")[0].strip().isdigit()``:
    Python strips spaces (Go's ``strconv.Atoi`` does not) and ``str.isdigit`` takes
    Unicode digits such as ``²``. runc's ``GetExecUser`` then fails ``Atoi`` and looks
    the spec up as a *name* in the container's /etc/passwd, which the member writes
    with ``docker cp`` (``PUT /archive``): ``5 :x:0:0`` makes ``exec -u '5 '`` root."""
    m = users["mallory"]
    cid = _non_root_container_with_passwd(m, cleanup)
    r = m.request(
        "POST",
        f"/v1.41/containers/{cid}/exec",
        {"Cmd": ["id", "-u"], "User": user, "AttachStdout": True},
    )
    if r.status == 201:
        out = direct_client.api.exec_start(json.loads(r.body)["Id"]).decode(errors="replace")
        pytest.fail(f"exec as {user!r} was allowed; it ran as uid {out.strip()!r}")
    assert r.status == 403, (r.status, r.body)


def test_exec_as_a_numeric_non_root_uid_works(users, cleanup, direct_client):
    """Neighbour: a plain numeric uid other than 0 is still allowed and runs as that uid."""
    m = users["mallory"]
    cid = _non_root_container_with_passwd(m, cleanup)
    r = m.request(
        "POST",
        f"/v1.41/containers/{cid}/exec",
        {"Cmd": ["id", "-u"], "User": "5", "AttachStdout": True},
    )
    assert r.status == 201, (r.status, r.body)
    assert direct_client.api.exec_start(json.loads(r.body)["Id"]).strip() == b"5"
