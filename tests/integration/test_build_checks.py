"""A member's classic build: the gate reads the Dockerfile inside the context as it
streams to dockerd and refuses, before anything runs, what would make the daemon
fetch by itself (``ADD <url>``, base images from outside the profile's registries,
``ADD`` triggers of a base image). Driven by the real docker CLI and docker-py.
Each refusal sits next to the legitimate build beside it.
"""

from __future__ import annotations

import contextlib
import io
import shutil
import tarfile
import tempfile
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest

from tests.helpers import Gate, new_gate
from tests.integration.test_hostile import Raw

pytestmark = pytest.mark.timeout(180)

BUILD_ENV = {"DOCKER_BUILDKIT": "0"}


def _rand() -> str:
    return uuid.uuid4().hex[:8]


@pytest.fixture(scope="module")
def bgate(session_dir: Path, docker_host: str, tmp_path_factory) -> Iterator[Gate]:
    policies = tmp_path_factory.mktemp("build-policies")
    (policies / "admin.yaml").write_text("admin: true\n")
    (policies / "member.yaml").write_text(
        textwrap.dedent(
            """
            description: build-check member
            containers:
              registries: [docker.io]
            """
        )
    )
    g = new_gate(session_dir, docker_host, extra_args=["--policies-dir", str(policies)])
    g.init()
    g.start()
    try:
        yield g
    finally:
        g.stop()


@pytest.fixture(scope="module")
def people(bgate: Gate, unix_user):
    out = {}
    for short, profile in (("bcann", "member"), ("bcboss", "admin")):
        u = unix_user(short)
        bgate.dockergate("user", "add", f"bc-{short}", "--profile", profile, "--uid", str(u.uid))
        out[short] = u
    return out


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
    refused(r, "images from this registry", "allowed: docker.io")


def test_base_image_not_on_the_engine_must_be_pulled_first(build):
    r = build(f"FROM busybox:not-here-{_rand()}\nRUN true\n")
    refused(r, "docker pull busybox:not-here-")


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


def test_a_context_that_is_not_a_tar_is_refused(bgate, people):
    raw = Raw(str(bgate.socket), people["bcann"].uid)
    r = raw.request("POST", "/v1.41/build", b"FROM busybox\n" * 100, ctype="application/x-tar")
    assert r.status == 400 and b"build context" in r.body, (r.status, r.body)
