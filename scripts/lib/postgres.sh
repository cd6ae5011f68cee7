# A private, throw-away PostgreSQL cluster for the store tests (source this file).
#
#   pg_start DIR PORT   initdb (once) and start a cluster in DIR on 127.0.0.1:PORT, with
#                       its unix socket in DIR/sock (role dockergate by password there
#                       too, everyone else by peer); create role+database "dockergate";
#                       export and print DOCKERGATE_TEST_PG_URL. Idempotent: a running
#                       cluster is reused.
#   pg_stop DIR         stop it (the data stays; rm -rf DIR to forget it).
#
# Runs as root on Debian 12: installs the `postgresql` package when no server binaries
# exist, with create_main_cluster = false so that no system cluster is created. The
# system cluster (if any) is never started, stopped or read. The server runs as the
# `postgres` user, listens on 127.0.0.1 only and trades durability for speed (fsync off).

_pg_log() { printf 'postgres.sh: %s\n' "$*" >&2; }

# Newest installed server's bin directory.
_pg_bindir() {
    local d
    d=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
    [ -n "$d" ] && [ -x "$d/initdb" ] && echo "$d"
}

_pg_install() {
    _pg_bindir >/dev/null && return 0
    _pg_log "installing postgresql (without a main cluster)"
    mkdir -p /etc/postgresql-common
    if [ ! -e /etc/postgresql-common/createcluster.conf ]; then
        echo "create_main_cluster = false" >/etc/postgresql-common/createcluster.conf
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null
    apt-get install -y -qq --no-install-recommends postgresql >/dev/null
    _pg_bindir >/dev/null || { _pg_log "postgresql installed but no initdb found"; return 1; }
}

# Run a command as the postgres user, from a directory it can read.
_pg_as() { (cd / && runuser -u postgres -- "$@"); }

pg_start() {
    local dir=${1:?usage: pg_start DIR PORT} port=${2:?usage: pg_start DIR PORT}
    local bin data sock pwfile password url
    if [ "$(id -u)" != 0 ]; then
        _pg_log "pg_start must run as root"
        return 1
    fi
    _pg_install || return 1
    bin=$(_pg_bindir)
    dir=$(realpath -m -- "$dir")
    data=$dir/data
    sock=$dir/sock
    pwfile=$dir/password
    if [ $((${#sock} + 20)) -gt 107 ]; then
        _pg_log "$dir is too long for a unix socket path; use a shorter directory"
        return 1
    fi
    mkdir -p "$sock"
    if [ ! -s "$pwfile" ]; then
        (umask 077 && head -c 18 /dev/urandom | base64 | tr -d '/+=' >"$pwfile")
    fi
    chown -R postgres:postgres "$dir"
    chmod 700 "$dir"
    if ! _pg_as test -x "$dir"; then
        _pg_log "user postgres cannot reach $dir (a parent directory is not searchable)"
        return 1
    fi
    password=$(cat "$pwfile")
    if [ ! -f "$data/PG_VERSION" ]; then
        _pg_log "initdb $data"
        _pg_as "$bin/initdb" -D "$data" -U postgres --pwfile="$pwfile" \
            --auth-local=peer --auth-host=scram-sha-256 -E UTF8 --locale=C.UTF-8 \
            >"$dir/initdb.log" 2>&1 || {
            cat "$dir/initdb.log" >&2
            return 1
        }
        # The dockergate role may also log in with its password over the unix socket
        # (a gate in a container reaches the server through the mounted socket dir,
        # as root, which peer authentication would refuse).
        sed -i '1i local all dockergate scram-sha-256' "$data/pg_hba.conf"
    fi
    if _pg_as "$bin/pg_ctl" status -D "$data" >/dev/null 2>&1 \
        && [ "$(sed -n 4p "$data/postmaster.pid" 2>/dev/null)" != "$port" ]; then
        _pg_log "restarting the cluster in $dir on port $port"
        _pg_as "$bin/pg_ctl" stop -D "$data" -m fast -w -t 30 >/dev/null || return 1
    fi
    if ! _pg_as "$bin/pg_ctl" status -D "$data" >/dev/null 2>&1; then
        _pg_as "$bin/pg_ctl" start -D "$data" -l "$dir/server.log" -w -t 30 -o \
            "-c listen_addresses=127.0.0.1 -p $port -c unix_socket_directories=$sock \
             -c fsync=off -c synchronous_commit=off -c full_page_writes=off" \
            >/dev/null || {
            tail -n 20 "$dir/server.log" >&2
            return 1
        }
    fi
    local psql=("$bin/psql" -h "$sock" -p "$port" -U postgres -d postgres -v ON_ERROR_STOP=1 -qtA)
    if [ -z "$(_pg_as "${psql[@]}" -c "SELECT 1 FROM pg_roles WHERE rolname = 'dockergate'")" ]
    then
        _pg_as "${psql[@]}" -c "CREATE ROLE dockergate LOGIN CREATEDB PASSWORD '$password'" || return 1
    fi
    if [ -z "$(_pg_as "${psql[@]}" -c "SELECT 1 FROM pg_database WHERE datname = 'dockergate'")" ]
    then
        _pg_as "${psql[@]}" -c "CREATE DATABASE dockergate OWNER dockergate" || return 1
    fi
    url="postgresql+psycopg://dockergate:$password@127.0.0.1:$port/dockergate"
    export DOCKERGATE_TEST_PG_URL=$url
    echo "DOCKERGATE_TEST_PG_URL=$url"
}

pg_stop() {
    local dir=${1:?usage: pg_stop DIR} bin
    bin=$(_pg_bindir) || return 0
    [ -f "$dir/data/PG_VERSION" ] || return 0
    if _pg_as "$bin/pg_ctl" status -D "$dir/data" >/dev/null 2>&1; then
        _pg_as "$bin/pg_ctl" stop -D "$dir/data" -m fast -w -t 30 >/dev/null
    fi
}
