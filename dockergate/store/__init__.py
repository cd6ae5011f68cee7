"""The user store: who may use the gate, with which profile and which credentials.

Kept in a real database (SQLite in the state dir by default, PostgreSQL on request)
behind SQLAlchemy and Alembic, so that the CLI and a running gate share one source
of truth and the schema can evolve with migrations. The gate never reads it per
request: :mod:`dockergate.listen.directory` keeps an in-memory snapshot and polls a
single revision counter.
"""

from dockergate.store.errors import (
    Conflict,
    NotFound,
    SchemaError,
    StoreError,
    StoreUnavailable,
)

__all__ = ["Conflict", "NotFound", "SchemaError", "StoreError", "StoreUnavailable"]
