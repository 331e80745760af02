"""The GPU path end to end, without a GPU: the apps with ``--device gpu`` against the test
suite's strict CuPy stand-in (tests/standin: NumPy underneath, refusing every implicit host
conversion and counting every copy) with the GPU kernels under Numba's CUDA simulator, and the
clear errors of ``--device gpu`` and ``--gpu-aware`` where they cannot work."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mpicomp.run import EXIT_BAD_INPUT, EXIT_FINISHED
from mpicomp.trace import read_trace

REPO = Path(__file__).resolve().parents[1]
STANDIN = REPO / "tests" / "standin"
MPIEXEC = os.environ.get("MPIEXEC") or str(Path(sys.executable).with_name("mpiexec"))


def run_app(args, cwd, ranks=2, standin=False, counts=None, **extra_env):
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", **extra_env}
    if standin:
        env.update(PYTHONPATH=f"{STANDIN}{os.pathsep}{REPO}", NUMBA_ENABLE_CUDASIM="1")
    if counts is not None:
        env["MPICOMP_STANDIN_COUNTS"] = str(counts)
    cmd = [MPIEXEC, "-n", str(ranks), sys.executable, "-m", *args]
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def test_gpu_aware_with_an_mpi_that_is_not_cuda_aware_exits_2_naming_why(tmp_path):
    out = run_app(["apps.diana", "--gpu-aware", "--iters", "3"], tmp_path)
    assert out.returncode == EXIT_BAD_INPUT, out.stderr
    assert "--gpu-aware needs a CUDA-aware MPI" in out.stderr
    assert "MPIX_Query_cuda_support() returned 0" in out.stderr
    assert "Drop --gpu-aware" in out.stderr


@pytest.mark.skipif(importlib.util.find_spec("cupy") is not None, reason="CuPy is installed")
def test_device_gpu_without_cupy_exits_2_naming_the_extras(tmp_path):
    out = run_app(["apps.diana", "--device", "gpu", "--iters", "3"], tmp_path)
    assert out.returncode == EXIT_BAD_INPUT, out.stderr
    assert "mpicomp[gpu-cuda13]" in out.stderr and "mpicomp[gpu-cuda12]" in out.stderr


def test_device_gpu_without_a_usable_driver_exits_2_naming_it(tmp_path):
    out = run_app(["apps.diana", "--device", "gpu", "--iters", "3"], tmp_path, standin=True,
                  MPICOMP_STANDIN_NO_DEVICE="1")
    assert out.returncode == EXIT_BAD_INPUT, out.stderr
    assert "cannot reach a GPU: cudaErrorInsufficientDriver" in out.stderr
    assert "nvidia-smi" in out.stderr and "Traceback" not in out.stderr


def standin_run(tmp_path, name, app, iters, extra=()):
    """``app`` with --device gpu on the stand-in (2 ranks): (trace, per-rank copy counts)."""
    counts = tmp_path / f"{name}-counts"
    out = run_app([f"apps.{app}", "--device", "gpu", "--iters", str(iters), "--trace",
                   f"{name}.h5", *extra], tmp_path, standin=True, counts=counts)
    assert out.returncode == EXIT_FINISHED, out.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"{name}-counts.{r}.json").read_text()) for r in range(2)]
    return read_trace(tmp_path / f"{name}.h5"), ranks


# app, flags, exact: ℓ∞ block norms and sign / natural payloads are exact on both paths, so the
# GPU run equals the CPU run bit for bit; ℓ2 norms (choco's qsgd) and ℓ1 means (qadam's
# scaled_sign) are summed in another order on the device, which may change the last bits
GPU_APPS = [("diana", (), True), ("natural", ("--topology", "two-phase"), True),
            ("choco", (), False), ("signsgd", (), True), ("qadam", (), False)]


@pytest.mark.parametrize("app,flags,exact", GPU_APPS)
def test_an_app_on_the_gpu_stand_in_follows_its_cpu_run(tmp_path, app, flags, exact):
    iters = ["--iters", "4", "--log-every", "2"]
    cpu = run_app([f"apps.{app}", *iters, "--trace", "cpu.h5", *flags], tmp_path)
    assert cpu.returncode == EXIT_FINISHED, cpu.stderr[-3000:]
    gpu, _ = standin_run(tmp_path, "gpu", app, 4, ("--log-every", "2", *flags))
    expected = read_trace(tmp_path / "cpu.h5")
    assert gpu.n_rows == expected.n_rows == 3
    for column in ("loss", "grad_norm_sq", "bits_up", "bits_down", "wire_bytes"):
        if exact or column.startswith(("bits", "wire")):
            np.testing.assert_array_equal(gpu[column], expected[column], err_msg=column)
        else:
            np.testing.assert_allclose(gpu[column], expected[column], rtol=1e-6, err_msg=column)
    assert gpu["loss"][-1] < gpu["loss"][0]


def test_a_sparse_shard_on_the_gpu_stand_in_follows_its_cpu_run(tmp_path):
    # a LIBSVM shard becomes a cupyx.scipy.sparse CSR matrix on the device
    rng = np.random.default_rng(0)
    lines = []
    for _ in range(60):
        cols = np.sort(rng.choice(30, 5, replace=False))
        pairs = " ".join(f"{c + 1}:{rng.standard_normal():.3f}" for c in cols)
        lines.append(f"{rng.choice(['+1', '-1'])} {pairs}")
    (tmp_path / "tiny.svm").write_text("\n".join(lines) + "\n")
    flags = ("--data", "libsvm:tiny.svm", "--log-every", "2")
    cpu = run_app(["apps.diana", "--iters", "4", "--trace", "cpu.h5", *flags], tmp_path)
    assert cpu.returncode == EXIT_FINISHED, cpu.stderr[-3000:]
    gpu, _ = standin_run(tmp_path, "gpu", "diana", 4, flags)
    expected = read_trace(tmp_path / "cpu.h5")
    assert gpu.attrs["dim"] == 30 and gpu.n_rows == 3
    np.testing.assert_array_equal(gpu["loss"], expected["loss"])
    np.testing.assert_array_equal(gpu.final_x, expected.final_x)


@pytest.mark.parametrize("batch", [0, 8])
def test_a_gpu_step_moves_only_payloads_between_host_and_device(tmp_path, batch):
    # DIANA, server topology, dither:p=inf,s=1 up and the exact mean down, d = 64 float64:
    # counts of 4 steps minus counts of 2 steps (no trace row in between) = 2 steps' copies
    flags = ("--log-every", "1000", "--batch", str(batch))
    _, short = standin_run(tmp_path, "short", "diana", 2, flags)
    _, long = standin_run(tmp_path, "long", "diana", 4, flags)
    per_step = [{k: (b[k] - a[k]) / 2 for k in a} for a, b in zip(short, long)]
    up_body = 8 + 64 * 2 // 8  # the norm ν, then 2 bits a coordinate
    down_body = 64 * 8  # identity: the mean's 64 float64
    status = 16
    rows = (1, 8 * batch) if batch else (0, 0)  # a minibatch's indices go up, checked on the host
    worker = per_step[1]
    # down: its payload with the kernels' status (one copy) and the status of decoding the
    # broadcast mean; up: the mean's body. Its own message is decoded from the body the kernels
    # left on the device: no copy
    assert worker["d2h"] == 2 and worker["d2h_bytes"] == up_body + 2 * status
    assert worker["h2d"] == 1 + rows[0] and worker["h2d_bytes"] == down_body + rows[1]
    root = per_step[0]
    # the root uploads both ranks' payloads (one copy), reads the status of their mean (a slot
    # pair each), sends its downlink down with its status, and decodes that downlink where it
    # encoded it
    assert root["d2h"] == 3 and root["d2h_bytes"] == up_body + down_body + 4 * status
    assert root["h2d"] == 1 + rows[0] and root["h2d_bytes"] == 2 * up_body + rows[1]
    for rank in per_step:
        assert rank["scalar_reads"] == 0 and rank["pinned_allocs"] == 0  # buffers are reused


@pytest.mark.parametrize("resume_on", ["gpu", "cpu"])
def test_a_checkpoint_taken_on_the_gpu_resumes_on_either_device(tmp_path, resume_on):
    full = run_app(["apps.diana", "--iters", "4", "--trace", "full.h5"], tmp_path)
    assert full.returncode == EXIT_FINISHED, full.stderr[-3000:]
    standin_run(tmp_path, "part", "diana", 2, ("--checkpoint-every", "2"))
    assert (tmp_path / "part.ckpt.h5").exists()
    resumed = run_app(["apps.diana", "--iters", "4", "--checkpoint-every", "2", "--trace",
                       "part.h5", "--resume", "--device", resume_on], tmp_path,
                      standin=resume_on == "gpu")
    assert resumed.returncode == EXIT_FINISHED, resumed.stderr[-3000:]
    got, expected = read_trace(tmp_path / "part.h5"), read_trace(tmp_path / "full.h5")
    assert list(got["step"]) == [0, 4]
    # DIANA's ℓ∞ dithering is exact on both devices: the resumed run is the uninterrupted one
    np.testing.assert_array_equal(got.final_x, expected.final_x)
    np.testing.assert_array_equal(got["loss"], expected["loss"])


def test_the_device_check_scripts_run_against_the_stand_in(tmp_path):
    # what tests/device/check.sh runs on a GPU, at small d here: payload bytes, the staged
    # allgather under MPI, and the GPU compressor benchmark (whose CUDA events read 0 here)
    env = {**os.environ, "PYTHONPATH": f"{STANDIN}{os.pathsep}{REPO}",
           "NUMBA_ENABLE_CUDASIM": "1", "OMP_NUM_THREADS": "1"}

    def run(cmd):
        return subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True,
                              timeout=300)

    check = run([sys.executable, str(REPO / "tests/device/gpu_check.py"), "--max-d", "70"])
    assert check.returncode == 0, check.stdout[-3000:] + check.stderr[-3000:]
    assert "payload bytes: 0 failures" in check.stdout
    assert check.stdout.count("cases identical to the CPU's bytes and values") == 19
    mpi = run([MPIEXEC, "-n", "2", sys.executable, str(REPO / "tests/device/mpi_check.py"),
               "301"])
    assert mpi.returncode == 0, mpi.stdout[-3000:] + mpi.stderr[-3000:]
    assert mpi.stdout.count("ok   staged allgather") == 4
    bench = run([sys.executable, "-m", "mpicomp.bench", "compressors", "--device", "gpu",
                 "--d", "100", "--repeat", "1", "--json", "gpu.json"])
    assert bench.returncode == 0, bench.stderr[-3000:]
    rows = json.loads((tmp_path / "gpu.json").read_text())["rows"]
    from mpicomp.bench.gpu_compressors import DEFAULT_SPECS
    assert len(rows) == len(DEFAULT_SPECS) and rows[0]["operator"] == "identity"
