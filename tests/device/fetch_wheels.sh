#!/usr/bin/env bash
# Download what check.sh installs on a GPU machine without network: MPICH, mpi4py,
# array-api-compat and SciPy wheels for CPython 3.12 on x86-64 Linux, into tests/device/wheels/
# (git-ignored). Run it on a machine with network; then carry the folder to the GPU machine.
set -euo pipefail
cd "$(dirname "$0")"
python3 -m pip download --quiet --only-binary=:all: --no-deps --python-version 3.12 \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    --platform manylinux_2_28_x86_64 -d wheels mpich mpi4py array-api-compat scipy
ls -l wheels
