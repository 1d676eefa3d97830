#!/usr/bin/env bash
# Success benchmarks for BENCHMARKS.md: 100 Stack_D2 episodes with the scripted expert and with
# random-initialised OpenVLA checkpoints (tiny, small) through the real OpenVLA node, each at
# --parallel 1 and N. Usage: scripts/bench-success.sh [OUT_DIR] [EPISODES] [N]
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/env.sh
OUT="${1:-/tmp/vela-bench-success}"
EPISODES="${2:-100}"
N="${3:-2}"
VELA="$CARGO_TARGET_DIR/release/vela"
cargo build --release --bin vela
mkdir -p "$OUT"
MODELS="$VELA_CACHE/bench-models"
for size in tiny small; do
    [ -f "$MODELS/$size/config.json" ] || "$VELA" vla make-checkpoint --config "$size" --out "$MODELS/$size"
    # The zero-policy fixture's graph (sim -> AutoPrompt -> policy -> sim) at 224x224 with OpenVLA as the policy.
    sed -e "s|\"bench-zeros\"|\"openvla-$size-random\"|" \
        -e "s|\"width\": 64, \"height\": 64|\"width\": 224, \"height\": 224|" \
        -e "s|\"type\": \"ConstantPolicy\", \"params\": { \"values\": \"0,0,0,0,0,0,0\" }|\"type\": \"OpenVLA\", \"params\": { \"model\": \"$MODELS/$size\" }|" \
        -e "s|\"policy.in\"|\"policy.prompt\"|" \
        tests/fixtures/bench/zeros.json > "$OUT/openvla-$size.json"
done
run() { # name preset parallel
    local t0; t0=$(date +%s)
    "$VELA" bench --preset "$2" --episodes "$EPISODES" --parallel "$3" --save-stats "$OUT/$1.json" --report "$OUT/$1"
    echo "$1: $(( $(date +%s) - t0 )) s wall (process)"
}
run expert-p1 mimicgen-expert 1
run expert-p$N mimicgen-expert "$N"
run tiny-p1 "$OUT/openvla-tiny.json" 1
run tiny-p$N "$OUT/openvla-tiny.json" "$N"
run small-p1 "$OUT/openvla-small.json" 1
run small-p$N "$OUT/openvla-small.json" "$N"
"$VELA" bench compare "$OUT"/expert-p1.json "$OUT"/expert-p$N.json
"$VELA" bench compare "$OUT"/tiny-p1.json "$OUT"/tiny-p$N.json "$OUT"/small-p1.json "$OUT"/small-p$N.json
