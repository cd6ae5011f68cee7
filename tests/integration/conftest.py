"""Fixtures shared by the integration tests: the dockergate image (built once per
session from deploy/Dockerfile: classic builder, no registry; the base is a
debootstrap'ed Debian imported into the test daemon and cached between runs)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import Gate, describe, new_gate, nosymfollow

ROOT = Path(__file__).resolve().parents[2]
CACHE = Path(os.environ.get("DOCKERGATE_TEST_CACHE", "/var/cache/dockergate-test"))
BASE = "dockergate-base:bookworm"


def _mirror() -> str:
    """The Debian mirror this machine's apt already uses."""
    for path in (Path("/etc/apt/sources.list.d/debian.sources"), Path("/etc/apt/sources.list")):
        if path.exists():
            found = re.search(
                r"^(?:URIs:\s*|deb\s+(?:\[[^]]*\]\s+)?)(\S+/debian)\b", path.read_text(), re.M
            )
            if found:
                return found.group(1)
    pytest.skip("no Debian mirror configured for apt")


def _base_tar() -> Path:
    tar = CACHE / "base-bookworm.tar"
    if tar.exists():
        return tar
    if shutil.which("debootstrap") is None:
        subprocess.run(
            ["apt-get", "install", "-y", "-qq", "debootstrap"], check=True, capture_output=True
        )
    CACHE.mkdir(parents=True, exist_ok=True)
    root = CACHE / "rootfs.tmp"
    shutil.rmtree(root, ignore_errors=True)
    subprocess.run(
        [
            "debootstrap",
            "--variant=minbase",
            "--include=python3,python3-venv,ca-certificates",
            "bookworm",
            str(root),
            _mirror(),
        ],
        check=True,
        capture_output=True,
    )
    subprocess.run(["tar", "-C", str(root), "-cf", f"{tar}.tmp", "."], check=True)
    os.replace(f"{tar}.tmp", tar)
    shutil.rmtree(root, ignore_errors=True)
    return tar


@pytest.fixture(scope="session")
def image(cli, docker_host: str) -> Iterator[str]:
    """The image's tag in the test daemon (removed at the end of the session)."""
    if cli(["image", "inspect", BASE], listener="direct").returncode != 0:
        r = cli(["import", str(_base_tar()), BASE], listener="direct", timeout=300)
        assert r.returncode == 0, describe(r)
    tag = f"dockergate-test:{uuid.uuid4().hex[:8]}"
    env = {**os.environ, "DOCKER_HOST": docker_host, "PYTHON": sys.executable}
    r = subprocess.run(
        ["bash", str(ROOT / "scripts" / "build-image.sh"), tag, BASE],
        capture_output=True,
        text=True,
        env=env,
        timeout=540,
        check=False,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    yield tag
    cli(["rmi", "-f", tag], listener="direct")


# ------------------------------------------------ gates shared by several modules
#
# The review gate (tests/integration/test_review_findings.py's ``rgate``/``users``,
# imported by most review modules) and the build-check gate
# (tests/integration/test_build_checks.py's ``bgate``/``people``, imported by the
# build review modules): one each per session instead of one per importing module.
# Tests that change users on them add users of their own (unique names and uids).


@pytest.fixture(scope="session")
def review_area() -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix="dgt-rev-"))
    d.chmod(0o755)
    (d / "data").mkdir()
    (d / "secret").mkdir()
    (d / "secret" / "flag").write_text("REVIEW-FLAG-outside-the-allowed-bind-root\n")
    for p in (d / "data", d / "secret"):
        p.chmod(0o755)
    (d / "secret" / "flag").chmod(0o644)
    with nosymfollow(d / "data"):  # as the gate requires for binds below a root
        yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="session")
def review_shared_name() -> str:
    return f"dgt-review-shared-{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="session")
def review_gate(
    session_dir: Path, docker_host: str, review_area: Path, review_shared_name: str
) -> Iterator[Gate]:
    policies = review_area / "policies"
    policies.mkdir()
    (policies / "admin.yaml").write_text("admin: true\n")
    (policies / "member.yaml").write_text(
        textwrap.dedent(
            f"""
            description: review member
            containers:
              published_ports: ["8000-8999"]
            exec:
              root: false
            mounts:
              binds:
                - path: {review_area / "data"}
              shared_volumes:
                - name: {review_shared_name}
                  read_only: true
            resources:
              memory: {{default: 64m, max: 256m}}
              cpus: {{max: 2}}
            quota:
              memory: 512m
              networks: 12
              secrets: 60
              configs: 60
            """
        )
    )
    (policies / "intern.yaml").write_text(
        textwrap.dedent(
            """
            description: review intern
            extends: member
            containers:
              on_managers: false
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


@pytest.fixture(scope="session")
def review_users(review_gate: Gate, unix_user) -> dict[str, int]:
    """short name -> uid of rv-mallory, rv-victim (members) and rv-pintern (intern)."""
    out = {}
    for short, profile in (("mallory", "member"), ("victim", "member"), ("pintern", "intern")):
        u = unix_user(short)
        name = f"rv-{short}"
        review_gate.dockergate("user", "add", name, "--profile", profile, "--uid", str(u.uid))
        out[short] = u.uid
    return out


@pytest.fixture(scope="session")
def build_gate(session_dir: Path, docker_host: str, tmp_path_factory) -> Iterator[Gate]:
    policies = tmp_path_factory.mktemp("build-policies")
    (policies / "admin.yaml").write_text("admin: true\n")
    (policies / "member.yaml").write_text(
        textwrap.dedent(
            """
            description: build-check member
            containers:
              registries: [docker.io, "127.0.0.1:9"]
            resources:
              memory: {default: 64m, max: 256m}
              cpus: {default: 1, max: 2}
            quota:
              memory: 400m
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


@pytest.fixture(scope="session")
def build_people(build_gate: Gate, unix_user):
    out = {}
    for short, profile in (("bcann", "member"), ("bcbob", "member"), ("bcboss", "admin")):
        u = unix_user(short)
        build_gate.dockergate(
            "user", "add", f"bc-{short}", "--profile", profile, "--uid", str(u.uid)
        )
        out[short] = u
    return out
