#!/usr/bin/env bash
# Runs on the GPU machine (H100/H200, no Rust there): generates MimicGen data, trains the shipped
# model and measures it with `vela bench` (issue 8). scripts/build-cuda.sh stages this script with
# the CUDA `vela`, libmujoco, the robosuite assets and the GL dispatch debs in .gpu/, which the
# device tool carries. State lives in $WORK, which survives between calls while the machine
# stays warm: one call per stage, each well inside the 10-minute limit.
#
# Usage (device command, from the repo root):
#   bash .gpu/gpu-train.sh setup                     show the card (every stage unpacks .gpu once first)
#   bash .gpu/gpu-train.sh datagen EPISODES [TASKS]  EPISODES per task (default tasks Stack_D4,Stack_Lang)
#   bash .gpu/gpu-train.sh train NAME [ARGS...]      start `vela train` in the background (ARGS appended;
#                                                    without ARGS the shipped model's recipe below)
#   bash .gpu/gpu-train.sh watch SECONDS             follow the training log until it ends or SECONDS pass
#   bash .gpu/gpu-train.sh eval NAME [EPISODES]      quantize, then bench fp16/q8f16/q4f16 on Stack_D2 and q4f16 on Stack_Lang
#   bash .gpu/gpu-train.sh study NAME [EPISODES]     fp16 Stack_D2 success of every exported epoch
#   bash .gpu/gpu-train.sh pack NAME                 model + reports into $OUT as ≤15 MB parts
set -euo pipefail
G=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$G/.." && pwd)
WORK=${VELA_GPU_WORK:-/tmp/vela-train}
mkdir -p "$WORK"
export VELA_LOG=${VELA_LOG:-info}
. "$G/unpack.sh"
log() { echo "==> [$(date +%T)] $*"; }
what=${1:?usage: gpu-train.sh setup|datagen|train|watch|eval|pack}
shift

case "$what" in
setup)
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
    nproc; free -g | head -2; df -h "$WORK" | tail -1
    "$VELA" sim bench --help >/dev/null
    ;;
datagen)
    n=${1:?episodes per task}
    tasks=${2:-Stack_D4,Stack_Lang}
    log "datagen $tasks x $n"
    time "$VELA" datagen --tasks "$tasks" --episodes "$n" --output "$WORK/data" --workers "$(nproc)" \
        --gzip-level 1 --seed 1 --overwrite
    cp "$WORK/data/datagen_report.json" "$WORK/data/datagen_report-${tasks//,/-}.json"
    cat "$WORK/data/datagen_report.json"
    du -sh "$WORK/data"
    ;;
train)
    name=${1:?run name}
    shift
    datasets=$(ls "$WORK"/data/*.hdf5 | paste -sd, -)
    out="$WORK/runs/$name"
    mkdir -p "$WORK/runs"
    if [ $# = 0 ]; then
        # The shipped model's recipe: small-112 from scratch, full training, cosine decay.
        # Leased time, not epochs, bounds the run: --time-budget fixes the step count after a
        # few dozen steps; every epoch is exported for the episodes-vs-epochs study.
        set -- --config small-112 --full --epochs 100 --time-budget "${VELA_TRAIN_MINUTES:-15}" --batch-size 128 \
            --lr 1e-3 --warmup-steps 300 --cosine --keep-epochs \
            --save-every 1000 --log-every 50 --dataset-name stack_d4_lang --val-split 0.02 --val-max-samples 512
    fi
    log "train $name on $datasets"
    # setsid: the run outlives this call; `watch` follows it and a later call can --resume it.
    setsid nohup "$VELA" train --dataset "$datasets" --dataset-type mimicgen --out "$out" --device cuda "$@" \
        > "$WORK/runs/$name.log" 2>&1 < /dev/null &
    echo $! > "$WORK/runs/$name.pid"
    sleep 60
    tail -c 3000 "$WORK/runs/$name.log"
    ;;
watch)
    secs=${1:-540}
    t0=$(date +%s)
    while :; do
        running=0
        for p in "$WORK"/runs/*.pid; do kill -0 "$(cat "$p")" 2>/dev/null && running=1; done
        [ $running = 1 ] || { log "no training running"; break; }
        [ $(( $(date +%s) - t0 )) -lt "$secs" ] || break
        sleep 15
    done
    for l in "$WORK"/runs/*.log; do echo "--- $l"; grep -v '^\s*$' "$l" | tr '\r' '\n' | grep -E 'step|epoch|valid|INFO|ERROR|Error|error' | tail -n 25; done
    nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader
    ;;
eval)
    name=${1:?run name}
    n=${2:-100}
    model="$WORK/runs/$name"
    res="$WORK/eval/$name"
    mkdir -p "$res"
    for q in q8f16 q4f16; do
        [ -f "$model/model-$q.gguf" ] || "$VELA" vla quantize --model "$model" --quantization "$q"
    done
    run_bench() { # quant variant tag
        local preset="$res/preset-$3.json"
        python3 - "$ROOT/presets/OpenVLA-MimicGen-FP16.json" "$preset" "$model" "$1" <<'EOF'
import json, sys
src, dst, model, quant = sys.argv[1:]
p = json.load(open(src))
for n in p["nodes"]:
    if n["type"] == "OpenVLA":
        n.setdefault("params", {}).update({"model": model, "quantization": quant, "device": "cuda"})
json.dump(p, open(dst, "w"), indent=2)
EOF
        log "bench $3"
        "$VELA" bench --preset "$preset" --episodes "$n" --max-steps 200 --variant "$2" --parallel 25 \
            --save-stats "$res/$3.json" --report "$res/report-$3" --quiet 2>&1 | tail -n 15
    }
    run_bench q4f16 Stack_D2 d2-int4
    run_bench q8f16 Stack_D2 d2-int8
    run_bench fp16 Stack_D2 d2-fp16
    run_bench q4f16 Stack_Lang lang-int4
    ;;
study)
    # Success of every exported epoch on Stack_D2 (fp16 on the GPU): the epochs axis of the
    # episodes-vs-epochs table in BENCHMARKS.md.
    name=${1:?run name}
    n=${2:-50}
    res="$WORK/eval/$name/epochs"
    mkdir -p "$res"
    for dir in "$WORK/runs/$name"/epochs/epoch-*; do
        e=$(basename "$dir")
        python3 - "$ROOT/presets/OpenVLA-MimicGen-FP16.json" "$res/preset-$e.json" "$dir" <<'EOF'
import json, sys
src, dst, model = sys.argv[1:]
p = json.load(open(src))
for n in p["nodes"]:
    if n["type"] == "OpenVLA":
        n.setdefault("params", {}).update({"model": model, "quantization": "fp16", "device": "cuda"})
json.dump(p, open(dst, "w"), indent=2)
EOF
        log "study $e"
        "$VELA" bench --preset "$res/preset-$e.json" --episodes "$n" --max-steps 200 --variant Stack_D2 --parallel 25 \
            --save-stats "$res/$e.json" --quiet 2>&1 | tail -n 3
    done
    ;;
pack)
    name=${1:?run name}
    final=${OUT:-/tmp/vela-gpu-out}
    mkdir -p "$final"
    stage="$WORK/pack/$name"
    rm -rf "$stage" && mkdir -p "$stage"
    src="$WORK/runs/$name"
    # The model without its quantized copies (made again at load time) and optimizer state.
    mkdir -p "$stage/model"
    find "$src" -maxdepth 1 -type f ! -name '*.gguf' -exec cp {} "$stage/model/" \;
    cp "$WORK/runs/$name.log" "$stage/" 2>/dev/null || true
    [ -d "$WORK/eval/$name" ] && cp -r "$WORK/eval/$name" "$stage/eval"
    cp "$WORK"/data/datagen_report*.json "$stage/" 2>/dev/null || true
    tar czf "$WORK/pack/$name.tar.gz" -C "$stage" .
    split -b 15m -d "$WORK/pack/$name.tar.gz" "$final/$name.tgz.part-"
    ls -la "$final"
    ;;
*)
    echo "unknown stage $what" >&2
    exit 2
    ;;
esac
