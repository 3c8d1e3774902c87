#!/usr/bin/env bash
# README's first command: install what is missing, build release binaries and
# bring the whole constellation up locally with `strongroom dev up`.
# Arguments are passed to `strongroom dev up`.
#
# PostgreSQL/Redis are NOT set up here: `strongroom dev up` uses DATABASE_URL
# and REDIS_URL when set and otherwise makes its own throw-away cluster and
# Redis, and it must own them (it outlives this script via exec).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

bash deploy/setup.sh

# shellcheck source=deploy/lib.sh
source deploy/lib.sh
sr_load_cargo_env

cargo build --workspace --bins --release --locked

exec "${CARGO_TARGET_DIR:-target}/release/strongroom" dev up "$@"
