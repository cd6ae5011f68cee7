"""Extension points the store plugs into (schema upgrade and admin registration at init)."""

from __future__ import annotations

from dockergate.config import Settings


def after_init(settings: Settings) -> list[str]:
    """Run after the PKI exists; returns lines describing what was done."""
    return []
