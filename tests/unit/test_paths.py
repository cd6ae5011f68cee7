"""Route matching sees the path the daemon routes on."""

from __future__ import annotations

import pytest

from dockergate.api.routes import FINITE_ROUTES, HIJACK_ROUTES, ROUTES, match
from dockergate.proxy.http import HTTPError
from dockergate.proxy.paths import normalise


@pytest.mark.parametrize(
    ("raw", "path", "version"),
    [
        ("/v1.41/containers/json", "/containers/json", "1.41"),
        ("/containers/json", "/containers/json", None),
        ("//v1.41//containers/./json", "/containers/json", "1.41"),
        ("/v1.41/containers/x/../json", "/containers/json", "1.41"),
        ("/v1.41/%63ontainers/json", "/containers/json", "1.41"),
        ("/%2e%2e/v1.41/_ping", "/_ping", "1.41"),
        ("/v1/_ping", "/_ping", "1"),
        ("/", "/", None),
        ("/v1.41", "/", "1.41"),
        ("/version", "/version", None),
    ],
)
def test_normalise(raw: str, path: str, version: str | None) -> None:
    assert normalise(raw) == (path, version)


@pytest.mark.parametrize("raw", ["/containers/%zz/json", "/a%00b", "/x%"])
def test_bad_escapes(raw: str) -> None:
    with pytest.raises(HTTPError):
        normalise(raw)


def test_routes() -> None:
    m = match("GET", "/containers/abc/json")
    assert m and m.route.name == "container.inspect" and m.params == {"id": "abc"}
    m = match("POST", "/containers/create")
    assert m and m.route.name == "container.create"
    m = match("GET", "/images/registry:5000/team/app:1/json")
    assert m and m.route.name == "image.inspect" and m.params["name"] == "registry:5000/team/app:1"
    assert match("GET", "/images/json").route.name == "image.list"  # type: ignore[union-attr]
    m = match("POST", "/exec/abc/start")
    assert m and m.route.hijack
    assert match("GET", "/debug/pprof/") is None  # default deny
    assert match("PATCH", "/containers/abc/json") is None


def test_route_flags_name_routes_of_the_table() -> None:
    """A misspelt name in the hijack or finite set would silently turn its flag off."""
    names = {r.name for r in ROUTES}
    assert names >= HIJACK_ROUTES
    assert names >= FINITE_ROUTES
    assert all(r.method == "GET" for r in ROUTES if r.finite)
