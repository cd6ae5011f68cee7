# Shared by scripts/run.sh and scripts/test.sh: a project venv with the package,
# reinstalled only when pyproject.toml changes.
ensure_venv() {
    local extras="${1:-}"
    if ! command -v python3 >/dev/null || ! python3 -c 'import venv, ensurepip' 2>/dev/null; then
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3 python3-venv >/dev/null
    fi
    [ -x .venv/bin/python ] || python3 -m venv .venv
    local stamp=".venv/.dockergate-installed${extras:+-$extras}"
    local want
    want=$(sha256sum pyproject.toml | cut -d' ' -f1)
    if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
        local out
        out=$(mktemp)
        if ! .venv/bin/pip install -q --disable-pip-version-check -e ".${extras:+[$extras]}" \
            >"$out" 2>&1; then
            cat "$out" >&2
            rm -f "$out"
            return 1
        fi
        rm -f "$out"
        echo "$want" > "$stamp"
    fi
}
