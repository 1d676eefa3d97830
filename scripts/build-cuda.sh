#!/usr/bin/env bash
# Builds the CUDA flavour of `vela` on a machine without a GPU or a CUDA install, and
# stages it for the GPU machine in .gpu/ (git-ignored; carried by the device tool).
#
# The CUDA 13.0 toolkit is assembled from PyPI wheels (by package name, through pip) into
# $VELA_CACHE/cuda13/cuda, with a link-time stub libcuda.so: the real driver library comes
# from the GPU machine. All wheels are pinned to 13.0.x so the PTX suits driver 580.
# Kernels are built for sm_90 (H100/H200) only. CI never runs this.
#
# Usage: scripts/build-cuda.sh            (cold build ~25 min on 2 cores; then seconds)
# Result: .gpu/vela.xz (stripped), .gpu/bundle.tar.xz (libmujoco, robosuite assets, tokenizer, debs),
# .gpu/unpack.sh, .gpu/gpu-bench.sh, .gpu/gpu-train.sh and the two benchmarks/*.py they run there
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/env.sh
ROOT=$(pwd)
CUDA_CACHE="$VELA_CACHE/cuda13"
export CUDA_HOME="$CUDA_CACHE/cuda"

toolkit() {
    [ -x "$CUDA_HOME/bin/nvcc" ] && [ -f "$CUDA_HOME/lib/stubs/libcuda.so" ] && return 0
    need_apt gcc python3-pip
    mkdir -p "$CUDA_CACHE/wheels" "$CUDA_CACHE/unpacked"
    pip download --no-deps -q -d "$CUDA_CACHE/wheels" \
        nvidia-cuda-nvcc==13.0.88 nvidia-cuda-crt==13.0.88 nvidia-nvvm==13.0.88 \
        nvidia-cuda-runtime==13.0.96 nvidia-cuda-cccl==13.0.85 nvidia-cuda-nvrtc==13.0.88 \
        nvidia-cublas==13.0.2.14 nvidia-curand==10.4.0.35
    for w in "$CUDA_CACHE"/wheels/*.whl; do python3 -m zipfile -e "$w" "$CUDA_CACHE/unpacked/"; done
    rm -rf "$CUDA_HOME" && cp -a "$CUDA_CACHE/unpacked/nvidia/cu13" "$CUDA_HOME"
    chmod +x "$CUDA_HOME"/bin/* "$CUDA_HOME/nvvm/bin/cicc"
    ln -sfn lib "$CUDA_HOME/lib64"
    (cd "$CUDA_HOME/lib" && for f in libcudart.so.13 libcublas.so.13 libcublasLt.so.13 libnvrtc.so.13 libcurand.so.10 libnvvm.so.4; do
        ln -sf "$f" "${f%.so.*}.so"; done)
    # Stub driver library: one dummy for every cu* symbol that cudarc or cuda.h declares.
    cargo fetch -q
    local cudarc
    cudarc=$(ls -d "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/cudarc-"$(awk '/name = "cudarc"/{getline; print $3}' Cargo.lock | tr -d '"')" | head -1)
    mkdir -p "$CUDA_HOME/lib/stubs"
    {
        grep -ohE '^pub unsafe fn cu[A-Za-z0-9_]+' "$cudarc"/src/driver/sys/*.rs | awk '{print $4}'
        gcc -E -P -I "$CUDA_HOME/include" "$CUDA_HOME/include/cuda.h" | grep -oE '\bcu[A-Z][A-Za-z0-9_]*[[:space:]]*\(' | tr -d ' ('
    } | sort -u | awk '{print "int " $1 "(void){return 999;}"}' > "$CUDA_CACHE/cuda_stub.c"
    gcc -shared -fPIC -Wl,-soname,libcuda.so.1 -o "$CUDA_HOME/lib/stubs/libcuda.so" "$CUDA_CACHE/cuda_stub.c"
    "$CUDA_HOME/bin/nvcc" --version | tail -1
}

stage_start "CUDA 13.0 toolkit"
toolkit
stage_end

# What the build links (libhdf5, libmujoco, OpenH264's nasm, whisper.cpp's cmake) and what the
# bundle carries (robosuite assets, tokenizer): the same idempotent steps scripts/setup.sh runs,
# so this works on a fresh machine too (the studio UI and dora are not needed).
need_apt pkg-config fonts-dejavu-core cmake g++
for s in setup-data setup-mujoco setup-media setup-tokenizer; do
    stage_start "setup: $s.sh"
    bash "scripts/$s.sh"
    stage_end
done
. scripts/env.sh   # MUJOCO_DYNAMIC_LINK_DIR, now that the library is there

stage_start "cargo build --release --features cuda (vela)"
export CARGO_TARGET_DIR="$VELA_CACHE/target-cuda"
export CUDA_PATH="$CUDA_HOME" PATH="$CUDA_HOME/bin:$PATH" CUDA_COMPUTE_CAP=90
# candle-kernels compiles ~15 large quantized-matmul units one at a time by default; run them
# side by side (each nvcc needs about 1 GB of memory).
export CUDAFORGE_THREADS="${CUDAFORGE_THREADS:-6}"
export LIBRARY_PATH="$CUDA_HOME/lib:$CUDA_HOME/lib/stubs${LIBRARY_PATH:+:$LIBRARY_PATH}"
# The GPU machine's CUDA libraries first, then whatever is staged next to the binary.
export RUSTFLAGS='-C link-arg=-Wl,-rpath,/usr/local/cuda/lib64:/usr/local/cuda/targets/x86_64-linux/lib:$ORIGIN/lib'
cargo build --release --features cuda --bin vela
stage_end

stage_start "stage .gpu/"
# The device tool carries at most 64 MiB, shipped model included, so everything travels
# xz-compressed (about 21 MB): .gpu/vela.xz, and .gpu/bundle.tar.xz with libmujoco, the
# robosuite assets subset, the Llama tokenizer and the Debian packages the GPU machine lacks
# (libglvnd, which NVIDIA's EGL driver plugs into, and fonts-dejavu-core, TextOverlay's font).
# .gpu/unpack.sh, sourced by gpu-bench.sh and gpu-train.sh there, unpacks them once.
STAGE="$VELA_CACHE/gpu-stage"
rm -rf "$STAGE" && mkdir -p "$STAGE/lib" "$STAGE/gl" "$STAGE/cache/tokenizer"
cp -L "$MUJOCO_DYNAMIC_LINK_DIR"/libmujoco.so.* "$STAGE/lib/"
[ -f "$VELA_CACHE/mujoco/assets/.stamp" ] || bash scripts/setup-mujoco.sh
cp -a "$VELA_CACHE/mujoco/assets" "$STAGE/assets"
DEBS="$VELA_CACHE/gpu-debs"
mkdir -p "$DEBS"
(cd "$DEBS" && [ -n "$(ls ./fonts-dejavu-core*.deb 2>/dev/null)" ] ||
    apt-get download -q libglvnd0 libegl1 libgl1 libgles2 libglx0 libopengl0 fonts-dejavu-core)
cp "$DEBS"/*.deb "$STAGE/gl/"
# The Llama tokenizer (scripts/setup-tokenizer.sh), so prompts have their real length there.
[ -f "$VELA_CACHE/tokenizer/tokenizer.json" ] && cp "$VELA_CACHE/tokenizer/tokenizer.json" "$STAGE/cache/tokenizer/"
rm -rf .gpu && mkdir -p .gpu
cp "$CARGO_TARGET_DIR/release/vela" "$STAGE/vela" && strip "$STAGE/vela"
xz -6 -T0 -c "$STAGE/vela" > .gpu/vela.xz && rm "$STAGE/vela"
tar cf - -C "$STAGE" lib assets gl cache | xz -6 -T0 -c > .gpu/bundle.tar.xz
cp scripts/gpu-unpack.sh .gpu/unpack.sh
cp scripts/gpu-bench.sh scripts/gpu-train.sh benchmarks/openvla_torch.py benchmarks/gpu_report.py .gpu/
bash scripts/build-kprof.sh > /dev/null
ls -la .gpu
stage_end
