"""Findings of review round 4a (a member's classic build: the Dockerfile check, the
context scanner and the /build stream). Every attack here succeeded on 5d41c47.

They reuse the build-check gate and profile (tests/integration/test_build_checks.py:
registries docker.io and 127.0.0.1:9) and raw requests as members; a fetch is proven
with an HTTP server on 127.0.0.1 inside the private dockerd's network namespace
(tests/integration/test_review3_findings.py).
"""

from __future__ import annotations

import io
import json
import tarfile
import urllib.parse
import uuid

import pytest

from tests.integration import test_build_checks as bc
from tests.integration.test_hostile import Raw, Reply
from tests.integration.test_review3_findings import daemon_loopback_server

bgate, people, images, ctxdir = bc.bgate, bc.people, bc.images, bc.ctxdir
__all__ = ["daemon_loopback_server"]

pytestmark = pytest.mark.timeout(180)


def _rand() -> str:
    return uuid.uuid4().hex[:8]


def context(dockerfile: bytes | str, extra: dict[str, bytes] | None = None) -> bytes:
    """A plain tar with ``Dockerfile`` holding exactly these bytes."""
    if isinstance(dockerfile, str):
        dockerfile = dockerfile.encode()
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for name, data in {"Dockerfile": dockerfile, **(extra or {})}.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def raw_build(
    bgate, people, images, dockerfile: bytes | str, query: str = "", who="bcann", body=None
) -> Reply:
    tag = f"dgt-r4a-{_rand()}:1"
    images.append(tag)
    raw = Raw(str(bgate.socket), people[who].uid)
    r = raw.request(
        "POST",
        f"/v1.41/build?t={tag}&nocache=1{query}",
        context(dockerfile) if body is None else body,
        ctype="application/x-tar",
    )
    r.tag = tag  # type: ignore[attr-defined]
    return r


def built(r: Reply) -> bool:
    return r.status == 200 and b"Successfully tagged" in r.body and b"errorDetail" not in r.body


def assert_no_fetch(r: Reply, hits) -> None:
    fetched = hits.read_text()
    assert not fetched, (
        f"dockerd fetched {fetched.split()} for a member's build "
        f"(status {r.status}): {r.body[-400:]!r}"
    )
    assert b"INTERNAL-ONLY-SECRET" not in r.body, r.body[-400:]


# --------------------------------------------------------------- whitespace kinds


def test_separator_control_character_ends_a_continuation_for_dockerd(
    bgate, people, images, daemon_loopback_server
):
    """Python's ``str.isspace`` holds the ASCII separators \\x1c-\\x1f as blanks, Go's
    ``unicode.IsSpace`` does not. After ``RUN true \\``, a line holding only \\x1c is an
    empty continuation line to the gate (skipped: the next line is glued to the RUN),
    but a real one to dockerd, which ends the RUN there: the ``ADD <url>`` that follows
    is an instruction of its own to dockerd and never seen by the gate."""
    port, hits = daemon_loopback_server
    r = raw_build(
        bgate,
        people,
        images,
        f"FROM busybox\nRUN true \\\n\x1c\nADD http://127.0.0.1:{port}/latest/meta-data /loot\n"
        "RUN cat /loot\n",
    )
    assert_no_fetch(r, hits)


def test_separator_comment_line_in_a_continuation(bgate, people, images, daemon_loopback_server):
    """Same difference on comment lines inside a continuation: ``\\x1f# x`` is a
    comment to the gate (dropped, the continuation goes on), text to dockerd (which
    ends the RUN there)."""
    port, hits = daemon_loopback_server
    r = raw_build(
        bgate,
        people,
        images,
        f"FROM busybox\nRUN true \\\n\x1f# x\nADD http://127.0.0.1:{port}/latest/meta-data /loot\n"
        "RUN cat /loot\n",
    )
    assert_no_fetch(r, hits)


def test_continuation_with_a_real_comment_line_still_works(bgate, people, images):
    r = raw_build(bgate, people, images, "FROM busybox\nRUN echo one \\\n# note\n  two\n")
    assert built(r), r.body[-400:]


# --------------------------------------------------------------- ONBUILD and the escape


def test_onbuild_trigger_unescaped_with_the_childs_escape_token(
    bgate, people, images, daemon_loopback_server
):
    """dockerd stores an ONBUILD trigger as text and, in the child build, expands its
    words with the *child's* escape token. A base built with the default escape may
    hold ``ONBUILD ADD http:`/`/HOST/x /x`` (no ``://``, and a backtick is no escape to
    the gate there); the gate reads that trigger with the default escape too and lets
    ``# escape=`` + FROM base`` through; dockerd unescapes ```/`` to ``/`` and fetches."""
    port, hits = daemon_loopback_server
    base = raw_build(
        bgate,
        people,
        images,
        f"FROM busybox\nONBUILD ADD http:`/`/127.0.0.1:{port}/latest/meta-data /loot\n",
    )
    if not built(base):  # refused at the base: secure
        assert base.status in (400, 403), base.body[-300:]
        return
    r = raw_build(bgate, people, images, f"# escape=`\nFROM {base.tag}\nRUN cat /loot\n")
    assert_no_fetch(r, hits)


def test_onbuild_run_trigger_of_ones_own_base_still_works(bgate, people, images):
    base = raw_build(bgate, people, images, "FROM busybox\nONBUILD RUN echo trig-`echo ran`\n")
    assert built(base), base.body[-300:]
    r = raw_build(bgate, people, images, f"FROM {base.tag}\nRUN true\n")
    assert built(r) and b"trig-ran" in r.body, r.body[-400:]


# --------------------------------------------------------------- tar headers


def tar_header(name: bytes, size: int, typeflag: bytes) -> bytes:
    """A USTAR header block, checksum included."""
    b = bytearray(512)
    b[0 : len(name)] = name
    b[100:108] = b"0000644\0"
    b[108:116] = b"0000000\0"
    b[116:124] = b"0000000\0"
    b[124:136] = b"%011o\0" % size
    b[136:148] = b"00000000000\0"
    b[156:157] = typeflag
    b[257:263] = b"ustar\0"
    b[263:265] = b"00"
    b[148:156] = b" " * 8
    b[148:156] = b"%06o\0 " % sum(b)
    return bytes(b)


def padded(data: bytes) -> bytes:
    return data + b"\0" * (-len(data) % 512)


@pytest.mark.parametrize("meta", ["gnu-longname", "pax-path"])
def test_empty_long_name_hides_the_dockerfile(bgate, people, images, daemon_loopback_server, meta):
    """Go's tar reader uses a GNU long name only when it is not empty
    (``if gnuLongName != ""``) and skips empty PAX values (``mergePAX``: "Keep the
    original USTAR value"). The scanner applies both even when empty: an entry named
    ``Dockerfile`` after an empty ``L`` entry (or an ``x`` entry with ``path=``) is
    "." to the gate, which then sees no Dockerfile at all ("dockerd will fail by
    itself") and lets the archive through; dockerd unpacks ``Dockerfile`` and runs it."""
    port, hits = daemon_loopback_server
    df = (
        f"FROM busybox\nADD http://127.0.0.1:{port}/latest/meta-data /loot\nRUN cat /loot\n"
    ).encode()
    if meta == "gnu-longname":
        head = tar_header(b"././@LongLink", 0, b"L")
    else:
        pax = b"8 path=\n"
        head = tar_header(b"PaxHeaders/Dockerfile", len(pax), b"x") + padded(pax)
    body = head + tar_header(b"Dockerfile", len(df), b"0") + padded(df) + b"\0" * 1024
    r = raw_build(bgate, people, images, "", body=body)
    assert_no_fetch(r, hits)


def test_gnu_long_names_still_work(bgate, people, images):
    long = "d" * 120
    df = f"FROM busybox\nCOPY {long}/f /f\nRUN cat /f\n".encode()
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for name, data in (("Dockerfile", df), (f"{long}/f", b"long-ok\n")):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    r = raw_build(bgate, people, images, "", body=buf.getvalue())
    assert built(r) and b"long-ok" in r.body, r.body[-400:]


# --------------------------------------------------------------- FROM and build arguments


def test_builtin_proxy_build_arg_expands_in_from(bgate, people, images, daemon_loopback_server):
    """dockerd expands FROM with the meta ARGs *and* the predefined proxy arguments
    (HTTP_PROXY, http_proxy, HTTPS_PROXY, FTP_PROXY, NO_PROXY, ALL_PROXY and lower-case
    forms: ``builtinAllowedBuildArgs``), which need no ARG line. The gate resolves
    only declared ARGs, so ``$HTTP_PROXY`` is "" to it: ``FROM 127.0.0.1$HTTP_PROXY``
    is the image ``127.0.0.1`` (a member's tag of busybox, on the engine, allowed
    registry docker.io), while dockerd, given ``--build-arg HTTP_PROXY=:PORT/img``,
    pulls ``127.0.0.1:PORT/img`` -- any registry host (here plain HTTP to the host's
    loopback), and an image whose ONBUILD triggers the gate never read."""
    port, hits = daemon_loopback_server
    raw = Raw(str(bgate.socket), people["bcann"].uid)
    r = raw.request("POST", "/v1.41/images/busybox/tag?repo=127.0.0.1&tag=latest")
    assert r.status == 201, (r.status, r.body)
    images.append("127.0.0.1:latest")
    args = json.dumps({"HTTP_PROXY": f":{port}/dgt-r4a-img"})
    r = raw_build(
        bgate,
        people,
        images,
        "FROM 127.0.0.1$HTTP_PROXY\nRUN true\n",
        "&buildargs=" + urllib.parse.quote(args),
    )
    assert_no_fetch(r, hits)


def test_proxy_build_args_still_reach_run_steps(bgate, people, images):
    args = json.dumps({"HTTP_PROXY": "http://127.0.0.1:9"})
    r = raw_build(
        bgate,
        people,
        images,
        "FROM busybox\nRUN echo proxy=$HTTP_PROXY\n",
        "&buildargs=" + urllib.parse.quote(args),
    )
    assert built(r) and b"proxy=http://127.0.0.1:9" in r.body, r.body[-400:]


# --------------------------------------------------------------- gate errors


def test_deeply_nested_json_arguments_get_an_answer(bgate, people, images):
    """``ADD [[[[...]]]]`` (100 000 levels) makes Python's json raise RecursionError,
    which is neither a ValueError nor one of the errors the context check words as a
    500: it escapes the connection handler, the client's connection drops with no
    answer and the daemon connection, holding a half-sent context, is left open."""
    r = raw_build(bgate, people, images, "FROM busybox\nADD " + "[" * 100_000 + "\n")
    assert r.status in (400, 403), (r.status, r.body[-300:])
    # The gate still serves.
    raw = Raw(str(bgate.socket), people["bcann"].uid)
    assert raw.request("GET", "/v1.41/version").status == 200
