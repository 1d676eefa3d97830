#!/usr/bin/env bash
# The dora tests: the Arrow codec, the runner in dora's testing mode, the exporter's
# YAML read by dora's own descriptor type, and end to end on a real coordinator and
# daemon (the in-process engine and dora must publish the same values). Builds
# vela-dora with its `node` feature, which the normal build leaves out (dora-node-api
# brings arrow and zenoh).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup-dora.sh
. scripts/env.sh

stage_start "build vela-dora (node feature)"
cargo test -p vela-dora --features node --no-run
stage_end

stage_start "dora tests"
cargo test -p vela-dora --features node
stage_end
