"""A member's classic build: the gate reads the Dockerfile inside the context as it
streams to dockerd and refuses, before anything runs, what would make the daemon
fetch by itself (``ADD <url>``, base images from outside the profile's registries,
``ADD`` triggers of a base image), and holds the other routes that make the daemon
reach a registry (``search``, ``/distribution``, ``login``) to the profile's list.
Driven by the real docker CLI and raw requests. Each refusal sits next to the
legitimate use beside it.
"""

from __future__ import annotations

import contextlib
import io
import shutil
import tarfile
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest

from tests.helpers import Gate
from tests.integration.test_hostile import Raw

pytestmark = pytest.mark.timeout(180)

BUILD_ENV = {"DOCKER_BUILDKIT": "0"}


def _rand() -> str:
    return uuid.uuid4().hex[:8]


# The build-check gate and its people are started once per session (in
# tests/integration/conftest.py) and shared by every module that imports these
# fixtures: each module used to start its own identical gate.


@pytest.fixture(scope="module")
def bgate(build_gate: Gate) -> Gate:
    return build_gate


@pytest.fixture(scope="module")
def people(build_people):
    return build_people


@pytest.fixture
def images(direct_client) -> Iterator[list[str]]:
    made: list[str] = []
    yield made
    for tag in made:
        with contextlib.suppress(Exception):
            direct_client.images.remove(tag, force=True)


@pytest.fixture
def ctxdir() -> Iterator[Path]:
    """A directory the build users can read (pytest's tmp_path is root's alone)."""
    d = Path(tempfile.mkdtemp(prefix="dgt-bc-"))
    d.chmod(0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def build(cli, bgate, people, images, ctxdir):
    """build(dockerfile, who="bcann", args=(), files={}) -> CompletedProcess of
    ``docker build -t <new tag>`` through the gate; the tag is at ``.tag``."""

    def go(dockerfile: str, who: str = "bcann", args=(), files=None):
        ctx = ctxdir / f"ctx-{_rand()}"
        ctx.mkdir()
        (ctx / "Dockerfile").write_text(dockerfile)
        for name, text in (files or {}).items():
            (ctx / name).parent.mkdir(parents=True, exist_ok=True)
            (ctx / name).write_text(text)
        tag = f"dgt-bc-{_rand()}:1"
        images.append(tag)
        r = cli(
            ["build", "-t", tag, *args, str(ctx)],
            user=people[who],
            gate=bgate,
            env=BUILD_ENV,
            timeout=120,
        )
        r.tag = tag
        return r

    return go


def refused(r, *words: str) -> None:
    assert r.returncode != 0, r.stdout
    assert "dockergate:" in r.stderr, r.stderr
    for w in words:
        assert w in r.stderr, r.stderr


def ok(r) -> None:
    assert r.returncode == 0, r.stderr + r.stdout


# ------------------------------------------------------------------ ADD <url>


@pytest.mark.parametrize(
    "line",
    [
        "ADD http://127.0.0.1:9/meta /x",
        'ADD ["https://127.0.0.1:9/meta", "/x"]',
        "ADD --chown=1:1 \\\n    http://127.0.0.1:9/meta /x",
        "ARG U=http://127.0.0.1:9/meta\nADD $U /x",
        "ONBUILD ADD http://127.0.0.1:9/meta /x",
    ],
)
def test_add_of_a_url_is_refused_before_the_build_runs(build, direct_client, line):
    r = build(f"FROM busybox\n{line}\nRUN echo should-not-run\n")
    refused(r, "ADD from a URL", "Dockerfile line")
    assert "should-not-run" not in r.stdout and "Step 1/" not in r.stdout
    with pytest.raises(docker.errors.ImageNotFound):
        direct_client.images.get(r.tag)


def test_add_of_context_files_and_copy_work(build):
    r = build(
        "FROM busybox\nADD notes.txt /notes.txt\nCOPY sub/ /sub/\nRUN cat /notes.txt /sub/a\n",
        files={"notes.txt": "hello\n", "sub/a": "a\n"},
    )
    ok(r)


def test_custom_dockerfile_outside_the_context_is_read(cli, bgate, people, ctxdir, images):
    """``docker build -f ../elsewhere.df ctx`` makes the CLI add the Dockerfile to the
    tar under a generated name and send that name as ``dockerfile``."""
    ctx = ctxdir / "ctx-f"
    ctx.mkdir()
    outside = ctxdir / "elsewhere.df"
    for text, good in (
        ("FROM busybox\nADD http://127.0.0.1:9/x /x\n", False),
        ("FROM busybox\nRUN true\n", True),
    ):
        outside.write_text(text)
        images.append(f"dgt-bc-f-{_rand()}:1")
        r = cli(
            ["build", "-f", str(outside), "-t", images[-1], str(ctx)],
            user=people["bcann"],
            gate=bgate,
            env=BUILD_ENV,
            timeout=120,
        )
        if good:
            ok(r)
        else:
            refused(r, "ADD from a URL")


def test_admins_may_add_urls(build):
    """Admins are not held to this (the fetch fails here: nothing listens on port 9)."""
    r = build("FROM busybox\nADD http://127.0.0.1:9/x /x\n", who="bcboss")
    assert "dockergate:" not in r.stderr, r.stderr


# ------------------------------------------------------------------ base images


def test_base_image_from_another_registry_is_refused(build):
    r = build("FROM registry.example:5000/tools:1\nRUN true\n")
    refused(r, "images from this registry", "allowed: docker.io, 127.0.0.1:9")


def test_base_image_not_on_the_engine_must_be_pulled_first(build):
    r = build(f"FROM busybox:not-here-{_rand()}\nRUN true\n")
    refused(r, "docker pull busybox:not-here-")


def test_platform_is_refused(build):
    """Another platform's base is pulled by dockerd even when the tag is here: its
    ONBUILD triggers could not be read first."""
    refused(build("FROM busybox\nRUN true\n", args=["--platform", "linux/arm64"]), "platform")
    refused(build("FROM --platform=linux/arm64 busybox\nRUN true\n"), "FROM --platform")


def test_pull_flag_is_refused_and_plain_build_works(build):
    refused(build("FROM busybox\nRUN true\n", args=["--pull"]), "--pull")
    ok(build("FROM busybox\nRUN true\n"))


def test_base_image_add_trigger_is_refused(build, images):
    """An admin's (or a registry's) base image with ``ONBUILD ADD <url>``: the trigger
    would run in the member's build. A base with harmless triggers still works."""
    bad = build("FROM busybox\nONBUILD ADD http://127.0.0.1:9/x /x\n", who="bcboss")
    ok(bad)
    good = build("FROM busybox\nONBUILD RUN echo trigger-ran\n", who="bcboss")
    ok(good)
    refused(build(f"FROM {bad.tag}\nRUN true\n"), "ONBUILD trigger of", bad.tag)
    r = build(f"FROM {good.tag}\nRUN true\n")
    ok(r)
    assert "trigger-ran" in r.stdout


def test_stages_and_build_args_resolve(build):
    r = build(
        "ARG BASE=busybox\nFROM $BASE AS one\nRUN echo one > /one\n"
        "FROM one\nCOPY --from=one /one /two\nRUN cat /two\n",
        args=["--build-arg", "BASE=busybox"],
    )
    ok(r)


# ------------------------------------------------------------------ compressed contexts


def _gzip_context(dockerfile: str) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        data = dockerfile.encode()
        info = tarfile.TarInfo("Dockerfile")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


@pytest.mark.parametrize(
    "dockerfile, status",
    [("FROM busybox\nADD http://127.0.0.1:9/x /x\n", 403), ("FROM busybox\nRUN true\n", 200)],
)
def test_gzip_context(bgate, people, images, dockerfile, status):
    """A gzip context (``docker build --compress``, docker-py's ``gzip=True``) is read
    through the compression: refused or built alike."""
    tag = f"dgt-bc-gz-{_rand()}:1"
    images.append(tag)
    raw = Raw(str(bgate.socket), people["bcann"].uid)
    r = raw.request(
        "POST", f"/v1.41/build?t={tag}", _gzip_context(dockerfile), ctype="application/x-tar"
    )
    assert r.status == status, (r.status, r.body[-300:])
    if status == 403:
        assert b"ADD from a URL" in r.body, r.body
    else:
        assert b"Successfully tagged" in r.body, r.body[-300:]


def test_an_upgrade_header_does_not_skip_the_check(bgate, people, images):
    """``Connection: Upgrade`` on /build must not send the context down the hijack
    path (which forwards a body it read but did not check): the build is a plain
    request to dockerd, so the gate forwards it as one, checked."""
    raw = Raw(str(bgate.socket), people["bcann"].uid)
    tag = f"dgt-bc-up-{_rand()}:1"
    images.append(tag)
    r = raw.request(
        "POST",
        f"/v1.41/build?t={tag}",
        _gzip_context("FROM busybox\nADD http://127.0.0.1:9/x /x\n"),
        headers={"Connection": "Upgrade", "Upgrade": "tcp"},
        ctype="application/x-tar",
    )
    assert r.status == 403 and b"ADD from a URL" in r.body, (r.status, r.body[-300:])


def test_a_context_that_is_not_a_tar_is_refused(bgate, people):
    raw = Raw(str(bgate.socket), people["bcann"].uid)
    r = raw.request("POST", "/v1.41/build", b"FROM busybox\n" * 100, ctype="application/x-tar")
    assert r.status == 400 and b"build context" in r.body, (r.status, r.body)


# ------------------------------------------------------------------ resources


def test_build_cpu_cap_and_default(build):
    """A build's RUN steps get the profile's CPU default as a CFS quota, and a quota
    over the cap is refused."""
    refused(
        build("FROM busybox\nRUN true\n", args=["--cpu-period", "100000", "--cpu-quota", "400000"]),
        "this many CPUs",
    )
    r = build(
        "FROM busybox\nRUN cat /sys/fs/cgroup/cpu.max /sys/fs/cgroup/cpu/cpu.cfs_quota_us "
        "2>/dev/null; true\n"
    )
    ok(r)
    assert any(line.strip() in ("100000", "100000 100000") for line in r.stdout.splitlines()), (
        r.stdout
    )


def test_build_memory_counts_against_the_quota(build, cli, bgate, people, direct_client):
    """Build containers belong to nobody, so a build may start only while its memory
    fits in what the user's quota leaves (400m: 256m running + 64m build fits)."""
    name = f"dgt-bc-mem-{_rand()}"
    r = cli(
        ["run", "-d", "--name", name, "-m", "256m", "busybox", "sleep", "120"],
        user=people["bcann"],
        gate=bgate,
    )
    ok(r)
    try:
        refused(build("FROM busybox\nRUN true\n", args=["-m", "200m"]), "memory quota")
        ok(build("FROM busybox\nRUN true\n"))
    finally:
        direct_client.containers.get(name).remove(force=True)


# ------------------------------------------------------------------ registry reach
# The allowed neighbour is 127.0.0.1:9, where nothing listens: the daemon's own error
# (not the gate's refusal) shows the request went through. No traffic leaves loopback.


@pytest.mark.parametrize(
    "args",
    [
        ["search", "registry.example:5000/tools"],
        ["login", "-u", "x", "--password-stdin", "registry.example:5000"],
    ],
)
def test_registry_reach_outside_the_allowlist_is_refused(cli, bgate, people, args):
    r = cli(args, user=people["bcann"], gate=bgate, input="secret\n", timeout=60)
    refused(r, "registry.example:5000", "allowed: docker.io, 127.0.0.1:9")


@pytest.mark.parametrize(
    "args",
    [
        ["search", "127.0.0.1:9/tools"],
        ["login", "-u", "x", "--password-stdin", "127.0.0.1:9"],
    ],
)
def test_registry_reach_inside_the_allowlist_goes_to_the_daemon(cli, bgate, people, args):
    r = cli(args, user=people["bcann"], gate=bgate, input="secret\n", timeout=60)
    assert r.returncode != 0 and "dockergate:" not in r.stderr, r.stderr


def test_distribution_follows_the_allowlist(bgate, people):
    raw = Raw(str(bgate.socket), people["bcann"].uid)
    r = raw.request("GET", "/v1.41/distribution/registry.example:5000/tools/json")
    assert r.status == 403 and b"images from this registry" in r.body, (r.status, r.body)
    r = raw.request("GET", "/v1.41/distribution/127.0.0.1:9/tools/json")
    assert r.status != 403 and b"dockergate:" not in r.body, (r.status, r.body)


# ------------------------------------------------------------------ pulls over built tags


def test_pull_over_another_users_built_tag_is_refused(build, cli, bgate, people, images):
    """Bob pushing his own image to a registry under Ann's local tag and pulling it
    would make Ann's next ``docker run`` start Bob's code with Ann's rights. Ann may
    pull over her own tag (the daemon then fails: nothing listens on 127.0.0.1:9)."""
    tag = f"127.0.0.1:9/dgt-bc-pull-{_rand()}:1"
    images.append(tag)
    r = cli(
        ["build", "-t", tag, "-"],
        user=people["bcann"],
        gate=bgate,
        env=BUILD_ENV,
        input="FROM busybox\nRUN true\n",
        timeout=120,
    )
    ok(r)
    r = cli(["pull", tag], user=people["bcbob"], gate=bgate, timeout=60)
    refused(r, "bc-bcann built here")
    r = cli(["pull", tag], user=people["bcann"], gate=bgate, timeout=60)
    assert r.returncode != 0 and "dockergate:" not in r.stderr, r.stderr


def test_pull_of_every_tag_is_refused(cli, bgate, people):
    r = cli(["pull", "-a", "127.0.0.1:9/dgt-bc-all"], user=people["bcbob"], gate=bgate)
    refused(r, "docker pull -a")


# ------------------------------------------------------------------ base images pinned


def test_commit_change_onbuild_add_url_is_refused(cli, bgate, people, images, direct_client):
    """``docker commit --change 'ONBUILD ADD <url> ...'`` would make such a trigger in an
    image a member then builds FROM; refused at the commit. ONBUILD RUN is fine."""
    name = f"dgt-bc-commit-{_rand()}"
    ok(cli(["create", "--name", name, "busybox", "true"], user=people["bcann"], gate=bgate))
    try:
        for change, good in (
            ("ONBUILD ADD http://127.0.0.1:9/x /x", False),
            ("ONBUILD RUN echo hi", True),
        ):
            images.append(f"dgt-bc-commit-{_rand()}:1")
            r = cli(
                ["commit", "--change", change, name, images[-1]],
                user=people["bcann"],
                gate=bgate,
            )
            if good:
                ok(r)
            else:
                assert r.returncode != 0 and "ONBUILD ADD of a URL" in r.stderr, r.stderr
    finally:
        direct_client.containers.get(name).remove(force=True)


def test_a_build_base_cannot_be_retagged_while_the_build_runs(build, cli, bgate, people):
    """The gate read the base's ONBUILD triggers when the build began; moving the tag
    to another image before dockerd resolves FROM would run unread triggers. While a
    build runs FROM ann's base, ann cannot move that tag; afterwards she can."""
    base = build("FROM busybox\nRUN true\n")
    ok(base)
    other = build("FROM busybox\nRUN echo other\n")
    ok(other)
    done = threading.Event()
    result = {}

    def long_build() -> None:
        result["r"] = build(f"FROM {base.tag}\nRUN sleep 6\n")
        done.set()

    t = threading.Thread(target=long_build, daemon=True)
    t.start()
    time.sleep(3)
    assert not done.is_set()
    r = cli(["tag", other.tag, base.tag], user=people["bcann"], gate=bgate)
    assert r.returncode != 0 and "a build in progress starts FROM it" in r.stderr, r.stderr
    t.join(60)
    ok(result["r"])
    ok(cli(["tag", other.tag, base.tag], user=people["bcann"], gate=bgate))
