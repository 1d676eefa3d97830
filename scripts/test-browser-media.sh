#!/usr/bin/env bash
# Browser media end to end: real headless Chromium plays VideoOutput streams (224², 512²)
# over WebRTC, reloads and gets killed mid-stream, and sends a fake microphone to
# WebAudioIn, and a spoken command driving the OpenVLA-MimicGen-Voice preset. Expects scripts/setup.sh to have run (it builds the release binary and, via
# scripts/setup-media.sh, installs Chromium, espeak-ng and playwright-core).
#   bash scripts/test-browser-media.sh          # uses $CARGO_TARGET_DIR/release/vela
# Screenshots and measured numbers land in $VELA_BROWSER_OUT (default /tmp/vela-media-out).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/env.sh
export VELA_BIN="${VELA_BIN:-$CARGO_TARGET_DIR/release/vela}"
if [ ! -x "$VELA_BIN" ]; then
    echo "error: no vela binary at $VELA_BIN; run scripts/setup.sh first" >&2
    exit 1
fi
if [ ! -f tests/browser/node_modules/playwright-core/package.json ]; then
    bash scripts/setup-media.sh
fi
export VELA_BROWSER_OUT="${VELA_BROWSER_OUT:-/tmp/vela-media-out}"
stage_start "browser media tests"
export VELA_UI_DIST="${VELA_UI_DIST:-$VELA_CACHE/ui}"
node --test --test-concurrency=1 tests/browser/webrtc.test.mjs tests/browser/studio-media.test.mjs tests/browser/studio-voice.test.mjs
stage_end
echo "screenshots and numbers: $VELA_BROWSER_OUT"
