"""Query parameters read the way dockerd's Go code reads them (review 24a)."""

from __future__ import annotations

import pytest

from dockergate.api.query import bool_value, first_int
from dockergate.proxy.http import HTTPError


@pytest.mark.parametrize(
    ("text", "value"),
    [("", 0), ("0", 0), ("100000", 100000), ("-1", -1), ("007", 7), (str(2**63 - 1), 2**63 - 1)],
)
def test_whole_numbers_go_reads_alike(text: str, value: int) -> None:
    assert first_int([("cpuquota", text)], "cpuquota") == value
    assert first_int([], "cpuquota") == 0


@pytest.mark.parametrize(
    "text",
    [
        "--1",  # lstrip("-") took every minus
        "\u00b2",  # a superscript: isdigit() but not int()
        "\u0661\u0660\u0660\u0660\u0660\u0660",  # Arabic-Indic: int() reads 100000, Go 0
        " 5",  # int() strips, Go's ParseInt does not
        "5 ",
        "+5",
        "1_000",
        str(2**63),  # past int64
        "x",
    ],
)
def test_what_go_reads_otherwise_is_refused(text: str) -> None:
    with pytest.raises(HTTPError) as caught:
        first_int([("cpuquota", text)], "cpuquota")
    assert caught.value.status == 400


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("", False),
        ("0", False),
        (" FALSE\t", False),
        ("none", False),
        ("\u3000no\x85", False),  # Go's unicode.IsSpace
        ("1", True),
        ("x", True),
        ("\x1cfalse", True),  # Python's strip drops \x1c-\x1f, Go's TrimSpace does not
        ("false\x1f", True),
    ],
)
def test_booleans_as_dockerd_reads_them(text: str, value: bool) -> None:
    assert bool_value([("pull", text)], "pull") is value


def test_owner_label_filters_of_the_client_cannot_stand_in_for_the_gates() -> None:
    """Swarm's lists keep one value per label name: the client's owner entries are
    dropped (bare: any owner), one naming another owner makes the answer empty."""
    import json
    from urllib.parse import parse_qs

    from dockergate.api.dispatch import NO_OWNER_MATCH, owner_filtered

    def labels(filters: dict[str, object]) -> dict[str, bool]:
        _, encoded = owner_filtered("filters=" + json.dumps(filters), "amy")
        return dict(json.loads(parse_qs(encoded)["filters"][0])["label"])

    ours = {"dockergate.owner=amy": True}
    assert labels({"label": {"dockergate.owner": True, "team=x": True}}) == {**ours, "team=x": True}
    assert labels({"label": {"dockergate.owner=amy": True}}) == ours
    assert labels({"label": {"dockergate.owner=bob": True}}) == {**ours, NO_OWNER_MATCH: True}
    assert labels({"label": ["dockergate.owner=", "dockergate.owner =bob"]}) == {
        **ours,
        NO_OWNER_MATCH: True,
        "dockergate.owner =bob": True,  # another name to Go too: ANDed, harmless
    }
