"""Strict JSON for request bodies: parse like a stricter Go, re-encode unambiguously.

The gate decides on a body it parsed in Python, but dockerd acts on the bytes it
decodes with Go's ``encoding/json``.  Every place where the two parsers could read
the same bytes differently is a way around the policy, so this module refuses
them instead of picking an interpretation:

- duplicate keys (Go keeps the last one and, for struct fields, *merges* a second
  object into the first; Python keeps the last one),
- ``NaN``/``Infinity`` (Python accepts them, Go does not) and numbers that do not
  fit a float64 (Python turns ``1e400`` into ``inf``),
- a UTF-8 byte order mark, invalid UTF-8 and lone surrogate escapes (Go replaces
  them with U+FFFD, so a checked string would differ from the one used),
- anything but whitespace after the value (older dockerd decodes one value and
  ignores the rest, newer ones refuse it: either way the gate must not check a
  value that is not the one acted on),
- an empty body, and nesting deeper than any Engine API body needs.

After the checks the gate forwards :func:`dumps` of the checked object, never
the client's bytes: then what was checked is exactly what dockerd reads.

:func:`go_fold` is the key-matching rule of ``encoding/json`` (struct fields are
matched case-insensitively under Unicode *simple* case folding when no field has
the exact spelling), used by :mod:`dockergate.api.schema` to spot keys that Go
would map onto a field the policy looks at under another spelling.
"""

from __future__ import annotations

import json
import math
import re
from functools import lru_cache
from typing import Any

__all__ = [
    "MAX_DEPTH",
    "BodyError",
    "PathPart",
    "dumps",
    "format_path",
    "go_fold",
    "loads_strict",
]

# Engine API bodies nest about eight levels deep (service spec -> TaskTemplate ->
# ContainerSpec -> Mounts -> [i] -> VolumeOptions -> DriverConfig -> Options).
# The limit stays far below Python's recursion limit so a hostile body is a 400,
# never a RecursionError somewhere in the gate.
MAX_DEPTH = 64

# Longest number literal accepted: more digits than any int64/float64 needs, and
# a bound on the work a number can cost (int() of a long digit string is quadratic).
MAX_NUMBER_LEN = 64

_SURROGATE = re.compile("[\ud800-\udfff]")
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


class BodyError(Exception):
    """A request body the gate refuses; ``status`` is the HTTP status to answer."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message

    def __str__(self) -> str:
        return self.message


PathPart = str | int


def format_path(parts: tuple[PathPart, ...] | list[PathPart]) -> str:
    """Render a JSON path the way a person reads it: ``HostConfig.Binds[2]``.

    Keys that are not plain identifiers (label keys, ports, paths) are shown as
    JSON strings in brackets, e.g. ``Labels["com.example.team"]``.
    """
    out: list[str] = []
    for part in parts:
        if isinstance(part, int):
            out.append(f"[{part}]")
        elif _IDENT.match(part):
            out.append(f".{part}" if out else part)
        else:
            out.append(f"[{json.dumps(part)}]")
    return "".join(out) or "(body)"


class _Pairs(list[tuple[str, Any]]):
    """An object as the parser saw it: every key, duplicates included, in order."""


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _parse_float(text: str) -> float:
    if len(text) > MAX_NUMBER_LEN:
        raise ValueError(f"number {text[:20]}... is too long")
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number {text} is out of range")
    return value


def _parse_int(text: str) -> int:
    if len(text) > MAX_NUMBER_LEN:
        raise ValueError(f"number {text[:20]}... is too long")
    return int(text)


_DECODER = json.JSONDecoder(
    object_pairs_hook=_Pairs,
    parse_constant=_reject_constant,
    parse_float=_parse_float,
    parse_int=_parse_int,
    strict=True,
)


def loads_strict(data: bytes) -> Any:
    """Parse a request body, refusing anything Go and Python could read differently.

    Returns plain ``dict``/``list``/``str``/``int``/``float``/``bool``/``None``
    values; raises :class:`BodyError` (400) saying what is wrong and where.
    """
    if not data.strip(b" \t\r\n"):
        raise BodyError(400, "invalid JSON: the request body is empty")
    if data.startswith(b"\xef\xbb\xbf"):
        raise BodyError(400, "invalid JSON: the body starts with a UTF-8 byte order mark")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BodyError(400, f"invalid JSON: invalid UTF-8 at byte {exc.start}") from None
    try:
        raw = _DECODER.decode(text)
    except json.JSONDecodeError as exc:
        where = len(text[: exc.pos].encode("utf-8"))
        msg = exc.msg
        if msg == "Extra data":
            msg = "unexpected data after the JSON value"
        raise BodyError(
            400, f"invalid JSON: {msg} at line {exc.lineno} column {exc.colno} (byte {where})"
        ) from None
    except RecursionError:
        raise BodyError(400, f"invalid JSON: nested deeper than {MAX_DEPTH} levels") from None
    except ValueError as exc:  # from the number and constant hooks
        raise BodyError(400, f"invalid JSON: {exc}") from None
    return _finish(raw, [], 0)


def _finish(value: Any, path: list[PathPart], depth: int) -> Any:
    """Turn parser output into plain values, checking keys, strings and depth."""
    if isinstance(value, str):
        _check_string(value, path, "string")
        return value
    if isinstance(value, _Pairs):
        if depth >= MAX_DEPTH:
            raise BodyError(
                400, f"invalid JSON: nested deeper than {MAX_DEPTH} levels at {format_path(path)}"
            )
        out: dict[str, Any] = {}
        for key, item in value:
            _check_string(key, path, "key")
            if key in out:
                where = format_path(path) if path else "the top-level object"
                raise BodyError(400, f"duplicate key {json.dumps(key)} in {where}")
            path.append(key)
            out[key] = _finish(item, path, depth + 1)
            path.pop()
        return out
    if isinstance(value, list):
        if depth >= MAX_DEPTH:
            raise BodyError(
                400, f"invalid JSON: nested deeper than {MAX_DEPTH} levels at {format_path(path)}"
            )
        items: list[Any] = []
        for i, item in enumerate(value):
            path.append(i)
            items.append(_finish(item, path, depth + 1))
            path.pop()
        return items
    return value


def _check_string(s: str, path: list[PathPart], what: str) -> None:
    if _SURROGATE.search(s):
        raise BodyError(
            400,
            f"invalid JSON: {what} at {format_path(path)} contains an unpaired "
            "UTF-16 surrogate escape",
        )


def dumps(obj: Any) -> bytes:
    """Encode a checked body for forwarding: compact, ASCII-only, no NaN.

    ASCII-only (non-ASCII as ``\\uXXXX`` escapes) so the bytes cannot be read
    differently by any decoder; key order is the object's own, so the result is
    deterministic for a given object.  Raises ``ValueError``/``TypeError`` for
    values that are not JSON, which would be a bug in the caller.
    """
    return json.dumps(obj, ensure_ascii=True, allow_nan=False, separators=(",", ":")).encode(
        "ascii"
    )


# --------------------------------------------------------------------------
# Go's case-insensitive key matching.
# --------------------------------------------------------------------------


@lru_cache(maxsize=4096)
def _fold_char(c: str) -> str:
    """The representative of ``c``'s class under Unicode simple case folding.

    Go's ``strings.EqualFold`` treats two runes as equal when one is reachable
    from the other through ``unicode.SimpleFold``'s orbit, which is the set of
    characters with the same simple case folding (CaseFolding.txt statuses C
    and S; not F, the full folding that ``str.casefold`` does, nor T, the Turkic
    dotted/dotless i).  Python has no table of simple foldings, so it is
    rebuilt from what it has:

    - ``casefold()`` giving one character is the C mapping (or none);
    - when ``casefold()`` gives several (status F), the S mapping, if there is
      one, is the simple lowercase: ``lower()`` when it is one character, itself
      folded the same way (ẞ -> ß; ᾈ -> ᾀ);
    - otherwise the character is alone in its class (İ, whose only foldings are
      F and T).
    """
    f = c.casefold()
    if len(f) == 1:
        return f
    low = c.lower()
    if len(low) == 1 and low != c:
        return _fold_char(low)
    return c


def go_fold(s: str) -> str:
    """Map ``s`` so that ``go_fold(a) == go_fold(b)`` iff Go's ``EqualFold(a, b)``.

    Go compares rune by rune, so this maps rune by rune to a representative of
    its simple-folding class: ``"K"``, ``"k"`` and ``"\\u212a"`` (Kelvin sign)
    all map to ``"k"``; ``"S"``, ``"s"`` and ``"\\u017f"`` (long s) to ``"s"``;
    ``"ß"`` stays ``"ß"`` (it does not fold to ``"ss"`` as ``str.casefold``
    would).  Checked against Go 1.19's tables (Unicode 13), see the unit tests;
    Python's newer Unicode only adds classes among characters Go does not fold.
    """
    if s.isascii():
        return s.lower()
    return "".join(map(_fold_char, s))
