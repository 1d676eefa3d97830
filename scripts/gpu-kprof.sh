#!/usr/bin/env bash
# Runs on the GPU machine (staged as .gpu/kprof.sh by scripts/build-kprof.sh): a per-kernel
# time profile (benchmarks/kprof/kprof.c, through CUPTI) of a `vela` command there.
#
#   bash .gpu/kprof.sh train [BATCH] [STEPS] [ARGS...]  a training probe of the small-168 preset
#        from the shipped model, bf16, crops, on 64 fresh Stack_D4 demos (made once per machine);
#        the table is per step: the difference of a run of STEPS/4 and one of STEPS steps
#   bash .gpu/kprof.sh speed [BATCH] [STEPS] [ARGS...]  the same training run without the profiler
#        (samples/s in $OUT/speed-*.log)
#   bash .gpu/kprof.sh run SKIP_S ARGS...               `vela ARGS...`, ignoring the first SKIP_S s
# The table goes to $OUT/kprof-*.tsv (and the log next to it); KPROF_TAG=x adds "-x" to the
# names, e.g. for a second run with VELA_TRAIN_KERNELS=0.
set -euo pipefail
G=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$G/.." && pwd)
. "$G/unpack.sh"
K="$U/kprof"
mkdir -p "$K" "${OUT:-/tmp}"
cp "$G/kprof/libkprof.so" "$K/"
[ -f "$K/libcupti.so.13" ] || python3 -c "import lzma,shutil,sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2],'wb'))" "$G/kprof/libcupti.so.13.xz" "$K/libcupti.so.13"
profiled() { # NAME SKIP ARGS...
    local name=$1 skip=$2; shift 2
    local R=/tmp/kprof-raw
    mkdir -p $R
    rm -f "$R/kprof-$name.tsv"
    CUDA_INJECTION64_PATH="$K/libkprof.so" LD_LIBRARY_PATH="$K:$LD_LIBRARY_PATH" VELA_KPROF_SKIP=$skip VELA_KPROF_TOP=4000 \
        VELA_KPROF_OUT="$R/kprof-$name.tsv" "$VELA" "$@" > "$R/kprof-$name.log" 2>&1 || echo "exit status $?"
    grep -v '^\s*[0-9]*: ' "$R/kprof-$name.log" | sed 's/\x1b\[[0-9;]*m//g' | grep -E 'step time|train step|kprof|rror' | tail -n 6 | cut -c1-250
    head -n 3 "$R/kprof-$name.tsv" | cut -c1-200
    if [ "$name" = run ]; then cp "$R/kprof-$name.tsv" "$R/kprof-$name.log" "${OUT:-/tmp}/"; fi
}
what=${1:?usage: kprof.sh train|run}
shift
case "$what" in
train|speed)
    b=${1:-128}; steps=${2:-100}; shift 2 || true
    tag=${KPROF_TAG:+-$KPROF_TAG}
    D=/tmp/kprof-data
    if [ ! -f "$D/done" ]; then
        rm -rf "$D"
        "$VELA" datagen --tasks Stack_D4 --episodes 64 --output "$D" --workers 16 --gzip-level 1 --seed 777 --overwrite > /tmp/kprof-datagen.log 2>&1 || true
        ls "$D"/*.hdf5 > /dev/null && touch "$D/done"
    fi
    # Two runs, of STEPS/4 and STEPS steps; their difference is the steady state, without the
    # start-up (model and data loading, cuBLAS's first choices) and the final export.
    a=$((steps / 4))
    args=(--dataset "$(ls "$D"/*.hdf5 | paste -sd,)" --dataset-type mimicgen --device cuda --model "$ROOT/models/openvla-small-mimicgen"
        --full --epochs 100 --batch-size "$b" --lr 1e-4 --warmup-steps 10 --save-every 0 --log-every 20 --val-split 0
        --shuffle-episodes 64 --bf16 --image-aug --no-colour-jitter "$@")
    if [ "$what" = speed ]; then
        rm -rf /tmp/kprof-speed
        "$VELA" train --out /tmp/kprof-speed --max-steps "$steps" "${args[@]}" > "${OUT:-/tmp}/speed-b$b$tag.log" 2>&1 || echo "exit status $?"
        grep -v '^\s*[0-9]*: ' "${OUT:-/tmp}/speed-b$b$tag.log" | sed 's/\x1b\[[0-9;]*m//g' | grep -E 'step time|wrote|rror' | tail -n 3 | cut -c1-250
        exit 0
    fi
    rm -rf /tmp/kprof-a /tmp/kprof-b
    profiled "train-b$b-$a$tag" 0 train --out /tmp/kprof-a --max-steps "$a" "${args[@]}"
    profiled "train-b$b-$steps$tag" 0 train --out /tmp/kprof-b --max-steps "$steps" "${args[@]}"
    python3 - "/tmp/kprof-raw/kprof-train-b$b-$a$tag.tsv" "/tmp/kprof-raw/kprof-train-b$b-$steps$tag.tsv" $((steps - a)) > "${OUT:-/tmp}/kprof-train-b$b-per-step$tag.tsv" <<'PY'
import sys
def load(p):
    rows = {}
    for line in open(p):
        if line.startswith("#"):
            continue
        ms, _, count, _, _, name = line.rstrip("\n").split("\t", 5)
        rows[name] = (float(ms), int(count))
    return rows
a, b, n = load(sys.argv[1]), load(sys.argv[2]), int(sys.argv[3])
diff = {k: (v[0] - a.get(k, (0, 0))[0], v[1] - a.get(k, (0, 0))[1]) for k, v in b.items()}
total = sum(max(0, ms) for ms, _ in diff.values())
print(f"# per training step (difference of two runs, {n} steps): {total / n:.2f} ms of kernels")
print("# ms_per_step\tshare\tlaunches_per_step\tname")
for k, (ms, c) in sorted(diff.items(), key=lambda kv: -kv[1][0])[:70]:
    print(f"{ms / n:.3f}\t{100 * ms / total:.1f}%\t{c / n:.1f}\t{k[:150]}")
PY
    head -n 45 "${OUT:-/tmp}/kprof-train-b$b-per-step$tag.tsv"
    ;;
run)
    skip=$1; shift
    profiled run "$skip" "$@"
    ;;
*) echo "unknown: $what" >&2; exit 2 ;;
esac
