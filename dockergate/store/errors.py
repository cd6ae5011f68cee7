"""Store errors: each message is one line an operator can act on.

The CLI turns any :class:`StoreError` into ``Error: <message>`` and exit status 1,
so the wording here is what people read.
"""

from __future__ import annotations


class StoreError(Exception):
    """Base class: something about the store stops the operation."""


class NotFound(StoreError):
    """An unknown user name (or another named thing)."""


class Conflict(StoreError):
    """A unique value (name, unix uid, certificate serial) is already taken."""


class SchemaError(StoreError):
    """The database schema is not the one this code was written for."""


class StoreUnavailable(StoreError):
    """The database cannot be opened or read (missing file, server down, corrupt)."""
