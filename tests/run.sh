#!/usr/bin/env bash
# The whole vmdesk test suite on a fresh Debian/Ubuntu machine: installs what the tests
# need (apt packages, a Python venv with vncdotool), checks format and lints, runs every
# test, and says how many KVM tests ran and how many were skipped.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

resources/scripts/install-deps.sh test
resources/scripts/test-assets.sh

export VMDESK_VENV=${VMDESK_VENV:-$root/target/venv}
export VMDESK_REQUIRE_TOOLS=1
export PATH="$VMDESK_VENV/bin:$PATH"
tally=$(mktemp)
export VMDESK_KVM_TALLY=$tally
trap 'rm -f "$tally"' EXIT

echo "== cargo fmt --check"
cargo fmt --all --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets --release -- -D warnings
echo "== cargo test"
set +e
cargo test --workspace --release 2>&1 | grep -v '^test .* \.\.\. ok$'
status=${PIPESTATUS[0]}
set -e

ran=$(grep -c '^ran ' "$tally" || true)
skipped=$(grep -c '^skipped ' "$tally" || true)
echo "== KVM tests: $ran ran, $skipped skipped"
grep '^skipped ' "$tally" | sed 's/^skipped /   skipped: /' || true
exit "$status"
