"""Extension points the store plugs into (schema upgrade and admin registration at init)."""

from __future__ import annotations

import click
from cryptography import x509

from dockergate.config import Settings
from dockergate.listen.pki import fingerprint
from dockergate.store.db import describe_url, upgrade
from dockergate.store.errors import StoreError
from dockergate.store.repository import Store

ADMIN_USER = "admin"


def after_init(settings: Settings) -> list[str]:
    """Run after the PKI exists: bring the schema to head, register the admin bundle.

    Idempotent, so ``dockergate init`` can be re-run after an upgrade of dockergate
    (it then applies new migrations) without duplicating anything. Returns lines
    describing what was done.
    """
    try:
        return _after_init(settings)
    except StoreError as exc:
        raise click.ClickException(str(exc)) from exc


def _after_init(settings: Settings) -> list[str]:
    done: list[str] = []
    before, after = upgrade(settings)
    if before != after:
        done.append(
            f"database {describe_url(settings.db_url())}: schema {before or 'empty'} -> {after}"
        )
    cert_path = settings.clients_dir / ADMIN_USER / "cert.pem"
    if not cert_path.exists():
        return done
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    with Store.open(settings) as store:
        done.extend(
            store.ensure_admin(
                ADMIN_USER, cert.serial_number, fingerprint(cert), cert.not_valid_after_utc
            )
        )
    return done
