#!/usr/bin/env bash
# The dora tests: the Arrow codec, the runner in dora's testing mode, the exporter's
# YAML read by dora's own descriptor type, end to end on a real coordinator and daemon
# (the in-process engine and dora must publish the same values), and `vela bench --dora`
# against the in-process bench for the same seeds. Builds vela-dora with its `sim`
# feature (the runner with the simulator; implies `node`), which the normal build leaves
# out: dora-node-api brings arrow and zenoh, about 300 crates, 13.5 min cold on 2 cores.
# One feature set for the tests and the runner, so they share one build.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup-dora.sh
. scripts/env.sh

stage_start "build vela-dora and its runner (sim feature)"
cargo test -p vela-dora --features sim --no-run
cargo build -p vela-dora --features sim --bin vela-dora-node
stage_end

# One test at a time: the end-to-end tests each bring up dora coordinators and daemons, whose
# zenoh discovery and ports collide when two run at once (seen failing in one CI run in two).
stage_start "dora tests"
cargo test -p vela-dora --features sim -- --test-threads=1
stage_end

# tests/dora_bench.rs is ignored in the plain test run (it needs the runner built above).
stage_start "vela bench on dora"
VELA_DORA_RUNNER="$CARGO_TARGET_DIR/debug/vela-dora-node" cargo test --test dora_bench -- --ignored --test-threads=1
stage_end
