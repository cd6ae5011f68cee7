"""Migration scripts, applied in ``down_revision`` order (a package so the wheel ships it)."""
