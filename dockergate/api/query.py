"""Query strings and ``filters`` as dockerd reads them, and the owner filter pushed into them.

Go's ``url.ParseQuery`` keeps every value and ``Form.Get`` returns the *first*;
semicolons are an error since Go 1.17. The gate parses the same way, refuses what
Go would read differently, and re-encodes the query it checked, with exactly one
``filters`` parameter.
"""

from __future__ import annotations

import json
import re
from typing import Any
from urllib.parse import quote, unquote_plus

from dockergate.api.gotext import GO_SPACE
from dockergate.proxy.http import HTTPError

Query = list[tuple[str, str]]


def _unescape(text: str) -> str:
    # Go rejects a '%' not followed by two hex digits; so does the gate.
    i = text.find("%")
    while i != -1:
        pair = text[i + 1 : i + 3]
        if len(pair) != 2 or any(c not in "0123456789abcdefABCDEF" for c in pair):
            raise HTTPError(400, f"invalid percent-escape in query {text[:40]!r}")
        i = text.find("%", i + 3)
    return unquote_plus(text, errors="strict")


def parse_query(raw: str) -> Query:
    if ";" in raw:
        raise HTTPError(400, "semicolons are not allowed in the query string")
    out: Query = []
    for part in raw.split("&"):
        if not part:
            continue
        key, _, value = part.partition("=")
        try:
            out.append((_unescape(key), _unescape(value)))
        except UnicodeDecodeError:
            raise HTTPError(400, "query string is not valid UTF-8") from None
    return out


def first(query: Query, key: str) -> str | None:
    """The value dockerd uses: the first one (Go's ``Form.Get``)."""
    for k, v in query:
        if k == key:
            return v
    return None


def every(query: Query, key: str) -> list[str]:
    """Every value of a repeated parameter (Go's ``Form[key]``: ``t``, ``changes``)."""
    return [v for k, v in query if k == key]


_WHOLE_NUMBER = re.compile(r"-?[0-9]{1,19}")


def first_int(query: Query, key: str) -> int:
    """A whole-number parameter (0 when absent). dockerd reads a malformed one as 0;
    the gate refuses it instead of guessing what the client meant.

    Only what Go's ``strconv.ParseInt`` reads as the same number passes: ASCII digits,
    no spaces (Python's ``int`` also takes ``" 5"`` and Arabic-Indic digits, which
    dockerd reads as 0: a build's ``cpuquota`` checked as one CPU ran unlimited)."""
    text = first(query, key) or "0"
    if not _WHOLE_NUMBER.fullmatch(text) or not -(1 << 63) <= int(text) < 1 << 63:
        raise HTTPError(400, f"query parameter {key}={text[:40]!r} is not a whole number")
    return int(text)


GO_FALSE = frozenset({"", "0", "no", "false", "none"})


def bool_value(query: Query, key: str) -> bool:
    """A boolean parameter as dockerd's ``httputils.BoolValue`` reads it: anything but
    these false words is true, after Go's ``TrimSpace`` (Python's ``strip`` also drops
    ``\x1c``-``\x1f``: ``pull=%1Cfalse`` read as false here was true to dockerd)."""
    return (first(query, key) or "").strip(GO_SPACE).lower() not in GO_FALSE


def replace(query: Query, key: str, value: str | None) -> Query:
    """Drop every ``key`` parameter and, unless value is None, add exactly one."""
    out = [(k, v) for k, v in query if k != key]
    if value is not None:
        out.append((key, value))
    return out


def encode(query: Query) -> str:
    return "&".join(f"{quote(k, safe='')}={quote(v, safe='')}" for k, v in query)


Filters = dict[str, dict[str, bool]]


def parse_filters(raw: str | None) -> Filters:
    """Parse ``filters`` in both the map form and the legacy list form dockerd accepts."""
    if raw is None or raw == "":
        return {}
    from dockergate.api.body import BodyError, loads_strict

    try:
        data: Any = loads_strict(raw.encode())
    except BodyError as exc:
        raise HTTPError(400, f"invalid filters: {exc.message}") from None
    if not isinstance(data, dict):
        raise HTTPError(400, "invalid filters: expected a JSON object")
    out: Filters = {}
    for key, values in data.items():
        if isinstance(values, dict):
            if not all(isinstance(v, bool) for v in values.values()):
                raise HTTPError(400, f"invalid filters: values of {key!r} must be booleans")
            out[key] = {str(v): b for v, b in values.items()}
        elif isinstance(values, list) and all(isinstance(v, str) for v in values):
            out[key] = dict.fromkeys(values, True)
        else:
            raise HTTPError(400, f"invalid filters: {key!r} must map values to true")
    return out


def with_label(filters: Filters, label: str) -> Filters:
    """Add a label filter. dockerd ANDs label filters, but Swarm's lists keep one value
    per label name: the caller removes any other entry for ``label``'s name first."""
    merged = {k: dict(v) for k, v in filters.items()}
    merged.setdefault("label", {})[label] = True
    return merged


def encode_filters(filters: Filters) -> str:
    return json.dumps(filters, separators=(",", ":"), sort_keys=True)
