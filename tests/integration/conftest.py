"""Fixtures shared by the integration tests: the dockergate image (built once per
session from deploy/Dockerfile: classic builder, no registry; the base is a
debootstrap'ed Debian imported into the test daemon and cached between runs)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import describe

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
