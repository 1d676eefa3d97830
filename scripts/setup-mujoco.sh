#!/usr/bin/env bash
# Prepares everything the simulator (nodes/sim, crate vela-sim) needs at build
# and run time, in a cache folder outside git:
#   $VELA_CACHE/mujoco/lib/      libmujoco.so.3.17.0 (+ libmujoco.so link for mujoco-rs' build.rs)
#   $VELA_CACHE/mujoco/assets/   the subset of robosuite's MJCF/mesh/texture assets that Stack needs
# Sources are PyPI wheels fetched by package name with pip and checked against
# pinned sha256 sums. Idempotent: a second run only checks and prints the env.
#
# Options:
#   --full-meshes   keep robosuite's 37 MB of visual meshes (slower rendering)
#   --no-apt        do not install the Debian EGL/Mesa packages
#   --print-env     only print the environment lines (after checking the cache)
set -euo pipefail

MUJOCO_VERSION=3.17.0
MUJOCO_WHEEL_SHA=d66928d86a2d1b601bbaa4dc11db50214d17d5301bb8afd84721313b67ff0874
ROBOSUITE_VERSION=1.5.2
ROBOSUITE_WHEEL_SHA=b9e02df55de8949739de6ba1d196d2ba59cf33c51a76efcfbe5c2f73cdcf99ce
DECIMATE_VERSION=0.2.0   # PyPI fast-simplification, used once to shrink visual meshes
DECIMATE_RATIO=0.1
# Bump when the asset layout or processing changes so old caches are rebuilt.
LAYOUT_STAMP="vela-sim-assets-v2"

FULL_MESHES=0
DO_APT=1
PRINT_ONLY=0
for a in "$@"; do
  case "$a" in
    --full-meshes) FULL_MESHES=1 ;;
    --no-apt) DO_APT=0 ;;
    --print-env) PRINT_ONLY=1 ;;
    -h|--help) sed -n 2,15p "$0"; exit 0 ;;
    *) echo "setup-mujoco: unknown option $a" >&2; exit 2 ;;
  esac
done

CACHE_ROOT="${VELA_CACHE:-$HOME/.cache/vela}"
mkdir -p "$CACHE_ROOT"
CACHE_ROOT="$(cd "$CACHE_ROOT" && pwd)"   # MUJOCO_DYNAMIC_LINK_DIR must be absolute
MJ="$CACHE_ROOT/mujoco"
DL="$MJ/dl"
LIB="$MJ/lib"
ASSETS="$MJ/assets"
log() { echo "setup-mujoco: $*" >&2; }

print_env() {
  cat <<EOF
export VELA_MUJOCO_ASSETS=$ASSETS
export MUJOCO_DYNAMIC_LINK_DIR=$LIB
export LD_LIBRARY_PATH=$LIB\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}
EOF
}

check_sha() { # file expected
  local got
  got=$(sha256sum "$1" | cut -d' ' -f1)
  if [ "$got" != "$2" ]; then
    log "sha256 mismatch for $1: got $got, expected $2"
    return 1
  fi
}

fetch_wheel() { # name version sha -> prints path
  local name=$1 ver=$2 sha=$3 whl
  mkdir -p "$DL"
  whl=$(ls "$DL"/"${name}"-"${ver}"-*.whl 2>/dev/null | head -1 || true)
  if [ -z "$whl" ] || ! check_sha "$whl" "$sha" 2>/dev/null; then
    [ -n "$whl" ] && rm -f "$whl"
    log "downloading $name==$ver with pip"
    python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.11 \
      --platform manylinux_2_28_x86_64 -d "$DL" "$name==$ver" >&2
    whl=$(ls "$DL"/"${name}"-"${ver}"-*.whl | head -1)
  fi
  check_sha "$whl" "$sha"
  echo "$whl"
}

ensure_apt() {
  [ "$DO_APT" = 1 ] || return 0
  local missing=()
  for p in libegl1 libegl-mesa0 libgl1-mesa-dri; do
    dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    log "installing Debian packages: ${missing[*]}"
    if [ "$(id -u)" = 0 ]; then
      apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >&2
    else
      sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >&2
    fi
  fi
}

ensure_lib() {
  if [ -f "$LIB/libmujoco.so.$MUJOCO_VERSION" ] && [ -L "$LIB/libmujoco.so" ]; then return 0; fi
  local whl tmp
  whl=$(fetch_wheel mujoco "$MUJOCO_VERSION" "$MUJOCO_WHEEL_SHA")
  tmp=$(mktemp -d)
  python3 - "$whl" "$tmp" <<'PY'
import sys, zipfile
z = zipfile.ZipFile(sys.argv[1])
z.extract("mujoco/libmujoco.so.3.17.0", sys.argv[2])
PY
  mkdir -p "$LIB"
  mv "$tmp/mujoco/libmujoco.so.$MUJOCO_VERSION" "$LIB/"
  ln -sfn "libmujoco.so.$MUJOCO_VERSION" "$LIB/libmujoco.so"
  rm -rf "$tmp"
  log "libmujoco $MUJOCO_VERSION in $LIB"
}

ensure_assets() {
  local want="$LAYOUT_STAMP full=$FULL_MESHES"
  if [ -f "$ASSETS/.stamp" ] && [ "$(cat "$ASSETS/.stamp")" = "$want" ]; then return 0; fi
  local whl tmp
  whl=$(fetch_wheel robosuite "$ROBOSUITE_VERSION" "$ROBOSUITE_WHEEL_SHA")
  tmp="$ASSETS.tmp"
  rm -rf "$tmp"
  mkdir -p "$tmp"
  # Only the files Stack needs, keeping robosuite's relative layout so the
  # MJCF files' own mesh/texture paths stay valid.
  python3 - "$whl" "$tmp" <<'PY'
import sys, zipfile
whl, out = sys.argv[1], sys.argv[2]
pre = "robosuite/models/assets/"
keep_dirs = ["robots/panda/meshes/", "robots/panda/obj_meshes/"]
keep_files = {
    "robots/panda/robot.xml",
    "grippers/panda_gripper.xml",
    "bases/rethink_mount.xml",
    "bases/meshes/rethink_mount/pedestal.stl",
    "arenas/table_arena.xml",
}
for m in ["hand", "hand_vis", "finger", "finger_vis", "finger_longer"]:
    keep_files.add(f"grippers/meshes/panda_gripper/{m}.stl")
for t in ["ceramic", "light-gray-floor-tile", "steel-brushed", "light-gray-plaster",
          "red-wood", "green-wood", "blue-wood", "light-wood"]:
    keep_files.add(f"textures/{t}.png")
z = zipfile.ZipFile(whl)
n = 0
for name in z.namelist():
    if not name.startswith(pre):
        continue
    rel = name[len(pre):]
    if rel in keep_files or (any(rel.startswith(d) for d in keep_dirs)
                             and (rel.endswith(".stl") or rel.endswith(".obj"))):
        data = z.read(name)
        import os
        p = os.path.join(out, rel)
        os.makedirs(os.path.dirname(p), exist_ok=True)
        with open(p, "wb") as f:
            f.write(data)
        n += 1
missing = [f for f in keep_files if not os.path.exists(os.path.join(out, f))]
if missing:
    sys.exit(f"robosuite wheel lacks {missing}")
print(f"extracted {n} asset files", file=sys.stderr)
PY
  if [ "$FULL_MESHES" = 0 ]; then
    decimate_meshes "$tmp" || {
      log "mesh decimation unavailable; keeping full meshes (rendering is ~3x slower)"
      want="$LAYOUT_STAMP full=1"
    }
  fi
  echo "$want" > "$tmp/.stamp"
  rm -rf "$ASSETS"
  mv "$tmp" "$ASSETS"
  log "assets in $ASSETS ($(du -sh "$ASSETS" | cut -f1))"
}

# Visual meshes only: collision meshes (robots/panda/meshes/*.stl) are untouched,
# so physics is identical with or without this step.
decimate_meshes() {
  local dir=$1 tools="$MJ/pytools"
  if ! PYTHONPATH="$tools" python3 -c "import fast_simplification" 2>/dev/null; then
    log "installing fast-simplification==$DECIMATE_VERSION into $tools"
    python3 -m pip install --quiet --target "$tools" "fast-simplification==$DECIMATE_VERSION" >&2 || return 1
  fi
  PYTHONPATH="$tools" python3 - "$dir" "$DECIMATE_RATIO" <<'PY'
import sys, os, glob, struct
import numpy as np
import fast_simplification
root, ratio = sys.argv[1], float(sys.argv[2])

def read_obj(path):
    verts, faces = [], []
    with open(path) as f:
        for line in f:
            if line.startswith("v "):
                verts.append([float(x) for x in line.split()[1:4]])
            elif line.startswith("f "):
                idx = [int(tok.split("/")[0]) - 1 for tok in line.split()[1:]]
                for k in range(1, len(idx) - 1):  # fan-triangulate polygons
                    faces.append([idx[0], idx[k], idx[k + 1]])
    return np.asarray(verts, dtype=np.float64), np.asarray(faces, dtype=np.int64)

def write_obj(path, v, f):
    with open(path, "w") as out:
        out.write("".join(f"v {a:.6f} {b:.6f} {c:.6f}\n" for a, b, c in v))
        out.write("".join(f"f {a+1} {b+1} {c+1}\n" for a, b, c in f))

def read_stl(path):
    data = open(path, "rb").read()
    n = struct.unpack_from("<I", data, 80)[0]
    if 84 + 50 * n != len(data):
        return None, None  # ASCII STL: leave it alone
    rec = np.frombuffer(data, dtype=np.dtype([("n", "<f4", 3), ("v", "<f4", (3, 3)), ("a", "<u2")]),
                        count=n, offset=84)
    v = rec["v"].reshape(-1, 3).astype(np.float64)
    return v, np.arange(len(v)).reshape(-1, 3)

def write_stl(path, v, f):
    tri = v[f].astype(np.float32)
    nrm = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    nrm /= np.maximum(np.linalg.norm(nrm, axis=1, keepdims=True), 1e-12)
    rec = np.zeros(len(f), dtype=np.dtype([("n", "<f4", 3), ("v", "<f4", (3, 3)), ("a", "<u2")]))
    rec["n"], rec["v"] = nrm, tri
    with open(path, "wb") as out:
        out.write(b"\0" * 80 + struct.pack("<I", len(f)) + rec.tobytes())

def simplify(v, fc):
    # Files repeat each position per face corner; weld them first or the
    # simplifier cannot collapse anything.
    uniq, inv = np.unique(np.round(v, 7), axis=0, return_inverse=True)
    fc = inv.reshape(-1)[fc]
    fc = fc[(fc[:, 0] != fc[:, 1]) & (fc[:, 1] != fc[:, 2]) & (fc[:, 0] != fc[:, 2])]
    if len(fc) <= 200:
        return uniq, fc, len(fc)
    vo, fo = fast_simplification.simplify(uniq.astype(np.float32), fc.astype(np.int32),
                                          target_reduction=1.0 - ratio)
    if len(fo) < 4:  # keep tiny parts intact rather than emptying them
        return uniq, fc, len(fc)
    return vo, fo, len(fc)

before = after = 0
# Visual meshes only: collision meshes are untouched, so physics is the same.
targets = sorted(glob.glob(os.path.join(root, "robots/panda/obj_meshes/*/*.obj")))
targets += [os.path.join(root, "bases/meshes/rethink_mount/pedestal.stl"),
            os.path.join(root, "grippers/meshes/panda_gripper/hand_vis.stl")]
for path in targets:
    v, f = read_obj(path) if path.endswith(".obj") else read_stl(path)
    if v is None:
        continue
    vo, fo, n = simplify(v, f)
    before += n
    after += len(fo)
    (write_obj if path.endswith(".obj") else write_stl)(path, vo, fo)
print(f"decimated visual meshes: {before} -> {after} triangles", file=sys.stderr)
PY
}

if [ "$PRINT_ONLY" = 0 ]; then
  ensure_apt
  ensure_lib
  ensure_assets
fi
[ -f "$LIB/libmujoco.so.$MUJOCO_VERSION" ] || { log "libmujoco missing in $LIB: run scripts/setup-mujoco.sh"; exit 1; }
[ -f "$ASSETS/.stamp" ] || { log "assets missing in $ASSETS: run scripts/setup-mujoco.sh"; exit 1; }
print_env
