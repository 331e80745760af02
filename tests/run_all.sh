#!/usr/bin/env bash
# The whole test suite: the serial tests, then the MPI tests on 4, 3 (an odd size), 2 and 1 ranks.
# README and .ci/run both call this script. Extra arguments go to every pytest run
# (e.g. tests/run_all.sh -k qsgd). Exits non-zero when any test fails on any rank.
#
# Environment: MPIEXEC (default: mpiexec on PATH, else next to python), PYTHON (default: python),
# MPICOMP_SUITE_TIMEOUT (seconds per MPI run, default 1200), MPICOMP_TEST_TIMEOUT (seconds per
# test before the harness watchdog aborts the MPI job, default 300).
set -euo pipefail
cd "$(dirname "$0")/.."

export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 MKL_NUM_THREADS=1 NUMEXPR_NUM_THREADS=1 \
       NUMBA_NUM_THREADS=1 VECLIB_MAXIMUM_THREADS=1
python=${PYTHON:-python}
mpiexec=${MPIEXEC:-$(command -v mpiexec || echo "$("$python" -c 'import os, sys; print(os.path.dirname(sys.executable))')/mpiexec")}
limit=${MPICOMP_SUITE_TIMEOUT:-1200}
ran=0
n_args=$#

# stage NAME CMD...: run CMD. pytest's exit 5 (no tests collected) fails the suite unless extra
# pytest arguments (a filter) were given, in which case that stage is only noted.
stage() {
    local name=$1 rc=0
    shift
    echo "=== $name: $*"
    "$@" || rc=$?
    case $rc in
        0) ran=$((ran + 1)) ;;
        5) echo "=== $name: no tests collected (pytest exit 5)" >&2
           [[ $n_args -gt 0 ]] || exit 5 ;;
        124|137) echo "=== $name: timed out after $limit s (MPICOMP_SUITE_TIMEOUT)" >&2; exit "$rc" ;;
        *) echo "=== $name: failed (exit $rc)" >&2; exit "$rc" ;;
    esac
}

stage "serial" "$python" -m pytest -q "$@"
for n in 4 3 2 1; do
    stage "MPI, $n ranks" timeout -k 30 "$limit" \
        "$mpiexec" -n "$n" "$python" -m pytest -q --with-mpi --only-mpi "$@"
done
[[ $ran -gt 0 ]] || { echo "=== no stage collected any test" >&2; exit 5; }
echo "=== all test stages passed"
