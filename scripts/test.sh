#!/usr/bin/env bash
# Sets up what is missing, then runs every test: unit, property, integration, CLI end to end.
set -euo pipefail
cd "$(dirname "$0")/.."
T0=$(date +%s)
bash scripts/setup.sh
. scripts/env.sh

stage_start "build tests"
cargo test --workspace --no-run
stage_end

stage_start "cargo test"
cargo test --workspace
stage_end

# dora: the runner, codec and exporter, a real coordinator and daemon, and `vela bench --dora`
# matching the in-process bench (a build of its own: dora-node-api is left out of the above).
bash scripts/test-dora.sh

# Bounded fuzzing of the RLDS decoder (cargo-fuzz installed once into the cache; stable rustc works).
stage_start "fuzz"
FUZZ_SECONDS="${FUZZ_SECONDS:-60}" bash scripts/fuzz.sh
stage_end

bash scripts/test-browser.sh
bash scripts/test-browser-media.sh

echo "all tests passed in $(( $(date +%s) - T0 )) s"
