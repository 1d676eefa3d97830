#!/usr/bin/env bash
# manual: TensorFlow takes ~1.8 GB; scripts/check-tfds.sh runs this on request
# (scripts/setup.sh skips scripts whose second line says "manual:").
#
# A Python venv with TensorFlow Datasets at $VELA_CACHE/tfds-venv, used only by
# scripts/check-tfds.sh and tests/tfds/check_tfds.py: Vela itself never needs Python or
# TensorFlow. Packages come from PyPI by name through pip, pinned; nothing is fetched at
# run time. Idempotent: a venv whose pins and imports check out is kept.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/env.sh

VENV="${VELA_TFDS_VENV:-$VELA_CACHE/tfds-venv}"
PYTHON="${PYTHON:-python3}"
# tensorflow-cpu 2.21 has wheels for CPython 3.10-3.13 on x86-64 Linux. TFDS 4.9.10 imports
# importlib_resources without declaring it, hence the extra pin.
PINS=(
    tensorflow-cpu==2.21.0
    tensorflow-datasets==4.9.10
    numpy==2.4.6
    h5py==3.14.0
    importlib_resources==7.1.0
)
die() { echo "setup-tfds: error: $*" >&2; exit 1; }

command -v "$PYTHON" >/dev/null || die "$PYTHON not found (install Debian's python3 and python3-venv)"
pyver=$("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
case "$pyver" in
    3.10 | 3.11 | 3.12 | 3.13) ;;
    *) die "$PYTHON is $pyver; tensorflow-cpu 2.21 needs Python 3.10-3.13 (set PYTHON=...)" ;;
esac

stamp="$VENV/vela-pins.txt"
want="python $pyver ${PINS[*]}"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] \
    && TF_CPP_MIN_LOG_LEVEL=2 "$VENV/bin/python" -c 'import tensorflow, tensorflow_datasets, h5py' 2>/dev/null; then
    echo "setup-tfds: $VENV is up to date ($want)"
    exit 0
fi

if ! "$PYTHON" -m venv --help >/dev/null 2>&1; then
    need_apt python3-venv
fi
rm -rf "$VENV"
"$PYTHON" -m venv "$VENV"
echo "setup-tfds: installing ${PINS[*]} into $VENV"
"$VENV/bin/pip" install --quiet --disable-pip-version-check "${PINS[@]}"
TF_CPP_MIN_LOG_LEVEL=2 TF_ENABLE_ONEDNN_OPTS=0 "$VENV/bin/python" - <<'EOF'
import tensorflow as tf, tensorflow_datasets as tfds, h5py
print(f"setup-tfds: tensorflow {tf.__version__}, tensorflow-datasets {tfds.__version__}, h5py {h5py.__version__}")
EOF
echo "$want" >"$stamp"
