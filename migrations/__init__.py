"""Alembic migrations of the dockergate store, installed as ``dockergate._migrations``.

Run through :func:`dockergate.store.db.upgrade` (``dockergate init`` and
``dockergate db upgrade``); no ``alembic.ini`` is involved. To write a new one from
the repository root, after changing ``dockergate/store/models.py``::

    .venv/bin/python -m dockergate.store.revise "what changed"
"""
