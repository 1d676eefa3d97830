#!/usr/bin/env bash
# Checks Vela's RLDS files against real TensorFlow Datasets, both ways (issue 6):
#   1. a simulator-generated robomimic file, converted to RLDS by Vela, loads with
#      tfds.builder_from_directory / tfds.builder and every value matches the source;
#   2. an RLDS dataset written by TFDS itself reads with Vela (`dataset info`, convert to
#      HDF5) and matches what TFDS was given; Vela's RLDS of that loads in TFDS again.
# Manual (not in scripts/test.sh): the TensorFlow venv is ~1.8 GB (scripts/setup-tfds.sh).
# Exits non-zero on the first mismatch. VELA=path/to/vela skips the release build.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/env.sh
T0=$(date +%s)

bash scripts/setup-tfds.sh
PY="${VELA_TFDS_VENV:-$VELA_CACHE/tfds-venv}/bin/python"
if [ -z "${VELA:-}" ]; then
    stage_start "build vela"
    cargo build --release --bin vela
    stage_end
    VELA="$CARGO_TARGET_DIR/release/vela"
fi
WORK=$(mktemp -d)
trap '[ -n "${KEEP:-}" ] || rm -rf "$WORK"' EXIT
export TF_CPP_MIN_LOG_LEVEL=2 TF_ENABLE_ONEDNN_OPTS=0
check() { "$PY" tests/tfds/check_tfds.py "$@"; }

stage_start "Vela writes, TFDS reads"
"$VELA" datagen --tasks Stack_D4 --episodes 3 --workers 2 --output "$WORK/gen"
# 1 MB shards: several shard files, so TFDS's shard naming and lengths are exercised too.
"$VELA" dataset convert --dataset "$WORK/gen/Stack_D4.hdf5" --dataset-type mimicgen --convert rlds \
    --remap-keys agentview:image --shard-mb 1 --output "$WORK/rlds"
"$VELA" dataset info "$WORK/rlds"
check read-vela --data-dir "$WORK/rlds" --name stack_d4 --hdf5 "$WORK/gen/Stack_D4.hdf5" --remap agentview:image
stage_end

stage_start "TFDS writes, Vela reads"
check write --data-dir "$WORK/tfds" --name tfds_written --expect "$WORK/expect.npz"
"$VELA" dataset info "$WORK/tfds"
"$VELA" dataset info --json "$WORK/tfds" >"$WORK/info.json"
"$VELA" dataset convert --dataset "$WORK/tfds" --convert mimicgen --output "$WORK/from_tfds.hdf5"
check check-hdf5 --hdf5 "$WORK/from_tfds.hdf5" --expect "$WORK/expect.npz" --info "$WORK/info.json"
# ... and back to RLDS, which TFDS must load with the same values.
"$VELA" dataset convert --dataset "$WORK/from_tfds.hdf5" --convert rlds --output "$WORK/again"
check read-vela --data-dir "$WORK/again" --name tfds_written --hdf5 "$WORK/from_tfds.hdf5"
stage_end

stage_start "TFDS writes RT-1's dict actions, Vela reads them as 7-D"
check write-rt1 --data-dir "$WORK/rt1" --name rt1_layout --expect "$WORK/rt1.npz"
"$VELA" dataset convert --dataset "$WORK/rt1" --convert mimicgen --output "$WORK/rt1.hdf5"
check check-rt1 --hdf5 "$WORK/rt1.hdf5" --expect "$WORK/rt1.npz"
stage_end

echo "TFDS check passed in $(( $(date +%s) - T0 )) s"
