#!/usr/bin/env bash
# vela-data links libhdf5 (robomimic files) through the hdf5-metno crate, which finds it
# with pkg-config. Debian's libhdf5-dev (1.10.x here) is what it is built and tested against.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/env.sh
need_apt libhdf5-dev pkg-config
