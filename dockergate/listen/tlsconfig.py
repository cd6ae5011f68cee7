"""SSL contexts for the TLS listener and for a TLS upstream daemon."""

from __future__ import annotations

import ssl
from pathlib import Path


def server_context(cert: Path, key: Path, client_ca: Path) -> ssl.SSLContext:
    """Client certificates are optional (a token may stand in), but when one is
    presented it must chain to dockergate's CA or the handshake fails."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cert, key)
    ctx.load_verify_locations(cafile=str(client_ca))
    ctx.verify_mode = ssl.CERT_OPTIONAL
    ctx.options |= ssl.OP_NO_RENEGOTIATION
    # No ALPN: advertising h2 would invite HTTP/2, which the gate does not speak.
    return ctx


def upstream_context(ca: str | None, cert: str | None, key: str | None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=ca)
    if cert:
        ctx.load_cert_chain(cert, key)
    return ctx
