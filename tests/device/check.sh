#!/usr/bin/env bash
# The device check: run on a machine with an NVIDIA GPU, from anywhere; about 3 minutes on one
# H200. It needs Python with NumPy, CuPy, numba-cuda and h5py; MPICH, mpi4py, array-api-compat
# and SciPy, when missing, are installed from the wheels in tests/device/wheels/ (git-ignored:
# tests/device/fetch_wheels.sh downloads them on a machine with network).
#
#   1. environment: CuPy, Numba CUDA, the driver and the GPU
#   2. GPU payload bytes == CPU bytes for every GPU operator, d up to 2^24, and decodes equal
#   3. MPI: the CUDA-aware query and a staged allgather of GPU payloads (2 ranks)
#   4. mpiexec -n 4 DIANA with --device gpu against --device cpu: final loss within 1e-6 relative
#   5. the GPU kernels' speed at d = 2^26 as ratios to a device copy (mpicomp.bench)
#   6. a PyTorch network on CuPy data: zero-copy parameters and gradients, GPU == CPU to 1e-9,
#      and 4 ranks of DCGD training LeNet with --device gpu (skipped without PyTorch on CUDA)
# Exits non-zero when a check fails; every check runs either way. Sizes for a dry run (e.g. on
# the CUDA simulator with the test suite's CuPy stand-in): MPICOMP_CHECK_MAX_D (2^24),
# MPICOMP_CHECK_ITERS (300), MPICOMP_CHECK_BENCH_D (2^26), MPICOMP_CHECK_MPI_D (100003).
set -uo pipefail
cd "$(dirname "$0")/../.."
export NUMBA_ENABLE_CUDASIM=${NUMBA_ENABLE_CUDASIM:-0} PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} OMP_NUM_THREADS=1
wheels=tests/device/wheels
out=${OUT:-$(mktemp -d)}
failed=0
step() {
    local name=$1
    shift
    echo "=== $name"
    local t0=$SECONDS
    if "$@"; then echo "=== $name: ok ($((SECONDS - t0)) s)"; else
        echo "=== $name: FAILED ($((SECONDS - t0)) s)"; failed=1; fi
}

# what the GPU machine may lack, from the wheels beside this script (it has no network)
need() { python -c "import $1" 2>/dev/null || missing+=("${@:2}"); }
missing=()
need mpi4py.MPI mpich mpi4py
need array_api_compat array-api-compat
need scipy scipy
if [[ ${#missing[@]} -gt 0 ]]; then
    echo "=== installing ${missing[*]} from $wheels"
    python -m pip install --quiet --no-index --find-links "$wheels" "${missing[@]}" \
        || echo "=== could not install them from $wheels (run tests/device/fetch_wheels.sh)"
fi
mpiexec=$(command -v mpiexec || echo "$(dirname "$(python -c 'import sys; print(sys.executable)')")/mpiexec")

step "environment" python - <<'PY'
import sys, cupy, numba, numba.cuda as cuda, numpy, h5py
print("python", sys.version.split()[0], "numpy", numpy.__version__, "cupy", cupy.__version__,
      "numba", numba.__version__, "h5py", h5py.__version__)
print("CUDA runtime", cupy.cuda.runtime.runtimeGetVersion(), "driver",
      cupy.cuda.runtime.driverGetVersion())
dev = cupy.cuda.Device(0)
print("GPU", cupy.cuda.runtime.getDeviceProperties(0)["name"].decode(), "cc", dev.compute_capability)
assert cuda.is_available(), "numba.cuda sees no GPU"
PY
step "payload bytes, GPU vs CPU" timeout 240 \
    python tests/device/gpu_check.py --max-d "${MPICOMP_CHECK_MAX_D:-16777216}"
step "MPI: CUDA-aware query, staged allgather" timeout 120 \
    "$mpiexec" -n 2 python tests/device/mpi_check.py "${MPICOMP_CHECK_MPI_D:-100003}"
diana() {
    timeout 180 "$mpiexec" -n 4 python -m apps.diana --device "$1" --dtype float64 \
        --iters "${MPICOMP_CHECK_ITERS:-300}" --compressor qsgd:s=4 --trace "$out/diana-$1.h5" \
        --overwrite --quiet
}
compare() {
    python - "$out/diana-cpu.h5" "$out/diana-gpu.h5" <<'PY'
import sys
from mpicomp.trace import read_trace
loss = [float(read_trace(p)["loss"][-1]) for p in sys.argv[1:]]
rel = abs(loss[1] - loss[0]) / abs(loss[0])
print(f"final loss: cpu {loss[0]:.17g}, gpu {loss[1]:.17g}, relative difference {rel:.2e}")
sys.exit(0 if rel <= 1e-6 else 1)
PY
}
step "DIANA --device cpu" diana cpu
step "DIANA --device gpu" diana gpu
step "DIANA: gpu vs cpu final loss" compare
step "GPU kernel speed, d = 2^26" timeout 240 python -m mpicomp.bench compressors --device gpu \
    --d "${MPICOMP_CHECK_BENCH_D:-67108864}" --json "$out/gpu-compressors.json"
step "neural network on the GPU (PyTorch via DLPack)" timeout 120 python tests/device/nn_check.py
if python -c 'import torch, sys; sys.exit(not torch.cuda.is_available())' 2>/dev/null; then
    step "4 ranks of DCGD training LeNet, --device gpu" timeout 180 "$mpiexec" -n 4 python -m \
        apps.dcgd --problem nn --model lenet --data digits --device gpu --lr 0.1 --batch 32 \
        --iters 300 --test-fraction 0.2 --trace "$out/nn-gpu.h5" --overwrite --quiet
fi
echo "=== device check: $([[ $failed == 0 ]] && echo all passed || echo FAILED)"
exit $failed
