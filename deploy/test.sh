#!/usr/bin/env bash
# THE test command (README's second command; .ci/run calls it).
#
# Installs what is missing, finds or starts PostgreSQL and Redis, then runs
# format check, the Prometheus rules' checks and unit tests, clippy, a build of
# every binary (the e2e tests start them) and the whole test suite. Extra arguments go to `cargo nextest run`, e.g.
#   deploy/test.sh -p vault-svc
#   deploy/test.sh -E 'test(mfa)'
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

bash deploy/setup.sh

# shellcheck source=deploy/lib.sh
source deploy/lib.sh
sr_load_cargo_env
sr_prometheus_path
ensure_postgres
ensure_redis

export STRONGROOM_TEST_DATABASE_URL=$DATABASE_URL
export STRONGROOM_TEST_REDIS_URL=$REDIS_URL

step() { printf '\n==> %s\n' "$*" >&2; }

# Not `exec`: the EXIT trap from lib.sh must run afterwards to stop any
# throw-away PostgreSQL/Redis. set -e stops at the first failing step and the
# script exits with that step's status.
step "cargo fmt --all -- --check"
cargo fmt --all -- --check

step "promtool: the Prometheus configuration, the alert rules and their unit tests"
promtool check config deploy/prometheus.yml
promtool check rules deploy/prometheus/alerts.yml
promtool test rules deploy/prometheus/alerts_test.yml
# Every alert's runbook annotation names a section of docs/operations.md.
no_runbook=$(grep -o 'runbook: docs/operations.md#[a-z0-9-]*' deploy/prometheus/alerts.yml | cut -d'#' -f2 | sort -u |
    while read -r anchor; do grep -qix "### $anchor" docs/operations.md || echo "$anchor"; done)
if [[ -n $no_runbook ]]; then
    printf 'alerts whose runbook is not in docs/operations.md: %s\n' "$no_runbook" >&2
    exit 1
fi

step "cargo clippy --workspace --all-targets --locked -- -D warnings"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "the hosted login's real clients: playwright-core (Debian's Chromium) and Authlib"
STRONGROOM_BROWSER_PYTHON=$(bash deploy/browser.sh)
export STRONGROOM_BROWSER_PYTHON

step "cargo build --workspace --bins --locked"
cargo build --workspace --bins --locked

step "cargo nextest run --workspace --locked --no-fail-fast $*"
cargo nextest run --workspace --locked --no-fail-fast "$@"
