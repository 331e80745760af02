"""The apps as users start them: ``python -m apps.X`` and ``mpiexec -n N python -m apps.X``,
with exit statuses, real signals, and a failure on one rank that must end the whole job."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from mpicomp.run import EXIT_BAD_INPUT, EXIT_CHECKPOINTED, EXIT_FINISHED
from mpicomp.trace import STANDARD_COLUMNS, TraceError, read_trace

REPO = Path(__file__).resolve().parents[1]
MPIEXEC = os.environ.get("MPIEXEC") or str(Path(sys.executable).with_name("mpiexec"))


def env():
    return {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}


def launch(args, cwd, ranks=None, **kw):
    cmd = ([sys.executable, *args] if ranks is None
           else [MPIEXEC, "-n", str(ranks), sys.executable, *args])
    return subprocess.run(cmd, cwd=cwd, env=env(), capture_output=True, text=True, timeout=240,
                          **kw)


APPS = [  # app, algorithm in the trace, its compressor attribute
    ("diana", "diana", "dither:p=inf,s=1"), ("dcgd", "dcgd", "qsgd:s=4"),
    ("qsgd", "dcgd", "qsgd:s=4"), ("terngrad", "dcgd", "terngrad"), ("signsgd", "signsgd", "sign"),
    ("natural", "dcgd", "natural"), ("qadam", "qadam", "scaled_sign:block=16"),
    ("efsgd", "efsgd", "scaled_sign"), ("dpsgd", "dpsgd", "identity"),
    ("choco", "choco", "qsgd:s=4"), ("malcom", "malcom", "qsgd:s=4,coder=golomb")]


@pytest.mark.parametrize("app,algorithm,compressor", APPS)
def test_every_app_runs_with_no_flags_at_4_ranks(tmp_path, app, algorithm, compressor):
    out = launch(["-m", f"apps.{app}"], tmp_path, ranks=4)
    assert out.returncode == EXIT_FINISHED, out.stderr
    t = read_trace(tmp_path / f"{algorithm}.h5")
    assert t.status == "finished" and t.world_size == 4 and t.algorithm == algorithm
    assert t.attrs["compressor"] == compressor
    assert set(STANDARD_COLUMNS) <= set(t.columns) and t.ranks["bits_up"].shape == (t.n_rows, 4)
    assert t["step"][-1] == t.config["iters"] and t.final_x.shape == (t.attrs["dim"],)
    assert t["loss"][-1] < 0.95 * t["loss"][0]  # it trains
    assert np.all(np.diff(t["bits_up"]) > 0) and np.all(np.diff(t["wire_bytes"]) > 0)
    if algorithm in ("dpsgd", "choco", "malcom"):  # gossip: the trace follows the network average
        assert t.attrs["topology"] == "ring" and t["consensus_error"][0] == 0
        assert np.all(t["consensus_error"][1:] > 0) and t["sparsity"][-1] > 0  # the ℓ1 prox's zeros


def test_unknown_flag_exits_2_with_the_valid_flags(tmp_path):
    out = launch(["-m", "apps.diana", "--bogus", "1"], tmp_path)
    assert out.returncode == EXIT_BAD_INPUT
    assert "unknown flag '--bogus'" in out.stderr and "--compressor" in out.stderr
    assert not list(tmp_path.iterdir())  # nothing written


def wait_for_rows(path, rows, proc, limit=120.0):
    t0 = time.time()
    while time.time() - t0 < limit and proc.poll() is None:
        try:
            if read_trace(path).n_rows >= rows:
                return True
        except (TraceError, OSError):
            pass
        time.sleep(0.05)
    return False


def test_sigterm_checkpoints_and_resume_finishes(tmp_path):
    trace = tmp_path / "run.h5"
    args = ["-m", "apps.diana", "--trace", str(trace), "--iters", "200000", "--log-every", "50",
            "--data", "synthetic:logistic,n=64,d=8,h=1"]
    proc = subprocess.Popen([sys.executable, *args], cwd=tmp_path, env=env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert wait_for_rows(trace, 3, proc), "the run ended before it was signalled"
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == EXIT_CHECKPOINTED, err
    assert "stopped by a signal" in err and "--resume" in err
    cut = read_trace(trace)
    stopped = cut.attrs["checkpoint_step"]
    assert cut.status == "running" and cut["step"][-1] <= stopped
    out = launch([*args[:5], str(stopped + 120), *args[6:], "--resume"], tmp_path)
    assert out.returncode == EXIT_FINISHED, out.stderr
    done = read_trace(trace)
    assert done.status == "finished" and done["step"][-1] == stopped + 120
    assert np.all(np.diff(done["step"]) > 0) and np.all(np.diff(done["bits_up"]) > 0)


def test_a_failure_on_one_rank_ends_the_whole_job(tmp_path):
    code = (
        "import sys\n"
        "from mpi4py import MPI\n"
        "from mpicomp.run import main\n"
        "def boom(step):\n"
        "    if step == 3 and MPI.COMM_WORLD.rank == 1:\n"
        "        raise RuntimeError('injected failure on rank 1')\n"
        "sys.exit(main('diana', ['--iters', '100000', '--trace', 'run.h5'], on_step=boom))\n"
    )
    t0 = time.time()
    out = launch(["-c", code], tmp_path, ranks=3)
    assert out.returncode != 0
    assert time.time() - t0 < 120  # ended by MPI_Abort, not by the test's timeout
    assert "[rank 1]" in out.stderr and "injected failure on rank 1" in out.stderr
    t = read_trace(tmp_path / "run.h5")  # readable; rank 0 was killed while running
    assert t.status == "running" and t.n_rows >= 1


def test_the_run_closes_with_its_summary_and_keeps_an_existing_trace(tmp_path):
    args = ["-m", "apps.diana", "--data", "digits:binary", "--test-fraction", "0.2",
            "--iters", "30", "--trace", "run.h5"]
    out = launch(args, tmp_path, ranks=2)
    assert out.returncode == EXIT_FINISHED, out.stderr
    t = read_trace(tmp_path / "run.h5")
    lines = out.stderr.splitlines()
    # stderr is a pipe: a plain progress line each tenth of the steps, no terminal redraws
    assert [ln.split(" (")[0] for ln in lines if ln.startswith("diana: step")] == [
        f"diana: step {s}/30" for s in range(3, 31, 3)]
    assert "\r" not in out.stderr
    summary = lines[lines.index("diana: finished, 30 steps on 2 ranks; trace run.h5"):]
    f_star = t.attrs["f_star"]
    assert summary[1] == (f"  final loss {t['loss'][-1]:.6g}, F − F* {t['loss'][-1] - f_star:.3g}, "
                          f"‖x − x*‖² {t['dist_to_opt_sq'][-1]:.3g}, "
                          f"test accuracy {t['test_accuracy'][-1]:.4f}")
    bits_up = t["bits_up"][-1] / (2 * t.attrs["dim"] * 30)
    assert summary[2].startswith(
        f"  bits per coordinate per worker and step: up {bits_up:.4g}, down")
    assert summary[4] == "  analyse: python -m mpicomp.analyze run.h5 --plot run.png"

    before = (tmp_path / "run.h5").read_bytes()
    again = launch(args, tmp_path, ranks=2)  # the same trace again: refused, the file untouched
    assert again.returncode == EXIT_BAD_INPUT
    assert "run.h5 exists" in again.stderr and "--overwrite" in again.stderr
    assert (tmp_path / "run.h5").read_bytes() == before

    quiet = launch([*args, "--overwrite", "--quiet", "--progress", "off"], tmp_path, ranks=2)
    assert quiet.returncode == EXIT_FINISHED, quiet.stderr
    assert quiet.stderr.strip().splitlines() == [
        "diana: finished, 30 steps on 2 ranks; trace run.h5"]
    assert read_trace(tmp_path / "run.h5").final_x.tolist() == t.final_x.tolist()


def test_one_live_run_per_trace_whatever_hdf5_locking_says(tmp_path):
    """Two runs given one trace with HDF5 file locking off (Lustre, NFS): the second is refused
    with the first's process named, even with --overwrite, and the first's results survive."""
    trace = tmp_path / "run.h5"
    args = ["-m", "apps.diana", "--trace", str(trace), "--iters", "200000", "--log-every", "50",
            "--data", "synthetic:logistic,n=64,d=8,h=1"]
    unlocked = {**env(), "HDF5_USE_FILE_LOCKING": "FALSE"}
    first = subprocess.Popen([sys.executable, *args], cwd=tmp_path, env=unlocked,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert wait_for_rows(trace, 2, first), "the first run ended early"
        second = subprocess.run([sys.executable, *args, "--overwrite"], cwd=tmp_path, env=unlocked,
                                capture_output=True, text=True, timeout=240)
        assert second.returncode == EXIT_BAD_INPUT
        assert f"{trace} is being written by the run of process {first.pid} on " in second.stderr
        assert f"remove {trace}.lock" in second.stderr
        assert first.poll() is None  # untouched, still running
        first.send_signal(signal.SIGTERM)
        _, err = first.communicate(timeout=60)
    finally:
        first.kill()
    assert first.returncode == EXIT_CHECKPOINTED, err
    assert not (tmp_path / "run.h5.lock").exists()  # released at the end of the run
    assert read_trace(trace).n_rows >= 2


def test_a_stale_lock_is_taken_over_and_a_foreign_one_refused(tmp_path):
    import json
    import socket

    dead = subprocess.Popen(["true"])
    dead.wait()
    lock = tmp_path / "run.h5.lock"
    lock.write_text(json.dumps({"host": socket.gethostname(), "pid": dead.pid}))
    args = ["-m", "apps.diana", "--trace", "run.h5", "--iters", "5"]
    out = launch(args, tmp_path)
    assert out.returncode == EXIT_FINISHED, out.stderr  # a run killed before it could unlock
    assert not lock.exists() and read_trace(tmp_path / "run.h5").status == "finished"
    lock.write_text(json.dumps({"host": "node-elsewhere", "pid": 1, "started": "earlier"}))
    out = launch([*args, "--overwrite"], tmp_path)
    assert out.returncode == EXIT_BAD_INPUT
    assert ("run.h5 is being written by the run of process 1 on node-elsewhere, "
            "started earlier" in out.stderr)
    assert lock.exists() and read_trace(tmp_path / "run.h5").status == "finished"


@pytest.fixture
def small_disk(tmp_path):
    """A 4 MiB tmpfs (root only: CI runs as root), unmounted afterwards."""
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(disk)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    yield disk
    subprocess.run(["umount", "-l", str(disk)], check=False)


FILL_THE_DISK = (
    "import os, sys\n"
    "from mpi4py import MPI\n"
    "import mpicomp.checkpoint, mpicomp.trace\n"
    "from mpicomp.run import main\n"
    "if sys.argv[1] == 'unguarded':  # HDF5 meets ENOSPC itself\n"
    "    mpicomp.trace.check_free_space = mpicomp.checkpoint.check_free_space = lambda *a: None\n"
    "def fill(step):  # at step 40 another program fills the disk, leaving 64 KiB\n"
    "    if step == 40 and MPI.COMM_WORLD.rank == 0:\n"
    "        st = os.statvfs('disk')\n"
    "        with open('disk/pad', 'wb') as fh:\n"
    "            fh.write(bytes(st.f_bavail * st.f_frsize - (64 << 10)))\n"
    "sys.exit(main('diana', ['--iters', '100000', '--log-every', '5', '--checkpoint-every', '20',\n"
    "                        '--trace', 'disk/run.h5', '--progress', 'off'], on_step=fill))\n"
)


@pytest.mark.parametrize("how", ["guarded", "unguarded"])
def test_a_full_disk_stops_every_rank_and_keeps_trace_and_checkpoint(small_disk, how):
    """The disk fills at step 40 (64 KiB left). Guarded (as mpicomp runs): the free-space check
    stops every rank with exit 2 and one message at the row of step 40, the trace keeps its rows
    and records why, and the checkpoint of step 20 stays whole. Unguarded (the check switched
    off, so HDF5 itself meets ENOSPC when a row needs a new chunk, at row 512): the failed flush
    is caught at once, the file is abandoned as last flushed and stays readable with every row
    before it, the last checkpoint stays whole, and the process neither hangs nor crashes."""
    from mpicomp.checkpoint import read_checkpoint_meta

    out = launch(["-c", FILL_THE_DISK, how], small_disk.parent, ranks=2)
    assert out.returncode == EXIT_BAD_INPUT, out.stderr
    assert "Exception ignored" not in out.stderr and "Traceback" not in out.stderr
    assert [line for line in out.stderr.splitlines() if line.startswith("diana:")] == [
        out.stderr.strip()]  # one message, on one line
    t = read_trace(small_disk / "run.h5")
    assert t.final_x is None and not (small_disk / "run.ckpt.h5.tmp").exists()
    meta = read_checkpoint_meta(small_disk / "run.ckpt.h5")
    if how == "guarded":
        assert "disk/run.h5: writing row 8: only " in out.stderr and " bytes free " in out.stderr
        assert t["step"].tolist() == list(range(0, 36, 5))
        assert t.status == "failed" and "writing row 8: only" in t.attrs["error"]
        assert meta["step"] == 20
    else:
        assert "writing row 512 failed" in out.stderr and "No space left on device" in out.stderr
        # every row before the failed one; that one may stand there incomplete
        assert t["step"].tolist()[:512] == list(range(0, 5 * 512, 5)) and t.n_rows in (512, 513)
        assert t.status == "running"
        assert meta["step"] == 20 * ((5 * 511) // 20)


def test_a_huge_step_size_diverges_with_one_line(tmp_path):
    """No NumPy overflow warnings from every rank before the verdict: the one message."""
    out = launch(["-m", "apps.diana", "--lr", "1e300", "--iters", "50", "--progress", "off"],
                 tmp_path, ranks=2)
    assert out.returncode == 3
    assert out.stderr.strip().splitlines() == [
        "diana: error: diverged at step 2: the gradient has NaN or Inf; the step size lr=1e+300 is "
        "too large for this problem (try a smaller --lr, or --lr theory)"]
    assert read_trace(tmp_path / "diana.h5").status == "diverged"
