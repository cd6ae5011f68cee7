#!/usr/bin/env bash
# Run dockergate in front of the local Docker engine with the embedded defaults:
# state in /var/lib/dockergate (SQLite), the shipped policies, the unix socket
# /run/dockergate/docker.sock in front of /var/run/docker.sock. Extra arguments go
# to `dockergate serve` (e.g. --tls-listen 0.0.0.0:2376).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib/venv.sh
ensure_venv
.venv/bin/dockergate init >&2
if [ -z "${DOCKERGATE_UPSTREAM:-}" ] && [ ! -S /var/run/docker.sock ]; then
    echo "run.sh: no Docker engine at /var/run/docker.sock (apt-get install docker.io);" \
        "the gate will answer 502 until there is one" >&2
fi
exec .venv/bin/dockergate serve "$@"
