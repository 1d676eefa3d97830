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

# command:package pairs; a command already on PATH (e.g. node and npm from another
# source than Debian's packages) is left alone.
missing=()
for pair in nasm:nasm chromium:chromium espeak-ng:espeak-ng node:nodejs npm:npm; do
    command -v "${pair%%:*}" >/dev/null 2>&1 || missing+=("${pair#*:}")
done
if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
        echo "error: missing Debian packages: ${missing[*]} (install them with apt-get)" >&2
        exit 1
    fi
    echo "installing ${missing[*]}"
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

if [ ! -f tests/browser/node_modules/playwright-core/package.json ]; then
    echo "installing playwright-core into tests/browser/node_modules"
    (cd tests/browser && npm install --no-save --silent)
fi
