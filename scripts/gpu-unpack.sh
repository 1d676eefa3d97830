# Sourced by gpu-bench.sh and gpu-train.sh on the GPU machine (staged as .gpu/unpack.sh by
# scripts/build-cuda.sh): unpacks the xz-compressed binary and bundle once, installs the bundled
# Debian packages, and sets the environment the binary needs. Expects $G (the folder this file
# is in). Python's lzma does the unpacking: the machine may lack xz.
#
# The unpacked files live outside the repository copy ($VELA_GPU_HOME): the device tool
# replaces the carried .gpu/ on every call, and a training run that outlives its call still
# reads the tokenizer and assets (a run died at its first export when they vanished).
U=${VELA_GPU_HOME:-/tmp/vela-gpu}
sum=$(cat "$G/vela.xz" "$G/bundle.tar.xz" | md5sum | cut -c1-32)
if [ ! -x "$U/vela" ] || [ "$(cat "$U/.stamp" 2>/dev/null)" != "$sum" ]; then
    # A new build goes to a fresh folder; a run still using the old one keeps its files.
    [ -d "$U" ] && mv "$U" "$U.old.$(date +%s)"
    mkdir -p "$U"
    python3 - "$G" "$U" <<'PY'
import lzma, shutil, sys, tarfile
g, u = sys.argv[1:]
with lzma.open(f"{g}/vela.xz") as src, open(f"{u}/vela", "wb") as dst:
    shutil.copyfileobj(src, dst)
with tarfile.open(f"{g}/bundle.tar.xz") as t:
    t.extractall(u)
PY
    chmod +x "$U/vela"
    for f in "$U"/gl/*.deb; do dpkg -x "$f" /; done
    ldconfig
    echo "$sum" > "$U/.stamp"
fi
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:/usr/local/nvidia/lib64:$U/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
export VELA_MUJOCO_ASSETS=$U/assets
export VELA_CACHE=${VELA_CACHE:-$U/cache}
# NVIDIA's EGL vendor file: libglvnd finds the driver's EGL through it (headless rendering).
export __EGL_VENDOR_LIBRARY_FILENAMES=/usr/local/nvidia/share/glvnd/egl_vendor.d/10_nvidia.json
VELA="$U/vela"
