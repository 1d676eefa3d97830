# Sourced by gpu-bench.sh and gpu-train.sh on the GPU machine (staged as .gpu/unpack.sh by
# scripts/build-cuda.sh): unpacks the xz-compressed binary and bundle next to it once, installs
# the bundled Debian packages, and sets the environment the binary needs. Expects $G (the
# folder this file is in). Python's lzma does the unpacking: the machine may lack xz.
if [ ! -x "$G/vela" ] || [ "$G/vela.xz" -nt "$G/vela" ]; then
    python3 - "$G" <<'PY'
import lzma, shutil, sys, tarfile
g = sys.argv[1]
with lzma.open(f"{g}/vela.xz") as src, open(f"{g}/vela", "wb") as dst:
    shutil.copyfileobj(src, dst)
with tarfile.open(f"{g}/bundle.tar.xz") as t:
    t.extractall(g)
PY
    chmod +x "$G/vela"
    for f in "$G"/gl/*.deb; do dpkg -x "$f" /; done
    ldconfig
fi
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:/usr/local/nvidia/lib64:$G/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
export VELA_MUJOCO_ASSETS=$G/assets
export VELA_CACHE=${VELA_CACHE:-$G/cache}
# NVIDIA's EGL vendor file: libglvnd finds the driver's EGL through it (headless rendering).
export __EGL_VENDOR_LIBRARY_FILENAMES=/usr/local/nvidia/share/glvnd/egl_vendor.d/10_nvidia.json
VELA="$G/vela"
