# A private, throw-away Docker engine for the test suite (sourced by scripts/test.sh).
#
# Everything lives under one run directory (short path: unix socket paths are limited
# to 108 bytes): its own containerd (so a system containerd is never shared), dockerd
# with its own data root, exec root, pidfile and cgroup parent, no bridge and no
# iptables. Swarm listens on 127.0.0.1 only. Nothing is sent to non-loopback addresses:
# no image is ever pulled (busybox:latest is imported from Debian's busybox-static and
# swarm tasks prefer the local image).

PRIV_BASE=/var/tmp/dockergate-test

_priv_log() { printf 'test.sh: %s\n' "$*" >&2; }

# apt packages, installed only when missing (apt-get update only then).
ensure_apt_packages() {
    local missing=() p
    for p in "$@"; do
        dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null | grep -qx installed \
            || missing+=("$p")
    done
    ((${#missing[@]})) || return 0
    _priv_log "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# cgroups must be mounted for runc; a systemd host has them, a bare VM/container may not.
ensure_cgroups() {
    if ! grep -qE '^[^ ]+ /sys/fs/cgroup[/ ]' /proc/mounts; then
        _priv_log "mounting cgroup2 on /sys/fs/cgroup"
        mount -t cgroup2 none /sys/fs/cgroup
    fi
}

# "pid starttime" of a live process (empty if gone): survives pid reuse.
_proc_identity() {
    local stat
    stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 0
    stat=${stat##*) }
    # shellcheck disable=SC2086
    set -- "$1" $stat
    echo "$1 ${21}"
}

# Alive and not a zombie.
_pid_alive() {
    [ -n "${1:-}" ] && kill -0 "$1" 2>/dev/null || return 1
    local stat
    stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
    stat=${stat##*) }
    [ "${stat:0:1}" != Z ]
}

# Wait up to $2 tenths of a second for pid $1 to exit.
_wait_gone() {
    local pid=$1 n=${2:-100}
    while _pid_alive "$pid" && ((n-- > 0)); do sleep 0.1; done
    ! _pid_alive "$pid"
}

# TERM, wait, KILL one pid.
_stop_pid() {
    local pid=$1 tenths=${2:-100}
    _pid_alive "$pid" || return 0
    kill -TERM "$pid" 2>/dev/null || true
    _wait_gone "$pid" "$tenths" && return 0
    _priv_log "pid $pid did not stop, killing it"
    kill -KILL "$pid" 2>/dev/null || true
    _wait_gone "$pid" 50 || true
}

# Pids whose command line mentions the run dir (containerd shims, a stray containerd or
# dockerd), plus all their descendants (the container processes under the shims).
_run_dir_pids() {
    local run=$1 f pid
    local -a roots=()
    for f in /proc/[0-9]*/cmdline; do
        pid=${f#/proc/}; pid=${pid%/cmdline}
        [ "$pid" = "$$" ] && continue
        if { tr '\0' ' ' <"$f"; } 2>/dev/null | grep -qF -- "$run/"; then roots+=("$pid"); fi
    done
    ((${#roots[@]})) || return 0
    # descendants, breadth first, from one ps snapshot
    ps -e -o pid=,ppid= | awk -v roots="${roots[*]}" '
        BEGIN { n = split(roots, r, " "); for (i = 1; i <= n; i++) want[r[i]] = 1 }
        { parent[$1] = $2 }
        END {
            changed = 1
            while (changed) {
                changed = 0
                for (p in parent) if (!(p in want) && (parent[p] in want)) { want[p] = 1; changed = 1 }
            }
            for (p in want) print p
        }'
}

# Stop one engine of a run (its containers, dockerd, containerd): the run dir itself
# or its second node's dir.
_stop_engine() {
    local run=$1 sock pid
    sock="unix://$run/docker.sock"
    pid=$(cat "$run/dockerd.pid" 2>/dev/null || true)
    if _pid_alive "$pid" && [ -S "$run/docker.sock" ]; then
        # Removing containers first makes dockerd's shutdown quick (busybox `sleep` as
        # pid 1 ignores SIGTERM, so a running one would hold shutdown for its timeout).
        local ids
        ids=$(timeout 10 docker -H "$sock" ps -aq 2>/dev/null || true)
        if [ -n "$ids" ]; then
            # shellcheck disable=SC2086
            timeout 30 docker -H "$sock" rm -f $ids >/dev/null 2>&1 || true
        fi
    fi
    _stop_pid "$pid" 200
    _stop_pid "$(cat "$run/containerd.pid" 2>/dev/null || true)" 100
}

# Undo everything a run dir holds: engines, containerds, shims, containers, mounts,
# cgroups, files. Safe to call on a half-started or already-cleaned run dir.
cleanup_run_dir() {
    local run=$1
    [ -d "$run" ] || return 0
    [ -d "$run/n2" ] && _stop_engine "$run/n2"
    _stop_engine "$run"
    local -a left=()
    mapfile -t left < <(_run_dir_pids "$run")
    if ((${#left[@]})); then
        _priv_log "killing leftover processes of $run: ${left[*]}"
        kill -KILL "${left[@]}" 2>/dev/null || true
        sleep 0.2
    fi
    # Mounts under the run dir (overlay, netns, shm ...), deepest first.
    local m
    while read -r m; do
        [ -n "$m" ] || continue
        umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true
    done < <(findmnt -rn -o TARGET | grep -F -- "$run/" | sort -r)
    if findmnt -rn -o TARGET | grep -qF -- "$run/"; then
        umount -R -l "$run" 2>/dev/null || true
    fi
    # Our containers' cgroups (cgroupfs driver, --cgroup-parent=<run dir name>).
    local cg
    for cg in $(cat "$run/cgroup-parent" "$run/n2/cgroup-parent" 2>/dev/null || true); do
        find /sys/fs/cgroup -maxdepth 2 -type d -name "$cg" 2>/dev/null | while read -r d; do
            find "$d" -depth -type d -exec rmdir {} + 2>/dev/null || true
        done
    done
    rm -rf --one-file-system "$run" 2>/dev/null || rm -rf "$run" || true
}

# Run dirs left behind by a run that was killed before its trap ran.
cleanup_stale_run_dirs() {
    local d owner
    [ -d "$PRIV_BASE" ] || return 0
    for d in "$PRIV_BASE"/*/; do
        [ -d "$d" ] || continue
        d=${d%/}
        owner=$(cat "$d/owner" 2>/dev/null || true)
        if [ -n "$owner" ] && [ "$owner" = "$(_proc_identity "${owner%% *}")" ]; then
            continue  # its owner (another test.sh) is still running
        fi
        _priv_log "removing stale $d"
        cleanup_run_dir "$d"
    done
}

# Start containerd + dockerd in a new run dir; sets PRIV_RUN and PRIV_DOCKER_HOST.
start_private_dockerd() {
    mkdir -p "$PRIV_BASE"
    PRIV_RUN=$(mktemp -d "$PRIV_BASE/XXXXXX")
    chmod 0755 "$PRIV_RUN"
    _proc_identity $$ >"$PRIV_RUN/owner"
    PRIV_DOCKER_HOST="unix://$PRIV_RUN/docker.sock"

    # A network namespace of its own with only `lo`: swarm's fixed ports (7946 ...) can't
    # clash with another engine, docker_gwbridge/ingress stay out of the host, and the
    # engine has no route to anything but loopback.
    touch "$PRIV_RUN/netns"
    unshare --net="$PRIV_RUN/netns" true
    nsenter --net="$PRIV_RUN/netns" ip link set lo up
    _start_engine "$PRIV_RUN" "dockergate-test-${PRIV_RUN##*/}"
}

# A second engine of the same run (run dir/n2, same network namespace), for the tests
# that need two nodes (purge --all-nodes). Sets PRIV_DOCKER_HOST2.
start_second_dockerd() {
    local dir="$PRIV_RUN/n2"
    mkdir -p "$dir"
    PRIV_DOCKER_HOST2="unix://$dir/docker.sock"
    _start_engine "$dir" "dockergate-test-${PRIV_RUN##*/}-n2"
}

# containerd + dockerd with everything under $1 (sockets, data and exec roots, pidfiles,
# logs), in the run's network namespace, containers under cgroup parent $2.
_start_engine() {
    local run=${1:?engine dir} cg=${2:?cgroup parent}
    local host="unix://$run/docker.sock"
    echo "$cg" >"$run/cgroup-parent"
    # setsid: the daemons get no terminal or process-group signals (Ctrl-C, a CI killing
    # our group); cleanup_run_dir stops them in order.
    local -a inns=(setsid nsenter --net="$PRIV_RUN/netns")

    mkdir -p "$run/ctd"
    cat >"$run/ctd/config.toml" <<CONFIG
version = 2
root = "$run/ctd/root"
state = "$run/ctd/state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "$run/ctd.sock"
[debug]
  level = "warn"
CONFIG
    "${inns[@]}" containerd --config "$run/ctd/config.toml" >"$run/containerd.log" 2>&1 &
    echo $! >"$run/containerd.pid"

    echo '{}' >"$run/daemon.json"
    # Swarm tasks would otherwise try to pull even a local image from Docker Hub.
    "${inns[@]}" env DOCKER_SERVICE_PREFER_OFFLINE_IMAGE=1 /usr/sbin/dockerd \
        --config-file "$run/daemon.json" \
        --data-root "$run/data" \
        --exec-root "$run/x" \
        --pidfile "$run/dockerd.pid" \
        -H "$host" \
        --containerd "$run/ctd.sock" \
        --cgroup-parent "$cg" \
        --bridge=none --iptables=false --ip6tables=false --ip-forward=false \
        --ip-masq=false --userland-proxy=false \
        --shutdown-timeout 2 \
        --log-level warn \
        >"$run/dockerd.log" 2>&1 &
    local dpid=$!
    local n=600
    until docker -H "$host" version >/dev/null 2>&1; do
        if ! _pid_alive "$dpid" || ((n-- <= 0)); then
            _priv_log "dockerd did not come up; its log:"
            tail -n 40 "$run/dockerd.log" >&2
            tail -n 20 "$run/containerd.log" >&2
            return 1
        fi
        sleep 0.1
    done
}

# busybox:latest from Debian's busybox-static, imported (no registry needed).
import_busybox() {
    local host=$1 rootfs a
    docker -H "$host" image inspect busybox:latest >/dev/null 2>&1 && return 0
    # mktemp: both engines import at the same time (test.sh), each from its own tree
    rootfs=$(mktemp -d "$PRIV_RUN/rootfs.XXXXXX")
    chmod 0755 "$rootfs"  # it becomes the image's / (mktemp made it 0700)
    mkdir -p "$rootfs/bin" "$rootfs/etc" "$rootfs/tmp" "$rootfs/root"
    chmod 1777 "$rootfs/tmp"
    cp /bin/busybox "$rootfs/bin/busybox"
    for a in $("$rootfs/bin/busybox" --list); do
        [ "$a" = busybox ] || ln -s busybox "$rootfs/bin/$a"
    done
    printf '%s\n' 'root:x:0:0:root:/root:/bin/sh' 'nobody:x:65534:65534:nobody:/nonexistent:/bin/false' \
        >"$rootfs/etc/passwd"
    printf '%s\n' 'root:x:0:' 'nogroup:x:65534:' >"$rootfs/etc/group"
    tar -C "$rootfs" --numeric-owner -c . \
        | docker -H "$host" import \
            -c 'CMD ["sh"]' \
            -c 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
            - busybox:latest >/dev/null
    rm -rf "$rootfs"
}

# Single-node swarm on loopback (of the engine's own network namespace), non-default ports.
init_swarm() {
    local host=$1
    docker -H "$host" swarm init --advertise-addr 127.0.0.1 --listen-addr 127.0.0.1:2477 \
        --data-path-port 4799 >/dev/null
}

# The second engine joins the swarm as a worker on 127.0.0.2 (also loopback: swarm's
# fixed gossip port 7946 is bound per address, so both fit in one namespace), and is
# drained at once, so the other tests' tasks all stay on the first node.
join_second_node() {
    local manager=$1 worker=$2 token id
    token=$(docker -H "$manager" swarm join-token -q worker)
    docker -H "$worker" swarm join --token "$token" --advertise-addr 127.0.0.2 \
        --listen-addr 127.0.0.2:2477 --data-path-addr 127.0.0.2 127.0.0.1:2477 >/dev/null
    id=$(docker -H "$worker" info -f '{{.Swarm.NodeID}}')
    docker -H "$manager" node update --availability drain "$id" >/dev/null
}
