#!/usr/bin/env bash
# Run the whole test suite against a real, private, throw-away Docker engine.
#
#   scripts/test.sh [pytest args...]       (as root; default pytest args: -q -ra)
#
# Installs what is missing (apt: docker.io busybox-static util-linux iproute2 procps curl;
# the project venv in .venv with the [test] extras), starts containerd + dockerd under
# /var/tmp/dockergate-test/<id>, imports busybox:latest from busybox-static, makes the
# engine a swarm manager on 127.0.0.1 with a second engine as a drained worker on
# 127.0.0.2 (both in one private network namespace), runs pytest with
# DOCKERGATE_TEST_DOCKER_HOST=unix://<private socket> (and ..._HOST2 for the worker),
# and always tears it all down.
# Exit code: pytest's.
set -euo pipefail
cd "$(dirname "$0")/.."

. scripts/lib/venv.sh
. scripts/lib/privdocker.sh
. scripts/lib/postgres.sh

if [ "$(id -u)" != 0 ]; then
    echo "test.sh: must run as root (it starts a private dockerd)" >&2
    exit 2
fi

PRIV_RUN=
on_exit() {
    local rc=$?
    trap - EXIT INT TERM
    if [ -n "${PG_DIR:-}" ]; then
        pg_stop "$PG_DIR" || true
    fi
    if [ -n "$PRIV_RUN" ]; then
        local t=$SECONDS
        cleanup_run_dir "$PRIV_RUN"
        printf 'test.sh: private dockerd stopped and removed in %ss\n' $((SECONDS - t)) >&2
    fi
    exit "$rc"
}
trap on_exit EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

t0=$SECONDS
ensure_apt_packages docker.io docker-compose busybox-static util-linux iproute2 procps python3 python3-venv curl
ensure_venv test
ensure_cgroups
cleanup_stale_run_dirs
start_private_dockerd
# A second node (a drained worker on 127.0.0.2) for the cluster-wide purge, and the
# private PostgreSQL the store tests (unit and identity) run on besides SQLite: both
# start in the background while the first engine is set up (they are independent).
PRIV_DOCKER_HOST2="unix://$PRIV_RUN/n2/docker.sock"
(start_second_dockerd && import_busybox "$PRIV_DOCKER_HOST2") >"$PRIV_RUN/n2-start.log" 2>&1 &
n2_job=$!
PG_DIR="$PRIV_RUN/pg"
pg_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
pg_start "$PG_DIR" "$pg_port" >"$PRIV_RUN/pg-start.out" 2>"$PRIV_RUN/pg-start.log" &
pg_job=$!
import_busybox "$PRIV_DOCKER_HOST"
init_swarm "$PRIV_DOCKER_HOST"
if ! wait "$n2_job"; then
    cat "$PRIV_RUN/n2-start.log" >&2
    echo "test.sh: the second engine did not start" >&2
    exit 1
fi
join_second_node "$PRIV_DOCKER_HOST" "$PRIV_DOCKER_HOST2"
if ! wait "$pg_job"; then
    cat "$PRIV_RUN/pg-start.log" >&2
    echo "test.sh: PostgreSQL did not start" >&2
    exit 1
fi
cat "$PRIV_RUN/pg-start.log" >&2
# pg_start exported the URL in its (background) subshell: take it from its output.
DOCKERGATE_TEST_PG_URL=$(sed -n 's/^DOCKERGATE_TEST_PG_URL=//p' "$PRIV_RUN/pg-start.out")
export DOCKERGATE_TEST_PG_URL
printf 'test.sh: private dockerd at %s ready in %ss\n' "$PRIV_DOCKER_HOST" $((SECONDS - t0)) >&2

((${#})) || set -- -q -ra
set +e
env -u REQUESTS_CA_BUNDLE -u CURL_CA_BUNDLE -u DOCKER_HOST -u DOCKER_TLS_VERIFY -u DOCKER_CERT_PATH -u DOCKER_CONTEXT \
    -u DOCKER_API_VERSION -u DOCKER_CONFIG \
    DOCKERGATE_TEST_DOCKER_HOST="$PRIV_DOCKER_HOST" \
    DOCKERGATE_TEST_DOCKER_HOST2="$PRIV_DOCKER_HOST2" \
    DOCKERGATE_TEST_RUN_DIR="$PRIV_RUN" \
    .venv/bin/python -m pytest "$@"
rc=$?
set -e
exit "$rc"
