"""deploy/Dockerfile: the image is built (classic builder, no registry: the base is a
debootstrap'ed Debian imported into the test daemon, cached between runs) and run in
front of the test daemon; its HEALTHCHECK turns healthy and the CLI works through it."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from tests.helpers import describe

pytestmark = pytest.mark.timeout(600)

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


@pytest.fixture(scope="module")
def image(cli, docker_host: str) -> str:
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


def test_image_runs_in_front_of_the_daemon(image, cli, docker_host, session_dir, unix_user):
    run_dir = Path(session_dir) / f"img-{uuid.uuid4().hex[:6]}"
    run_dir.mkdir(mode=0o755)
    name = f"gate-{uuid.uuid4().hex[:6]}"
    sock = docker_host.removeprefix("unix://")
    r = cli(
        [
            "run",
            "-d",
            "--name",
            name,
            "--network",
            "none",
            "-v",
            f"{sock}:/var/run/docker.sock",
            "-v",
            f"{run_dir}:/run/dockergate",
            image,
        ],
        listener="direct",
    )
    assert r.returncode == 0, describe(r)
    try:
        deadline = time.monotonic() + 90
        status = ""
        while time.monotonic() < deadline:
            status = cli(
                ["inspect", "-f", "{{.State.Health.Status}}", name], listener="direct"
            ).stdout.strip()
            if status == "healthy":
                break
            time.sleep(1)
        logs = cli(["logs", name], listener="direct")
        assert status == "healthy", logs.stdout + logs.stderr
        env = {"DOCKER_HOST": f"unix://{run_dir}/docker.sock"}
        r = cli(["run", "--rm", "busybox", "echo", "through the image"], env=env)
        assert r.stdout.strip() == "through the image", describe(r)
        stranger = unix_user("imgstranger")
        r = cli(["ps"], env=env, user=stranger)
        assert r.returncode != 0 and "is not registered" in r.stderr, describe(r)
    finally:
        cli(["rm", "-f", name], listener="direct")
