"""Go's ``time.ParseDuration``, for the durations users write where Go reads them:
compose and stack files (``interval: 500ms``, ``stop_grace_period: 1m30s``) and
Dockerfile ``HEALTHCHECK --interval=...`` flags.

A port of Go's algorithm rather than a float reading: the whole part is an integer
and only the fraction goes through a float, as Go's does, so a value just under a
bound (``999999999.9999999999ns``) is read as Go reads it, not rounded up to it.
"""

from __future__ import annotations

INT64_MAX = (1 << 63) - 1

# Go's unitMap: "µs" (U+00B5) and "μs" (U+03BC) are both microseconds.
UNITS = {
    "ns": 1,
    "us": 10**3,
    "µs": 10**3,
    "μs": 10**3,
    "ms": 10**6,
    "s": 10**9,
    "m": 60 * 10**9,
    "h": 3600 * 10**9,
}


def _digits(s: str, i: int) -> int:
    while i < len(s) and "0" <= s[i] <= "9":
        i += 1
    return i


def parse_duration(text: str) -> int:
    """Nanoseconds, or :class:`ValueError` where Go returns an error."""
    original, s = text, text
    negative = False
    if s[:1] in ("-", "+"):
        negative, s = s[0] == "-", s[1:]
    if s == "0":
        return 0
    if not s:
        raise ValueError(f"invalid duration {original!r}")
    total = 0
    while s:
        end = _digits(s, 0)
        whole, pre = (int(s[:end]) if end else 0), end > 0
        s = s[end:]
        fraction, scale, post = 0, 1.0, False
        if s.startswith("."):
            end = _digits(s, 1)
            post = end > 1
            overflow = False
            for ch in s[1:end]:  # Go's leadingFraction: digits past int64 are dropped
                if overflow:
                    continue
                if fraction > INT64_MAX // 10:
                    overflow = True
                    continue
                fraction = fraction * 10 + ord(ch) - 48
                if fraction > INT64_MAX:
                    overflow = True
                    fraction //= 10
                    continue
                scale *= 10
            s = s[end:]
        if not pre and not post:
            raise ValueError(f"invalid duration {original!r}")
        end = 0
        while end < len(s) and s[end] != "." and not "0" <= s[end] <= "9":
            end += 1
        unit = UNITS.get(s[:end])
        if unit is None:
            raise ValueError(f"unknown unit {s[:end]!r} in duration {original!r}")
        s = s[end:]
        if whole > INT64_MAX // unit:
            raise ValueError(f"invalid duration {original!r}")
        value = whole * unit
        if fraction:
            value += int(float(fraction) * (float(unit) / scale))
        total += value
        if total > INT64_MAX + (1 if negative else 0):
            raise ValueError(f"invalid duration {original!r}")
    return -total if negative else total
