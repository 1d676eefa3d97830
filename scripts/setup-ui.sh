#!/usr/bin/env bash
# Builds the studio's browser UI (studio-ui/, Leptos compiled to wasm) into $VELA_CACHE/ui,
# where `vela studio` looks for it. Idempotent: installs only what is missing and skips the
# build when studio-ui/ and protocol/ are unchanged since the last build.
#
# Toolchain (see the README): Debian's rustc-web compiles for wasm32 with the std source from
# rust-web-src (-Zbuild-std), rustup's rust-lld links, and wasm-bindgen (the CLI, pinned to the
# exact version of the crate in studio-ui/Cargo.toml) writes the JS glue.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/env.sh

if [ "${VELA_SKIP_UI:-0}" = 1 ]; then
    echo "skipping the studio UI build (VELA_SKIP_UI=1); vela studio will say how to build it"
    exit 0
fi

WASM_BINDGEN_VERSION=0.2.130
# $VELA_UI_DIST (where `vela studio` looks first) lets a second checkout build its own UI.
OUT="${VELA_UI_DIST:-$VELA_CACHE/ui}"
HASH_FILE="$OUT.hash"
TOOLS="$VELA_CACHE/tools"
WASM_TARGET_DIR="$VELA_CACHE/target-wasm"
WASM_RUSTC="${VELA_WASM_RUSTC:-/usr/bin/rustc}"

need_apt rustc-web rust-web-src

# wasm-bindgen CLI: the exact version, from PATH or our tools folder, else installed there.
WASM_BINDGEN=""
for cand in "$TOOLS/bin/wasm-bindgen" "$(command -v wasm-bindgen || true)"; do
    if [ -n "$cand" ] && [ -x "$cand" ] && [ "$("$cand" --version 2>/dev/null)" = "wasm-bindgen $WASM_BINDGEN_VERSION" ]; then
        WASM_BINDGEN="$cand"
        break
    fi
done
if [ -z "$WASM_BINDGEN" ]; then
    echo "installing wasm-bindgen-cli $WASM_BINDGEN_VERSION into $TOOLS (a few minutes, once)"
    if ! CARGO_TARGET_DIR="$VELA_CACHE/target-tools" cargo install -q wasm-bindgen-cli \
            --version "$WASM_BINDGEN_VERSION" --locked --root "$TOOLS"; then
        # The registry this machine sees may lack a version the CLI's own lock file names;
        # the CLI itself is still exactly $WASM_BINDGEN_VERSION either way.
        echo "note: the locked install failed; retrying with freshly resolved dependencies"
        CARGO_TARGET_DIR="$VELA_CACHE/target-tools" cargo install -q wasm-bindgen-cli \
            --version "$WASM_BINDGEN_VERSION" --root "$TOOLS"
    fi
    WASM_BINDGEN="$TOOLS/bin/wasm-bindgen"
fi

# rustup's rust-lld links wasm; Debian's wasm-ld (lld) would do as well.
HOST=$(rustc -vV | sed -n 's/^host: //p')
LINKER="$(rustc --print sysroot)/lib/rustlib/$HOST/bin/rust-lld"
if [ ! -x "$LINKER" ]; then
    LINKER=$(command -v wasm-ld || command -v rust-lld || true)
    [ -n "$LINKER" ] || { echo "error: no wasm linker (rust-lld or wasm-ld) found" >&2; exit 1; }
fi

# Everything the output depends on: sources, manifests, lock file, toolchain versions.
inputs_hash() {
    {
        find studio-ui protocol -type f \
            \( -name '*.rs' -o -name '*.toml' -o -name '*.lock' -o -name '*.html' -o -name '*.css' \) \
            -not -path '*/target/*' -print0 | sort -z | xargs -0 sha256sum
        sha256sum Cargo.toml scripts/setup-ui.sh
        "$WASM_RUSTC" --version
        "$WASM_BINDGEN" --version
    } | sha256sum | cut -d' ' -f1
}
HASH=$(inputs_hash)
if [ -f "$OUT/index.html" ] && [ -f "$OUT/vela_studio_ui_bg.wasm" ] && [ "$(cat "$HASH_FILE" 2>/dev/null)" = "$HASH" ]; then
    echo "studio UI is up to date ($OUT)"
    exit 0
fi

T0=$(date +%s)
echo "building the studio UI (wasm, release)"
RUSTC="$WASM_RUSTC" RUSTC_BOOTSTRAP=1 \
CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_LINKER="$LINKER" \
CARGO_TARGET_DIR="$WASM_TARGET_DIR" \
    cargo build --manifest-path studio-ui/Cargo.toml --locked --release \
    --target wasm32-unknown-unknown -Zbuild-std=std,panic_abort

STAGE="$OUT.new"
rm -rf "$STAGE"
mkdir -p "$STAGE"
"$WASM_BINDGEN" --target web --no-typescript --out-dir "$STAGE" \
    "$WASM_TARGET_DIR/wasm32-unknown-unknown/release/vela_studio_ui.wasm"
if command -v wasm-opt >/dev/null; then
    wasm-opt -Oz --enable-bulk-memory --enable-nontrapping-float-to-int --enable-sign-ext \
        -o "$STAGE/vela_studio_ui_bg.wasm.opt" "$STAGE/vela_studio_ui_bg.wasm" \
        && mv "$STAGE/vela_studio_ui_bg.wasm.opt" "$STAGE/vela_studio_ui_bg.wasm"
fi
cp studio-ui/index.html studio-ui/style.css "$STAGE/"
rm -rf "$OUT"
mv "$STAGE" "$OUT"
echo "$HASH" > "$HASH_FILE"
echo "studio UI built into $OUT in $(( $(date +%s) - T0 )) s ($(du -k "$OUT/vela_studio_ui_bg.wasm" | cut -f1) KiB wasm)"
