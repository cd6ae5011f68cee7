#!/usr/bin/env python3
"""Generate ``dockergate/api/schema_data.py`` from moby's Go structs.

Why from the Go structs and not from ``api/swagger.yaml``: dockerd decodes a
request body with ``encoding/json`` into a Go struct, so the struct decides which
keys are fields (json tags, embedded-struct promotion, ``json:"-"``), not the
swagger document, which lags and in places names things differently (e.g. the
plugin runtime spec uses lower-case keys ``name``/``remote`` in Go).

Usage (needs a full clone of moby/moby with its tags; nothing is fetched)::

    python tools/gen_schema.py /path/to/moby/.git | ruff format - > dockergate/api/schema_data.py

What it could not decide, or united, it reports on stderr (fields present in
only some refs, StrSlice widening, deliberately skipped legacy fields).

Several git refs are read and their field sets united, newest first, so the
schema is a superset: the daemon the gate fronts (20.10 = API 1.41), what the
current docker CLI speaks (28.x) and the current API (moby main).  A field unknown to
an older daemon is ignored by it, so knowing it costs nothing; a field missing
from the schema would be refused for non-admins.

The Go reader below is deliberately small: it understands exactly what the API
type packages use (struct, alias and defined types, embedded fields, struct
tags, pointers, slices, arrays, maps, ``any``) and fails loudly on anything
else rather than guessing.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from dataclasses import dataclass, field

# ---------------------------------------------------------------------------
# Which refs, and which Go type each route decodes its body into, per ref.
# (package directory relative to the repo root, type name).  "[]string" is a
# bare Go type, not a named one.
# ---------------------------------------------------------------------------

REFS: list[tuple[str, str, str]] = [
    # (label, git ref, import path layout: "head" = github.com/moby/moby/{api,v2},
    # "docker" = github.com/docker/docker).  "main" is moby's master branch as of
    # 2026-08-23 (API 1.52+), pinned so the output is reproducible.
    ("main", "b985e2313a8676e18072b442911fc8f64f17d440", "head"),
    ("v28.5.2", "v28.5.2", "docker"),
    ("v20.10.24", "v20.10.24", "docker"),
]

ROOTS: dict[str, dict[str, tuple[str, str]]] = {
    "main": {
        "container.create": ("api/types/container", "CreateRequest"),
        "container.create.networking": ("api/types/network", "NetworkingConfig"),
        "container.update": ("api/types/container", "UpdateConfig"),
        "image.commit": ("api/types/container", "Config"),
        "exec.create": ("api/types/container", "ExecCreateRequest"),
        "exec.start": ("api/types/container", "ExecStartRequest"),
        "network.create": ("api/types/network", "CreateRequest"),
        "network.connect": ("daemon/server/networkbackend", "ConnectRequest"),
        "network.disconnect": ("daemon/server/networkbackend", "DisconnectRequest"),
        "volume.create": ("api/types/volume", "CreateRequest"),
        "volume.update": ("daemon/server/volumebackend", "UpdateOptions"),
        "service.create": ("daemon/server/router/swarm", "serviceWithLegacy"),
        "service.update": ("daemon/server/router/swarm", "serviceWithLegacy"),
        "secret.create": ("api/types/swarm", "SecretSpec"),
        "secret.update": ("api/types/swarm", "SecretSpec"),
        "config.create": ("api/types/swarm", "ConfigSpec"),
        "config.update": ("api/types/swarm", "ConfigSpec"),
        "swarm.init": ("api/types/swarm", "InitRequest"),
        "swarm.join": ("api/types/swarm", "JoinRequest"),
        "swarm.update": ("api/types/swarm", "Spec"),
        "swarm.unlock": ("api/types/swarm", "UnlockRequest"),
        "node.update": ("api/types/swarm", "NodeSpec"),
        "plugin.pull": ("api/types/plugin", "Privileges"),
        "plugin.upgrade": ("api/types/plugin", "Privileges"),
        "plugin.set": ("", "[]string"),
        "system.auth": ("api/types/registry", "AuthConfig"),
    },
    "v28.5.2": {
        "container.create": ("api/types/container", "CreateRequest"),
        "container.create.networking": ("api/types/network", "NetworkingConfig"),
        "container.update": ("api/types/container", "UpdateConfig"),
        "image.commit": ("api/types/container", "Config"),
        "exec.create": ("api/types/container", "ExecOptions"),
        "exec.start": ("api/types/container", "ExecStartOptions"),
        "network.create": ("api/types/network", "CreateRequest"),
        "network.connect": ("api/types/network", "ConnectOptions"),
        "network.disconnect": ("api/types/network", "DisconnectOptions"),
        "volume.create": ("api/types/volume", "CreateOptions"),
        "volume.update": ("api/types/volume", "UpdateOptions"),
        "service.create": ("api/types/swarm", "ServiceSpec"),
        "service.update": ("api/types/swarm", "ServiceSpec"),
        "secret.create": ("api/types/swarm", "SecretSpec"),
        "secret.update": ("api/types/swarm", "SecretSpec"),
        "config.create": ("api/types/swarm", "ConfigSpec"),
        "config.update": ("api/types/swarm", "ConfigSpec"),
        "swarm.init": ("api/types/swarm", "InitRequest"),
        "swarm.join": ("api/types/swarm", "JoinRequest"),
        "swarm.update": ("api/types/swarm", "Spec"),
        "swarm.unlock": ("api/types/swarm", "UnlockRequest"),
        "node.update": ("api/types/swarm", "NodeSpec"),
        "plugin.pull": ("api/types", "PluginPrivileges"),
        "plugin.upgrade": ("api/types", "PluginPrivileges"),
        "plugin.set": ("", "[]string"),
        "system.auth": ("api/types/registry", "AuthConfig"),
    },
    "v20.10.24": {
        # runconfig.ContainerConfigWrapper also embeds *container.HostConfig
        # (deprecated top-level HostConfig fields); see SKIP_EMBEDDED.
        "container.create": ("runconfig", "ContainerConfigWrapper"),
        "container.create.networking": ("api/types/network", "NetworkingConfig"),
        "container.update": ("api/types/container", "UpdateConfig"),
        # API < 1.24 only: a HostConfig body on start is applied to the container.
        "container.start": ("api/types/container", "HostConfig"),
        "image.commit": ("api/types/container", "Config"),
        "exec.create": ("api/types", "ExecConfig"),
        "exec.start": ("api/types", "ExecStartCheck"),
        "network.create": ("api/types", "NetworkCreateRequest"),
        "network.connect": ("api/types", "NetworkConnect"),
        "network.disconnect": ("api/types", "NetworkDisconnect"),
        "volume.create": ("api/types/volume", "VolumeCreateBody"),
        "service.create": ("api/types/swarm", "ServiceSpec"),
        "service.update": ("api/types/swarm", "ServiceSpec"),
        "secret.create": ("api/types/swarm", "SecretSpec"),
        "secret.update": ("api/types/swarm", "SecretSpec"),
        "config.create": ("api/types/swarm", "ConfigSpec"),
        "config.update": ("api/types/swarm", "ConfigSpec"),
        "swarm.init": ("api/types/swarm", "InitRequest"),
        "swarm.join": ("api/types/swarm", "JoinRequest"),
        "swarm.update": ("api/types/swarm", "Spec"),
        "swarm.unlock": ("api/types/swarm", "UnlockRequest"),
        "node.update": ("api/types/swarm", "NodeSpec"),
        "plugin.pull": ("api/types", "PluginPrivileges"),
        "plugin.upgrade": ("api/types", "PluginPrivileges"),
        "plugin.set": ("", "[]string"),
        "system.auth": ("api/types", "AuthConfig"),
    },
}

# Fields deliberately left out (by struct, then Go field or embedded type name).
# 20.10's ContainerConfigWrapper embeds *container.HostConfig so that old clients
# could put HostConfig fields at the top level of a create body (dockerd uses them
# when "HostConfig" is absent, and copies Memory, MemorySwap, CpuShares, CpusetCpus
# and VolumeDriver from them when it is present), and has a legacy top-level
# "Cpuset" copied into HostConfig.CpusetCpus.  No current client sends these; the
# gate treats them as unknown (refused for non-admins) rather than as a second
# place to check host settings.
SKIP_FIELDS: dict[str, set[str]] = {"ContainerConfigWrapper": {"HostConfig", "Cpuset"}}

# Named types whose JSON form is decided by a custom (Un)marshaler or by the
# standard library, keyed by (import path tail, name).
SPECIAL: dict[tuple[str, str], str] = {
    ("api/types/strslice", "StrSlice"): "strs",  # string or list of strings (<= v28)
    ("time", "Duration"): "int",
    ("time", "Time"): "str",
    ("os", "FileMode"): "int",
    ("net/netip", "Addr"): "str",
    ("net/netip", "Prefix"): "str",
    ("net", "IP"): "str",
    ("net", "HardwareAddr"): "str",
    ("encoding/json", "RawMessage"): "any",
}

BUILTIN: dict[str, str] = {
    "string": "str",
    "bool": "bool",
    "float32": "num",
    "float64": "num",
    "any": "any",
    **{
        n: "int"
        for n in (
            *("int", "int8", "int16", "int32", "int64", "uint", "uint8", "uint16", "uint32"),
            *("uint64", "uintptr", "byte", "rune"),
        )
    },
}

# Build constraints: the daemon we care about is linux/amd64.
TRUE_TAGS = {"linux", "unix", "amd64", "cgo", "gc"}


# ---------------------------------------------------------------------------
# Reading Go source from git.
# ---------------------------------------------------------------------------


class Repo:
    """Files of one git ref, read with ``git show`` / ``git ls-tree``."""

    def __init__(self, gitdir: str, ref: str, label: str) -> None:
        self.gitdir = gitdir
        self.ref = ref
        self.label = label
        out = self._git("ls-tree", "-r", "--name-only", ref)
        self.files = set(out.splitlines())

    def _git(self, *args: str) -> str:
        return subprocess.run(
            ["git", "--git-dir", self.gitdir, *args],
            check=True,
            capture_output=True,
            text=True,
        ).stdout

    def go_files(self, pkgdir: str) -> list[str]:
        prefix = pkgdir + "/"
        return sorted(
            f
            for f in self.files
            if f.startswith(prefix)
            and "/" not in f[len(prefix) :]
            and f.endswith(".go")
            and not f.endswith("_test.go")
        )

    def read(self, path: str) -> str:
        return self._git("show", f"{self.ref}:{path}")


def strip_comments(src: str) -> str:
    """Remove // and /* */ comments, leaving strings, runes and raw strings intact."""
    out: list[str] = []
    i, n = 0, len(src)
    while i < n:
        c = src[i]
        if c == "/" and src.startswith("//", i):
            j = src.find("\n", i)
            i = n if j < 0 else j
        elif c == "/" and src.startswith("/*", i):
            j = src.find("*/", i + 2)
            if j < 0:
                raise ValueError("unterminated block comment")
            out.append(" ")
            i = j + 2
        elif c in "\"'`":
            j = i + 1
            while j < n and src[j] != c:
                if src[j] == "\\" and c != "`":
                    j += 1
                j += 1
            out.append(src[i : j + 1])
            i = j + 1
        else:
            out.append(c)
            i += 1
    return "".join(out)


def build_ok(src: str) -> bool:
    """Evaluate a ``//go:build`` line for linux/amd64 (False means: skip file)."""
    m = re.search(r"^//go:build (.+)$", src, re.M)
    if not m:
        return True
    expr = m.group(1)
    tokens = re.findall(r"&&|\|\||!|\(|\)|[\w.]+", expr)
    py: list[str] = []
    for t in tokens:
        if t == "&&":
            py.append("and")
        elif t == "||":
            py.append("or")
        elif t == "!":
            py.append("not")
        elif t in "()":
            py.append(t)
        else:
            py.append(str(t in TRUE_TAGS or t.startswith("go1.")))
    return bool(eval(" ".join(py), {"__builtins__": {}}))  # only True/False/and/or/not


GOOS = {
    *("aix", "android", "darwin", "dragonfly", "freebsd", "hurd", "illumos", "ios", "js"),
    *("linux", "nacl", "netbsd", "openbsd", "plan9", "solaris", "wasip1", "windows", "zos"),
}
GOARCH = {
    *("386", "amd64", "arm", "arm64", "loong64", "mips", "mipsle", "mips64", "mips64le"),
    *("ppc64", "ppc64le", "riscv64", "s390x", "wasm"),
}


def filename_ok(path: str) -> bool:
    """Go's implicit constraint from a ``_GOOS``/``_GOARCH`` file-name suffix (linux/amd64)."""
    parts = path.rsplit("/", 1)[-1][: -len(".go")].split("_")
    if len(parts) >= 3 and parts[-2] in GOOS and parts[-1] in GOARCH:
        return parts[-2] == "linux" and parts[-1] == "amd64"
    if len(parts) >= 2 and parts[-1] in GOOS:
        return parts[-1] == "linux"
    if len(parts) >= 2 and parts[-1] in GOARCH:
        return parts[-1] == "amd64"
    return True


def split_top(body: str) -> list[str]:
    """Split a struct body into field lines (newline or ';' at bracket depth 0)."""
    parts: list[str] = []
    depth = 0
    cur: list[str] = []
    i = 0
    while i < len(body):
        c = body[i]
        if c in '"`':
            j = body.find(c, i + 1) if c == "`" else _end_of_string(body, i)
            cur.append(body[i : j + 1])
            i = j + 1
            continue
        if c in "{[(":
            depth += 1
        elif c in "}])":
            depth -= 1
        if c in "\n;" and depth == 0:
            parts.append("".join(cur).strip())
            cur = []
        else:
            cur.append(c)
        i += 1
    parts.append("".join(cur).strip())
    return [p for p in parts if p]


def _end_of_string(s: str, i: int) -> int:
    j = i + 1
    while s[j] != '"':
        if s[j] == "\\":
            j += 1
        j += 1
    return j


def match_brace(s: str, i: int) -> int:
    """Index of the '}' closing the '{' at s[i]."""
    depth = 0
    j = i
    while j < len(s):
        c = s[j]
        if c == "`":
            j = s.find("`", j + 1)
        elif c == '"':
            j = _end_of_string(s, j)
        elif c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
            if depth == 0:
                return j
        j += 1
    raise ValueError("unbalanced braces")


@dataclass
class GoPkg:
    """Type declarations of one Go package, as source text of their type expressions."""

    path: str
    name: str
    # type name -> (type expression, is an alias, file it is declared in)
    types: dict[str, tuple[str, bool, str]] = field(default_factory=dict)
    imports: dict[str, dict[str, str]] = field(default_factory=dict)  # file -> path -> alias
    text_unmarshalers: set[str] = field(default_factory=set)
    json_unmarshalers: set[str] = field(default_factory=set)


IMPORT_RE = re.compile(r'^\s*(?:(\w+|\.|_)\s+)?"([^"]+)"\s*$')


class Loader:
    """Loads Go packages of one ref and resolves import paths to directories."""

    def __init__(self, repo: Repo, kind: str) -> None:
        self.repo = repo
        self.kind = kind
        self.pkgs: dict[str, GoPkg] = {}

    def dir_of(self, import_path: str) -> str | None:
        """Repo directory of an import path, or None for the standard library."""
        if self.kind == "head":
            if import_path.startswith("github.com/moby/moby/api/"):
                return "api/" + import_path[len("github.com/moby/moby/api/") :]
            if import_path.startswith("github.com/moby/moby/v2/"):
                return import_path[len("github.com/moby/moby/v2/") :]
        elif import_path.startswith("github.com/docker/docker/"):
            return import_path[len("github.com/docker/docker/") :]
        if "." not in import_path.split("/")[0]:
            return None  # standard library
        return "vendor/" + import_path

    def load(self, pkgdir: str) -> GoPkg:
        if pkgdir in self.pkgs:
            return self.pkgs[pkgdir]
        files = self.repo.go_files(pkgdir)
        if not files:
            raise LookupError(f"{self.repo.ref}: no Go files in {pkgdir}")
        pkg = GoPkg(path=pkgdir, name="")
        for f in files:
            if not filename_ok(f):
                continue
            raw = self.repo.read(f)
            if not build_ok(raw):
                continue
            src = strip_comments(raw)
            m = re.search(r"^package (\w+)", src, re.M)
            assert m, f
            pkg.name = m.group(1)
            pkg.imports[f] = self._imports(src)
            self._types(src, f, pkg)
            for m2 in re.finditer(r"^func \(\w+ \*?(\w+)\) Unmarshal(JSON|Text)\(", src, re.M):
                (pkg.json_unmarshalers if m2.group(2) == "JSON" else pkg.text_unmarshalers).add(
                    m2.group(1)
                )
        self.pkgs[pkgdir] = pkg
        return pkg

    @staticmethod
    def _imports(src: str) -> dict[str, str]:
        out: dict[str, str] = {}
        lines: list[str] = []
        for m in re.finditer(r"^import\s*\((.*?)\)", src, re.M | re.S):
            lines.extend(m.group(1).splitlines())
        for m in re.finditer(r'^import\s+((?:\w+\s+)?"[^"]+")', src, re.M):
            lines.append(m.group(1))
        for line in lines:
            im = IMPORT_RE.match(line)
            if im:
                out[im.group(2)] = im.group(1) or ""
        return out

    def _types(self, src: str, fname: str, pkg: GoPkg) -> None:
        decls: list[str] = []
        for m in re.finditer(r"^type\b", src, re.M):
            i = m.end()
            rest = src[i:].lstrip()
            if rest.startswith("("):
                start = src.index("(", i)
                depth, j = 0, start
                while True:
                    c = src[j]
                    if c == "(":
                        depth += 1
                    elif c == ")":
                        depth -= 1
                        if depth == 0:
                            break
                    elif c == "{":
                        j = match_brace(src, j)
                    j += 1
                decls.extend(split_top(src[start + 1 : j]))
            else:
                decls.append(self._one_decl(src, i))
        for d in decls:
            dm = re.match(r"(\w+)(\[[^\]]*\])?\s*(=)?\s*(.*)$", d.strip(), re.S)
            if not dm:
                raise ValueError(f"cannot parse type decl: {d!r}")
            name, generic, alias, expr = dm.groups()
            if generic:
                continue  # generic types are not used by request bodies
            pkg.types[name] = (expr.strip(), bool(alias), fname)

    @staticmethod
    def _one_decl(src: str, i: int) -> str:
        j = src.find("\n", i)
        line = src[i:j]
        m = re.search(r"\b(struct|interface)\s*\{", line)
        if m:
            end = match_brace(src, i + m.end() - 1)
            return src[i : end + 1]
        return line


# ---------------------------------------------------------------------------
# Type expressions -> spec strings.
#   scalars: str int num bool bytes strs any
#   [X]  list     {X}  map with string keys     pkg.Name  struct reference
# ---------------------------------------------------------------------------


@dataclass
class StructDef:
    name: str  # display name "pkg.Name"
    fields: dict[str, str]  # json name -> spec
    origin: str  # "ref:dir.Type" for the report


class Resolver:
    """Turns the Go types reachable from a root into specs and struct definitions."""

    def __init__(self, loader: Loader) -> None:
        self.loader = loader
        self.structs: dict[str, StructDef] = {}
        self.notes: list[str] = []

    # -- type expressions ---------------------------------------------------
    def spec(self, expr: str, pkg: GoPkg, fname: str, hint: str) -> str:
        expr = expr.strip()
        if expr.startswith("*"):
            return self.spec(expr[1:], pkg, fname, hint)
        if expr.startswith("[]"):
            inner = expr[2:].strip()
            if inner in ("byte", "uint8"):
                return "bytes"
            return "[" + self.spec(inner, pkg, fname, hint) + "]"
        m = re.match(r"\[(\w+)\](.*)$", expr, re.S)
        if m:  # fixed-size array
            return "[" + self.spec(m.group(2), pkg, fname, hint) + "]"
        if expr.startswith("map["):
            depth, j = 0, 3
            while True:
                if expr[j] == "[":
                    depth += 1
                elif expr[j] == "]":
                    depth -= 1
                    if depth == 0:
                        break
                j += 1
            return "{" + self.spec(expr[j + 1 :], pkg, fname, hint) + "}"
        if re.match(r"struct\s*\{", expr):
            return self.struct_spec(expr, pkg, fname, hint)
        if re.match(r"interface\s*\{\s*\}$", expr) or expr == "any":
            return "any"
        m = re.match(r"(?:(\w+)\.)?(\w+)$", expr)
        if not m:
            raise ValueError(f"unsupported type expression {expr!r} in {pkg.path}")
        qual, name = m.groups()
        if qual is None:
            if name in pkg.types:
                return self.named(pkg, name)
            if name in BUILTIN:
                return BUILTIN[name]
            raise LookupError(f"unknown type {name} in {pkg.path}")
        imports = pkg.imports[fname]
        path = self._import_path(imports, qual)
        tail = self._tail(path)
        if (tail, name) in SPECIAL:
            return SPECIAL[(tail, name)]
        d = self.loader.dir_of(path)
        if d is None:
            raise LookupError(f"standard-library type {path}.{name} has no SPECIAL entry")
        return self.named(self.loader.load(d), name)

    def _import_path(self, imports: dict[str, str], qual: str) -> str:
        for path, alias in imports.items():
            if alias == qual:
                return path
            if alias == "":
                d = self.loader.dir_of(path)
                pname = path.rsplit("/", 1)[-1] if d is None else self.loader.load(d).name
                if pname == qual:
                    return path
        raise LookupError(f"no import for qualifier {qual}")

    @staticmethod
    def _tail(path: str) -> str:
        for marker in ("github.com/moby/moby/", "github.com/docker/docker/"):
            if path.startswith(marker):
                return path[len(marker) :]
        return path

    def named(self, pkg: GoPkg, name: str) -> str:
        key = (self._tail(self._pkg_import_tail(pkg)), name)
        if key in SPECIAL:
            return SPECIAL[key]
        if name in pkg.json_unmarshalers:
            raise LookupError(f"{pkg.path}.{name} has UnmarshalJSON: add it to SPECIAL")
        if name in pkg.text_unmarshalers:
            return "str"
        expr, _alias, fname = pkg.types[name]
        if re.match(r"struct\s*\{", expr):
            disp = f"{pkg.name}.{name}"
            if disp not in self.structs:
                self.structs[disp] = StructDef(disp, {}, f"{self.loader.repo.ref}:{pkg.path}")
                self.structs[disp].fields = self.fields(expr, pkg, fname, disp)
            return disp
        return self.spec(expr, pkg, fname, f"{pkg.name}.{name}")

    @staticmethod
    def _pkg_import_tail(pkg: GoPkg) -> str:
        p = pkg.path
        if p.startswith("vendor/"):
            p = p[len("vendor/") :]
            for marker in ("github.com/moby/moby/",):
                if p.startswith(marker):
                    p = p[len(marker) :]
        return p

    def struct_spec(self, expr: str, pkg: GoPkg, fname: str, hint: str) -> str:
        body = expr[expr.index("{") + 1 : expr.rindex("}")].strip()
        if not body:
            return "struct{}"
        disp = hint + "$inline"
        self.structs[disp] = StructDef(disp, {}, f"{self.loader.repo.ref}:{pkg.path}")
        self.structs[disp].fields = self.fields(expr, pkg, fname, disp)
        return disp

    # -- struct fields, with Go's embedding rules ---------------------------
    def fields(self, expr: str, pkg: GoPkg, fname: str, owner: str) -> dict[str, str]:
        cands = self._collect(expr, pkg, fname, owner, depth=0, seen=frozenset())
        by_name: dict[str, list[tuple[int, bool, str]]] = {}
        for jname, depth, tagged, spec in cands:
            by_name.setdefault(jname, []).append((depth, tagged, spec))
        out: dict[str, str] = {}
        for jname, lst in by_name.items():
            mind = min(d for d, _, _ in lst)
            top = [x for x in lst if x[0] == mind]
            if len(top) > 1:
                with_tag = [x for x in top if x[1]]
                if len(with_tag) != 1:
                    self.notes.append(f"{owner}: ambiguous promoted field {jname} dropped")
                    continue
                top = with_tag
            out[jname] = top[0][2]
        return out

    def _collect(
        self,
        expr: str,
        pkg: GoPkg,
        fname: str,
        owner: str,
        depth: int,
        seen: frozenset[str],
    ) -> list[tuple[str, int, bool, str]]:
        body = expr[expr.index("{") + 1 : expr.rindex("}")]
        out: list[tuple[str, int, bool, str]] = []
        for line in split_top(body):
            tag = ""
            m = re.search(r"`([^`]*)`\s*$", line) or re.search(r'"((?:[^"\\]|\\.)*)"\s*$', line)
            if m:
                tag = m.group(1)
                line = line[: m.start()].strip()
            jtag = re.search(r'(?:^|\s)json:"([^"]*)"', tag)
            jname, tagged = "", False
            if jtag:
                jname = jtag.group(1).split(",")[0]
                tagged = jname != ""
                if jname == "-" and "," not in jtag.group(1):
                    continue
            fm = re.match(r"([A-Za-z_]\w*(?:\s*,\s*[A-Za-z_]\w*)*)\s+(\S.*)$", line, re.S)
            if fm and not re.match(r"^\*?(\w+\.)?\w+$", line):
                names = [n.strip() for n in fm.group(1).split(",")]
                texpr = fm.group(2)
                for n in names:
                    if not n[0].isupper():
                        continue
                    if n in SKIP_FIELDS.get(owner.split(".")[-1], set()):
                        self.notes.append(f"{owner}: field {n} deliberately skipped")
                        continue
                    spec = self.spec(texpr, pkg, fname, f"{owner}.{n}")
                    out.append((jname or n, depth, tagged, spec))
                continue
            # embedded field
            em = re.match(r"^\*?(?:(\w+)\.)?(\w+)$", line)
            if not em:
                raise ValueError(f"cannot parse field {line!r} in {owner}")
            tname = em.group(2)
            if tname in SKIP_FIELDS.get(owner.split(".")[-1], set()):
                self.notes.append(f"{owner}: embedded {line} deliberately skipped")
                continue
            if tagged:
                out.append((jname, depth, True, self.spec(line, pkg, fname, f"{owner}.{tname}")))
                continue
            target_pkg, target_expr, target_file = self._resolve_embedded(line, pkg, fname)
            if target_expr is not None and re.match(r"struct\s*\{", target_expr):
                key = f"{target_pkg.path}.{tname}"
                if key in seen:
                    continue
                out.extend(
                    self._collect(
                        target_expr, target_pkg, target_file, owner, depth + 1, seen | {key}
                    )
                )
            else:
                if tname[0].isupper():
                    out.append((tname, depth, False, self.spec(line, pkg, fname, owner)))
        return out

    def _resolve_embedded(self, line: str, pkg: GoPkg, fname: str) -> tuple[GoPkg, str | None, str]:
        em = re.match(r"^\*?(?:(\w+)\.)?(\w+)$", line)
        assert em
        qual, name = em.groups()
        if qual:
            path = self._import_path(pkg.imports[fname], qual)
            d = self.loader.dir_of(path)
            assert d is not None, path
            pkg = self.loader.load(d)
        expr, _alias, f = pkg.types[name]
        # follow aliases / defined types to a struct
        for _ in range(5):
            am = re.match(r"^\*?(?:(\w+)\.)?(\w+)$", expr)
            if not am:
                break
            q2, n2 = am.groups()
            if q2:
                path = self._import_path(pkg.imports[f], q2)
                d = self.loader.dir_of(path)
                if d is None:
                    return pkg, None, f
                pkg = self.loader.load(d)
            if n2 not in pkg.types:
                return pkg, None, f
            expr, _alias, f = pkg.types[n2]
        return pkg, expr, f


# ---------------------------------------------------------------------------
# Union of refs.
# ---------------------------------------------------------------------------


WIDEN = {
    frozenset({"strs", "[str]"}): "strs",
    frozenset({"strs", "str"}): "strs",
    frozenset({"int", "num"}): "num",
}


class Union:
    """Merges the struct definitions of several refs, aligned by position from the roots."""

    def __init__(self) -> None:
        self.structs: dict[str, dict[str, str]] = {}
        self.origin: dict[str, str] = {}
        self.roots: dict[str, str] = {}
        self.notes: list[str] = []
        self.present: dict[tuple[str, str], list[str]] = {}  # (struct, field) -> refs

    def add_root(self, route: str, spec: str, res: Resolver) -> None:
        if route not in self.roots:
            self.roots[route] = self._import(spec, res)
        else:
            self.roots[route] = self._merge(self.roots[route], spec, res, route)

    def _import(self, spec: str, res: Resolver) -> str:
        """Copy a spec (and the structs it reaches) from a resolver; same names merge."""
        if spec.startswith("["):
            return "[" + self._import(spec[1:-1], res) + "]"
        if spec.startswith("{"):
            return "{" + self._import(spec[1:-1], res) + "}"
        if spec not in res.structs:
            return spec
        if spec in self.structs:
            return self._merge(spec, spec, res, spec)
        self.structs[spec] = {}
        self.origin[spec] = res.structs[spec].origin
        for k, v in res.structs[spec].fields.items():
            self.structs[spec][k] = self._import(v, res)
            self._seen(spec, k, res)
        return spec

    def _seen(self, struct: str, fname: str, res: Resolver) -> None:
        refs = self.present.setdefault((struct, fname), [])
        if res.loader.repo.label not in refs:
            refs.append(res.loader.repo.label)

    def _merge(self, have: str, new: str, res: Resolver, where: str) -> str:
        if have.startswith("[") and new.startswith("["):
            return "[" + self._merge(have[1:-1], new[1:-1], res, where + "[]") + "]"
        if have.startswith("{") and new.startswith("{"):
            return "{" + self._merge(have[1:-1], new[1:-1], res, where + "{}") + "}"
        if have == new and new not in res.structs:
            return have
        if have in self.structs and new in res.structs:
            fields = self.structs[have]
            for k, v in res.structs[new].fields.items():
                if k in fields:
                    fields[k] = self._merge(fields[k], v, res, f"{have}.{k}")
                else:
                    fields[k] = self._import(v, res)
                    self.notes.append(f"{have}.{k}: only in {res.loader.repo.label} ({v})")
                self._seen(have, k, res)
            return have
        w = WIDEN.get(frozenset({have, new}))
        if w:
            self.notes.append(f"{where}: {have} | {new} -> {w}")
            return w
        if have == "struct{}" and new in res.structs:
            return self._import(new, res)
        ref = res.loader.repo.label
        self.notes.append(f"{where}: kind conflict {have} vs {new} ({ref}); kept {have}")
        return have


def main(argv: list[str]) -> int:
    gitdir = argv[1]
    union = Union()
    for label, ref, kind in REFS:
        repo = Repo(gitdir, ref, label)
        loader = Loader(repo, kind)
        res = Resolver(loader)
        for route, (pkgdir, tname) in ROOTS[label].items():
            spec = "[str]" if tname == "[]string" else res.named(loader.load(pkgdir), tname)
            union.add_root(route, spec, res)
        union.notes.extend(f"{label}: {n}" for n in res.notes)
    emit(union)
    for n in union.notes:
        print(n, file=sys.stderr)
    return 0


def emit(u: Union) -> None:
    reachable: set[str] = set()

    def walk(spec: str) -> None:
        for name in re.findall(r"[\w$]+\.[\w$]+", spec):
            if name in u.structs and name not in reachable:
                reachable.add(name)
                for v in u.structs[name].values():
                    walk(v)

    for s in u.roots.values():
        walk(s)
    refs = [label for label, _, _ in REFS]
    w = sys.stdout.write
    w('"""Field names of the request bodies dockerd decodes: GENERATED, do not edit.\n\n')
    w("Made by tools/gen_schema.py from moby's Go structs, united over:\n")
    for label, ref, _ in REFS:
        w(f"- {label}" + (f" ({ref})" if ref != label else "") + "\n")
    w("\nSpec strings: str int num bool bytes strs any; [X] list; {X} map with string\n")
    w("keys (keys are data); pkg.Name a struct in STRUCTS; struct{} an object with no\n")
    w("fields.  A comment lists the refs having a field when that is not all of them.\n")
    w('"""\n\n')
    w("STRUCTS: dict[str, dict[str, str]] = {\n")
    for name in sorted(reachable):
        fields = u.structs[name]
        if not fields:
            w(f"    {json.dumps(name)}: {{}},\n")
            continue
        w(f"    {json.dumps(name)}: {{\n")
        for k, v in fields.items():
            have = u.present.get((name, k), [])
            note = "" if len(have) == len(refs) else f"  # {' '.join(have)}"
            w(f"        {json.dumps(k)}: {json.dumps(v)},{note}\n")
        w("    },\n")
    w("}\n\n")
    w("ROOTS: dict[str, str] = {\n")
    for route in sorted(u.roots):
        w(f"    {json.dumps(route)}: {json.dumps(u.roots[route])},\n")
    w("}\n")


if __name__ == "__main__":
    sys.exit(main(sys.argv))
