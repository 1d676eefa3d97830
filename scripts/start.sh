#!/usr/bin/env bash
# Sets up what is missing, then runs Vela's main job on the shipped default preset.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. scripts/env.sh
exec "$CARGO_TARGET_DIR/release/vela" run --preset "${1:-counter-demo}"
