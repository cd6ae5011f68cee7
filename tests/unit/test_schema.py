"""Request-body schemas and Go-style key checks (dockergate.api.schema)."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from dockergate.api import routes
from dockergate.api.body import BodyError, dumps, go_fold, loads_strict
from dockergate.api.schema import (
    ALIASES,
    IGNORED,
    SCHEMAS,
    TYPES,
    ListOf,
    MapOf,
    Obj,
    Problem,
    Scalar,
    canonicalize,
    parse_body,
    validate,
)
from dockergate.api.schema_data import STRUCTS

BODIES = Path(__file__).parent / "bodies"
CAPTURED = sorted(BODIES.glob("*--*.json"))


def problems(body: Any, name: str, *, allow_unknown: bool = False) -> list[tuple[str, str, str]]:
    return [(p.kind, p.path, p.key) for p in validate(body, name, allow_unknown=allow_unknown)]


def obj(node: Any) -> Obj:
    assert isinstance(node, Obj)
    return node


# --- the schema itself -------------------------------------------------------------

EXPECTED_ROUTES = {
    "build.ulimits",
    "container.create",
    "container.create.networking",
    "container.update",
    "container.start",
    "image.commit",
    "exec.create",
    "exec.start",
    "service.create",
    "service.update",
    "volume.create",
    "volume.update",
    "network.create",
    "network.connect",
    "network.disconnect",
    "secret.create",
    "secret.update",
    "config.create",
    "config.update",
    "swarm.init",
    "swarm.join",
    "swarm.update",
    "swarm.unlock",
    "node.update",
    "plugin.set",
    "plugin.pull",
    "plugin.upgrade",
    "system.auth",
}


def test_schema_names() -> None:
    assert set(SCHEMAS) == EXPECTED_ROUTES
    route_names = {r.name for r in routes.ROUTES}
    # Parts of requests read as bodies are: NetworkingConfig, the build's ulimits.
    assert set(SCHEMAS) - route_names == {"container.create.networking", "build.ulimits"}


def test_no_struct_has_two_fields_go_would_confuse() -> None:
    for name, fields in STRUCTS.items():
        folded = [go_fold(k) for k in fields]
        assert len(folded) == len(set(folded)), name


def test_every_struct_is_reachable_and_built() -> None:
    assert set(STRUCTS) <= set(TYPES)
    for name, node in TYPES.items():
        assert node.name == name


def test_aliases_and_ignored_keys_are_consistent() -> None:
    for name, aliases in ALIASES.items():
        for alias, field in aliases.items():
            assert field in TYPES[name].fields
            assert alias not in TYPES[name].fields
            assert go_fold(alias) == go_fold(field)
    for name, keys in IGNORED.items():
        for key in keys:
            assert go_fold(key) not in TYPES[name].folded


def test_container_create_shape() -> None:
    create = obj(SCHEMAS["container.create"])
    for field in ("Image", "Cmd", "Env", "Labels", "HostConfig", "NetworkingConfig", "Volumes"):
        assert field in create.fields
    assert isinstance(create.fields["Labels"], MapOf)
    assert isinstance(create.fields["ExposedPorts"], MapOf)
    assert create.fields["Cmd"] == Scalar("strs")  # StrSlice: string or list
    host = obj(create.fields["HostConfig"])
    assert host.name == "container.HostConfig"
    for field in (
        "Privileged", "Binds", "Mounts", "CapAdd", "SecurityOpt", "Devices", "PidMode",
        "NetworkMode", "UsernsMode", "Sysctls", "Tmpfs", "StorageOpt", "PortBindings",
        "DeviceRequests", "Memory", "NanoCpus", "CpuShares", "PidsLimit", "Ulimits",
        "RestartPolicy", "LogConfig", "Runtime", "CgroupParent", "IpcMode", "Init",
        "KernelMemory", "ReadonlyPaths", "MaskedPaths", "Annotations", "VolumesFrom",
    ):  # fmt: skip
        assert field in host.fields, field
    for field in ("Sysctls", "Tmpfs", "StorageOpt", "PortBindings", "Annotations"):
        assert isinstance(host.fields[field], MapOf), field
    log = obj(host.fields["LogConfig"])
    assert isinstance(log.fields["Config"], MapOf)
    mounts = host.fields["Mounts"]
    assert isinstance(mounts, ListOf)
    mount = obj(mounts.item)
    assert set(mount.fields) >= {"Type", "Source", "Target", "ReadOnly", "BindOptions"}
    driver = obj(obj(mount.fields["VolumeOptions"]).fields["DriverConfig"])
    assert isinstance(driver.fields["Options"], MapOf)
    net = obj(create.fields["NetworkingConfig"])
    assert isinstance(net.fields["EndpointsConfig"], MapOf)
    assert SCHEMAS["container.create.networking"] is net
    # 20.10 accepts HostConfig fields at the top level too; the schema does not.
    assert "Privileged" not in create.fields and "Cpuset" not in create.fields


def test_service_spec_shape() -> None:
    spec = obj(SCHEMAS["service.create"])
    assert SCHEMAS["service.update"] is spec
    assert set(spec.fields) == {
        "Name", "Labels", "TaskTemplate", "Mode", "UpdateConfig", "RollbackConfig",
        "Networks", "EndpointSpec",
    }  # fmt: skip
    task = obj(spec.fields["TaskTemplate"])
    assert set(task.fields) == {
        "ContainerSpec", "PluginSpec", "NetworkAttachmentSpec", "Resources", "RestartPolicy",
        "Placement", "Networks", "LogDriver", "ForceUpdate", "Runtime",
    }  # fmt: skip
    cspec = obj(task.fields["ContainerSpec"])
    for field in ("Image", "Mounts", "Privileges", "CapabilityAdd", "Sysctls", "Secrets"):
        assert field in cspec.fields
    plugin = obj(task.fields["PluginSpec"])
    assert set(plugin.fields) == {"name", "remote", "privileges", "disabled", "env"}


def test_other_route_shapes() -> None:
    assert set(obj(SCHEMAS["volume.create"]).fields) == {
        "Name", "Driver", "DriverOpts", "Labels", "ClusterVolumeSpec",
    }  # fmt: skip
    assert set(obj(SCHEMAS["network.create"]).fields) == {
        "Name", "CheckDuplicate", "Driver", "Scope", "Internal", "Attachable", "Ingress",
        "ConfigOnly", "ConfigFrom", "IPAM", "EnableIPv6", "EnableIPv4", "Options", "Labels",
    }  # fmt: skip
    assert set(obj(SCHEMAS["network.connect"]).fields) == {"Container", "EndpointConfig"}
    assert set(obj(SCHEMAS["network.disconnect"]).fields) == {"Container", "Force"}
    for name in ("secret.create", "secret.update"):
        assert set(obj(SCHEMAS[name]).fields) == {
            "Name", "Labels", "Data", "Driver", "Templating",
        }  # fmt: skip
    assert set(obj(SCHEMAS["config.create"]).fields) == {"Name", "Labels", "Data", "Templating"}
    assert set(obj(SCHEMAS["exec.create"]).fields) == {
        "AttachStdin", "AttachStdout", "AttachStderr", "Detach", "DetachKeys", "Tty",
        "ConsoleSize", "Env", "Privileged", "User", "WorkingDir", "Cmd",
    }  # fmt: skip
    assert set(obj(SCHEMAS["exec.start"]).fields) == {"Detach", "Tty", "ConsoleSize"}
    update = obj(SCHEMAS["container.update"])
    assert {"Memory", "NanoCpus", "PidsLimit", "RestartPolicy", "Devices"} <= set(update.fields)
    assert "Privileged" not in update.fields
    assert set(obj(SCHEMAS["node.update"]).fields) == {"Name", "Labels", "Role", "Availability"}
    assert "Spec" in obj(SCHEMAS["swarm.init"]).fields
    assert "JoinToken" in obj(SCHEMAS["swarm.join"]).fields
    assert "CAConfig" in obj(SCHEMAS["swarm.update"]).fields
    assert SCHEMAS["plugin.set"] == ListOf(Scalar("str"))
    assert "Spec" in obj(SCHEMAS["volume.update"]).fields
    assert "Privileged" in obj(SCHEMAS["container.start"]).fields


# --- real client bodies ---------------------------------------------------------------


@pytest.mark.parametrize("path", CAPTURED, ids=[p.stem for p in CAPTURED])
def test_captured_body_is_clean(path: Path) -> None:
    route = path.name.split("--")[0]
    body = loads_strict(path.read_bytes())
    clean = canonicalize(body, route)
    assert validate(clean, route, allow_unknown=False) == []
    assert validate(clean, route, allow_unknown=True) == []
    assert loads_strict(dumps(clean)) == clean


def test_captured_bodies_cover_the_main_routes() -> None:
    seen = {p.name.split("--")[0] for p in CAPTURED}
    assert seen >= EXPECTED_ROUTES - {
        "container.create.networking",  # a part of container.create
        "build.ulimits",  # a query parameter of /build
        "container.start",  # only API < 1.24
        "swarm.init",  # the test daemon is already a swarm
        "swarm.join",
        "swarm.unlock",
        "plugin.pull",  # no registry here
        "plugin.upgrade",
        "volume.update",  # cluster volumes only
    }
    assert {p.stem.split("--")[1].split("-")[0] for p in CAPTURED} == {"cli", "py"}


def test_docker_py_quirks_need_canonicalize() -> None:
    body = loads_strict((BODIES / "service.create--py-many-options.json").read_bytes())
    assert problems(body, "service.create") == [("case", "Mode.replicated", "replicated")]
    body = loads_strict((BODIES / "exec.create--py.json").read_bytes())
    assert problems(body, "exec.create") == [("unknown", "Container", "Container")]
    body = loads_strict((BODIES / "container.create--py-run-many-options.json").read_bytes())
    assert problems(body, "container.create") == [
        ("unknown", 'NetworkingConfig["bodycap-br"]', "bodycap-br")
    ]


# --- attacks ---------------------------------------------------------------------


def test_lower_case_host_config() -> None:
    body = {"Image": "busybox", "hostconfig": {"privileged": True}}
    assert problems(body, "container.create") == [
        ("case", "hostconfig", "hostconfig"),
        ("case", "hostconfig.privileged", "privileged"),
    ]
    (first, _) = validate(body, "container.create", allow_unknown=True)
    assert first.message == 'key "hostconfig" must be spelled "HostConfig"'


def test_fold_duplicate_objects() -> None:
    # Go merges both objects into HostConfig; Python would see only one.
    body = {"Image": "busybox", "HostConfig": {"Binds": []}, "hostConfig": {"Privileged": True}}
    found = validate(body, "container.create", allow_unknown=True)
    assert [(p.kind, p.key) for p in found] == [
        ("case", "hostConfig"),
        ("fold-duplicate", "hostConfig"),
    ]
    assert found[1].path == "HostConfig"
    assert found[1].message == 'keys "HostConfig" and "hostConfig" both set field "HostConfig"'


def test_fold_duplicate_labels_and_nested_message() -> None:
    body = {"HostConfig": {"LogConfig": {"Type": "x", "TYPE": "y"}}, "Labels": {}, "labels": {}}
    found = validate(body, "container.create", allow_unknown=False)
    kinds = sorted((p.kind, p.path) for p in found)
    assert kinds == [
        ("case", "HostConfig.LogConfig.TYPE"),
        ("case", "labels"),
        ("fold-duplicate", "HostConfig.LogConfig.Type"),
        ("fold-duplicate", "Labels"),
    ]
    msgs = {p.message for p in found}
    assert 'keys "Type" and "TYPE" in HostConfig.LogConfig both set field "Type"' in msgs


@pytest.mark.parametrize(
    ("route", "body", "key", "field"),
    [
        ("container.create", {"Ho\u017ftConfig": {}}, "Ho\u017ftConfig", "HostConfig"),
        ("container.create", {"Label\u017f": {}}, "Label\u017f", "Labels"),
        ("container.create", {"HOSTCONFIG": {}}, "HOSTCONFIG", "HostConfig"),
        ("container.start", {"\u017fecurityOpt": []}, "\u017fecurityOpt", "SecurityOpt"),
        ("container.update", {"\u212aernelMemory": 0}, "\u212aernelMemory", "KernelMemory"),
        ("exec.create", {"privileged": True}, "privileged", "Privileged"),
        ("service.create", {"tasktemplate": {}}, "tasktemplate", "TaskTemplate"),
        ("system.auth", {"Password": "x"}, "Password", "password"),
    ],
)
def test_keys_go_would_fold(route: str, body: dict[str, Any], key: str, field: str) -> None:
    found = validate(body, route, allow_unknown=True)
    assert [(p.kind, p.key) for p in found] == [("case", key)]
    # Non-ASCII keys are shown escaped, so the message shows what differs.
    assert found[0].message == f"key {json.dumps(key)} must be spelled {json.dumps(field)}"


def test_fold_key_inside_lists_and_maps_of_structs() -> None:
    body = {
        "TaskTemplate": {
            "ContainerSpec": {"Mounts": [{"Type": "bind", "\u017fource": "/"}]},
            "Networks": [{"target": "n"}],
        },
        "EndpointSpec": {"Ports": [{"PublishedPort": 1, "publishedport": 2}]},
    }
    assert sorted(problems(body, "service.create")) == [
        ("case", "EndpointSpec.Ports[0].publishedport", "publishedport"),
        ("case", 'TaskTemplate.ContainerSpec.Mounts[0]["\\u017fource"]', "\u017fource"),
        ("case", "TaskTemplate.Networks[0].target", "target"),
        ("fold-duplicate", "EndpointSpec.Ports[0].PublishedPort", "publishedport"),
    ]
    body2: dict[str, Any] = {"NetworkingConfig": {"EndpointsConfig": {"n": {"ipamconfig": {}}}}}
    assert problems(body2, "container.create") == [
        ("case", "NetworkingConfig.EndpointsConfig.n.ipamconfig", "ipamconfig")
    ]


def test_dotted_capital_i_is_not_a_fold() -> None:
    # Go does not match "İmage" to "Image": it is an unknown key (ignored by Go).
    body = {"\u0130mage": "x"}
    assert problems(body, "container.create") == [("unknown", '["\\u0130mage"]', "\u0130mage")]
    assert problems(body, "container.create", allow_unknown=True) == []


def test_unknown_fields() -> None:
    body = {"Image": "busybox", "Privileged": True, "HostConfig": {"Foo": 1, "Binds": []}}
    assert problems(body, "container.create") == [
        ("unknown", "Privileged", "Privileged"),
        ("unknown", "HostConfig.Foo", "Foo"),
    ]
    assert problems(body, "container.create", allow_unknown=True) == []
    found = validate(body, "container.create", allow_unknown=False)
    assert [p.message for p in found] == [
        'unknown field "Privileged"',
        'unknown field "Foo" in HostConfig',
    ]


def test_map_keys_are_data() -> None:
    body = {
        "Labels": {"HostConfig": "x", "hostconfig": "y", "Privileged": "z"},
        "Volumes": {"/data": {}},
        "ExposedPorts": {"80/tcp": {}},
        "HostConfig": {
            "Sysctls": {"net.ipv4.ip_forward": "1"},
            "PortBindings": {"80/tcp": [{"HostIp": "", "HostPort": "8080"}]},
            "LogConfig": {"Type": "json-file", "Config": {"max-size": "1m", "MAX-SIZE": "2m"}},
        },
        "NetworkingConfig": {"EndpointsConfig": {"HostConfig": {"Aliases": ["a"]}}},
    }
    assert problems(body, "container.create") == []


def test_struct_values_inside_maps_are_checked() -> None:
    body = {"HostConfig": {"PortBindings": {"80/tcp": [{"hostport": "1"}]}}}
    assert problems(body, "container.create") == [
        ("case", 'HostConfig.PortBindings["80/tcp"][0].hostport', "hostport")
    ]
    # struct{} values: Go ignores their keys; the gate calls them unknown.
    body2: dict[str, Any] = {"Volumes": {"/d": {"x": 1}}}
    assert problems(body2, "container.create") == [("unknown", 'Volumes["/d"].x', "x")]


def test_type_problems() -> None:
    body = {
        "Labels": ["a=b"],
        "HostConfig": {
            "Binds": "/:/host",
            "Privileged": "true",
            "Memory": 1.5,
            "CpuShares": True,
            "Mounts": ["/:/x"],
            "LogConfig": "json-file",
        },
        "Cmd": "sh -c true",  # StrSlice: a string is fine
        "Entrypoint": ["sh", 1],
    }
    found = validate(body, "container.create", allow_unknown=False)
    assert {(p.kind, p.path) for p in found} == {
        ("type", "Labels"),
        ("type", "HostConfig.Binds"),
        ("type", "HostConfig.Privileged"),
        ("type", "HostConfig.Memory"),
        ("type", "HostConfig.CpuShares"),
        ("type", "HostConfig.Mounts[0]"),
        ("type", "HostConfig.LogConfig"),
        ("type", "Entrypoint"),
    }
    messages = {p.path: p.message for p in found}
    assert messages["Labels"] == "Labels must be an object, not a list"
    assert messages["HostConfig.Privileged"] == (
        "HostConfig.Privileged must be true or false, not a string"
    )
    assert problems("x", "container.create") == [("type", "(body)", "")]
    assert problems({"a": 1}, "plugin.set") == [("type", "(body)", "")]
    assert problems(["a=b", 1], "plugin.set") == [("type", "[1]", "")]


def test_numbers_and_bytes() -> None:
    assert problems({"UpdateConfig": {"MaxFailureRatio": 0}}, "service.create") == []
    assert problems({"UpdateConfig": {"MaxFailureRatio": 0.5}}, "service.create") == []
    assert problems({"Data": "aGk="}, "secret.create") == []
    assert problems({"Data": [104, 105]}, "secret.create") == []  # Go accepts both
    assert problems({"Data": {}}, "secret.create") == [("type", "Data", "Data")]


def test_null_is_accepted_everywhere() -> None:
    body = {"HostConfig": None, "Labels": None, "Cmd": None, "Healthcheck": {"Test": None}}
    assert problems(body, "container.create") == []
    assert problems(None, "container.create") == []


def test_unknown_schema_name() -> None:
    with pytest.raises(KeyError):
        validate({}, "container.nope", allow_unknown=True)


# --- canonicalize ----------------------------------------------------------------------


def test_canonicalize_aliases() -> None:
    body = {"Mode": {"replicated": {"Replicas": 2}}, "Name": "s"}
    before = copy.deepcopy(body)
    clean = canonicalize(body, "service.create")
    assert clean == {"Mode": {"Replicated": {"Replicas": 2}}, "Name": "s"}
    assert body == before
    assert canonicalize({"Mode": {"global": {}}}, "service.update") == {"Mode": {"Global": {}}}
    exe = canonicalize({"Cmd": ["sh"], "detachKeys": "ctrl-x"}, "exec.create")
    assert exe == {"Cmd": ["sh"], "DetachKeys": "ctrl-x"}
    host = canonicalize({"HostConfig": {"CPURealtimePeriod": 1}}, "container.create")
    assert host == {"HostConfig": {"CpuRealtimePeriod": 1}}
    tmpl = canonicalize({"Templating": {"name": "golang"}}, "config.create")
    assert tmpl == {"Templating": {"Name": "golang"}}
    swagger = {"TaskTemplate": {"ContainerSpec": {"HealthCheck": {"Test": ["NONE"]}}}}
    assert canonicalize(swagger, "service.create") == {
        "TaskTemplate": {"ContainerSpec": {"Healthcheck": {"Test": ["NONE"]}}}
    }
    plugin = {"TaskTemplate": {"PluginSpec": {"Name": "p", "Remote": "r"}}}
    assert canonicalize(plugin, "service.create") == {
        "TaskTemplate": {"PluginSpec": {"name": "p", "remote": "r"}}
    }


def test_canonicalize_keeps_order_and_leaves_conflicts_to_validate() -> None:
    body = {"Mode": {"Replicated": {"Replicas": 1}, "replicated": {"Replicas": 50}}}
    clean = canonicalize(body, "service.create")
    assert clean == body
    assert problems(clean, "service.create") == [
        ("case", "Mode.replicated", "replicated"),
        ("fold-duplicate", "Mode.Replicated", "replicated"),
    ]
    # An alias only applies where it is listed: "replicated" is no alias in labels.
    assert canonicalize({"Labels": {"replicated": "x"}}, "service.create") == {
        "Labels": {"replicated": "x"}
    }
    # Aliases are exact spellings: other fold variants are still refused.
    clean = canonicalize({"Mode": {"REPLICATED": {}}}, "service.create")
    assert problems(clean, "service.create") == [("case", "Mode.REPLICATED", "REPLICATED")]


def test_canonicalize_drops_ignored_keys_and_nulls_of_fields() -> None:
    clean = canonicalize({"Container": "abc", "Cmd": ["true"]}, "exec.create")
    assert clean == {"Cmd": ["true"]}
    body = {"Image": "busybox", "NetworkingConfig": {"mynet": None}, "Foo": None}
    assert canonicalize(body, "container.create") == {"Image": "busybox", "NetworkingConfig": {}}
    # A non-null unknown value stays, to be refused for non-admins.
    body2: dict[str, Any] = {"Image": "busybox", "Privileged": True}
    assert canonicalize(body2, "container.create") == body2
    # Known fields with null go too: Go leaves them as if absent, and the policy must
    # read the body as Go does (a null Global mode is a replicated service).
    assert canonicalize({"HostConfig": None}, "container.create") == {}
    mode = {"Mode": {"Global": None, "Replicated": {"Replicas": 12}}}
    assert canonicalize(mode, "service.create") == {"Mode": {"Replicated": {"Replicas": 12}}}
    # A null that is data stays: a map's value, a list's item.
    eps = {"NetworkingConfig": {"EndpointsConfig": {"net": None}}}
    assert canonicalize(eps, "container.create") == eps
    assert canonicalize({"Env": [None]}, "container.create") == {"Env": [None]}
    # "Container" is only ignored in an exec body.
    assert problems(canonicalize({"Container": "x"}, "exec.start"), "exec.start") == [
        ("unknown", "Container", "Container")
    ]


def test_problem_is_a_value() -> None:
    p = Problem("HostConfig.Binds", "Binds", "type", "m")
    assert p == Problem("HostConfig.Binds", "Binds", "type", "m")
    with pytest.raises(AttributeError):
        p.kind = "case"  # type: ignore[misc]


def test_parse_body_pipeline() -> None:
    raw = b'{"Name": "s", "Mode": {"replicated": {"Replicas": 2}}}'
    obj, found = parse_body(raw, "service.create", allow_unknown=False)
    assert found == []
    assert dumps(obj) == b'{"Name":"s","Mode":{"Replicated":{"Replicas":2}}}'
    raw = b'{"Image": "busybox", "HostConfig": {"Binds": []},'
    raw += b' "Ho\\u017ftConfig": {"privileged": true}}'
    obj, found = parse_body(raw, "container.create", allow_unknown=True)
    assert [(p.kind, p.path) for p in found] == [
        ("case", '["Ho\\u017ftConfig"]'),
        ("case", '["Ho\\u017ftConfig"].privileged'),
        ("fold-duplicate", "HostConfig"),
    ]
    with pytest.raises(BodyError):
        parse_body(b'{"Image": "a", "Image": "b"}', "container.create", allow_unknown=True)


def test_integers_out_of_every_go_range_are_refused() -> None:
    """dockerd cannot decode an integer past its field's range (some routes answer
    its own 500): past int64 is a problem for everyone, admins included."""
    for bad in (1 << 63, 1 << 64, -(1 << 63) - 1, 10**30):
        body = {"Image": "busybox", "HostConfig": {"Memory": bad}}
        found = validate(body, "container.create", allow_unknown=True)
        assert [(p.path, p.kind) for p in found] == [("HostConfig.Memory", "type")], bad
        assert "out of range" in found[0].message
    for good in ((1 << 63) - 1, -(1 << 63), 0, 512 << 20):
        body = {"Image": "busybox", "HostConfig": {"Memory": good}}
        assert validate(body, "container.create", allow_unknown=False) == [], good


def test_null_items_of_struct_lists_are_refused() -> None:
    """``BlkioDeviceReadBps: [null]`` is a nil pointer dockerd dereferences at start
    (a panic); null items of scalar lists and null map values are data."""
    body = {"Image": "busybox", "HostConfig": {"BlkioDeviceReadBps": [None]}}
    found = validate(body, "container.create", allow_unknown=True)
    assert [(p.path, p.kind) for p in found] == [("HostConfig.BlkioDeviceReadBps[0]", "type")]
    ok = {"Image": "busybox", "NetworkingConfig": {"EndpointsConfig": {"net": None}}}
    assert validate(ok, "container.create", allow_unknown=False) == []


def test_null_items_of_lists_of_strings_are_refused() -> None:
    """Round 31b: Go reads a null in a []string as "", the gate's checks would read
    None (``str(None)`` is "None", a container name): refused like a null struct."""
    body = {
        "Cmd": ["true", None],
        "HostConfig": {"VolumesFrom": [None], "Links": [None], "Binds": ["/a:/b", None]},
    }
    found = validate(body, "container.create", allow_unknown=False)
    assert {(p.kind, p.path) for p in found} == {
        ("type", "Cmd"),  # a StrSlice: strings only
        ("type", "HostConfig.VolumesFrom[0]"),
        ("type", "HostConfig.Links[0]"),
        ("type", "HostConfig.Binds[1]"),
    }
    assert {p.message for p in found} >= {"HostConfig.Links[0] must be a string, not null"}
    nulls = {"Cmd": None, "HostConfig": {"Binds": None}}  # the whole field: its zero value
    assert not validate(nulls, "container.create", allow_unknown=False)
