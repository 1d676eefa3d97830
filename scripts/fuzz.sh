#!/usr/bin/env bash
# Bounded fuzzing of the RLDS decoder (TFRecord framing + tf.train.Example + episode mapping)
# with cargo-fuzz and libFuzzer. FUZZ_SECONDS (default 60) bounds the run; a crash fails it and
# leaves the input under fuzz/artifacts/.
#
# cargo-fuzz (pinned) is installed into $VELA_CACHE/tools once. libFuzzer's instrumentation
# needs unstable rustc flags: a nightly toolchain is used when rustup has one, otherwise the
# machine's stable rustc with RUSTC_BOOTSTRAP=1, which only this fuzz build sees (it has its own
# target dir and workspace).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/env.sh
CARGO_FUZZ_VERSION=0.13.2
TOOLS="$VELA_CACHE/tools"
FUZZ="$TOOLS/bin/cargo-fuzz"
if [ ! -x "$FUZZ" ] || [ "$("$FUZZ" --version 2>/dev/null)" != "cargo-fuzz $CARGO_FUZZ_VERSION" ]; then
    echo "installing cargo-fuzz $CARGO_FUZZ_VERSION into $TOOLS (about a minute, once)"
    cargo install --quiet --locked --version "$CARGO_FUZZ_VERSION" --root "$TOOLS" cargo-fuzz
fi

# Seeds from our own writer, so a fresh machine starts inside the decoders (see the example).
SEEDS="$VELA_CACHE/fuzz-seeds/tfrecord_example"
cargo run --quiet -p vela-data --example fuzz_seeds -- "$SEEDS"
CORPUS="$VELA_CACHE/fuzz-corpus/tfrecord_example"
mkdir -p "$CORPUS"

toolchain=()
if rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
    toolchain=(+nightly)
else
    export RUSTC_BOOTSTRAP=1
fi
export CARGO_TARGET_DIR="$VELA_CACHE/target-fuzz"
cd fuzz
# The corpus grows across runs on one machine; the seeds are read, never written.
export PATH="$TOOLS/bin:$PATH"
# grep hides libFuzzer's per-input progress lines; the exit status is the fuzzer's.
set +o pipefail
cargo "${toolchain[@]}" fuzz run tfrecord_example "$CORPUS" "$SEEDS" -- \
    -max_total_time="${FUZZ_SECONDS:-60}" -max_len=65536 -timeout=10 -print_final_stats=1 2>&1 |
    { grep -v '^#[0-9]' || true; }
status=${PIPESTATUS[0]}
if [ "$status" = 0 ]; then echo "fuzz: no crash in ${FUZZ_SECONDS:-60} s"; else echo "fuzz: failed (status $status); the input is under fuzz/artifacts/" >&2; fi
exit "$status"
