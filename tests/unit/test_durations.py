"""Go's time.ParseDuration, as dockergate reads compose files and HEALTHCHECK flags."""

from __future__ import annotations

import pytest

from dockergate.policy.durations import parse_duration


@pytest.mark.parametrize(
    ("text", "ns"),
    [
        ("0", 0),
        ("-0", 0),
        ("500ms", 500_000_000),
        ("1m30s", 90 * 10**9),
        ("1h30m10.5s", 5_410_500_000_000),
        ("+2s", 2 * 10**9),
        ("-1s", -(10**9)),
        (".5s", 500_000_000),
        ("1.s", 10**9),
        ("5µs", 5_000),  # U+00B5
        ("2000000μs", 2 * 10**9),  # U+03BC, which Go reads too
        ("999999999.9999999999ns", 999_999_999),  # not rounded up to 1s
    ],
)
def test_read_as_go_reads_it(text: str, ns: int) -> None:
    assert parse_duration(text) == ns


@pytest.mark.parametrize(
    "text", ["", "1", "s", ".s", "1x", "+-1s", "--1s", " 1s", "1e3s", "9223372036854775808ns"]
)
def test_refused_where_go_errs(text: str) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)
