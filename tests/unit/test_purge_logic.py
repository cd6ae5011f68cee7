"""The purge's options and report, without a daemon: strict options for the admin
API (a typo must never turn a dry run into a purge), the summary that goes to the
audit log, and the JSON round trip used by ``purge --host``."""

from __future__ import annotations

import pytest

from dockergate.admin.purge import PurgeOptions, PurgeReport, PurgeRow, owner_filter


def test_kinds_follow_the_flags() -> None:
    assert PurgeOptions("bob").kinds == ("service", "container")
    assert PurgeOptions("bob", volumes=True).kinds == ("service", "container", "volume")
    assert PurgeOptions("bob", networks=True).kinds == ("service", "container", "network")
    assert PurgeOptions("bob", everything=True).kinds == (
        "service",
        "container",
        "volume",
        "network",
        "secret",
        "config",
    )


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ([], "JSON object"),
        ({}, '"user"'),
        ({"user": 3}, '"user"'),
        ({"user": "bob", "dryrun": True}, "unknown field"),
        ({"user": "bob", "dry_run": "yes"}, '"dry_run" must be true or false'),
        ({"user": "bob", "dry_run": 1}, '"dry_run" must be true or false'),
        ({"user": "Bob"}, "invalid user name"),
        ({"user": "bob,dockergate.owner=alice"}, "invalid user name"),
        ({"user": "bob", "stop_only": True, "volumes": True}, "--stop-only removes nothing"),
    ],
)
def test_api_options_are_strict(body: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        PurgeOptions.from_json(body)


def test_options_round_trip_and_command_line() -> None:
    opts = PurgeOptions("bob", dry_run=True, volumes=True, everything=True)
    assert PurgeOptions.from_json(opts.as_json()) == opts
    assert opts.command_line() == "purge --user bob --dry-run --volumes --all"


def test_owner_filter_is_exact_label() -> None:
    assert owner_filter("bob") == "%7B%22label%22%3A%7B%22dockergate.owner%3Dbob%22%3Atrue%7D%7D"


def test_summary_counts_and_round_trip() -> None:
    report = PurgeReport(
        PurgeOptions("bob", volumes=True),
        [
            PurgeRow("service", "web", "s1", "removed"),
            PurgeRow("container", "a", "c1", "removed"),
            PurgeRow("container", "b", "c2", "already gone"),
            PurgeRow("container", "c", "c3", "removed"),
            PurgeRow("volume", "v", "v", "failed: volume is in use", ok=False),
        ],
        manager=True,
    )
    assert report.failed == 1
    assert report.counts() == {
        "service": {"removed": 1},
        "container": {"removed": 2, "already gone": 1},
        "volume": {"failed": 1},
    }
    assert report.summary() == (
        "removed: 1 service, 2 containers; already gone: 1 container; 1 failed"
    )
    again = PurgeReport.from_dict(report.as_dict())
    assert again.rows == report.rows and again.options == report.options and again.manager


def test_summary_of_stop_only_and_empty() -> None:
    report = PurgeReport(
        PurgeOptions("bob", stop_only=True),
        [
            PurgeRow("service", "web", "s1", "scaled to 0 (was 3)"),
            PurgeRow("container", "a", "c1", "killed"),
        ],
    )
    assert report.summary() == "scaled to 0: 1 service; killed: 1 container; 0 failed"
    assert PurgeReport(PurgeOptions("bob")).summary() == "nothing owned by 'bob' on this engine"


def test_node_only_leaves_swarm_objects_to_a_manager() -> None:
    opts = PurgeOptions("bob", everything=True, node_only=True)
    assert opts.kinds == ("container", "volume", "network")
    assert PurgeOptions.from_json(opts.as_json()) == opts
    assert opts.command_line() == "purge --user bob --all --node-only"
    with pytest.raises(ValueError, match='"node_only" must be true or false'):
        PurgeOptions.from_json({"user": "bob", "node_only": "yes"})
