#!/usr/bin/env bash
# Builds vmdesk in release mode and launches it, installing what it needs first.
# Arguments go to the app: resources/scripts/run.sh [ARGS...]
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
resources/scripts/install-deps.sh run
cargo build --release --workspace --bins
# vmdesk in the desktop's application menu (the entry runs this build).
target/release/vmdesk install-desktop >/dev/null
exec target/release/vmdesk "$@"
