#!/usr/bin/env bash
# The whole vmdesk test suite on a fresh Debian/Ubuntu machine: installs what the tests
# need (apt packages, a Python venv with vncdotool), checks format and lints, runs every
# test, and says how many KVM tests ran on this host, how many in the nested test host
# (resources/scripts/nested-host.sh: tests that need hardware-backed KVM run there when
# this host's KVM is kvm_pvm), and how many were skipped.
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
# Every test binary runs even after one fails, so one failure hides nothing else.
set +e
cargo test --workspace --release --no-fail-fast 2>&1 | grep -v '^test .* \.\.\. ok$'
status=${PIPESTATUS[0]}
set -e

ran=$(grep -c '^ran ' "$tally" || true)
nested=$(grep -c '^nested ' "$tally" || true)
skipped=$(grep -c '^skipped ' "$tally" || true)
# Each nested line ends with the seconds that test's nested host took.
nested_secs=$(awk '/^nested / { s += $NF } END { printf "%.0f", s }' "$tally")
echo "== KVM tests: $ran ran on this host, $nested in the nested host (${nested_secs} s there), $skipped skipped"
grep '^skipped ' "$tally" | sed 's/^skipped /   skipped: /' || true
grep '^retried ' "$tally" | sed 's/^retried /   retried: /' || true
exit "$status"
