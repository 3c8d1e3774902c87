#!/usr/bin/env bash
# Install what Strongroom needs to build and test on a Debian/Ubuntu machine.
#
# Idempotent: every requirement is probed first and only what is missing is
# installed (one "setup: installing ..." line per thing). Never reads stdin,
# never starts a server (the test and dev scripts decide which PostgreSQL and
# Redis to use). Works as root, or as a normal user with sudo for apt-get;
# Rust is installed for the invoking user, never through sudo.
set -euo pipefail

log() { printf 'setup: %s\n' "$*"; }
die() { printf 'setup: error: %s\n' "$*" >&2; exit 1; }

# Rust may be installed but not on PATH yet (non-login shell, CI).
if ! command -v cargo >/dev/null 2>&1 && [[ -n ${HOME:-} && -f "$HOME/.cargo/env" ]]; then
    # shellcheck source=/dev/null
    . "$HOME/.cargo/env"
fi

# --- Debian packages -------------------------------------------------------
# Each entry: "package|probe". A package counts as present when dpkg says it
# is installed OR its probe succeeds (so a tool installed some other way, e.g.
# git under /usr/local, is not installed twice). Probes are shell snippets.
have_initdb() {
    local d
    for d in /usr/lib/postgresql/*/bin; do
        [[ -x "$d/initdb" && -x "$d/pg_ctl" ]] && return 0
    done
    command -v initdb >/dev/null 2>&1 && command -v pg_ctl >/dev/null 2>&1
}

requirements=(
    "build-essential|command -v cc && command -v c++ && command -v make"
    "pkg-config|command -v pkg-config"
    "ca-certificates|test -s /etc/ssl/certs/ca-certificates.crt"
    "curl|command -v curl"
    "git|command -v git"
    "postgresql|have_initdb"
    "postgresql-client|command -v psql"
    "redis-server|command -v redis-server && command -v redis-cli"
    "softhsm2|command -v softhsm2-util"
    "opensc|command -v pkcs11-tool"
    "pgbackrest|command -v pgbackrest"
    "procps|command -v ps && command -v pgrep"
    "util-linux|command -v runuser"
    # The hosted login page's browser tests (e2e/browser): Debian's Chromium, driven by
    # playwright-core from npm (never a downloaded browser), and Python for the authlib client.
    "chromium|test -x /usr/bin/chromium"
    "nodejs|command -v node"
    "npm|command -v npm"
    "python3-venv|python3 -m venv --help"
)

dpkg_installed() {
    dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'
}

missing=()
installed_any=0
for entry in "${requirements[@]}"; do
    pkg=${entry%%|*}
    probe=${entry#*|}
    if dpkg_installed "$pkg" || eval "$probe" >/dev/null 2>&1; then
        continue
    fi
    missing+=("$pkg")
done

if ((${#missing[@]} > 0)); then
    command -v apt-get >/dev/null 2>&1 ||
        die "missing ${missing[*]} and apt-get is not available (Debian/Ubuntu only)"
    if [[ $EUID -eq 0 ]]; then
        as_root=()
    elif command -v sudo >/dev/null 2>&1; then
        # -n: fail instead of prompting when there is no terminal (CI).
        if [[ -t 0 ]]; then as_root=(sudo); else as_root=(sudo -n); fi
    else
        die "missing ${missing[*]}; run as root or install sudo"
    fi
    for pkg in "${missing[@]}"; do
        log "installing $pkg (apt)"
    done
    # sudo may drop DEBIAN_FRONTEND from the environment, so pass it via env.
    # apt/dpkg chatter goes to a log that is shown only if something fails.
    apt_log=$(mktemp)
    if ! {
        "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq &&
            "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive \
                apt-get install -y -qq --no-install-recommends "${missing[@]}"
    } >"$apt_log" 2>&1; then
        cat "$apt_log" >&2
        rm -f "$apt_log"
        die "apt-get failed installing: ${missing[*]}"
    fi
    rm -f "$apt_log"
fi

# --- Prometheus tools ------------------------------------------------------
# promtool (the alert rules' checks and unit tests) and prometheus (the dashboards' panel test),
# from Debian's `prometheus` package, unpacked into a cache directory instead of installed:
# installing the package would also enable and start a Prometheus server on port 9090.
# deploy/lib.sh's sr_prometheus_path puts them on PATH.
prom_dir=${XDG_CACHE_HOME:-${HOME:-/tmp}/.cache}/strongroom/prometheus
if ! { command -v promtool && command -v prometheus; } >/dev/null 2>&1 && [[ ! -x $prom_dir/usr/bin/promtool ]]; then
    command -v apt-get >/dev/null 2>&1 || die "promtool is missing and apt-get is not available"
    log "unpacking prometheus (Debian package) into $prom_dir"
    deb_dir=$(mktemp -d)
    if ! (cd "$deb_dir" && apt-get download -qq prometheus >/dev/null 2>&1); then
        # No package lists yet (a fresh machine): fetch them, then try again.
        as_root=()
        [[ $EUID -eq 0 ]] || as_root=(sudo -n)
        "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null 2>&1 || true
        (cd "$deb_dir" && apt-get download -qq prometheus >/dev/null 2>&1) || die "apt-get download prometheus failed"
    fi
    mkdir -p "$prom_dir"
    dpkg-deb -x "$deb_dir"/prometheus_*.deb "$prom_dir"
    rm -rf "$deb_dir"
    installed_any=1
fi

# --- Rust toolchain --------------------------------------------------------
if ! command -v cargo >/dev/null 2>&1; then
    log "installing Rust (rustup, minimal profile + rustfmt, clippy)"
    curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs |
        sh -s -- -y --profile minimal -c rustfmt,clippy
    installed_any=1
    # shellcheck source=/dev/null
    . "$HOME/.cargo/env"
fi
command -v cargo >/dev/null 2>&1 || die "cargo still not on PATH after installing Rust"

# An existing toolchain may lack the lint components the test script uses.
# Asked of rustup (not cargo) so nothing is built or run when all is present.
if command -v rustup >/dev/null 2>&1; then
    installed_components=$(rustup component list --installed 2>/dev/null || true)
    for comp in rustfmt clippy; do
        if ! grep -q "^$comp" <<<"$installed_components"; then
            log "installing Rust component $comp"
            rustup component add "$comp"
            installed_any=1
        fi
    done
fi

if ! command -v cargo-nextest >/dev/null 2>&1; then
    log "installing cargo-nextest"
    cargo install cargo-nextest --locked
    installed_any=1
fi

if ((${#missing[@]} == 0 && installed_any == 0)); then
    log "all prerequisites present"
fi
