#!/usr/bin/env bash
# Installs the dora CLI (PyPI `dora-rs-cli`, the prebuilt `dora` binary) into
# $VELA_CACHE/dora-cli, pinned to the version of the dora crates vela-dora links:
# dora rejects nodes, daemons and CLIs of different versions. About 10 s and 150 MB
# (the wheel pulls dora-rs, pyarrow, numpy and uv along). Nothing is fetched at run time;
# `vela dora run` and the vela-dora tests find it there (or via $VELA_DORA_CLI / PATH).
set -euo pipefail
HERE="$(cd "$(dirname "$0")/.." && pwd)"
. "$HERE/scripts/env.sh"

DORA_VERSION=1.1.0
DIR="$VELA_CACHE/dora-cli"
if [ -x "$DIR/bin/dora" ] && "$DIR/bin/dora" --version 2>/dev/null | grep -qx "dora-cli $DORA_VERSION"; then
    echo "dora CLI $DORA_VERSION present in $DIR"
    exit 0
fi
if ! python3 -c 'import sys, venv; assert sys.version_info >= (3, 11)' 2>/dev/null; then
    need_apt python3-venv
fi
rm -rf "$DIR"
python3 -m venv "$DIR"
"$DIR/bin/pip" install --quiet --disable-pip-version-check "dora-rs-cli==$DORA_VERSION" "dora-rs==$DORA_VERSION"
"$DIR/bin/dora" --version
