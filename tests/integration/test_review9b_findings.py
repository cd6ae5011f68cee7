"""Review round 9b: a new operator's first week with the documented commands.

Failing tests assert the behaviour the README (or common sense for an operator)
promises and the product does not deliver yet; passing tests pin what worked.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509

from tests.helpers import dockergate_argv, raw_request
from tests.integration.test_admin import dg, out

pytestmark = pytest.mark.timeout(180)

ROOT = Path(__file__).resolve().parents[2]
SETTLE = 1.5  # a running gate applies store changes within a second


def offline(state: Path, *args: str, env: dict[str, str] | None = None) -> Any:
    """`dockergate --state-dir STATE ARGS` with no gate involved (init, check, policy)."""
    full = {k: v for k, v in os.environ.items() if not k.startswith(("DOCKER_", "DOCKERGATE_"))}
    full.update(env or {})
    return subprocess.run(
        [*dockergate_argv(), "--state-dir", str(state), *args],
        capture_output=True,
        text=True,
        env=full,
        timeout=60,
        check=False,
        stdin=subprocess.DEVNULL,
    )


def sans(cert: Path) -> set[str]:
    c = x509.load_pem_x509_certificate(cert.read_bytes())
    ext = c.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return {str(v) for v in ext.get_values_for_type(x509.DNSName)} | {
        str(v) for v in ext.get_values_for_type(x509.IPAddress)
    }


def policies_copy(tmp_path: Path, extra: dict[str, str]) -> Path:
    """The shipped profiles plus ``extra`` (name -> yaml) in a world-readable dir."""
    pol = tmp_path / "pol"
    pol.mkdir()
    tmp_path.chmod(0o755)
    pol.chmod(0o755)
    for f in (ROOT / "policies").glob("*.yaml"):
        (pol / f.name).write_text(f.read_text())
    for name, text in extra.items():
        (pol / f"{name}.yaml").write_text(text)
    return pol


def cleanup(direct_client: Any, prefix: str) -> None:
    for c in direct_client.containers.list(all=True):
        if c.labels.get("dockergate.owner", "").startswith(prefix):
            c.remove(force=True)


# -- init and the server certificate ------------------------------------------------------


def test_rotate_server_cert_without_hostname_keeps_the_names_clients_use(tmp_path):
    """`init --rotate-server-cert` (e.g. to renew before expiry) silently drops every
    --hostname given at init: remote clients then fail verification."""
    state = tmp_path / "state"
    r = offline(state, "init", "--hostname", "gate.example.org")
    assert r.returncode == 0, out(r)
    assert "gate.example.org" in sans(state / "pki" / "server-cert.pem")
    r = offline(state, "init", "--rotate-server-cert")
    assert r.returncode == 0, out(r)
    names = sans(state / "pki" / "server-cert.pem")
    assert "gate.example.org" in names, f"rotation dropped the gate's hostname: {names}"


def test_init_again_with_a_new_hostname_says_it_was_not_applied(tmp_path):
    """Re-running `init --hostname new.name` on an initialised dir prints 'nothing to
    do' and exits 0, although the certificate does not name new.name."""
    state = tmp_path / "state"
    assert offline(state, "init").returncode == 0
    r = offline(state, "init", "--hostname", "new.example.org")
    assert "new.example.org" not in sans(state / "pki" / "server-cert.pem")
    text = r.stdout + r.stderr
    assert r.returncode != 0 or "--rotate-server-cert" in text, out(r)


# -- dockergate check -----------------------------------------------------------------------


def test_check_interpolates_variables_in_bind_sources(tmp_path):
    """`docker stack deploy` substitutes ${VAR:-default}; `dockergate check` reads the
    literal text, so the docker socket as a defaulted variable passes for a member."""
    f = tmp_path / "stack.yml"
    f.write_text(
        'version: "3.8"\nservices:\n  a:\n    image: busybox\n    volumes:\n'
        "      - ${SOCK:-/var/run/docker.sock}:/var/run/docker.sock\n"
    )
    r = offline(tmp_path / "st", "check", "--profile", "member", str(f))
    assert r.returncode == 1 and "/var/run/docker.sock" in r.stdout, out(r)


def test_check_reports_a_variable_memory_limit_instead_of_a_traceback(tmp_path):
    f = tmp_path / "stack.yml"
    f.write_text(
        'version: "3.8"\nservices:\n  a:\n    image: busybox\n    deploy:\n'
        "      resources:\n        limits:\n          memory: ${MEM:-100g}\n"
    )
    r = offline(tmp_path / "st", "check", "--profile", "intern", str(f))
    assert "Traceback" not in r.stderr, out(r)
    assert r.returncode == 1 and "memory" in r.stdout, out(r)


def test_check_flags_a_member_service_on_the_host_network(tmp_path):
    """A stack service attached to the external `host` network (as the gate's own
    stack file does) passes `check --profile member`; the gate refuses it."""
    f = tmp_path / "stack.yml"
    f.write_text(
        'version: "3.8"\nservices:\n  a:\n    image: busybox\n    networks: [hostnet]\n'
        "networks:\n  hostnet:\n    external: true\n    name: host\n"
    )
    r = offline(tmp_path / "st", "check", "--profile", "member", str(f))
    assert r.returncode == 1 and "host" in r.stdout, out(r)


def test_deploy_files_parse_and_examples_pass_their_profiles(tmp_path, cli):
    r = cli(
        ["stack", "config", "-c", str(ROOT / "deploy" / "dockergate-stack.yml")],
        listener="direct",
        env={"DOCKERGATE_DB": "sqlite:////var/lib/dockergate/dockergate.db"},
    )
    assert r.returncode == 0 and "dockergate.tls-port" in r.stdout, r.stderr
    for name, profile in (
        ("portainer", "admin"),
        ("registry", "member"),
        ("spark-team", "member"),
        ("spark-interns", "intern"),
    ):
        f = ROOT / "deploy" / "examples" / f"{name}.yml"
        r = offline(tmp_path / "st", "check", "--profile", profile, str(f))
        assert r.returncode == 0, out(r)


# -- profiles -------------------------------------------------------------------------------


def test_validate_refuses_an_inherited_default_above_the_max(tmp_path):
    """An intern profile with a tighter memory max (512m) inherits intern's default
    (1g): `policy validate` says ok, then every `docker run` without -m is refused
    with 'forbids this much memory (HostConfig.Memory=1g)', a value the user never set."""
    pol = policies_copy(
        tmp_path,
        {"tight": "extends: intern\nresources:\n  memory:\n    max: 512m\n"},
    )
    r = offline(tmp_path / "st", "policy", "validate", env={"DOCKERGATE_POLICIES_DIR": str(pol)})
    assert r.returncode == 1 and "tight.yaml" in r.stderr, out(r)


def test_profile_without_resources_keeps_the_documented_memory_default(
    gate_factory, cli, unix_user, direct_client, tmp_path
):
    """policies/README.md: 'a missing key keeps the default shown' (memory default 2g);
    README: 'every container and service gets a memory limit'. A profile that sets
    no resources gives containers no memory limit at all."""
    pol = policies_copy(tmp_path, {"lab": "description: a lab profile\n"})
    g = gate_factory(extra_args=["--policies-dir", str(pol)])
    u = unix_user("r9b-lab")
    env = {"DOCKERGATE_POLICIES_DIR": str(pol)}
    r = dg(g, "user", "add", "r9b-lab", "--profile", "lab", "--uid", str(u.uid), env=env)
    assert r.returncode == 0, out(r)
    time.sleep(SETTLE)
    try:
        r = cli(["run", "-d", "--name", "r9b-lab-c", "busybox", "sleep", "60"], user=u, gate=g)
        assert r.returncode == 0, r.stderr
        memory = direct_client.containers.get("r9b-lab-c").attrs["HostConfig"]["Memory"]
        assert memory == 2 << 30, f"HostConfig.Memory={memory}"
    finally:
        cleanup(direct_client, "r9b-lab")


def test_policy_show_prints_the_effective_rules(tmp_path):
    """`policy show member` omits the rules applied by default (ulimits, admin, the
    cpus default): it prints the merged files, not what the gate enforces."""
    r = offline(tmp_path / "st", "policy", "show", "member", "--json")
    assert r.returncode == 0, out(r)
    rules = json.loads(r.stdout)
    assert "ulimits" in rules.get("containers", {}), sorted(rules.get("containers", {}))
    assert "admin" in rules


def test_policy_reload_reports_that_the_gate_kept_the_old_rules(gate_factory, tmp_path):
    """`dockergate policy reload` validates the CLI's policies dir (the shipped one when
    the gate runs with --policies-dir), signals the gate and exits 0 with 'sent
    SIGHUP' while the gate logs 'policy reload failed, keeping the previous rules'."""
    pol = policies_copy(tmp_path, {"lab": "description: lab\n"})
    g = gate_factory(extra_args=["--policies-dir", str(pol)])
    (pol / "lab.yaml").write_text("bogus: 1\n")
    r = dg(g, "policy", "reload")
    # The CLI now reads the gate's own directory and refuses to signal it.
    assert r.returncode != 0 and "not reloaded" in r.stderr and "lab.yaml" in r.stderr, out(r)
    (pol / "lab.yaml").write_text("description: lab, edited\n")
    r = dg(g, "policy", "reload")
    assert r.returncode == 0 and "reloaded dockergate" in r.stdout and "lab" in r.stdout, out(r)


# -- what works -----------------------------------------------------------------------------


def test_tls_bundle_and_token_with_the_real_cli(gate_factory, cli, unix_user, tmp_path):
    g = gate_factory()
    u = unix_user("r9b-tls")
    assert (
        dg(g, "user", "add", "r9b-tls", "--profile", "member", "--uid", str(u.uid)).returncode == 0
    )
    bundle = tmp_path / "bundle"
    r = dg(g, "user", "cert", "r9b-tls", "--out", str(bundle))
    assert r.returncode == 0 and "DOCKER_CERT_PATH" in r.stdout, out(r)
    token = dg(g, "user", "token", "r9b-tls").stdout.strip()
    time.sleep(SETTLE)
    r = cli(["info", "--format", "{{.Containers}}"], listener="tls", gate=g, cert_dir=bundle)
    assert r.returncode == 0, r.stderr
    cadir, cfg = tmp_path / "ca", tmp_path / "cfg"
    cadir.mkdir()
    cfg.mkdir()
    (cadir / "ca.pem").write_text((bundle / "ca.pem").read_text())
    (cfg / "config.json").write_text(json.dumps({"HttpHeaders": {"X-Dockergate-Token": token}}))
    env = {"DOCKER_CONFIG": str(cfg)}
    assert cli(["ps"], listener="tls", gate=g, cert_dir=cadir, env=env).returncode == 0
    assert dg(g, "user", "revoke", "r9b-tls").returncode == 0
    time.sleep(SETTLE)
    assert cli(["ps"], listener="tls", gate=g, cert_dir=cadir, env=env).returncode != 0


def test_quota_message_and_whoami_for_a_custom_intern(
    gate_factory, cli, unix_user, direct_client, tmp_path
):
    pol = policies_copy(
        tmp_path,
        {
            "lab": "extends: intern\ncontainers:\n  on_managers: true\n"
            "resources:\n  memory:\n    default: 256m\n    max: 512m\nquota:\n  containers: 1\n"
        },
    )
    g = gate_factory(extra_args=["--policies-dir", str(pol)])
    u = unix_user("r9b-quota")
    env = {"DOCKERGATE_POLICIES_DIR": str(pol)}
    assert (
        dg(
            g, "user", "add", "r9b-quota", "--profile", "lab", "--uid", str(u.uid), env=env
        ).returncode
        == 0
    )
    time.sleep(SETTLE)
    try:
        r = cli(["run", "-d", "-m", "1g", "busybox", "sleep", "60"], user=u, gate=g)
        assert r.returncode != 0 and "at most 512m" in r.stderr, r.stderr
        assert cli(["run", "-d", "busybox", "sleep", "60"], user=u, gate=g).returncode == 0
        r = cli(["run", "-d", "busybox", "sleep", "60"], user=u, gate=g)
        assert "quota.containers=1 of 1 used" in r.stderr, r.stderr
        r = dg(g, "whoami", env={"DOCKER_HOST": g.unix_url}, user=u)
        assert "profile lab" in r.stdout and "quota 1" in r.stdout, out(r)
        r = dg(g, "audit", "--denied", "--json", "--user", "r9b-quota")
        rules = [row["rule"] for row in json.loads(r.stdout)]
        assert any("memory" in x for x in rules) and any("more containers" in x for x in rules), (
            rules
        )
    finally:
        cleanup(direct_client, "r9b-quota")


def test_store_outage_fails_closed_and_health_says_so(gate_factory, cli):
    g = gate_factory(tls=False)
    db = g.state_dir / "dockergate.db"
    moved = db.with_name("moved.db")
    db.rename(moved)
    try:
        time.sleep(1.2)
        r = raw_request(g.socket, "GET", "/_dockergate/health")
        assert r.status == 503 and b'"store": {"ok": false' in r.body, r.body
        r = cli(["ps"], gate=g)
        assert r.returncode != 0 and "store unavailable" in r.stderr, r.stderr
    finally:
        moved.rename(db)
    time.sleep(1.2)
    assert cli(["ps"], gate=g).returncode == 0


def test_purge_dry_run_then_purge_is_idempotent(gate_factory, cli, unix_user, direct_client):
    g = gate_factory(tls=False)
    u = unix_user("r9b-purge")
    assert (
        dg(g, "user", "add", "r9b-purge", "--profile", "member", "--uid", str(u.uid)).returncode
        == 0
    )
    time.sleep(SETTLE)
    assert cli(["volume", "create", "r9b-purge-v"], user=u, gate=g).returncode == 0
    assert cli(["network", "create", "r9b-purge-n"], user=u, gate=g).returncode == 0
    r = dg(g, "purge", "--user", "r9b-purge", "--volumes", "--networks", "--dry-run")
    assert r.returncode == 0 and r.stdout.count("would remove") == 2, out(r)
    assert direct_client.volumes.get("r9b-purge-v")
    r = dg(g, "purge", "--user", "r9b-purge", "--volumes", "--networks", "--yes")
    assert r.returncode == 0 and r.stdout.count("removed") == 2, out(r)
    r = dg(g, "purge", "--user", "r9b-purge", "--volumes", "--networks", "--yes")
    assert r.returncode == 0 and "nothing owned" in r.stdout, out(r)


def test_registering_uid_0_is_refused_or_takes_effect(gate_factory):
    """`user add ops --profile intern --uid 0` succeeds silently, yet root stays the
    built-in admin on the socket (root_is_admin): the registration never applies."""
    g = gate_factory(tls=False)
    r = dg(g, "user", "add", "r9b-root", "--profile", "intern", "--uid", "0")
    if r.returncode != 0:
        assert "uid 0" in r.stderr, out(r)
        return
    time.sleep(SETTLE)
    who = json.loads(raw_request(g.socket, "GET", "/_dockergate/whoami").body)
    assert who["user"] == "r9b-root", f"`user add` said {r.stdout!r} but the gate says {who}"


# -- deploy/ and the operator's guide -------------------------------------------------------


def test_documented_install_works_on_debian_system_python():
    """README (systemd, 'as root' on Debian): `pip install .` provides
    /usr/local/bin/dockergate. Debian 12's python is externally managed (PEP 668):
    `pip install .` stops with error: externally-managed-environment."""
    marker = list(Path("/usr/lib").glob("python3*/EXTERNALLY-MANAGED"))
    if not marker:
        pytest.skip("the system python is not externally managed here")
    readme = (ROOT / "README.md").read_text()
    section = readme.split("### Single host with systemd", 1)[1].split("\n### ", 1)[0]
    assert "pip install ." not in section or any(
        hint in section for hint in ("venv", "--break-system-packages", "pipx")
    ), f"{marker[0]} exists, so the section's `pip install .` fails"


def test_systemd_unit_references_exist():
    unit = (ROOT / "deploy" / "systemd" / "dockergate.service").read_text()
    readme = (ROOT / "README.md").read_text()
    assert "Who gets in" not in unit or "Who gets in" in readme, (
        'the unit points to the README section "Who gets in", which does not exist'
    )
