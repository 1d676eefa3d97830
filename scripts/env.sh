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

# Build flags (.cargo/config.toml's [build] section) or a rustc that differ from the ones the
# target dir was built with make all of it stale, and cargo keeps the old artifacts beside the
# new: the switch to x86-64-v3 doubled the dir to 59 GB and filled this machine's disk. So the
# dir starts afresh then (and once where no stamp says what built it). Call from the repo root.
prune_stale_target() {
    local stamp="$CARGO_TARGET_DIR/.vela-build-flags" want
    want="$(rustc -V 2>/dev/null); $(sed -n '/^\[build\]/,/^\[/p' .cargo/config.toml | grep -v '^#' | tr -s '\n' ' ')"
    if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ] && { [ -d "$CARGO_TARGET_DIR/debug" ] || [ -d "$CARGO_TARGET_DIR/release" ]; }; then
        echo "==> build flags or rustc changed since $CARGO_TARGET_DIR was built: removing its stale debug/ and release/"
        rm -rf "$CARGO_TARGET_DIR/debug" "$CARGO_TARGET_DIR/release"
    fi
    mkdir -p "$CARGO_TARGET_DIR" && printf '%s' "$want" >"$stamp"
}

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
