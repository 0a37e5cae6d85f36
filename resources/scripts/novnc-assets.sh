#!/usr/bin/env bash
# Fetches the browser-side VNC test's JavaScript from the npm registry into
# target/assets/novnc/ (VMDESK_ASSETS overrides target/assets), once: noVNC (@novnc/novnc,
# the real client, whose ES modules display/tests/novnc.rs serves to the page) and
# puppeteer-core (drives Debian's chromium over the DevTools protocol; the -core package
# downloads no browser of its own). Versions are pinned so every run tests the same client;
# puppeteer-core stays on 24.x, the last line that runs on Node.js 20 (25 wants 22.12).
# Called by test-assets.sh; nothing here is committed.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
out=${VMDESK_ASSETS:-$root/target/assets}/novnc
novnc_version=1.7.0
puppeteer_version=24.43.1

# The version of installed package $1, or nothing.
installed_version() {
  local manifest=$out/node_modules/$1/package.json
  [[ -f $manifest ]] && node -p "require(process.argv[1]).version" "$manifest" 2>/dev/null || true
}

if [[ $(installed_version @novnc/novnc) == "$novnc_version" \
      && $(installed_version puppeteer-core) == "$puppeteer_version" ]]; then
  exit 0
fi
command -v npm >/dev/null || { echo "novnc-assets: npm not found (install-deps.sh test)" >&2; exit 1; }
echo "novnc-assets: installing @novnc/novnc@$novnc_version and puppeteer-core@$puppeteer_version into $out" >&2
mkdir -p "$out"
# A package.json of our own keeps npm from walking up to some other project's.
[[ -f $out/package.json ]] || echo '{"private": true}' > "$out/package.json"
(cd "$out" && npm install --no-audit --no-fund --loglevel=error \
  "@novnc/novnc@$novnc_version" "puppeteer-core@$puppeteer_version" >/dev/null)
for p in @novnc/novnc puppeteer-core; do
  [[ -n $(installed_version "$p") ]] || { echo "novnc-assets: $p did not install" >&2; exit 1; }
done
