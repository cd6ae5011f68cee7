"""The shape of every request body the gate inspects, and Go's way of reading keys.

dockerd decodes a body into Go structs with ``encoding/json``, which matches an
object key to a struct field by exact spelling first and then *case-insensitively*
(Unicode simple folding: ``hostconfig``, ``HOSTCONFIG`` and ``ho\\u017ftConfig``
all set ``HostConfig``), silently ignores keys that match no field, and for map
fields (``Labels``, ``Sysctls``...) keeps keys as data.  A gate that looks up
``body["HostConfig"]["Privileged"]`` in Python therefore needs to know, for each
object in the body, which keys are fields and how they are spelled, or a
differently spelled key walks past it.

:func:`validate` walks a parsed body against the schema of its route and
reports:

- ``case``: a key that is not the exact spelling of a field but Go would fold
  onto one (``hostconfig`` for ``HostConfig``);
- ``fold-duplicate``: two keys of one object that Go would both put into the
  same field (``Labels`` and ``labels``);
- ``unknown``: a key that is no field at all (only when ``allow_unknown`` is
  false, i.e. for non-admins: a field the gate does not know is one it cannot
  check, and a newer daemon might act on it);
- ``type``: a value of a JSON type Go would refuse for that field (an object
  where a list is expected, a string for a bool...).  dockerd would reject the
  request anyway; refusing it here means the policy only ever sees well-typed
  values.

Real clients are not exact either: docker-py 7 sends ``"replicated"`` for
``ServiceSpec.Mode.Replicated``, ``CPURealtimePeriod`` for ``CpuRealtimePeriod``,
an ignored ``"Container"`` in exec bodies and ``{"NetworkingConfig": {"net":
null}}`` from ``containers.run(network=...)``.  :func:`canonicalize` runs before
:func:`validate` and removes exactly these differences without changing what
dockerd would do: it rewrites listed spellings (:data:`ALIASES`) to the exact
field name, drops listed fields every targeted daemon ignores (:data:`IGNORED`),
and drops struct keys whose value is ``null`` (a ``null`` decodes to nothing in
Go).  The policy code and the forwarded bytes then only see exact spellings.

Use, per inspected route (:func:`parse_body` does the first three)::

    obj = canonicalize(loads_strict(raw), route)       # 400 on BodyError
    problems = validate(obj, route, allow_unknown=is_admin)   # 400 if any
    ...policy checks on obj...
    forward(dumps(obj))                                 # never the raw bytes

The field data is generated from moby's Go structs (the structs decide what Go
decodes, not the swagger document) into :mod:`dockergate.api.schema_data` by
``tools/gen_schema.py``; it unites dockerd 20.10 (API 1.41), 28.x and the current
API.  A field the fronted daemon does not know is ignored by it, so a superset
costs nothing.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Literal

from dockergate.api.body import PathPart, format_path, go_fold, loads_strict
from dockergate.api.schema_data import ROOTS, STRUCTS

__all__ = [
    "ALIASES",
    "ANY",
    "BOOL",
    "BYTES",
    "IGNORED",
    "INT",
    "NUM",
    "SCHEMAS",
    "STR",
    "STRS",
    "TYPES",
    "ListOf",
    "MapOf",
    "Node",
    "Obj",
    "Problem",
    "ProblemKind",
    "Scalar",
    "canonicalize",
    "parse_body",
    "validate",
]

ProblemKind = Literal["case", "fold-duplicate", "unknown", "type"]
ScalarKind = Literal["str", "int", "num", "bool", "bytes", "strs", "any"]


# ---------------------------------------------------------------------------
# Schema nodes.
# ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Scalar:
    """A leaf value.  ``strs`` is Go's StrSlice (a string or a list of strings);
    ``bytes`` is a Go ``[]byte`` (base64 in a string, or a list of numbers);
    ``any`` is free-form."""

    kind: ScalarKind

    def describe(self) -> str:
        return _SCALAR_WORDS[self.kind]


_SCALAR_WORDS: dict[str, str] = {
    "str": "a string",
    "int": "an integer",
    "num": "a number",
    "bool": "true or false",
    "bytes": "a base64 string",
    "strs": "a string or a list of strings",
    "any": "any value",
}

STR = Scalar("str")
INT = Scalar("int")
NUM = Scalar("num")
BOOL = Scalar("bool")
BYTES = Scalar("bytes")
STRS = Scalar("strs")
ANY = Scalar("any")


@dataclass(frozen=True, slots=True)
class ListOf:
    """A JSON array (Go slice or array) of ``item``."""

    item: Node

    def describe(self) -> str:
        return "a list"


@dataclass(frozen=True, slots=True)
class MapOf:
    """A JSON object read into a Go map: keys are data (never folded, never
    checked against field names), values are ``value``."""

    value: Node

    def describe(self) -> str:
        return "an object"


class Obj:
    """A JSON object read into a Go struct: its keys are matched against ``fields``.

    ``aliases`` maps tolerated client spellings to the exact field name (see
    :data:`ALIASES`), ``ignored`` lists keys :func:`canonicalize` drops (see
    :data:`IGNORED`).  ``folded`` maps :func:`go_fold` of each field name to the
    name, for spotting keys Go would fold onto a field.
    """

    __slots__ = ("_fields", "aliases", "folded", "ignored", "name")

    def __init__(
        self,
        fields: Mapping[str, Node] | None = None,
        name: str = "",
        aliases: Mapping[str, str] | None = None,
        ignored: frozenset[str] = frozenset(),
    ) -> None:
        self.name = name
        self._fields: dict[str, Node] = {}
        self.folded: dict[str, str] = {}
        self.aliases: Mapping[str, str] = MappingProxyType(dict(aliases or {}))
        self.ignored = ignored
        for key, node in (fields or {}).items():
            self._add(key, node)

    def _add(self, key: str, node: Node) -> None:
        folded = go_fold(key)
        other = self.folded.get(folded)
        if other is not None and other != key:
            # Go would pick one of them for a folded key by field order; the
            # schema cannot say which, so it refuses to describe such a struct.
            raise ValueError(f"{self.name}: fields {other!r} and {key!r} fold to the same key")
        self._fields[key] = node
        self.folded[folded] = key

    @property
    def fields(self) -> Mapping[str, Node]:
        return MappingProxyType(self._fields)

    def describe(self) -> str:
        return "an object"

    def __repr__(self) -> str:
        return f"Obj({self.name or list(self._fields)!r})"


Node = Scalar | ListOf | MapOf | Obj


# ---------------------------------------------------------------------------
# Building the schema from the generated data.
# ---------------------------------------------------------------------------

# Spellings real clients send that differ from the Go field name by case only.
# Go folds them onto the field, so they are harmless once rewritten to the exact
# spelling, which :func:`canonicalize` does.  Keyed by struct name.
ALIASES: dict[str, dict[str, str]] = {
    # docker-py 7 ServiceMode: {"replicated": {...}} / {"global": {}}.
    "swarm.ServiceMode": {"replicated": "Replicated", "global": "Global"},
    # docker-py 7 exec_create(detach_keys=...) and config.json "detachKeys".
    "container.ExecCreateRequest": {"detachKeys": "DetachKeys"},
    # docker-py 7 HostConfig(cpu_rt_period=..., cpu_rt_runtime=...).
    "container.HostConfig": {
        "CPURealtimePeriod": "CpuRealtimePeriod",
        "CPURealtimeRuntime": "CpuRealtimeRuntime",
    },
    # docker-py documents config/secret templating as {"name": ...}; the same
    # struct is used for drivers and log drivers.
    "swarm.Driver": {"name": "Name", "options": "Options"},
    # Spellings of the swagger document (api/swagger.yaml) that differ from the
    # Go structs, the truth: clients generated from it send these.
    "swarm.RuntimeSpec": {"Name": "name", "Remote": "remote", "Disabled": "disabled"},
    "swarm.ContainerSpec": {"HealthCheck": "Healthcheck"},
}

# Keys (exact spelling) that clients send but no targeted dockerd has as a field,
# so it ignores them; :func:`canonicalize` drops them instead of refusing the body.
IGNORED: dict[str, frozenset[str]] = {
    # docker-py 7 exec_create puts the container id in the body as well.
    "container.ExecCreateRequest": frozenset({"Container"}),
    # docker-py 7 HostConfig(init_path=..., lxc_conf=...): long removed from dockerd.
    "container.HostConfig": frozenset({"InitPath", "LxcConf"}),
}

_SCALARS: dict[str, Scalar] = {s.kind: s for s in (STR, INT, NUM, BOOL, BYTES, STRS, ANY)}


def _build() -> tuple[dict[str, Obj], dict[str, Node]]:
    types: dict[str, Obj] = {
        name: Obj(name=name, aliases=ALIASES.get(name), ignored=IGNORED.get(name, frozenset()))
        for name in STRUCTS
    }
    types["struct{}"] = Obj(name="struct{}")

    def node(spec: str) -> Node:
        if spec.startswith("[") and spec.endswith("]"):
            return ListOf(node(spec[1:-1]))
        if spec.startswith("{") and spec.endswith("}"):
            return MapOf(node(spec[1:-1]))
        if spec in _SCALARS:
            return _SCALARS[spec]
        return types[spec]

    for name, fields in STRUCTS.items():
        obj = types[name]
        for key, spec in fields.items():
            obj._add(key, node(spec))
    for name, aliases in ALIASES.items():
        for alias, target in aliases.items():
            if target not in types[name].fields or go_fold(alias) != go_fold(target):
                raise ValueError(f"bad alias {alias!r} -> {target!r} in {name}")
    for name, keys in IGNORED.items():
        for key in keys:
            if types[name].folded.get(go_fold(key)) is not None:
                raise ValueError(f"ignored key {key!r} of {name} is a field")
    routes = {route: node(spec) for route, spec in ROOTS.items()}
    # Not a body but read the same way: the classic build's ``ulimits`` parameter is
    # JSON that dockerd decodes into the same structs (Go's key folding included).
    routes["build.ulimits"] = node("[units.Ulimit]")
    return types, routes


TYPES, _ROUTES = _build()

#: Route name (as in :mod:`dockergate.api.routes`) -> schema of its JSON body.
#: ``container.create.networking`` is the ``NetworkingConfig`` part alone.
#: ``container.start`` is the HostConfig body that dockerd 20.10 still *applies*
#: on start for API < 1.24 (``POST /v1.23/containers/x/start`` with
#: ``{"Privileged": true, "Binds": ["/:/host"]}`` saves both into the container;
#: newer daemons refuse any body there): refuse such bodies outright if possible.
#: Fields that say the same thing as another one, which a policy must check in
#: both places: service ``Networks`` (legacy, used when
#: ``TaskTemplate.Networks`` is empty) and container ``MacAddress`` (API < 1.44;
#: later per endpoint in ``NetworkingConfig.EndpointsConfig``).
SCHEMAS: Mapping[str, Node] = MappingProxyType(_ROUTES)


# ---------------------------------------------------------------------------
# Validation.
# ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Problem:
    """One reason to refuse a body.

    ``path`` locates the offending member (``HostConfig.privileged``,
    ``Mounts[0]``), ``key`` is the object key concerned as the client spelled it
    ("" for list items and the body itself), ``message`` is a sentence fit for a
    400 answer.
    """

    path: str
    key: str
    kind: ProblemKind
    message: str


def _q(s: str) -> str:
    return json.dumps(s)


def _out_of_range(value: Any, node: Node) -> bool:
    """An integer past int64: the schema does not say which fields are unsigned, and
    no field the gate reads needs more (dockerd fails to decode what its field cannot
    hold, with a 500 of its own on some routes)."""
    return (
        isinstance(node, Scalar)
        and node.kind == "int"
        and isinstance(value, int)
        and not isinstance(value, bool)
        and not -(1 << 63) <= value < (1 << 63)
    )


def _type_ok(value: Any, node: Node) -> bool:
    if isinstance(node, Obj | MapOf):
        return isinstance(value, dict)
    if isinstance(node, ListOf):
        return isinstance(value, list)
    kind = node.kind
    if kind == "str":
        return isinstance(value, str)
    if kind == "bool":
        return isinstance(value, bool)
    if kind == "int":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "num":
        return isinstance(value, int | float) and not isinstance(value, bool)
    if kind == "strs":
        return isinstance(value, str) or (
            isinstance(value, list) and all(isinstance(x, str) for x in value)
        )
    if kind == "bytes":
        return isinstance(value, str | list)
    return True  # any


def _json_type(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, int):
        return "an integer"
    return "a number"


def validate(obj: Any, schema_name: str, *, allow_unknown: bool) -> list[Problem]:
    """Problems of a parsed body for route ``schema_name``; empty means acceptable.

    ``allow_unknown`` lets keys that are no field pass (admins); fold-matches,
    fold-duplicates and type errors are reported regardless.  Raises
    ``KeyError`` for a schema name not in :data:`SCHEMAS`.
    """
    problems: list[Problem] = []
    _walk(obj, SCHEMAS[schema_name], [], "", allow_unknown, problems)
    return problems


def _walk(
    value: Any,
    node: Node,
    path: list[PathPart],
    key: str,
    allow_unknown: bool,
    out: list[Problem],
) -> None:
    if value is None:
        return  # Go leaves the field at its zero value
    if _out_of_range(value, node):
        where = format_path(path)
        out.append(Problem(where, key, "type", f"{where} is out of range ({value})"))
        return
    if not _type_ok(value, node):
        where = format_path(path)
        out.append(
            Problem(
                where,
                key,
                "type",
                f"{where} must be {node.describe()}, not {_json_type(value)}",
            )
        )
        return
    if isinstance(node, ListOf):
        for i, item in enumerate(value):
            path.append(i)
            if item is None:
                # A list of structs is often of pointers in Go ([]*ThrottleDevice):
                # a null item is a nil pointer that dockerd dereferences (it panics).
                # In a list of strings or numbers Go reads it as "" or 0, where the
                # gate's checks would read Python's None ("None" once made a string).
                where = format_path(path)
                out.append(
                    Problem(where, "", "type", f"{where} must be {node.item.describe()}, not null")
                )
            else:
                _walk(item, node.item, path, "", allow_unknown, out)
            path.pop()
    elif isinstance(node, MapOf):
        for k, item in value.items():
            path.append(k)
            _walk(item, node.value, path, k, allow_unknown, out)
            path.pop()
    elif isinstance(node, Obj):
        _walk_obj(value, node, path, allow_unknown, out)


def _walk_obj(
    value: dict[str, Any],
    node: Obj,
    path: list[PathPart],
    allow_unknown: bool,
    out: list[Problem],
) -> None:
    inside = f" in {format_path(path)}" if path else ""
    claimed: dict[str, list[str]] = {}  # field -> keys Go would decode into it
    for k, item in value.items():
        path.append(k)
        where = format_path(path)
        field = k if k in node.fields else node.folded.get(go_fold(k))
        if field is None:
            if not allow_unknown:
                out.append(Problem(where, k, "unknown", f"unknown field {_q(k)}{inside}"))
        else:
            if field != k:
                msg = f"key {_q(k)}{inside} must be spelled {_q(field)}"
                out.append(Problem(where, k, "case", msg))
            claimed.setdefault(field, []).append(k)
            _walk(item, node.fields[field], path, k, allow_unknown, out)
        path.pop()
    for field, keys in claimed.items():
        if len(keys) > 1:
            path.append(field)
            where = format_path(path)
            path.pop()
            spelled = " and ".join(_q(k) for k in keys)
            msg = f"keys {spelled}{inside} both set field {_q(field)}"
            out.append(Problem(where, keys[-1], "fold-duplicate", msg))


# ---------------------------------------------------------------------------
# Canonical spellings.
# ---------------------------------------------------------------------------


def canonicalize(obj: Any, schema_name: str) -> Any:
    """Return ``obj`` without the harmless client quirks, for :func:`validate`.

    In every object read into a struct: a key in :data:`ALIASES` is renamed to
    the exact field name (unless another key of the object already claims that
    field: then :func:`validate` reports the fold-duplicate); a key in
    :data:`IGNORED` is dropped; a key whose value is ``null`` is dropped, field or
    not: dockerd decodes every body into a new struct, where ``null`` leaves a field
    as if its key were absent (a nil pointer, map or slice, or no effect), so the
    policy must not see a key Go does not (``"Mode": {"Global": null, "Replicated":
    ...}`` is a replicated service). A ``null`` stays where it is data: as a map's
    value (``EndpointsConfig: {"net": null}`` connects to ``net``) or a list's item.
    Everything else is copied unchanged; ``obj`` is not modified.
    """
    return _canon(obj, SCHEMAS[schema_name])


def _canon(value: Any, node: Node) -> Any:
    if isinstance(node, ListOf) and isinstance(value, list):
        return [_canon(v, node.item) for v in value]
    if isinstance(node, MapOf) and isinstance(value, dict):
        return {k: _canon(v, node.value) for k, v in value.items()}
    if isinstance(node, Obj) and isinstance(value, dict):
        out: dict[str, Any] = {}
        for k, v in value.items():
            if k in node.ignored:
                continue
            target = node.aliases.get(k)
            if target is not None and not _claimed_elsewhere(value, node, k, target):
                k = target
            if v is None:
                continue  # a fresh struct's field: Go leaves it as if the key were absent
            field = k if k in node.fields else node.folded.get(go_fold(k))
            out[k] = v if field is None else _canon(v, node.fields[field])
        return out
    return value


def _claimed_elsewhere(value: dict[str, Any], node: Obj, key: str, field: str) -> bool:
    return any(
        other != key and (other == field or node.folded.get(go_fold(other)) == field)
        for other in value
    )


def parse_body(data: bytes, schema_name: str, *, allow_unknown: bool) -> tuple[Any, list[Problem]]:
    """Parse, canonicalize and validate a body: ``(obj, problems)``.

    ``obj`` is what the policy checks and what :func:`~dockergate.api.body.dumps`
    encodes for forwarding; any problem means the body must be refused.  Raises
    :class:`~dockergate.api.body.BodyError` when the bytes are not strict JSON.
    """
    obj = canonicalize(loads_strict(data), schema_name)
    return obj, validate(obj, schema_name, allow_unknown=allow_unknown)
