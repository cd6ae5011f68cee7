"""deploy/Dockerfile: the image is built (classic builder, no registry: the base is a
debootstrap'ed Debian imported into the test daemon, cached between runs) and run in
front of the test daemon; its HEALTHCHECK turns healthy and the CLI works through it."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import pytest

from tests.helpers import describe

pytestmark = pytest.mark.timeout(600)


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
            # The image's own HEALTHCHECK command, run every second: its 10 s interval
            # would make the first check (and so "healthy") wait 10 s.
            "--health-interval",
            "1s",
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
            time.sleep(0.3)
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
