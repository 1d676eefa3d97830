#!/usr/bin/env bash
# Sets up what is missing, then serves the studio on the shipped default preset
# (running), at http://127.0.0.1:8050 unless VELA_PORT says otherwise.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. scripts/env.sh
exec "$CARGO_TARGET_DIR/release/vela" studio --load "${1:-mimicgen-expert}" --start --port "${VELA_PORT:-8050}"
