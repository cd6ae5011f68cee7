"""Review 23b: small findings in the store and the body schema (fast, no engine)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from dockergate.api.schema import parse_body
from dockergate.config import Settings
from dockergate.store.repository import Store


@pytest.fixture
def store(settings: Settings) -> Iterator[Store]:
    with Store.open(settings) as s:
        yield s


def test_finding_mark_purged_of_no_user_changes_nothing(store: Store) -> None:
    """Low. ``mark_purged`` of a name that is no user returns False, but runs in
    ``_write``, which bumps the revision anyway: every gate reloads its snapshot and
    rechecks every stream for nothing (``dockergate purge`` of labels left by a removed
    user). Expected: the revision is unchanged when nothing was written."""
    before = store.revision()
    assert store.mark_purged("r23b-nobody") is False
    assert store.revision() == before


def test_finding_an_int64_past_its_range_is_not_refused() -> None:
    """Low. ``_out_of_range`` takes every ``int`` field as able to hold up to 2**64-1
    (uint64): 2**63 in an int64 field (StopTimeout, OomScoreAdj, NanoCpus, ...) still
    reaches dockerd, which fails to decode it, the 500 the check was made for.
    Expected: a 400 of the gate's (e.g. by the field's Go type; at least int64's range
    for signed fields)."""
    _, problems = parse_body(
        b'{"StopTimeout": 9223372036854775808}', "container.create", allow_unknown=False
    )
    assert problems, "2**63 in an int64 field passed the schema"
