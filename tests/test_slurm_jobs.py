"""The SLURM scripts in jobs/ submitted with sbatch to a real Slurm cluster.

Opt-in: ``MPICOMP_SLURM_TESTS=1`` with ``SLURM_CONF`` naming a running cluster, such as the
two-node cluster on this host that ``tests/slurm/cluster.sh start DIR`` makes (``.ci/run`` does
both). Each job's trace is compared with the same run started by ``mpiexec`` outside Slurm:
the runs are deterministic, so ``final/x`` must be equal bit for bit.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from test_apps import MPIEXEC, REPO
from test_apps import env as app_env

from mpicomp.trace import TraceError, read_trace

DATA = ["--data", "synthetic:logistic,n=512,d=16,h=1"]

pytestmark = pytest.mark.skipif(
    os.environ.get("MPICOMP_SLURM_TESTS") != "1" or not os.environ.get("SLURM_CONF"),
    reason="SLURM job tests need a cluster: tests/slurm/cluster.sh start DIR, then "
           "MPICOMP_SLURM_TESTS=1 SLURM_CONF=DIR/slurm.conf (.ci/run does this)")


def env() -> dict:
    """The apps' test environment, and the interpreter for the job scripts (``PYTHON``)."""
    return {**app_env(), "PYTHON": sys.executable}


def command(*args, **kw) -> str:
    out = subprocess.run(args, cwd=REPO, env=env(), capture_output=True, text=True, timeout=60,
                         **kw)
    assert out.returncode == 0, f"{' '.join(args)}: {out.stderr}"
    return out.stdout


def submit(tmp: Path, script: str, *args, sbatch=(), **variables) -> str:
    """sbatch from the repository root with traces and output under ``tmp``; the job id."""
    exports = ",".join(["ALL", f"MPICOMP_RUNS={tmp}", *(f"{k}={v}" for k, v in variables.items())])
    return command("sbatch", "--parsable", f"--output={tmp}/slurm-%j.out", f"--export={exports}",
                   *sbatch, f"jobs/{script}", *map(str, args)).strip().split(";")[0]


def job_info(job: str) -> dict:
    """``scontrol show job`` as a dict (the first record; an array task's own id gives its own)."""
    text = command("scontrol", "show", "job", job)
    return dict(re.findall(r"(\w+)=(\S*)", text))


def wait(*jobs: str, timeout: float = 240) -> None:
    """Until every job has left the queue. Slurm holds a requeued job for two minutes before it
    may start again (Reason=BeginTime): time for the step daemons of its first start to clean up
    and for its revoked credential to lie in the past (revocations are kept to the second). On
    this one-host cluster, let it start once they have exited and 2 s have passed."""
    deadline = time.monotonic() + timeout
    held: dict[str, float] = {}
    while time.monotonic() < deadline:
        queue = command("squeue", "-h", "-o", "%i %T %r", "-j", ",".join(jobs))
        if not queue.strip():
            return
        for line in queue.splitlines():
            job, state, reason = line.split()
            if state != "PENDING" or reason != "BeginTime":
                held.pop(job, None)
                continue
            since = held.setdefault(job, time.monotonic())
            if time.monotonic() - since >= 2 and not stepd_running(job_info(job)["JobId"]):
                command("scontrol", "update", f"JobId={job}", "StartTime=now")
        time.sleep(0.5)
    command("scancel", *jobs)
    pytest.fail(f"jobs {jobs} still queued after {timeout} s")


def stepd_running(job: str) -> bool:
    """Whether a slurmstepd of ``job`` (a numeric job id) is still alive on this host."""
    return subprocess.run(["pgrep", "-f", rf"slurmstepd: \[{job}\."],
                          capture_output=True).returncode == 0


def reference(tmp: Path, name: str, ranks: int, app: str, *args) -> np.ndarray:
    """final/x of the same run started with mpiexec, outside Slurm."""
    trace = tmp / f"reference-{name}.h5"
    out = subprocess.run([MPIEXEC, "-n", str(ranks), sys.executable, "-m", f"mpicomp.apps.{app}",
                          "--trace", str(trace), "--progress", "off", *map(str, args)],
                         cwd=REPO, env=env(), capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    return read_trace(trace).final_x


def output(tmp: Path, job: str) -> str:
    return (tmp / f"slurm-{job}.out").read_text()


@pytest.mark.parametrize("launcher", ["srun", "mpiexec"])
def test_single_run_equals_the_same_run_under_mpiexec(tmp_path, launcher):
    args = ["diana", *DATA, "--iters", 60, "--log-every", 10]
    job = submit(tmp_path, "single.sbatch", *args, sbatch=["--ntasks=4", "--job-name=single"],
                 MPICOMP_LAUNCHER=launcher)
    wait(job)
    info = job_info(job)
    assert info["JobState"] == "COMPLETED" and info["ExitCode"] == "0:0", output(tmp_path, job)
    t = read_trace(tmp_path / f"single-{job}.h5")
    assert t.status == "finished" and t.world_size == 4 and t["step"][-1] == 60
    np.testing.assert_array_equal(t.final_x, reference(tmp_path, "single", 4, *args))
    if launcher == "srun":  # requeued after it finished (say, by an administrator): nothing reruns
        command("scontrol", "requeue", job)
        wait(job)
        assert f"{t.path} is already finished; nothing to run" in output(tmp_path, job)
        again = read_trace(t.path)
        assert again.status == "finished" and again["wall_time"].tolist() == t["wall_time"].tolist()


def test_sweep_writes_one_trace_per_array_index(tmp_path):
    # an app by its name, by its checkout module and by its installed module
    runs = [("linf", "diana", "dither:p=inf,s=1", 20), ("qsgd", "apps.dcgd", "qsgd:s=4", 20),
            ("natural", "mpicomp.apps.natural", "natural", 30)]
    sweep = tmp_path / "runs.txt"
    sweep.write_text("# name app flags\n\n" + "".join(
        f"{n}  {a} {' '.join(DATA)} --compressor {c} --iters {i}\n" for n, a, c, i in runs))
    job = submit(tmp_path, "sweep.sbatch", sbatch=["--array=0-3", "--ntasks=2"], SWEEP=sweep)
    wait(job)
    for index, (name, app, compressor, iters) in enumerate(runs):
        info = job_info(f"{job}_{index}")
        assert info["JobState"] == "COMPLETED", output(tmp_path, info["JobId"])
        t = read_trace(tmp_path / f"sweep-{job}" / f"{index:03d}-{name}.h5")
        assert t.status == "finished" and t.world_size == 2 and t["step"][-1] == iters
        assert (t.algorithm == ("diana" if app == "diana" else "dcgd")
                and t.attrs["compressor"] == compressor)
    missing = submit(tmp_path, "sweep.sbatch", sbatch=["--array=0"],
                     SWEEP=tmp_path / "no-such-list.txt")
    wait(missing)
    assert f"cannot read the run list {tmp_path}/no-such-list.txt (SWEEP)" in output(
        tmp_path, job_info(f"{missing}_0")["JobId"])
    extra = job_info(f"{job}_3")  # one index more than the list has runs
    assert extra["JobState"] == "FAILED" and extra["ExitCode"] == "2:0"
    assert f"array index 3, but {sweep} has 3 runs (indices 0-2)" in output(
        tmp_path, extra["JobId"])
    assert sorted(p.name for p in (tmp_path / f"sweep-{job}").iterdir()) == [
        "000-linf.h5", "001-qsgd.h5", "002-natural.h5"]

    escape = tmp_path / "escape.txt"  # a NAME that would put the trace outside runs/
    escape.write_text(f"../../escaped diana {' '.join(DATA)} --iters 5\n")
    bad = submit(tmp_path, "sweep.sbatch", sbatch=["--array=0", "--ntasks=1"], SWEEP=escape)
    wait(bad)
    info = job_info(f"{bad}_0")
    assert info["JobState"] == "FAILED" and info["ExitCode"] == "2:0"
    assert "run 0 is named '../../escaped'; a name takes letters" in output(tmp_path, info["JobId"])
    assert not list(tmp_path.parent.glob("*escaped*")) and not list(tmp_path.glob("**/*escaped*"))


def test_multinode_run_spans_two_nodes(tmp_path):
    args = ["malcom", *DATA, "--topology", "torus", "--iters", 30]
    job = submit(tmp_path, "multinode.sbatch", *args,
                 sbatch=["--nodes=2", "--ntasks-per-node=2", "--job-name=multi"])
    wait(job)
    info = job_info(job)
    assert info["JobState"] == "COMPLETED" and info["NumNodes"] == "2", output(tmp_path, job)
    assert "on node[1-2]" in output(tmp_path, job)
    t = read_trace(tmp_path / f"multi-{job}.h5")
    assert t.status == "finished" and t.world_size == 4 and t.attrs["topology"] == "torus"
    np.testing.assert_array_equal(t.final_x, reference(tmp_path, "multi", 4, *args))


def signal_mid_run(tmp: Path, job: str, trace: Path) -> None:
    """Once ``trace`` has two rows (it is training), send SIGUSR2 to every task of ``job``, as
    ``#SBATCH --signal=USR2@120`` does before the time limit; wait for the job to end."""
    deadline = time.monotonic() + 120
    while True:
        assert time.monotonic() < deadline, output(tmp, job_info(job)["JobId"])
        try:
            if trace.exists() and read_trace(trace).n_rows >= 2:
                break
        except TraceError:  # caught between two column writes of a row
            pass
        time.sleep(0.2)
    command("scancel", "--signal=USR2", job)
    wait(job)


def check_resumed(tmp: Path, job: str, trace: Path, iters: int, reference_x: np.ndarray) -> None:
    """The job checkpointed, requeued itself, resumed and finished with the uninterrupted result."""
    info = job_info(job)
    log = output(tmp, info["JobId"])
    assert info["JobState"] == "COMPLETED" and info["Restarts"] == "1", log
    stopped = int(re.search(r"stopped by a signal at step (\d+)", log).group(1))
    assert 200 <= stopped < iters and f"requeueing job {job} to resume" in log
    assert "start 1 on node" in log and "mpicomp.apps.diana --resume" in log
    t = read_trace(trace)
    assert t.status == "finished" and t.attrs["checkpoint_step"] == stopped
    assert t["step"].tolist() == list(range(0, iters + 1, 200))  # no row lost or repeated
    np.testing.assert_array_equal(t.final_x, reference_x)


ITERS = 8000
CKPT_ARGS = ["diana", *DATA, "--iters", ITERS, "--log-every", 200]


def test_signal_before_the_limit_checkpoints_requeues_and_resumes(tmp_path):
    """The ranks checkpoint and exit 75, the script requeues the job, and its second start
    resumes to exactly the uninterrupted run's result."""
    job = submit(tmp_path, "single.sbatch", *CKPT_ARGS, sbatch=["--ntasks=4", "--job-name=ckpt"])
    trace = tmp_path / f"ckpt-{job}.h5"
    signal_mid_run(tmp_path, job, trace)
    check_resumed(tmp_path, job, trace, ITERS, reference(tmp_path, "ckpt", 4, *CKPT_ARGS))


def test_a_signalled_array_task_requeues_itself_and_resumes(tmp_path):
    sweep = tmp_path / "runs.txt"
    # CRLF: a list from Windows
    sweep.write_text("first  " + " ".join(map(str, CKPT_ARGS)) + "\r\n")
    array = submit(tmp_path, "sweep.sbatch", sbatch=["--array=0", "--ntasks=3"], SWEEP=sweep)
    task = f"{array}_0"
    trace = tmp_path / f"sweep-{array}" / "000-first.h5"
    signal_mid_run(tmp_path, task, trace)
    check_resumed(tmp_path, task, trace, ITERS, reference(tmp_path, "array", 3, *CKPT_ARGS))


def test_unknown_app_fails_the_job_with_the_choices(tmp_path):
    job = submit(tmp_path, "single.sbatch", "dianna", sbatch=["--ntasks=1"])
    wait(job)
    info = job_info(job)
    assert info["JobState"] == "FAILED" and info["ExitCode"] == "2:0"
    assert "unknown app 'dianna'; choose from diana dcgd qsgd terngrad" in output(tmp_path, job)
