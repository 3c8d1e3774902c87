# shellcheck shell=bash
# Helpers shared by deploy/test.sh and deploy/dev-up.sh. Source it, do not run it:
#
#   source deploy/lib.sh
#   ensure_postgres   # call in the current shell, never in $(...) or a pipe:
#   ensure_redis      # they export variables and register EXIT cleanups.
#
# Throw-away servers started here are stopped and deleted when the sourcing
# shell exits, whatever the reason (success, failure, Ctrl-C, SIGTERM).

sr_log() { printf '%s: %s\n' "${0##*/}" "$*" >&2; }
sr_die() { printf '%s: error: %s\n' "${0##*/}" "$*" >&2; exit 1; }

# --- cleanup on exit -------------------------------------------------------
# One EXIT trap runs every registered command, newest first. A trap that was
# already set before the first registration is kept and run last, so this
# composes with callers that set their own EXIT trap beforehand; callers that
# want to add cleanups afterwards should use sr_on_exit instead of `trap`.
_SR_CLEANUPS=()

_sr_run_cleanups() {
    local i
    for ((i = ${#_SR_CLEANUPS[@]} - 1; i >= 0; i--)); do
        eval "${_SR_CLEANUPS[i]}" || true
    done
    _SR_CLEANUPS=()
}

# sr_on_exit 'shell command'  — run the command when the shell exits.
sr_on_exit() {
    local cmd=$1
    if ((${#_SR_CLEANUPS[@]} == 0)); then
        local previous
        previous=$(trap -p EXIT)
        if [[ -n $previous && $previous != *_sr_run_cleanups* ]]; then
            # `trap -p` prints: trap -- 'command' EXIT (already shell-quoted).
            eval "set -- $previous"
            _SR_CLEANUPS+=("$3")
        fi
        trap _sr_run_cleanups EXIT
        # Bash skips the EXIT trap when killed by an untrapped signal; turn
        # INT/TERM into a normal exit so the cleanups still run. Only when the
        # caller has not set its own handler.
        [[ -n $(trap -p INT) ]] || trap 'exit 130' INT
        [[ -n $(trap -p TERM) ]] || trap 'exit 143' TERM
    fi
    _SR_CLEANUPS+=("$cmd")
}

# --- small utilities -------------------------------------------------------

# Put cargo on PATH when rustup installed it but this shell has not seen it.
sr_load_cargo_env() {
    if ! command -v cargo >/dev/null 2>&1 && [[ -n ${HOME:-} && -f "$HOME/.cargo/env" ]]; then
        # shellcheck source=/dev/null
        . "$HOME/.cargo/env"
    fi
}

# Put promtool and prometheus on PATH: the system's, else those deploy/setup.sh unpacked.
sr_prometheus_path() {
    local dir=${XDG_CACHE_HOME:-${HOME:-/tmp}/.cache}/strongroom/prometheus/usr/bin
    if ! command -v promtool >/dev/null 2>&1 && [[ -x $dir/promtool ]]; then
        export PATH="$dir:$PATH"
    fi
}

# Print a TCP port on 127.0.0.1 that nobody listens on right now. (Racy by
# nature: another process could take it before we bind; good enough here.)
sr_free_port() {
    if command -v python3 >/dev/null 2>&1; then
        python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
        return
    fi
    local port tries
    for ((tries = 0; tries < 200; tries++)); do
        port=$((20000 + RANDOM % 40000))
        if command -v ss >/dev/null 2>&1; then
            [[ -z $(ss -Htln "sport = :$port" 2>/dev/null) ]] && { echo "$port"; return; }
        elif ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            echo "$port"
            return
        fi
    done
    sr_die "could not find a free TCP port"
}

# Directory holding initdb and pg_ctl. On Debian they live in
# /usr/lib/postgresql/<major>/bin, not on PATH; `pg_config --bindir` can
# point at /usr/bin (libpq-dev only), so each candidate is checked.
_sr_pg_bindir() {
    local d
    if command -v pg_config >/dev/null 2>&1; then
        d=$(pg_config --bindir 2>/dev/null || true)
        if [[ -n $d && -x $d/initdb && -x $d/pg_ctl ]]; then echo "$d"; return 0; fi
    fi
    # Newest major version first.
    while IFS= read -r d; do
        if [[ -x $d/initdb && -x $d/pg_ctl ]]; then echo "$d"; return 0; fi
    done < <(printf '%s\n' /usr/lib/postgresql/*/bin | sort -V -r)
    if command -v initdb >/dev/null 2>&1 && command -v pg_ctl >/dev/null 2>&1; then
        dirname "$(command -v initdb)"
        return 0
    fi
    return 1
}

# --- PostgreSQL --------------------------------------------------------------
# Sets DATABASE_URL (a superuser URL; tests create their own databases/roles).
# Order: an existing DATABASE_URL; a local server with trust auth for user
# postgres; otherwise a throw-away cluster on a free port, deleted on exit.
# STRONGROOM_PG_PROBE_URL overrides the URL probed in step two.
ensure_postgres() {
    if [[ -n ${DATABASE_URL:-} ]]; then
        sr_log "PostgreSQL: using DATABASE_URL from the environment"
        export DATABASE_URL
        return 0
    fi

    local probe=${STRONGROOM_PG_PROBE_URL:-postgres://postgres@127.0.0.1:5432/postgres}
    # -w: never prompt for a password (no stdin in CI); short connect timeout.
    if command -v psql >/dev/null 2>&1 &&
        PGCONNECT_TIMEOUT=5 psql -w "$probe" -Atc 'select 1' >/dev/null 2>&1; then
        export DATABASE_URL=$probe
        sr_log "PostgreSQL: using the local server at ${probe}"
        return 0
    fi

    local bindir dir port
    bindir=$(_sr_pg_bindir) || sr_die "PostgreSQL server binaries (initdb, pg_ctl) not found; run deploy/setup.sh"
    # initdb refuses to run as root: as root, the cluster belongs to the
    # postgres system user, and the directory must be reachable by it, so it
    # goes under /tmp rather than a possibly private $TMPDIR.
    local -a as_pg=()
    if [[ $EUID -eq 0 ]]; then
        id postgres >/dev/null 2>&1 || sr_die "running as root but there is no 'postgres' user to own the cluster"
        dir=$(mktemp -d /tmp/strongroom-pg.XXXXXX)
        chown postgres: "$dir"
        as_pg=(runuser -u postgres --)
    else
        dir=$(mktemp -d "${TMPDIR:-/tmp}/strongroom-pg.XXXXXX")
    fi
    port=$(sr_free_port)

    # Registered before starting so a half-started cluster is cleaned up too.
    sr_on_exit "(cd / && $(printf '%q ' "${as_pg[@]}" "$bindir/pg_ctl" -D "$dir/data" stop -m fast)) >/dev/null 2>&1; rm -rf $(printf '%q' "$dir")"

    sr_log "PostgreSQL: starting a throw-away cluster in $dir on port $port"
    # Run from $dir: the postgres user may not be allowed into our cwd.
    (cd "$dir" && "${as_pg[@]}" "$bindir/initdb" -A trust -U postgres -E UTF8 --no-sync -D "$dir/data") \
        >"$dir/initdb.log" 2>&1 ||
        { cat "$dir/initdb.log" >&2; sr_die "initdb failed"; }
    # A throw-away test cluster needs no durability: fsync and friends off
    # make the many small test transactions much faster.
    (cd "$dir" && "${as_pg[@]}" "$bindir/pg_ctl" -D "$dir/data" -l "$dir/postgres.log" -w -t 60 \
        -o "-p $port -k $dir -c listen_addresses=127.0.0.1 -c max_connections=300 -c fsync=off -c synchronous_commit=off -c full_page_writes=off" \
        start) >/dev/null ||
        { cat "$dir/postgres.log" >&2; sr_die "pg_ctl start failed"; }
    export DATABASE_URL="postgres://postgres@127.0.0.1:$port/postgres"
}

# --- Redis -------------------------------------------------------------------
# Sets REDIS_URL. Order: an existing REDIS_URL; a server on 127.0.0.1:6379;
# otherwise a throw-away redis-server (no persistence) on a free port.
# STRONGROOM_REDIS_PROBE_PORT overrides the port probed in step two.
ensure_redis() {
    if [[ -n ${REDIS_URL:-} ]]; then
        sr_log "Redis: using REDIS_URL from the environment"
        export REDIS_URL
        return 0
    fi

    local probe_port=${STRONGROOM_REDIS_PROBE_PORT:-6379}
    if command -v redis-cli >/dev/null 2>&1 &&
        [[ $(timeout 5 redis-cli -h 127.0.0.1 -p "$probe_port" ping 2>/dev/null) == PONG ]]; then
        export REDIS_URL="redis://127.0.0.1:$probe_port"
        sr_log "Redis: using the local server at $REDIS_URL"
        return 0
    fi

    command -v redis-server >/dev/null 2>&1 || sr_die "redis-server not found; run deploy/setup.sh"
    local dir port
    dir=$(mktemp -d "${TMPDIR:-/tmp}/strongroom-redis.XXXXXX")
    port=$(sr_free_port)
    sr_on_exit "timeout 10 redis-cli -h 127.0.0.1 -p $port shutdown nosave >/dev/null 2>&1 || kill \$(cat $(printf '%q' "$dir/redis.pid") 2>/dev/null) 2>/dev/null; rm -rf $(printf '%q' "$dir")"

    sr_log "Redis: starting a throw-away server on port $port"
    redis-server --port "$port" --bind 127.0.0.1 --save "" --appendonly no \
        --daemonize yes --pidfile "$dir/redis.pid" --dir "$dir" --logfile "$dir/redis.log" ||
        sr_die "redis-server failed to start"
    # --daemonize returns before the server accepts connections.
    local i
    for ((i = 0; i < 100; i++)); do
        if [[ $(redis-cli -h 127.0.0.1 -p "$port" ping 2>/dev/null) == PONG ]]; then
            export REDIS_URL="redis://127.0.0.1:$port"
            return 0
        fi
        sleep 0.1
    done
    cat "$dir/redis.log" >&2 || true
    sr_die "redis-server did not answer on port $port"
}
