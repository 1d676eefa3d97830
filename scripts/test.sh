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

# Bounded fuzzing of the RLDS decoder (cargo-fuzz installed once into the cache; stable rustc works).
stage_start "fuzz"
FUZZ_SECONDS="${FUZZ_SECONDS:-60}" bash scripts/fuzz.sh
stage_end

bash scripts/test-browser.sh
bash scripts/test-browser-media.sh

echo "all tests passed in $(( $(date +%s) - T0 )) s"
