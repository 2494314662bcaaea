#!/usr/bin/env bash
# Create a separate virtual environment with equipot's peers (MACE, NequIP, SchNetPack), so the
# benchmarks time them in the same run as equipot without touching equipot's own environment.
#
#   bash benchmarks/peers_env.sh [VENV_DIR]           # default: ./peers-venv
#   VENV_DIR/bin/python benchmarks/speed.py --peers   # then run any benchmark with that python
#
# Each peer is installed on its own; one that fails is reported and the others go on (the
# benchmark scripts say which peer is missing when they run). Known conflicts, handled here:
# - mace-torch pins e3nn==0.4.4 and nequip needs e3nn>=0.6: nequip is installed last, so e3nn is
#   0.6; pip prints a conflict, but MACE runs on it: `python benchmarks/peers.py` (run at the
#   end) checks each peer's float64 forces and that rotating ethanol changes its energy by less
#   than 1e-8 eV (measured: 1e-15 eV for MACE on e3nn 0.6).
# - schnetpack 2.1 pins sympy<=1.12, which torch 2.13 cannot use (pip then backtracks through
#   gigabytes of older torch wheels): it is installed with --no-deps plus its runtime deps.
#   It also imports a private torch name (T_co) that peers.py restores before importing it.
set -u
VENV=${1:-peers-venv}
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PY=${PYTHON:-python3}

if [ ! -x "$VENV/bin/python" ]; then
    "$PY" -m venv "$VENV" || { echo "could not create venv $VENV" >&2; exit 1; }
fi
PIP="$VENV/bin/python -m pip"
$PIP install -q --upgrade pip wheel setuptools
# The CPU build of torch 2.13 (on a GPU machine install the CUDA build you want instead).
$PIP install "torch==2.13.0" || { echo "torch install failed" >&2; exit 1; }
$PIP install -e "$REPO" || { echo "equipot install failed" >&2; exit 1; }

failed=()
install() {  # install NAME ARGS...: report failure, go on
    local name=$1; shift
    echo "== installing $name"
    if ! $PIP install "torch==2.13.0" "$@"; then
        echo "!! $name could not be installed" >&2
        failed+=("$name")
    fi
}
install mace-torch mace-torch
install nequip nequip
install schnetpack --no-deps schnetpack
install schnetpack-deps "numpy>=2" ase h5py pyyaml tqdm protobuf matscipy hydra-core hydra-colorlog \
    pytorch-lightning torchmetrics rich fasteners dirsync torch-ema tensorboardX

echo "== peer status"
cd "$REPO" && "$VENV/bin/python" benchmarks/peers.py
if [ ${#failed[@]} -gt 0 ]; then
    echo "failed to install: ${failed[*]}"
fi
