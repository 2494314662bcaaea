#!/usr/bin/env bash
# Build LAMMPS with what equipot's `pair_style mliap unified` interface needs, into a prefix.
#
#   tools/build_lammps.sh SRC PREFIX
#
# SRC     a LAMMPS source tree (>= "2 Aug 2023"; the folder holding cmake/, src/, python/) or a
#         .tar.gz of one.
# PREFIX  where it goes: PREFIX/bin/lmp and mpirun, PREFIX/lib/liblammps.so and libmpi,
#         PREFIX/python/lammps (the LAMMPS Python module), PREFIX/env.sh to source before running.
#
# Packages: ML-IAP with its Python coupling (MLIAP_ENABLE_PYTHON), ML-SNAP (ML-IAP needs it),
# PYTHON; MPI from the PyPI `mpich` wheel (mpicc, mpicxx, mpirun, libmpi) and Cython from PyPI,
# both installed into PREFIX with `pip --prefix` so that no virtual environment is needed.
#
# The Python that LAMMPS embeds is the one this script finds as $PYTHON (default: python3 on
# PATH): LAMMPS links its libpython, and at run time the embedded interpreter must import torch
# and equipot, so build with the Python you run equipot with. env.sh puts that Python's folder
# first on PATH, which is how an embedded interpreter finds its site-packages (and a virtual
# environment's pyvenv.cfg).
#
# Environment: PYTHON (see above), JOBS (parallel compile jobs, default 2).
# Needs: cmake >= 3.16, a C++11 compiler (gcc), pip access to PyPI (mpich, cython); exits with
# status 3 when one of them is missing.
# Time: 4-10 minutes on 2 cores (measured 3.8 min on a quiet machine, 9 min under load).
set -euo pipefail

if [ $# -ne 2 ]; then
    echo "usage: $0 SRC PREFIX   (SRC: LAMMPS source folder or .tar.gz; PREFIX: install folder)" >&2
    exit 2
fi
SRC=$1
PREFIX=$2
JOBS=${JOBS:-2}
PYTHON=$(command -v "${PYTHON:-python3}") || { echo "error: no Python '${PYTHON:-python3}' on PATH" >&2; exit 1; }
# The real interpreter, not a wrapper such as a pyenv shim.
PYTHON=$("$PYTHON" -c 'import sys; print(sys.executable)')

mkdir -p "$PREFIX"
PREFIX=$(cd "$PREFIX" && pwd)
WORK="$PREFIX/_build"
rm -rf "$WORK"
mkdir -p "$WORK"

if [ -f "$SRC" ]; then
    echo "== unpacking $SRC"
    tar xzf "$SRC" -C "$WORK"
    SRCDIR=$(find "$WORK" -mindepth 2 -maxdepth 2 -type d -name cmake -printf '%h\n' | head -n 1)
elif [ -d "$SRC" ]; then
    SRCDIR=$(cd "$SRC" && pwd)
else
    echo "error: LAMMPS source '$SRC' is neither a folder nor a file" >&2
    exit 1
fi
if [ -z "$SRCDIR" ] || [ ! -f "$SRCDIR/cmake/CMakeLists.txt" ] || [ ! -f "$SRCDIR/src/ML-IAP/mliap_unified.cpp" ]; then
    echo "error: '$SRC' is not a LAMMPS source tree with ML-IAP (cmake/CMakeLists.txt, src/ML-IAP/mliap_unified.cpp)" >&2
    exit 1
fi

read -r PYVER PYLIBDIR PYSHARED < <("$PYTHON" -c 'import sys, sysconfig as s
print(f"{sys.version_info[0]}.{sys.version_info[1]}", s.get_config_var("LIBDIR"), s.get_config_var("Py_ENABLE_SHARED"))')
if [ "$PYSHARED" != "1" ]; then
    echo "warning: $PYTHON was not built with --enable-shared; LAMMPS needs libpython$PYVER.so" >&2
fi
"$PYTHON" -c 'import numpy' || { echo "error: $PYTHON cannot import numpy (LAMMPS's ML-IAP build needs it)" >&2; exit 1; }

echo "== mpich and cython from PyPI into $PREFIX"
# Exit status 3: a prerequisite could not be had (no PyPI access, no cmake or compiler); the
# test suite skips on it instead of failing.
for tool in cmake "${CXX:-g++}" "${CC:-gcc}" make; do
    command -v "$tool" > /dev/null || { echo "error: '$tool' not found (needed to build LAMMPS)" >&2; exit 3; }
done
"$PYTHON" -m pip install --quiet --disable-pip-version-check --ignore-installed --prefix "$PREFIX" mpich cython \
    || { echo "error: could not install mpich and cython from PyPI into $PREFIX" >&2; exit 3; }
SITE=$("$PYTHON" -c 'import sys, sysconfig; print(sysconfig.get_path("purelib", vars={"base": sys.argv[1], "platbase": sys.argv[1]}))' "$PREFIX")
export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
export LD_LIBRARY_PATH="$PREFIX/lib:$PYLIBDIR${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export PATH="$PREFIX/bin:$PATH"

echo "== configuring LAMMPS from $SRCDIR with $PYTHON"
# The binaries get their final run path at build time, so lmp runs from PREFIX/bin without
# LD_LIBRARY_PATH.
cmake -S "$SRCDIR/cmake" -B "$WORK/build" -D CMAKE_BUILD_TYPE=Release \
    -D BUILD_MPI=on -D MPI_C_COMPILER="$PREFIX/bin/mpicc" -D MPI_CXX_COMPILER="$PREFIX/bin/mpicxx" \
    -D BUILD_OMP=off -D BUILD_SHARED_LIBS=on -D LAMMPS_EXCEPTIONS=on \
    -D PKG_ML-SNAP=on -D PKG_ML-IAP=on -D PKG_PYTHON=on -D MLIAP_ENABLE_PYTHON=on \
    -D Python_EXECUTABLE="$PYTHON" -D Cythonize_EXECUTABLE="$PREFIX/bin/cythonize" \
    -D WITH_JPEG=off -D WITH_PNG=off -D WITH_FFMPEG=off -D WITH_GZIP=off \
    -D CMAKE_BUILD_WITH_INSTALL_RPATH=on -D CMAKE_INSTALL_RPATH="$PREFIX/lib;$PYLIBDIR" \
    > "$WORK/configure.log" || { tail -n 40 "$WORK/configure.log" >&2; exit 1; }

echo "== building (-j $JOBS; log in $WORK/build.log)"
cmake --build "$WORK/build" -j "$JOBS" > "$WORK/build.log" 2>&1 || { tail -n 40 "$WORK/build.log" >&2; exit 1; }

echo "== installing into $PREFIX"
mkdir -p "$PREFIX/bin" "$PREFIX/lib" "$PREFIX/python"
cp "$WORK/build/lmp" "$PREFIX/bin/lmp"
cp -P "$WORK/build"/liblammps.so* "$PREFIX/lib/"
rm -rf "$PREFIX/python/lammps"
cp -r "$SRCDIR/python/lammps" "$PREFIX/python/lammps"
cp "$SRCDIR/LICENSE" "$PREFIX/LICENSE-LAMMPS" 2>/dev/null || true

cat > "$PREFIX/env.sh" <<EOF
# Source this before running LAMMPS built by equipot's tools/build_lammps.sh.
export PATH="$(dirname "$PYTHON"):$PREFIX/bin\${PATH:+:\$PATH}"
export LD_LIBRARY_PATH="$PREFIX/lib:$PYLIBDIR\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}"
export PYTHONPATH="$PREFIX/python\${PYTHONPATH:+:\$PYTHONPATH}"
EOF

echo "== checking"
( . "$PREFIX/env.sh" && echo 'info configuration' | "$PREFIX/bin/lmp" -nocite -log none -screen none \
    && "$PYTHON" -c 'import lammps.mliap' ) || { echo "error: the built LAMMPS does not start" >&2; exit 1; }
rm -rf "$WORK"
echo "== done: LAMMPS in $PREFIX (source $PREFIX/env.sh)"
