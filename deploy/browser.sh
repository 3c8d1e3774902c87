#!/usr/bin/env bash
# Prepares the hosted-login tests' real clients (e2e/browser): playwright-core from the committed
# lockfile (`npm ci`; it drives Debian's Chromium, which deploy/setup.sh installs: no browser is
# ever downloaded) and a Python virtual environment with Authlib, from the pinned
# requirements, under target/browser-venv. Idempotent: both are redone only when their lockfile
# changed. Prints the venv's python on stdout.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT/e2e/browser"

log() { printf 'browser: %s\n' "$*" >&2; }

stamp_of() { sha256sum "$1" | cut -d' ' -f1; }

if [[ ! -f node_modules/.strongroom-stamp || $(cat node_modules/.strongroom-stamp) != $(stamp_of package-lock.json) ]]; then
    log "npm ci (playwright-core)"
    # The browser is Debian's: never let an install script fetch one.
    PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund --loglevel=error >&2
    stamp_of package-lock.json >node_modules/.strongroom-stamp
fi

venv="$ROOT/target/browser-venv"
if [[ ! -f $venv/.strongroom-stamp || $(cat "$venv/.strongroom-stamp") != $(stamp_of requirements.txt) ]]; then
    log "python venv with $(grep -c '==' requirements.txt) pinned packages (Authlib)"
    rm -rf "$venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check -r requirements.txt >&2
    stamp_of requirements.txt >"$venv/.strongroom-stamp"
fi
echo "$venv/bin/python"
