#!/usr/bin/env bash
# The MPI suite at 4 ranks and the default app under Open MPI, as most clusters run it: Debian's
# openmpi-bin and libopenmpi-dev, and mpi4py compiled against them in a virtual environment of its
# own (VENV, default .venv-openmpi; made when missing). .ci/run calls this after tests/run_all.sh.
# Extra arguments go to pytest.
#
# Environment: VENV; MPICOMP_TORCH (a pip requirement for PyTorch installed before the test
# extra, e.g. torch==2.13.0 for a CPU build held locally; default: what the extra resolves); MPIRUN (default mpirun.openmpi on PATH, else /usr/bin/mpirun.openmpi);
# MPICOMP_SUITE_TIMEOUT (seconds for the MPI suite, default 1200); MPICOMP_APT=0 skips the
# apt-get install of Open MPI when it is missing (it needs root).
set -euo pipefail
cd "$(dirname "$0")/.."

venv=${VENV:-.venv-openmpi}
limit=${MPICOMP_SUITE_TIMEOUT:-1200}
export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 MKL_NUM_THREADS=1 NUMBA_NUM_THREADS=1

if ! command -v mpicc.openmpi >/dev/null || ! command -v mpirun.openmpi >/dev/null; then
    [[ ${MPICOMP_APT:-1} == 1 ]] || { echo "=== Open MPI is not installed" >&2; exit 1; }
    echo "=== installing Open MPI (Debian's openmpi-bin, libopenmpi-dev)"
    apt-get update -q >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q openmpi-bin libopenmpi-dev >/dev/null
fi
mpirun=${MPIRUN:-$(command -v mpirun.openmpi)}

if [[ ! -x $venv/bin/python ]] || ! "$venv/bin/python" -c 'from mpi4py import MPI' 2>/dev/null; then
    echo "=== $venv: mpi4py compiled against Open MPI, and mpicomp with its test extra"
    rm -rf "$venv"
    "${PYTHON:-python3}" -m venv "$venv"
    # MPICC: the Open MPI compiler wrapper, whatever other MPI an active environment puts first
    # on PATH; no cache, so a wheel built against another MPI is never reused
    MPICC=$(command -v mpicc.openmpi) "$venv/bin/python" -m pip install --quiet --no-cache-dir \
        --no-binary=mpi4py mpi4py
    [[ -z ${MPICOMP_TORCH:-} ]] || "$venv/bin/python" -m pip install --quiet "$MPICOMP_TORCH"
    "$venv/bin/python" -m pip install --quiet -e '.[test]'
fi
python=$(cd "$venv" && pwd)/bin/python
library=$("$python" -c 'from mpi4py import MPI; print(MPI.Get_library_version().split(",")[0])')
echo "=== MPI library: $library"
[[ $library == "Open MPI"* ]] || { echo "=== $venv's mpi4py does not use Open MPI" >&2; exit 1; }

# root (CI, containers) and more ranks than cores both need Open MPI's consent
launch=("$mpirun" --allow-run-as-root --oversubscribe)

echo "=== Open MPI, MPI suite on 4 ranks"
timeout -k 30 "$limit" "${launch[@]}" -n 4 "$python" -m pytest -q --color=no --with-mpi --only-mpi "$@"

echo "=== Open MPI, the default app on 4 ranks"
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
(cd "$out" && timeout -k 30 300 "${launch[@]}" -n 4 "$python" -m mpicomp.apps.diana)
"$python" - "$out/diana.h5" <<'EOF'
import sys
from mpicomp.trace import read_trace
t = read_trace(sys.argv[1])
assert t.status == "finished" and t.world_size == 4, (t.status, t.world_size)
assert t.attrs["mpi_library"].startswith("Open MPI"), t.attrs["mpi_library"]
print(f"=== {sys.argv[1]}: {t.status}, {t.n_rows} rows, mpi_library {t.attrs['mpi_library']!r}")
EOF
echo "=== Open MPI stages passed"
