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
#   bash .gpu/gpu-train.sh eval NAME [EPISODES] [TAGS]  quantize, then bench (TAGS, comma-separated, default all):
#                                                    d2-int4, d2-int8, d2-fp16 on Stack_D2, lang-int4 on Stack_Lang
#   bash .gpu/gpu-train.sh study NAME [EPISODES]     fp16 Stack_D2 success of every exported epoch
#   bash .gpu/gpu-train.sh pack NAME                 model + reports into $OUT as ≤15 MB parts
#
# The whole pipeline in one background job, for a lease that may not outlast a pause: the machine
# goes back 30 s after a call ends and after 30 minutes held, so nothing may wait on the caller.
#   bash .gpu/gpu-train.sh all [D4] [LANG] [TRAIN_END_MIN]  datagen (parallel processes) → train until
#                                                    TRAIN_END_MIN minutes after start → pack the model →
#                                                    the four benches at once → pack the reports
#   bash .gpu/gpu-train.sh follow SECONDS            show the pipeline's progress; copy what it packed to $OUT
#   Defaults are run 3's recipe (small-168, bf16, crop augmentation, intended-action labels, 16
#   datagen processes); TRAIN_FROM=models/openvla-small-mimicgen continues from the shipped model.
#   (env: TRAIN_FROM=repo-relative checkpoint to continue from, TRAIN_CONFIG, TRAIN_LR, TRAIN_WARMUP,
#    TRAIN_BATCH, TRAIN_EXTRA (default "--image-aug --no-colour-jitter --action-labels intended"),
#    TRAIN_BF16=1|0|auto (auto: an 80-step probe of each), BENCH_EPISODES, DATAGEN_PROCS,
#    DATAGEN_SEED=offset for fresh demos on a second lease, BENCH_TAGS=d2-fp16,d1-fp16 for a subset,
#    PROBE_BATCHES=128,512 for a profiled step-time breakdown at each batch size before training,
#    DAGGER_EPISODES, DAGGER_PROCS, DAGGER_WORKERS, DAGGER_BETA, DAGGER_MIN, DAGGER_MODEL,
#    DAGGER_LABELS=expert|executed, DAGGER_KEEP=all|successes, DAGGER_NOISE: policy rollouts made
#    while datagen runs (`vela dagger`), labelled by the scripted expert or kept as executed;
#    EXPERT_PROCS, EXPERT_WORKERS, EXPERT_NOISE, EXPERT_MIN, EXPERT_EPISODES, EXPERT_GAIN (the expert's
#    position gain, also for DAGGER's labels): scripted-expert demos
#    with noisy execution and clean labels (`vela dagger --beta 1`); see the _all stage;
#    CAMERA=agentview_hand: the view every stage records and the benches feed the model;
#    BENCH_STARTUP: seconds a bench may take to its first step before it retries, default 90;
#    TRAIN_EPOCHS=N: the main run trains N epochs instead of until TRAIN_END_MIN;
#    STUDY_SUBSETS="1 2", STUDY_EPOCHS, STUDY_EPISODES, STUDY_AT_ONCE: issue 8's demos × epochs
#    study, extra runs on the first K datagen files of each task, every epoch benched; out/study.tsv)
set -euo pipefail
G=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$G/.." && pwd)
WORK=${VELA_GPU_WORK:-/tmp/vela-train}
mkdir -p "$WORK"
export VELA_LOG=${VELA_LOG:-info}
# VELA_BIN: a local build instead of the bundle (dry runs of the pipeline off the GPU machine).
if [ -n "${VELA_BIN:-}" ]; then VELA=$VELA_BIN; else . "$G/unpack.sh"; fi
log() { echo "==> [$(date +%T)] $*"; }
DEV=${VELA_DEVICE:-cuda}
what=${1:?usage: gpu-train.sh all|follow|setup|datagen|train|watch|eval|study|pack}
shift

case "$what" in
all)
    mkdir -p "$WORK/out"
    date +%s > "$WORK/all.start"
    setsid nohup bash "$G/gpu-train.sh" _all "$@" > "$WORK/all.log" 2>&1 < /dev/null &
    echo $! > "$WORK/all.pid"
    sleep 20
    cat "$WORK/all.log"
    ;;
_all)
    d4=${1:-600}
    lang=${2:-600}
    train_end=$(( $(cat "$WORK/all.start") + $(python3 -c "print(int(${3:-20.5} * 60))") ))
    procs=${DATAGEN_PROCS:-16}
    per=$(( procs / 2 ))
    workers=$(( $(nproc) / procs )); [ $workers -ge 1 ] || workers=1
    pids=()
    if [ -n "${DATAGEN_SKIP:-}" ]; then per=0; log "datagen: keeping the data of the last run"
    elif [ "$d4" = 0 ] && [ "$lang" = 0 ]; then per=0; log "datagen: no MimicGen data"
    else log "datagen: Stack_D4 $d4 + Stack_Lang $lang in $procs processes of $workers workers"; fi
    for i in $(seq 1 $per); do
        for task in Stack_D4 Stack_Lang; do
            n=$d4; [ $task = Stack_Lang ] && n=$lang
            [ "$n" -gt 0 ] || continue   # `all 0 0`: no MimicGen data (EXPERT_PROCS / DAGGER_EPISODES only)
            k=$(( (n + per - 1) / per ))
            "$VELA" datagen --tasks $task --episodes $k --output "$WORK/data/$task-$i" --workers $workers \
                --gzip-level 1 --seed $(( ${DATAGEN_SEED:-0} + i * 100 + ${#task} )) --cameras "${CAMERA:-agentview}" --overwrite > "$WORK/datagen-$task-$i.log" 2>&1 &
            pids+=($!)
        done
    done
    # DAGGER_EPISODES=N: at the same time, DAGGER_PROCS processes roll the TRAIN_FROM model out in
    # Stack_D4 and Stack_Lang (N episodes per task each, at most DAGGER_MIN minutes per task) with
    # the scripted expert labelling every state (`vela dagger`); their files join the training data.
    dpids=()
    if [ "${DAGGER_EPISODES:-0}" -gt 0 ]; then
        # DAGGER_BETA=1: the expert drives every step (plain expert demos); no policy is loaded.
        dmodel=()
        if [ "${DAGGER_BETA:-0.3}" != 1 ]; then
            rm -rf "$WORK/dagger-model" && cp -r "$ROOT/${DAGGER_MODEL:-${TRAIN_FROM:?DAGGER_EPISODES needs TRAIN_FROM or DAGGER_MODEL}}" "$WORK/dagger-model"
            dmodel=(--model "$WORK/dagger-model")
        fi
        log "dagger: ${DAGGER_PROCS:-8} processes x ${DAGGER_WORKERS:-4} simulators, $DAGGER_EPISODES episodes per task each, beta ${DAGGER_BETA:-0.3}"
        for i in $(seq 1 "${DAGGER_PROCS:-8}"); do
            # A process stuck at start-up (see the benches below) must not hold up the lease.
            timeout "${DAGGER_TIMEOUT:-480}" "$VELA" dagger "${dmodel[@]}" --device "$DEV" --tasks Stack_D4,Stack_Lang --episodes "$DAGGER_EPISODES" \
                --beta "${DAGGER_BETA:-0.3}" --workers "${DAGGER_WORKERS:-4}" --output "$WORK/data/dagger-$i" \
                --seed $(( ${DATAGEN_SEED:-0} + 5000 + i )) --time-limit "${DAGGER_MIN:-2.5}" --action-noise "${DAGGER_NOISE:-0.05}" --expert-gain "${EXPERT_GAIN:-2.5}" \
                --labels "${DAGGER_LABELS:-expert}" --keep "${DAGGER_KEEP:-all}" --camera "${CAMERA:-agentview}" --overwrite > "$WORK/dagger-$i.log" 2>&1 &
            dpids+=($!)
            sleep 3
        done
    fi
    # EXPERT_PROCS=N: N processes record scripted-expert demos (`vela dagger --beta 1`, no policy):
    # the executed arm actions carry EXPERT_NOISE (DART-style), the labels are the expert's
    # actions before the noise. Together with DAGGER_EPISODES and `all 0 0`, every label in the
    # training set comes from one teacher.
    epids=()
    if [ "${EXPERT_PROCS:-0}" -gt 0 ]; then
        log "expert demos: $EXPERT_PROCS processes x ${EXPERT_WORKERS:-1} simulators, noise ${EXPERT_NOISE:-0.05}, ${EXPERT_MIN:-2.5} min per task"
        for i in $(seq 1 "$EXPERT_PROCS"); do
            timeout "${DAGGER_TIMEOUT:-480}" "$VELA" dagger --beta 1 --tasks Stack_D4,Stack_Lang --episodes "${EXPERT_EPISODES:-100000}" \
                --action-noise "${EXPERT_NOISE:-0.05}" --expert-gain "${EXPERT_GAIN:-2.5}" --workers "${EXPERT_WORKERS:-1}" --output "$WORK/data/expert-$i" \
                --seed $(( ${DATAGEN_SEED:-0} + 7000 + i )) --time-limit "${EXPERT_MIN:-2.5}" --camera "${CAMERA:-agentview}" --overwrite > "$WORK/expert-$i.log" 2>&1 &
            epids+=($!)
        done
    fi
    # A process that wrote its report finished its file: NVIDIA's EGL can segfault at exit.
    for p in "${pids[@]}"; do wait "$p" || log "a datagen process exited non-zero"; done
    for p in "${dpids[@]}"; do wait "$p" || log "a dagger process exited non-zero"; done
    for p in "${epids[@]}"; do wait "$p" || log "an expert process exited non-zero"; done
    # `vela dagger` processes (policy rollouts, expert demos): keep the files of those that wrote
    # their report, gather the reports.
    rollout_reports() { # prefix count
        [ "$2" -gt 0 ] || return 0
        for i in $(seq 1 "$2"); do
            if grep -q "dagger_report.json" "$WORK/$1-$i.log"; then
                grep -E "^Stack_" "$WORK/$1-$i.log" | sed "s/^/$1-$i: /"
            else
                log "$1-$i failed; its files are left out"; tail -n 5 "$WORK/$1-$i.log"; rm -rf "$WORK/data/$1-$i"
            fi
        done
        cat "$WORK"/data/"$1"-*/dagger_report.json > "$WORK/out/$1_reports.json" 2>/dev/null || true
    }
    rollout_reports expert "${#epids[@]}"
    rollout_reports dagger "${#dpids[@]}"
    for f in "$WORK"/datagen-*.log; do [ -f "$f" ] || continue; grep -q "datagen_report.json" "$f" || { log "datagen failed: $f"; tail -n 20 "$f"; exit 1; }; done
    log "datagen done: $(find "$WORK/data" -name '*.hdf5' | wc -l) files, $(du -sh "$WORK/data" | cut -f1)"
    cat "$WORK"/data/*/datagen_report.json > "$WORK/out/datagen_reports.json" 2>/dev/null || true
    datasets=$(find "$WORK/data" -name '*.hdf5' | sort | paste -sd, -)
    out="$WORK/runs/shipped"
    mkdir -p "$WORK/runs"
    # The carried copy is replaced on every call: train from a copy of it in $WORK.
    if [ -n "${TRAIN_FROM:-}" ]; then rm -rf "$WORK/from" && cp -r "$ROOT/$TRAIN_FROM" "$WORK/from" && base=(--model "$WORK/from"); else base=(--config "${TRAIN_CONFIG:-small-168}"); fi
    # PROBE_BATCHES=128,512: 60 profiled steps at each batch size first (VELA_TRAIN_PROFILE=1
    # synchronises between phases), so the log says where a step's time goes.
    for b in $(echo "${PROBE_BATCHES:-}" | tr , " "); do
        rm -rf "$WORK/probe-b$b"
        VELA_TRAIN_PROFILE=1 "$VELA" train --dataset "$datasets" --dataset-type mimicgen --out "$WORK/probe-b$b" --device "$DEV" "${base[@]}" \
            --full --max-steps 60 --batch-size "$b" --lr 1e-4 --warmup-steps 10 --save-every 0 --log-every 20 --val-split 0 \
            --shuffle-episodes 64 --bf16 --image-aug --no-colour-jitter > "$WORK/probe-b$b.log" 2>&1 || true
        log "probe batch $b:"
        sed 's/\x1b\[[0-9;]*m//g' "$WORK/probe-b$b.log" | grep -E 'step time|train step' | sed -E 's/^.*(step=)/\1/' | cut -c1-200 | tail -n 4
        mkdir -p "$WORK/out" && cp "$WORK/probe-b$b.log" "$WORK/out/"
    done
    # TRAIN_BF16=auto: 80 steps each way, then the faster for the real run (bf16 only if it
    # gains more than 15 % and its loss stays finite).
    precision=()
    if [ "${TRAIN_BF16:-1}" = auto ] && [ "$DEV" != cpu ]; then
        declare -A sps
        for m in f32 bf16; do
            flag=(); [ $m = bf16 ] && flag=(--bf16)
            rm -rf "$WORK/probe-$m"
            "$VELA" train --dataset "$datasets" --dataset-type mimicgen --out "$WORK/probe-$m" --device "$DEV" "${base[@]}" \
                --full --max-steps 80 --batch-size "${TRAIN_BATCH:-128}" --lr "${TRAIN_LR:-1e-3}" --warmup-steps 40 \
                --save-every 0 --log-every 20 --val-split 0 --shuffle-episodes 32 "${flag[@]}" > "$WORK/probe-$m.log" 2>&1 || true
            sps[$m]=$(python3 -c "import json,math,sys; t=json.load(open(sys.argv[1])); l=t['final_train']['loss']; print(t['samples_per_sec_this_run'] if math.isfinite(l) else 0)" "$WORK/probe-$m/training.json" 2>/dev/null || echo 0)
        done
        log "precision probe: f32 ${sps[f32]} samples/s, bf16 ${sps[bf16]} samples/s"
        if python3 -c "import sys; sys.exit(0 if float(sys.argv[2]) > 1.15 * float(sys.argv[1]) else 1)" "${sps[f32]}" "${sps[bf16]}"; then precision=(--bf16); fi
    elif [ "${TRAIN_BF16:-1}" = 1 ]; then
        precision=(--bf16)
    fi
    # TRAIN_FROM (above): continue from a checkpoint carried in the repository copy (a lease ends
    # after 30 minutes; the next one picks up the weights, with fresh optimizer state and data).
    train_run() { # out datasets log batch [epochs]: a fixed number of epochs, or without one
        # the time left until TRAIN_END_MIN
        local length
        if [ -n "${5:-}" ]; then
            length=(--epochs "$5")
            log "train $(basename "$1"): $5 epochs at batch $4"
        else
            minutes=$(python3 -c "print(max(4.0, ($train_end - $(date +%s)) / 60))")
            length=(--epochs 100 --time-budget "$minutes")
            log "train for $minutes min at batch $4"
        fi
        # shellcheck disable=SC2086 # TRAIN_EXTRA is a list of flags
        "$VELA" train --dataset "$2" --dataset-type mimicgen --out "$1" --device "$DEV" "${base[@]}" \
            --full "${length[@]}" --batch-size "$4" --lr "${TRAIN_LR:-1e-3}" \
            --warmup-steps "${TRAIN_WARMUP:-300}" --cosine --keep-epochs --save-every 1000 --log-every 50 \
            --dataset-name stack_d4_lang --val-split 0.02 --val-max-samples 512 \
            --shuffle-episodes "${TRAIN_SHUFFLE:-256}" "${precision[@]}" ${TRAIN_EXTRA---image-aug --no-colour-jitter --action-labels intended} > "$3" 2>&1
    }
    train_once() { train_run "$out" "$datasets" "$WORK/runs/shipped.log" "$1" "${TRAIN_EPOCHS:-}"; }
    # The first K datagen files of each task, and how many demos they hold.
    subset() { for i in $(seq 1 "$1"); do for t in Stack_D4 Stack_Lang; do f="$WORK/data/$t-$i/$t.hdf5"; [ -f "$f" ] && echo "$f"; done; done | paste -sd, -; }
    subset_demos() { for i in $(seq 1 "$1"); do cat "$WORK"/data/Stack_*-"$i"/datagen_report.json; done | python3 -c "
import json, sys
s, d, n = sys.stdin.read(), json.JSONDecoder(), 0
i = 0
while i < len(s.rstrip()):
    o, i = d.raw_decode(s, i)
    n += sum(t['kept'] for t in o['tasks'])
    while i < len(s) and s[i].isspace(): i += 1
print(n)"; }
    train_failed() {
        log "training failed"
        # Without the backtrace's frame lines, which would fill the tail.
        sed 's/\x1b\[[0-9;]*m//g' "$WORK/runs/shipped.log" | tr '\r' '\n' | grep -v '^ *[0-9]*: ' | grep -v '^\s*$' | tail -n 12 | cut -c1-300
        exit 1
    }
    # GPU memory every 5 s while training: tells a leak (growing) from one batch's peak.
    nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -l 5 > "$WORK/gpu-mem.log" 2>/dev/null &
    memlog=$!
    batch=${TRAIN_BATCH:-128}
    # STUDY_SUBSETS="1 2": issue 8's study of demos × epochs × success. Before the main run, one
    # run per K trains on the first K datagen files of each task, STUDY_EPOCHS epochs (default
    # TRAIN_EPOCHS, else 3), from the same start with the same recipe, exporting every epoch; the
    # study stage below benches each exported epoch of these runs and of the main run.
    for k in ${STUDY_SUBSETS:-}; do
        [ "$k" -lt "$per" ] || { log "study: $k files per task is all of them (the main run); skipped"; continue; }
        train_run "$WORK/runs/study-k$k" "$(subset "$k")" "$WORK/runs/study-k$k.log" "$batch" "${STUDY_EPOCHS:-${TRAIN_EPOCHS:-3}}" \
            || { log "study run k$k failed"; tail -n 5 "$WORK/runs/study-k$k.log"; }
        mkdir -p "$WORK/out" && cp "$WORK/runs/study-k$k.log" "$WORK/out/"
        cp "$WORK/runs/study-k$k/training.json" "$WORK/out/study-k$k-training.json" 2>/dev/null || true
    done
    if ! train_once "$batch"; then
        # Longer labels (--action-chunk) multiply the logits kept for the backward pass.
        if grep -q OUT_OF_MEMORY "$WORK/runs/shipped.log" && [ "$batch" -gt 32 ]; then
            log "out of GPU memory at batch $batch (peak $(sort -n "$WORK/gpu-mem.log" | tail -n 1) MiB); again at batch $(( batch / 2 ))"
            mv "$WORK/runs/shipped.log" "$WORK/runs/shipped-oom.log"
            mkdir -p "$WORK/out" && cp "$WORK/runs/shipped-oom.log" "$WORK/out/"
            rm -rf "$out"
            batch=$(( batch / 2 ))
            train_once "$batch" || train_failed
        else
            train_failed
        fi
    fi
    kill "$memlog" 2>/dev/null || true
    log "GPU memory while training: peak $(sort -n "$WORK/gpu-mem.log" | tail -n 1) MiB, last $(tail -n 1 "$WORK/gpu-mem.log") MiB"
    log "train done"
    mkdir -p "$WORK/out/model"
    find "$out" -maxdepth 1 -type f ! -name '*.gguf' -exec cp {} "$WORK/out/model/" \;
    cp "$WORK/runs/shipped.log" "$WORK/out/"
    for q in q8f16 q4f16; do "$VELA" vla quantize --model "$out" --quantization "$q" > /dev/null; done
    res="$WORK/out/eval"
    mkdir -p "$res"
    bench() { # quant variant tag model episodes [execute] [decode_window]
        python3 - "$ROOT/presets/OpenVLA-MimicGen-FP16.json" "$res/preset-$3.json" "$4" "$1" "$DEV" "${CAMERA:-agentview}" "${6:-0}" "${7:-0}" <<'EOF'
import json, sys
src, dst, model, quant, dev, camera, execute, window = sys.argv[1:]
p = json.load(open(src))
for n in p["nodes"]:
    if n["type"] == "OpenVLA":
        n.setdefault("params", {}).update({"model": model, "quantization": quant, "device": dev, "execute": int(execute), "decode_window": int(window)})
    if n["type"] == "MimicGen":
        n.setdefault("params", {})["camera"] = camera
json.dump(p, open(dst, "w"), indent=2)
EOF
        "$VELA" bench --preset "$res/preset-$3.json" --episodes "$5" --max-steps 200 --variant "$2" --parallel 8 \
            --save-stats "$res/$3.json" --report "$res/report-$3" --quiet --startup-timeout "${BENCH_STARTUP:-90}" > "$res/$3.log" 2>&1 &
        local pid=$!
        # Lease 8's hung bench printed its start-up error but never exited (its stuck threads
        # were still spinning), so its retry never came: a process that has reported the
        # error gets 15 s to exit, then is killed.
        while kill -0 "$pid" 2>/dev/null; do
            if grep -q "has made no step" "$res/$3.log"; then
                sleep 15
                kill -9 "$pid" 2>/dev/null && log "$3: killed after its start-up error (it did not exit)"
                break
            fi
            sleep 5
        done
        wait "$pid"
    }
    # A bench whose policy never answers its first frame (issue 9; 1 in 4 benches, 4 leases so
    # far) stops after BENCH_STARTUP seconds (the warm-ups below answer in under 8 s) with the
    # stages and threads of the stuck process in its log, and starts again at once, beside the
    # others, so that its numbers still come within the lease.
    bench_retry() { # quant variant tag model episodes
        bench "$@" || true
        if grep -q "has made no step" "$res/$3.log"; then
            log "$3 never started; once more (its log: $3.first-try.log)"
            mv "$res/$3.log" "$res/$3.first-try.log"
            rm -f "$res/$3.json"
            bench "$@"
        fi
    }
    # Each quantization predicts once first, one at a time, with a timeout, and the log says how
    # long each took: it fills the driver's PTX compile cache and shows whether a mode hangs on its
    # own. It was added to test compilation as the cause of the start-up hang (issue 9); in lease 7
    # a bench hung after these warm-ups, so that is not it (at least not for this single-request
    # path), but the timings stay useful.
    export CUDA_CACHE_MAXSIZE=${CUDA_CACHE_MAXSIZE:-4294967296}
    for q in q4f16 q8f16 fp16; do
        t0=$(date +%s.%N)
        if timeout 180 "$VELA" vla bench --model "$out" --quantization "$q" --device "$DEV" --iters 1 > "$res/warm-$q.log" 2>&1; then
            log "warm-up $q: $(python3 -c "import time,sys; print(round(time.time() - float(sys.argv[1]), 1))" "$t0") s"
        else
            log "warm-up $q failed or hung (rc $?): $(tail -n 2 "$res/warm-$q.log" | tr '\n' ' ' | cut -c1-200)"
        fi
    done
    log "benches"
    n=${BENCH_EPISODES:-100}
    # BENCH_TAGS picks a subset (a first lease of two only needs a look at the model).
    tags=${BENCH_TAGS:-d2-int4,d2-int8,d2-fp16,lang-int4,d1-fp16}
    [ "$tags" = none ] && tags=   # a study lease may bench only the study's cells
    bs=()
    launch() { # tag: one bench in the background; a tag ending in -xN (e.g. d2-int4-x4) sends
        # only the first N actions of each predicted chunk (a chunked model's receding horizon),
        # one ending in -wN (e.g. d2-int4-w8, after any -xN) decodes with the OpenVLA node's
        # decode_window N
        local x=0 w=0 base=$1
        case $base in *-w[0-9]*) w=${base##*-w}; base=${base%-w[0-9]*} ;; esac
        case $base in *-x[0-9]*) x=${base##*-x}; base=${base%-x[0-9]*} ;; esac
        case $base in
            d2-int4) bench_retry q4f16 Stack_D2 $1 "$out" $n $x $w & bs+=($!) ;;
            d2-int8) bench_retry q8f16 Stack_D2 $1 "$out" $n $x $w & bs+=($!) ;;
            d2-fp16) bench_retry fp16 Stack_D2 $1 "$out" $n $x $w & bs+=($!) ;;
            lang-int4) bench_retry q4f16 Stack_Lang $1 "$out" $n $x $w & bs+=($!) ;;
            # Diagnostic: D1 keeps the small cube red and the big one green, so it separates "cannot
            # tell which cube to move" (D2 fails, D1 works) from "cannot grasp or place" (both fail).
            d1-fp16) bench_retry fp16 Stack_D1 $1 "$out" $(( (n + 1) / 2 )) & bs+=($!) ;;
        esac
    }
    # Benches start 20 s apart, so their model loads and first GPU calls do not coincide
    # (a hung bench retries itself: bench_retry above).
    for t in ${tags//,/ }; do
        launch "$t"
        sleep 20
    done
    wait "${bs[@]}" || true
    for t in ${tags//,/ }; do echo "$t: $(grep -E 'successes' "$res/$t.log" | tail -n 1)"; done
    log "benches done"
    # The demos × epochs study (STUDY_SUBSETS): every exported epoch of every run, fp16 on
    # Stack_D2, STUDY_EPISODES episodes each, four benches at a time; then a table of the cells.
    start=$(cat "$WORK/all.start")
    eps=$(ls -d "$out"/epochs/epoch-* 2>/dev/null | sort)
    if [ -n "${STUDY_SUBSETS:-}" ]; then
        log "study: every epoch of $(ls -d "$WORK"/runs/study-k*/ "$out" 2>/dev/null | xargs -n1 basename | paste -sd' ' -)"
        cells=()
        for k in ${STUDY_SUBSETS} "$per"; do
            run="$WORK/runs/study-k$k"; [ "$k" = "$per" ] && run=$out
            for d in $(ls -d "$run"/epochs/epoch-* 2>/dev/null | sort); do cells+=("k$k-$(basename "$d")=$d"); done
        done
        ps=()
        for c in "${cells[@]}"; do
            while [ "$(jobs -rp | wc -l)" -ge "${STUDY_AT_ONCE:-4}" ]; do wait -n || true; done
            bench_retry fp16 Stack_D2 "study-${c%%=*}" "${c#*=}" "${STUDY_EPISODES:-50}" & ps+=($!)
            sleep 10
        done
        wait "${ps[@]}" || true
        { printf 'cell\tfiles_per_task\tdemos\tepoch\tsamples_seen\tepisodes\tsuccesses\n'
          for c in "${cells[@]}"; do
            tag=${c%%=*}; k=${tag%%-*}; k=${k#k}; e=${tag##*-}
            tj="$WORK/runs/study-k$k/training.json"; [ "$k" = "$per" ] && tj="$out/training.json"
            python3 - "$res/study-$tag.json" "$tj" "$tag" "$k" "$(subset_demos "$k")" "$e" <<'EOF'
import json, sys
stats, training, tag, k, demos, epoch = sys.argv[1:]
t = json.load(open(training))
seen = t["steps_per_epoch"] * int(epoch) * t["args"]["batch_size"]
try:
    s = json.load(open(stats))["summary"]
    print(f"{tag}\t{k}\t{demos}\t{int(epoch)}\t{seen}\t{s['episodes']}\t{s['successes']}")
except (OSError, KeyError, ValueError):
    print(f"{tag}\t{k}\t{demos}\t{int(epoch)}\t{seen}\t0\t")
EOF
          done; } > "$WORK/out/study.tsv"
        column -t "$WORK/out/study.tsv" 2>/dev/null || cat "$WORK/out/study.tsv"
    elif [ $(( $(date +%s) - start )) -lt $(( 23 * 60 )) ] && [ -n "$eps" ]; then
        # The epochs axis of the main run while time is left (fp16, 50 episodes, four at once).
        log "study"
        # A quarter, half and three quarters of the way (the final model is the fp16 bench above).
        pick=$(echo "$eps" | python3 -c "import sys; e=sys.stdin.read().split(); n=len(e); print(' '.join(sorted({e[max(0, round(n*f)-1)] for f in (0.25, 0.5, 0.75)})))")
        ps=()
        for d in $pick; do bench_retry fp16 Stack_D2 "study-$(basename "$d")" "$d" "${STUDY_EPISODES:-50}" & ps+=($!); done
        wait "${ps[@]}" || true
        for d in $pick; do echo "study $(basename "$d"): $(grep -E 'successes' "$res/study-$(basename "$d").log" | tail -n 1)"; done
    fi
    log "all done"
    ;;
follow)
    secs=${1:-560}
    t0=$(date +%s)
    while kill -0 "$(cat "$WORK/all.pid")" 2>/dev/null && [ $(( $(date +%s) - t0 )) -lt "$secs" ]; do sleep 10; done
    grep -v '^\s*$' "$WORK/all.log" | tail -n 20
    [ -s "$WORK/gpu-mem.log" ] && echo "GPU memory (MiB, every 5 s, last 8): $(tail -n 8 "$WORK/gpu-mem.log" | tr '\n' ' ')"
    [ -f "$WORK/runs/shipped.log" ] && sed 's/\x1b\[[0-9;]*m//g' "$WORK/runs/shipped.log" | tr '\r' '\n' \
        | grep -E 'time budget|validation|dataset ready|step=[0-9]*000 ' | cut -c1-250 | tail -n 8
    # `[ -f ] || continue`, not `&&`: a loop whose last test fails ends the script under pipefail
    # (lease 6 lost its `follow` copies that way when `all 0 0` wrote no datagen logs).
    for f in "$WORK"/dagger-*.log "$WORK"/expert-*.log; do [ -f "$f" ] || continue; echo "$(basename "$f"): $(tr '\r' '\n' < "$f" | grep -v '^\s*$' | tail -n 1 | cut -c1-160)"; done 2>/dev/null | tail -n 2
    for f in "$WORK"/datagen-*.log; do [ -f "$f" ] || continue; echo "$(basename "$f"): $(tr '\r' '\n' < "$f" | grep -v '^\s*$' | tail -n 1 | cut -c1-160)"; done 2>/dev/null | tail -n 4 # (head would end the script: SIGPIPE under pipefail)
    if [ -n "${OUT:-}" ] && [ -d "$WORK/out" ]; then
        # Benches may still be writing: GNU tar then exits 1 ("file changed as we read it") but
        # has written the archive, which is worth taking; only 2 and up are real failures.
        rc=0; tar czf "$WORK/out.tgz" --warning=no-file-changed -C "$WORK/out" . || rc=$?
        [ $rc -le 1 ] && split -b 15m -d "$WORK/out.tgz" "$OUT/out.tgz.part-"
        ls -la "$OUT"
    fi
    ;;
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
        # The shipped model's recipe: small-168 from scratch, full training, cosine decay.
        # Leased time, not epochs, bounds the run: --time-budget fixes the step count after a
        # few dozen steps; every epoch is exported for the episodes-vs-epochs study.
        set -- --config small-168 --full --bf16 --image-aug --no-colour-jitter --action-labels intended \
            --epochs 100 --time-budget "${VELA_TRAIN_MINUTES:-15}" --batch-size 128 \
            --lr 1e-3 --warmup-steps 300 --cosine --keep-epochs --shuffle-episodes 256 \
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
    tags=${3:-d2-int4,d2-int8,d2-fp16,lang-int4}
    for tag in ${tags//,/ }; do
        case $tag in
        d2-int4) run_bench q4f16 Stack_D2 d2-int4 ;;
        d2-int8) run_bench q8f16 Stack_D2 d2-int8 ;;
        d2-fp16) run_bench fp16 Stack_D2 d2-fp16 ;;
        lang-int4) run_bench q4f16 Stack_Lang lang-int4 ;;
        *) echo "unknown eval tag $tag" >&2; exit 2 ;;
        esac
    done
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
