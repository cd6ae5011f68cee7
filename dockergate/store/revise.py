"""Write the next migration from the models (for developers, from a source checkout).

    .venv/bin/python -m dockergate.store.revise "add audit table"

Upgrades a scratch SQLite database to the current head, lets Alembic autogenerate
the difference between it and :mod:`dockergate.store.models`, and writes
``migrations/versions/NNNN_<slug>.py`` with the next sequential revision id (ids are
numbers, not Alembic's random hashes, so the order is obvious in reviews). Always
read the result: autogenerate cannot see renames and some server-side defaults, and
the migration must also work on PostgreSQL (``tests/unit/test_store.py`` checks that
models and migrations agree on both). Then ``ruff format`` the new file.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from dockergate.store.db import alembic_config, make_engine, migrations_dir


def next_revision_id(versions: Path) -> str:
    numbers = [int(p.name[:4]) for p in versions.glob("[0-9][0-9][0-9][0-9]_*.py")]
    return f"{max(numbers, default=0) + 1:04d}"


def main(argv: list[str]) -> int:
    from alembic import command

    if len(argv) != 1 or not argv[0].strip():
        print(__doc__, file=sys.stderr)
        return 2
    directory = migrations_dir()
    if not (directory.parent / "pyproject.toml").exists():
        print(f"{directory} is not in a source checkout; run this from the repository")
        return 1
    rev_id = next_revision_id(directory / "versions")
    with tempfile.TemporaryDirectory() as scratch:
        url = f"sqlite:///{Path(scratch) / 'scratch.db'}"
        engine = make_engine(url, create=True)
        try:
            with engine.begin() as conn:
                command.upgrade(alembic_config(url, conn), "head")
            with engine.begin() as conn:
                command.revision(
                    alembic_config(url, conn), message=argv[0], autogenerate=True, rev_id=rev_id
                )
        finally:
            engine.dispose()
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
