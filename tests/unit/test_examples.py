"""The example stacks in deploy/examples pass `dockergate check` with the profile
each is written for (the shipped profiles), and fail with a stricter one."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from dockergate.cli import cli

EXAMPLES = Path(__file__).resolve().parents[2] / "deploy" / "examples"
CLEAN_ENV = {"DOCKERGATE_POLICIES_DIR": None, "DOCKERGATE_CONFIG": None}


def check(profile: str, name: str) -> tuple[int, str]:
    result = CliRunner().invoke(
        cli, ["check", "--profile", profile, str(EXAMPLES / name)], env=CLEAN_ENV
    )
    return result.exit_code, result.output


@pytest.mark.parametrize(
    ("name", "profile"),
    [
        ("portainer.yml", "admin"),
        ("registry.yml", "member"),
        ("spark-team.yml", "member"),
        ("spark-interns.yml", "intern"),
    ],
)
def test_example_passes_its_profile(name: str, profile: str) -> None:
    code, output = check(profile, name)
    assert code == 0, output
    assert "ok:" in output


@pytest.mark.parametrize(
    ("name", "profile", "words"),
    [
        ("portainer.yml", "member", ["bind-mounting"]),
        ("spark-team.yml", "intern", ["bind-mounting", "memory"]),
    ],
)
def test_example_fails_a_stricter_profile(name: str, profile: str, words: list[str]) -> None:
    code, output = check(profile, name)
    assert code == 1, output
    for word in words:
        assert word in output, output
