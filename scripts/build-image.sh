#!/usr/bin/env bash
# Build the dockergate image: wheels of the package and its dependencies into a
# context with deploy/Dockerfile, then `docker build` (classic builder: no BuildKit
# needed). Usage: scripts/build-image.sh [TAG] [BASE]   (BASE default debian:bookworm-slim)
set -euo pipefail
cd "$(dirname "$0")/.."
tag=${1:-dockergate:latest}
base=${2:-debian:bookworm-slim}
ctx=$(mktemp -d)
trap 'rm -rf "$ctx"' EXIT
"${PYTHON:-python3}" -m pip wheel --quiet --disable-pip-version-check -w "$ctx/wheels" '.[postgres]' >&2
cp deploy/Dockerfile "$ctx/Dockerfile"
DOCKER_BUILDKIT=0 docker build -q --build-arg "BASE=$base" -t "$tag" "$ctx"
