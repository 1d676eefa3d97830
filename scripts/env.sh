# Shared settings for Vela's scripts. Sourced, not run.
# One target dir for every build of this checkout's scripts (and CI on the same machine),
# kept outside the clone so a fresh clone does not rebuild every dependency.
export VELA_CACHE="${VELA_CACHE:-$HOME/.cache/vela}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$VELA_CACHE/target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
# MuJoCo (scripts/setup-mujoco.sh puts it here): mujoco-rs links it at build time, and the
# build scripts bake its folder into the binaries' rpath.
export MUJOCO_DYNAMIC_LINK_DIR="${MUJOCO_DYNAMIC_LINK_DIR:-$VELA_CACHE/mujoco/lib}"
mkdir -p "$VELA_CACHE"

stage_start() { STAGE_NAME="$1"; STAGE_T0=$(date +%s); echo "==> $1"; }
stage_end() { echo "==> $STAGE_NAME done in $(( $(date +%s) - STAGE_T0 )) s"; }

# Installs the given Debian packages (only missing ones) or explains what to install.
apt_install() {
    [ $# -eq 0 ] && return 0
    if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
        echo "error: missing Debian packages: $* (install them with apt-get)" >&2
        return 1
    fi
    echo "installing $*"
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

# Installs whichever of the given Debian packages are not installed yet.
need_apt() {
    local missing=()
    for p in "$@"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
    apt_install "${missing[@]}"
}
