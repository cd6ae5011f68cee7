"""The request path's memo keeps short calls only (round 31f)."""

from __future__ import annotations

from dockergate.caching import short_calls_cached


def test_long_calls_are_computed_each_time_and_not_kept() -> None:
    calls: list[str] = []

    @short_calls_cached(maxsize=8, longest=10)
    def upper(text: str) -> str:
        calls.append(text)
        return text.upper()

    assert upper("short") == upper("short") == "SHORT"
    assert calls == ["short"]  # memoised
    long = "x" * 11
    assert upper(long) == upper(long) == long.upper()
    assert calls == ["short", long, long]  # not kept
