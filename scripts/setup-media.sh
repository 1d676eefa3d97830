#!/usr/bin/env bash
# Browser media (nodes/webrtc): what building and testing VideoOutput / WebAudioIn needs.
# Run by scripts/setup.sh; idempotent (only checks when everything is there).
#  - nasm: OpenH264 is built from its bundled source; with nasm it gets its SIMD kernels
#    (several times faster encoding). Without it the build still works, just slower code.
#  - chromium, espeak-ng, nodejs, npm: the browser tests (tests/browser, run by
#    scripts/test-browser-media.sh): Debian's Chromium, a spoken WAV for the fake microphone.
#  - playwright-core from npm into tests/browser/node_modules (no browser download: the
#    tests drive /usr/bin/chromium).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/env.sh

# command:package pairs; a command already on PATH (e.g. node and npm from another
# source than Debian's packages) is left alone.
missing=()
for pair in nasm:nasm chromium:chromium espeak-ng:espeak-ng node:nodejs npm:npm; do
    command -v "${pair%%:*}" >/dev/null 2>&1 || missing+=("${pair#*:}")
done
apt_install "${missing[@]}"

if [ ! -f tests/browser/node_modules/playwright-core/package.json ]; then
    echo "installing playwright-core into tests/browser/node_modules"
    (cd tests/browser && npm install --no-save --silent)
fi
