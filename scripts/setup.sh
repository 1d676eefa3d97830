#!/usr/bin/env bash
# Installs whatever this machine lacks to build and run Vela, then builds it.
# Idempotent: a second run on a set-up machine only checks. Everything fetched goes to
# $VELA_CACHE (outside git), checked by version and hash; nothing is fetched at run time.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/env.sh

if ! command -v cargo >/dev/null; then
    echo "error: cargo is missing. Install a Rust toolchain (rustup) first; Vela needs Rust 1.85 or newer." >&2
    exit 1
fi

# Debian packages the build or run needs; installed only when missing. cmake and g++ build
# whisper.cpp (whisper-rs-sys), WhisperASR's default backend.
need_apt pkg-config fonts-dejavu-core cmake g++

# Node families bring their own setup steps (assets, libraries, models).
for s in scripts/setup-*.sh; do
    [ -e "$s" ] || continue
    # Optional extras say so on their second line ("# manual: why") and run on request only.
    if sed -n 2p "$s" | grep -q '^# manual:'; then
        echo "==> skipping $(basename "$s") ($(sed -n 2p "$s" | sed 's/^# manual: //'))"
        continue
    fi
    stage_start "setup: $(basename "$s")"
    bash "$s"
    stage_end
done

prune_stale_target
stage_start "build"
cargo build --release --bin vela
stage_end
