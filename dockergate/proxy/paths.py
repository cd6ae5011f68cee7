"""Path normalisation: what the gate matches routes against.

dockerd routes on the percent-decoded path, accepts an optional ``/vX.YY`` prefix,
and (gorilla/mux) cleans ``//`` and dot-segments by redirecting. The gate matches on
the same view: decoded, version stripped, cleaned; the original target is what it
forwards, so a redirect from the daemon comes back through the gate and is
authorised again.
"""

from __future__ import annotations

import posixpath
import re

from dockergate.caching import short_calls_cached
from dockergate.proxy.http import HTTPError, decode_path

_VERSION_PREFIX = re.compile(r"^/v[0-9]+(?:\.[0-9]+)*(?=/|$)")
_BAD_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")


@short_calls_cached(maxsize=4096)
def normalise(path: str) -> tuple[str, str | None]:
    """Return (normalised path, API version or None) for a request path (cached: a
    client repeats the same few paths; errors are not cached)."""
    if _BAD_ESCAPE.search(path):
        raise HTTPError(400, "invalid percent-escape in the request path")
    decoded = decode_path(path)
    if "\x00" in decoded:
        raise HTTPError(400, "NUL byte in the request path")
    cleaned = posixpath.normpath(decoded) if decoded else "/"
    if cleaned.startswith("//"):
        cleaned = "/" + cleaned.lstrip("/")
    version = None
    match = _VERSION_PREFIX.match(cleaned)
    if match:
        version = match.group(0)[2:]
        cleaned = cleaned[match.end() :] or "/"
    return cleaned, version
