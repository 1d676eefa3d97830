#!/usr/bin/env bash
# Fetches the Llama-2 SentencePiece vocabulary (shipped inside the llama-cpp-python sdist) into
# the tokenizer cache, checks it by sha256, and converts it to tokenizer.json with our own
# converter. Run once per machine; nothing is downloaded at run time.
#
#   VELA_CACHE=... scripts/setup-tokenizer.sh   (scripts/setup.sh runs it)
set -euo pipefail

VERSION=0.3.36
PKG=llama-cpp-python
GGUF_SHA256=16c3724582d59aa8bf84711894e833f916ee46a31d80e21312759c48bf8d0e69
CACHE="${VELA_CACHE:-$HOME/.cache/vela}/tokenizer"
HERE="$(cd "$(dirname "$0")/.." && pwd)"
. "$HERE/scripts/env.sh"
mkdir -p "$CACHE"

VOCAB="$CACHE/ggml-vocab-llama-spm.gguf"
if [ ! -f "$VOCAB" ]; then
  tmp="$(mktemp -d)"
  trap 'rm -rf "$tmp"' EXIT
  echo "downloading $PKG==$VERSION (sdist) by package name ..."
  # --no-binary only for this package, so pip does not try to build its build deps from source.
  python3 -m pip download --quiet --no-deps --no-binary "$PKG" -d "$tmp" "$PKG==$VERSION"
  sdist="$(ls "$tmp"/*.tar.gz)"
  inner="llama_cpp_python-$VERSION/vendor/llama.cpp/models"
  tar -xzf "$sdist" -C "$tmp" "$inner/ggml-vocab-llama-spm.gguf" "$inner/ggml-vocab-llama-spm.gguf.inp" "$inner/ggml-vocab-llama-spm.gguf.out"
  cp "$tmp/$inner/ggml-vocab-llama-spm.gguf" "$tmp/$inner/ggml-vocab-llama-spm.gguf.inp" "$tmp/$inner/ggml-vocab-llama-spm.gguf.out" "$CACHE/"
fi

sum="$(sha256sum "$VOCAB" | cut -d' ' -f1)"
case "$sum" in
  "$GGUF_SHA256") echo "vocab ok: $sum" ;;
  *) echo "sha256 mismatch for $VOCAB: $sum" >&2; exit 1 ;;
esac
echo "$sum" > "$CACHE/ggml-vocab-llama-spm.gguf.sha256"

if [ -f "$CACHE/tokenizer.json" ] && [ "$(cat "$CACHE/tokenizer.json.src" 2>/dev/null)" = "$sum" ]; then
  echo "tokenizer.json up to date"
  exit 0
fi
cargo run --quiet --release --manifest-path "$HERE/Cargo.toml" -p vela-vla --example convert-tokenizer -- "$VOCAB" "$CACHE/tokenizer.json"
echo "$sum" > "$CACHE/tokenizer.json.src"
echo "tokenizer.json written to $CACHE"
