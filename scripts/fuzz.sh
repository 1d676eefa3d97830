#!/usr/bin/env bash
# Bounded fuzzing of the RLDS decoder (TFRecord framing + tf.train.Example + episode
# mapping) with cargo-fuzz. Needs a nightly toolchain and cargo-fuzz; without them it
# says so and exits 0 (the seeded mutation test in data/tests/roundtrip.rs always runs).
# FUZZ_SECONDS (default 60) bounds the run.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/env.sh
if ! rustup toolchain list 2>/dev/null | grep -q '^nightly' || ! cargo +nightly fuzz --version >/dev/null 2>&1; then
    echo "fuzz: skipped (needs a nightly toolchain and cargo-fuzz: rustup toolchain install nightly; cargo install cargo-fuzz)"
    exit 0
fi
export CARGO_TARGET_DIR="$VELA_CACHE/target-fuzz"
mkdir -p "$VELA_CACHE/fuzz-corpus/tfrecord_example"
cd fuzz
cargo +nightly fuzz run tfrecord_example "$VELA_CACHE/fuzz-corpus/tfrecord_example" -- \
    -max_total_time="${FUZZ_SECONDS:-60}" -max_len=65536 -timeout=10
