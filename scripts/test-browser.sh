#!/usr/bin/env bash
# Browser tests of the studio: real headless Chromium (Debian's) driven by playwright-core
# through node's built-in test runner. Needs what scripts/setup.sh builds (the vela binary
# and the UI in $VELA_CACHE/ui); installs Chromium and playwright-core when missing.
# Screenshots land in $VELA_SHOTS (default /tmp/vela-browser-shots).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/env.sh

export VELA_BIN="${VELA_BIN:-$CARGO_TARGET_DIR/release/vela}"
export VELA_UI_DIST="${VELA_UI_DIST:-$VELA_CACHE/ui}"
export VELA_SHOTS="${VELA_SHOTS:-/tmp/vela-browser-shots}"
PLAYWRIGHT_VERSION=$(sed -n 's/.*"playwright-core": *"\([^"]*\)".*/\1/p' tests/browser/package.json)

for f in "$VELA_BIN" "$VELA_UI_DIST/index.html"; do
    [ -e "$f" ] || { echo "error: $f is missing; run bash scripts/setup.sh first" >&2; exit 1; }
done
command -v node >/dev/null || { echo "error: node (20 or newer) is needed for the browser tests" >&2; exit 1; }

if [ ! -x /usr/bin/chromium ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        echo "installing chromium"
        apt-get update -qq >/dev/null
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
    else
        echo "error: /usr/bin/chromium is missing (apt-get install chromium)" >&2
        exit 1
    fi
fi

installed=$(node -p 'require("./tests/browser/node_modules/playwright-core/package.json").version' 2>/dev/null || true)
if [ "$installed" != "$PLAYWRIGHT_VERSION" ]; then
    echo "installing playwright-core $PLAYWRIGHT_VERSION into tests/browser/node_modules"
    (cd tests/browser && npm install --no-save --silent)
fi

mkdir -p "$VELA_SHOTS"
rm -f "$VELA_SHOTS"/*.png
stage_start "browser tests"
node --test --test-concurrency=1 tests/browser/studio.test.mjs tests/browser/studio-bench.test.mjs
stage_end
echo "screenshots: $VELA_SHOTS"
