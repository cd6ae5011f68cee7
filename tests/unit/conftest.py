"""Store fixtures shared by the unit tests: every store test runs on SQLite and, when
DOCKERGATE_TEST_PG_URL is set (scripts/test.sh starts a private PostgreSQL; by hand:
``. scripts/lib/postgres.sh; pg_start /var/tmp/dg-pg 55432``), on PostgreSQL too."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from sqlalchemy import text

from dockergate.config import Settings
from dockergate.store.db import make_engine, upgrade

PG_URL = os.environ.get("DOCKERGATE_TEST_PG_URL")
BACKENDS = [
    "sqlite",
    pytest.param(
        "postgresql",
        marks=pytest.mark.skipif(not PG_URL, reason="DOCKERGATE_TEST_PG_URL not set"),
    ),
]


def reset_postgres(url: str) -> None:
    engine = make_engine(url)
    try:
        with engine.begin() as conn:
            conn.execute(text("DROP SCHEMA IF EXISTS public CASCADE"))
            conn.execute(text("CREATE SCHEMA public"))
    finally:
        engine.dispose()


@pytest.fixture(params=BACKENDS)
def empty_settings(request: pytest.FixtureRequest, tmp_path: Path) -> Settings:
    """Settings for an empty database of each backend (no schema yet)."""
    if request.param == "postgresql":
        assert PG_URL
        reset_postgres(PG_URL)
        return Settings(state_dir=tmp_path, db=PG_URL)
    return Settings(state_dir=tmp_path / "state")


@pytest.fixture
def settings(empty_settings: Settings) -> Settings:
    """The same, with the schema at head."""
    upgrade(empty_settings)
    return empty_settings


@pytest.fixture(params=BACKENDS)
def base_args(request: pytest.FixtureRequest, tmp_path: Path) -> list[str]:
    """Global CLI options for a fresh store of each backend."""
    args = ["--state-dir", str(tmp_path / "state")]
    if request.param == "postgresql":
        assert PG_URL
        reset_postgres(PG_URL)
        args += ["--db", PG_URL]
    return args
