"""dockerd's per-version drops: which bodies carry a field an old API would lose."""

from __future__ import annotations

from dockergate.api.versions import CONTAINER_FIELDS, SERVICE_FIELDS, _set, api_version


def test_api_version() -> None:
    assert api_version(None) is None
    assert api_version("") is None
    assert api_version("1.40") == (1, 40)
    assert api_version("1.40") < (1, 41) <= (api_version("1.41") or ())
    assert api_version("1.9") < (1, 40)  # numbers, not text: 1.9 is older than 1.40


def test_set_walks_lists_and_ignores_empty_values() -> None:
    field = CONTAINER_FIELDS[0][0].split(".")
    flat = {"HostConfig": {"Mounts": [{"Type": "bind"}, {"BindOptions": {"NonRecursive": True}}]}}
    assert _set(flat, field)
    assert not _set({"HostConfig": {"Mounts": [{"BindOptions": {"NonRecursive": False}}]}}, field)
    assert not _set({"HostConfig": {"Mounts": None}}, field)
    assert not _set({"HostConfig": "x"}, field)
    pids = SERVICE_FIELDS[0][0].split(".")
    assert _set({"TaskTemplate": {"Resources": {"Limits": {"Pids": 4096}}}}, pids)
    assert not _set({"TaskTemplate": {"Resources": {"Limits": {"Pids": 0}}}}, pids)


def test_job_modes_count_even_empty() -> None:
    """A global job is ``"GlobalJob": {}``: present is set (round 31d)."""
    fields = {name: since for name, since in SERVICE_FIELDS}
    assert fields["Mode.GlobalJob"] == fields["Mode.ReplicatedJob"] == (1, 41)
    assert _set({"Mode": {"GlobalJob": {}}}, ["Mode", "GlobalJob"])
    assert not _set({"Mode": {"GlobalJob": None}}, ["Mode", "GlobalJob"])
    assert not _set({"Mode": {"Replicated": {}}}, ["Mode", "GlobalJob"])
