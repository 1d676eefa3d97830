#!/usr/bin/env bash
# Builds benchmarks/kprof/kprof.c (a per-kernel time profile through CUPTI, for the GPU machine,
# which has no nsys) and stages it with CUPTI's library in .gpu/kprof/. scripts/build-cuda.sh
# runs this at its end; scripts/gpu-kprof.sh uses it there. CUPTI comes from the
# nvidia-cuda-cupti wheel (by package name, through pip, pinned to the toolkit's 13.0), cached
# under $VELA_CACHE/cupti.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/env.sh
C="$VELA_CACHE/cupti"
WHEEL_VERSION=13.0.85
if [ ! -f "$C/$WHEEL_VERSION/nvidia/cu13/lib/libcupti.so.13" ]; then
    need_apt gcc python3-pip xz-utils
    rm -rf "$C/$WHEEL_VERSION" && mkdir -p "$C/$WHEEL_VERSION"
    pip download --no-deps -q -d "$C/wheels" "nvidia-cuda-cupti==$WHEEL_VERSION"
    python3 -m zipfile -e "$C"/wheels/nvidia_cuda_cupti-"$WHEEL_VERSION"-*.whl "$C/$WHEEL_VERSION/"
fi
X="$C/$WHEEL_VERSION/nvidia/cu13"
CUDA_INC="$VELA_CACHE/cuda13/cuda/include"
[ -f "$CUDA_INC/cuda.h" ] || { echo "build-kprof: run scripts/build-cuda.sh first (it assembles the CUDA headers)" >&2; exit 1; }
mkdir -p .gpu/kprof
gcc -O2 -shared -fPIC -Wall -I "$X/include" -I "$CUDA_INC" benchmarks/kprof/kprof.c \
    -L "$X/lib" -l:libcupti.so.13 -Wl,-rpath,'$ORIGIN' -o .gpu/kprof/libkprof.so
xz -6 -T0 -c "$X/lib/libcupti.so.13" > .gpu/kprof/libcupti.so.13.xz
cp scripts/gpu-kprof.sh .gpu/kprof.sh
ls -la .gpu/kprof
