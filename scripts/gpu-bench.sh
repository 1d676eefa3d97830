#!/usr/bin/env bash
# Runs on the GPU machine (H100/H200, no Rust there): the OpenVLA benchmark of issue 11.
# scripts/build-cuda.sh stages this script with the CUDA `vela`, libmujoco and
# benchmarks/openvla_torch.py in .gpu/, which the device tool carries.
#
# Usage (in the device command): bash .gpu/gpu-bench.sh [small|7b|all|compile-small|compile-7b]
# (EAGER=0 skips the --eager run of each mode, TORCH=0 the PyTorch reference, MODES="fp16 q4f16"
# picks the 7B modes)
# (checkpoints stay in $WORK, so a compile-* call on the same warm machine reuses them)
# Writes JSON reports and logs into $OUT/results-<what>.tar.gz (default OUT=/tmp/vela-gpu-out). Random-weight checkpoints are made
# here (7B weights cannot be carried): make-checkpoint, then quantize to q8f16/q4f16.
set -euo pipefail
G=$(cd "$(dirname "$0")" && pwd)
WHAT=${1:-all}
ITERS=${ITERS:-30}
# The device tool returns at most 8 files: reports go to $OUT/raw and leave as one tarball,
# also when a stage fails.
FINAL=${OUT:-/tmp/vela-gpu-out}
OUT=$FINAL/raw
WORK=${VELA_GPU_WORK:-$G/../.gpu-work}
mkdir -p "$OUT" "$WORK"
trap 'tar czf "$FINAL/results-$WHAT.tar.gz" -C "$OUT" . && rm -rf "$OUT"' EXIT
export VELA_LOG=${VELA_LOG:-info}
# make-checkpoint ships the Llama tokenizer from here when build-cuda.sh staged it.
. "$G/unpack.sh"
log() { echo "==> [$(date +%T)] $*"; }

nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv | tee "$OUT/card.txt"
df -h "$WORK" | tail -1

bench_set() { # name config modes...
    local name=$1 cfg=$2; shift 2
    local dir="$WORK/$name"
    if [ "$name" = 7b ]; then
        log "fused kernels against candle's ops"
        "$VELA" vla check-fused --device cuda --save "$OUT/check-fused.json" || echo "check-fused FAILED"
    fi
    log "make-checkpoint $cfg"
    time "$VELA" vla make-checkpoint --config "$cfg" --out "$dir"
    for mode in "$@"; do
        if [ "$mode" != fp16 ]; then
            log "quantize $mode"
            time "$VELA" vla quantize --model "$dir" --quantization "$mode"
        fi
        log "vela bench $name $mode"
        local dump=()
        [ "$mode" = fp16 ] && dump=(--dump "$WORK/$name-dump.safetensors")
        "$VELA" vla bench --model "$dir" --quantization "$mode" --device cuda --iters "$ITERS" \
            --save "$OUT/vela-$name-$mode.json" "${dump[@]}"
        # The same mode with every op launched from the host (no recorded CUDA graphs).
        if [ "${EAGER:-1}" = 1 ]; then
            log "vela bench $name $mode --eager"
            "$VELA" vla bench --model "$dir" --quantization "$mode" --device cuda --iters "$ITERS" \
                --eager --save "$OUT/vela-$name-$mode-eager.json"
        fi
    done
    [ "${TORCH:-1}" = 1 ] || return 0
    log "torch reference $name"
    python3 "$G/openvla_torch.py" --model "$dir" --dump "$WORK/$name-dump.safetensors" --iters "$ITERS" \
        ${TORCH_COMPILE:+--compile} --save "$OUT/torch-$name.json" > "$OUT/torch-$name.log" 2>&1 \
        || echo "torch reference failed (see torch-$name.log)"
    tail -12 "$OUT/torch-$name.log"
}

torch_compile() { # name: torch.compile timings on a checkpoint an earlier call left in $WORK
    local dir="$WORK/$1"
    [ -d "$dir" ] || { echo "no $dir: run gpu-bench.sh $1 first on this machine"; exit 1; }
    log "torch reference $1 with torch.compile"
    timeout "${COMPILE_TIMEOUT:-540}" python3 "$G/openvla_torch.py" --model "$dir" --dump "$WORK/$1-dump.safetensors" --iters "$ITERS" \
        --compile --save "$OUT/torch-$1.json" > "$OUT/torch-$1-compile.log" 2>&1 || echo "torch.compile run failed"
    tail -12 "$OUT/torch-$1-compile.log"
}

case "$WHAT" in
    small) bench_set small small fp16 q8f16 q4f16 ;;
    7b) bench_set 7b 7b-shape ${MODES:-fp16 q8f16 q4f16} ;;
    all) bench_set small small fp16 q4f16; bench_set 7b 7b-shape fp16 q8f16 q4f16 ;;
    compile-small) torch_compile small ;;
    compile-7b) torch_compile 7b ;;
    *) echo "usage: gpu-bench.sh [small|7b|all|compile-small|compile-7b]" >&2; exit 2 ;;
esac
python3 "$G/gpu_report.py" "$OUT" || echo "report failed"
log done
