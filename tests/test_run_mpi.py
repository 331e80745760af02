"""The driver on real MPI ranks: trace contract, checkpoint/resume, and bad input that must end
every rank with a clear message (no hang) and a readable trace."""

from __future__ import annotations

import json
import math
import os
import signal

import apps.choco
import apps.dcgd
import apps.diana
import apps.dpsgd
import apps.efsgd
import apps.malcom
import apps.qadam
import apps.signsgd
import numpy as np
import pytest
from reference_algorithms import Workers, run_diana

from mpicomp.algorithms import ALGORITHMS
from mpicomp.compress import make_compressor
from mpicomp.problems import make_problem, solve_reference
from mpicomp.problems.data import load
from mpicomp.run import EXIT_BAD_INPUT, EXIT_CHECKPOINTED, EXIT_DIVERGED, EXIT_FINISHED
from mpicomp.trace import STANDARD_COLUMNS, read_trace

pytestmark = pytest.mark.mpi
DATA = "synthetic:logistic,n=203,d=16,h=1"


def run(comm, main, tmp, *args, **kwargs):
    """``main(argv)`` on every rank; returns (exit status, the trace on rank 0 or None)."""
    trace = str(tmp / "run.h5")
    rc = main(["--data", DATA, "--trace", trace, "--progress", "off", *map(str, args)], comm,
              **kwargs)
    assert comm.allgather(rc) == [rc] * comm.size  # every rank ends the same way
    comm.Barrier()
    return rc, (read_trace(trace) if comm.rank == 0 and os.path.exists(trace) else None)


def test_trace_follows_the_contract_and_equals_the_serial_reference(comm, mpi_shared_tmp):
    rc, t = run(comm, apps.diana.main, mpi_shared_tmp, "--iters", 20, "--log-every", 5,
                "--l2", 0.01)
    assert rc == EXIT_FINISHED
    if comm.rank != 0:
        return
    n, d = comm.size, 16
    assert t.status == "finished" and t.world_size == n and t.algorithm == "diana"
    assert {"mpicomp_version", "algorithm", "compressor", "topology", "world_size", "config",
            "mpi_library", "status"} <= set(t.attrs)
    assert t.attrs["compressor"] == "dither:p=inf,s=1" and t.attrs["topology"] == "server"
    assert t.config["l2"] == 0.01 and t.config["iters"] == 20
    assert set(STANDARD_COLUMNS) <= set(t.columns)
    assert t["step"].tolist() == [0, 5, 10, 15, 20]
    # information bits: a 64-bit norm plus 2 bits a coordinate per message, each worker each step
    assert t["bits_up"].tolist() == [s * n * (64 + 2 * d) for s in t["step"]]
    assert t["bits_down"].tolist() == [s * n * 64 * d for s in t["step"]]  # the exact float64 mean
    assert (t.ranks["bits_up"].sum(axis=1) == t["bits_up"]).all()
    # wire bytes: the n − 1 other workers' payloads to the server, its mean to the n − 1 others
    up = make_compressor("dither:p=inf,s=1").nbytes_max(d, np.float64)
    down = make_compressor("identity").nbytes_max(d, np.float64)
    assert t["wire_bytes"].tolist() == [s * (n - 1) * (up + down) for s in t["step"]]
    assert t["loss"][0] == pytest.approx(math.log(2), rel=1e-15)  # x⁰ = 0
    assert np.all(np.diff(t["wall_time"]) >= 0)
    assert np.all(np.diff(t["net_time"]) > 0) if n > 1 else not t["net_time"].any()

    # final/x equals the serial reference with the hyper-parameters the run resolved
    hp = json.loads(t.attrs["hyperparameters"])
    data = load(DATA, seed=0, groups=n)
    want = run_diana(Workers(data, n, l2=0.01, seed=0), np.zeros(d), "dither:p=inf,s=1", "server",
                     hp["lr"], hp["alpha"], 20)
    np.testing.assert_array_equal(t.final_x, want[-1])
    assert hp["alpha"] == pytest.approx(1 / ((math.sqrt(d) - 1) / 2 + 1))
    x_star = solve_reference(make_problem("logistic", data.A, data.y, l2=0.01)).x
    assert t["dist_to_opt_sq"][-1] == pytest.approx(np.sum((want[-1] - x_star) ** 2), rel=1e-6)


def whole_and_cut(comm, tmp):
    """Two shared folders: one for an uninterrupted run, one for a stopped and resumed one."""
    whole_dir, cut_dir = tmp / "whole", tmp / "cut"
    if comm.rank == 0:
        whole_dir.mkdir(), cut_dir.mkdir()
    comm.Barrier()
    return whole_dir, cut_dir


def comparable(trace):
    """Every column and rank column except the wall-clock ones, and final/x."""
    cols = {k: v for k, v in trace.columns.items() if k != "wall_time"}
    ranks = {k: v for k, v in trace.ranks.items() if k != "wall_time"}
    return cols, ranks, trace.final_x


@pytest.mark.parametrize("app,extra", [
    (apps.diana, ["--batch", 3, "--set", "momentum=0.5", "--topology", "two-phase"]),
    (apps.dcgd, ["--batch", 5, "--compressor", "natural"]),
    (apps.signsgd, ["--momentum", 0.9, "--byzantine", 1, "--attack", "random",
                    "--topology", "bitsliced"]),
    (apps.qadam, ["--weight-quant", "uniform:bits=4,rounding=stochastic",
                  "--compressor", "qsgd:s=2"]),
    (apps.efsgd, ["--batch", 4, "--compressor", "topk:k=0.25", "--topology", "allgather"]),
    (apps.dpsgd, ["--batch", 4, "--order", "combine-adapt", "--topology", "complete"]),
    (apps.choco, ["--batch", 4, "--compressor", "topk:k=0.25", "--schedule", "sqrt"]),
    (apps.malcom, ["--batch", 4, "--topology", "erdos_renyi:p=0.7,seed=1"]),
], ids=lambda v: v.__name__ if hasattr(v, "__name__") else None)
def test_resume_after_a_signal_equals_an_uninterrupted_run(comm, mpi_shared_tmp, app, extra):
    args = ["--iters", 30, "--log-every", 4, *extra]
    whole_dir, cut_dir = whole_and_cut(comm, mpi_shared_tmp)
    rc, whole = run(comm, app.main, whole_dir, *args)
    assert rc == EXIT_FINISHED

    def signal_at_13(step):  # SIGUSR2 reaches one rank only; the flag is agreed by all
        # sent after step 12, the request travels with step 13's data: the run stops after 13
        if step == 12 and comm.rank == comm.size - 1:
            os.kill(os.getpid(), signal.SIGUSR2)

    import mpicomp.run as run_module

    algorithm = app.__name__.split(".")[-1]
    rc, cut = run(comm, lambda argv, c: run_module.main(algorithm, argv, c, defaults=app.DEFAULTS,
                                                        on_step=signal_at_13), cut_dir, *args)
    assert rc == EXIT_CHECKPOINTED
    if comm.rank == 0:
        assert cut.status == "running" and cut.attrs["checkpoint_step"] == 13
        assert cut["step"].tolist() == [0, 4, 8, 12] and cut.final_x is None
        assert (cut_dir / "run.ckpt.h5").exists()
    rc, resumed = run(comm, app.main, cut_dir, *args, "--resume")
    assert rc == EXIT_FINISHED
    if comm.rank == 0:
        assert resumed.status == "finished"
        got, want = comparable(resumed), comparable(whole)
        assert got[0].keys() == want[0].keys() and got[1].keys() == want[1].keys()
        for k in want[0]:
            np.testing.assert_array_equal(got[0][k], want[0][k], err_msg=k)
        for k in want[1]:
            np.testing.assert_array_equal(got[1][k], want[1][k], err_msg=k)
        np.testing.assert_array_equal(got[2], want[2])


def test_a_signal_during_set_up_checkpoints_step_0(comm, mpi_shared_tmp, monkeypatch):
    """SIGUSR2 while the data and x* are being prepared (a job's pre-limit signal can come then):
    the run stops at step 0 with a checkpoint, instead of dying, and resumes to the same end."""
    import mpicomp.run as run_module

    args = ["--iters", 12, "--log-every", 4]
    whole_dir, cut_dir = whole_and_cut(comm, mpi_shared_tmp)
    rc, whole = run(comm, apps.diana.main, whole_dir, *args)
    build = run_module.Run.build

    def signalled_build(self):
        if comm.rank == 0:
            os.kill(os.getpid(), signal.SIGUSR2)
        return build(self)

    monkeypatch.setattr(run_module.Run, "build", signalled_build)
    rc, cut = run(comm, apps.diana.main, cut_dir, *args)
    assert rc == EXIT_CHECKPOINTED
    monkeypatch.setattr(run_module.Run, "build", build)
    if comm.rank == 0:  # stopped before its first row, whose x* the resumed run computes
        assert cut.status == "running" and cut.attrs["checkpoint_step"] == 0 and cut.n_rows == 0
    assert_resumes_to(comm, cut_dir, args, whole)


def assert_resumes_to(comm, cut_dir, args, whole):
    """``--resume`` in ``cut_dir`` finishes with every column but wall time equal to ``whole``."""
    rc, resumed = run(comm, apps.diana.main, cut_dir, *args, "--resume")
    assert rc == EXIT_FINISHED
    if comm.rank == 0:
        assert resumed["step"].tolist() == [0, 4, 8, 12]
        got, want = comparable(resumed), comparable(whole)
        for part in range(2):
            assert got[part].keys() == want[part].keys()
            for k in want[part]:
                np.testing.assert_array_equal(got[part][k], want[part][k], err_msg=k)
        np.testing.assert_array_equal(got[2], want[2])


def test_a_signal_during_the_reference_solve_interrupts_it(comm, mpi_shared_tmp, monkeypatch):
    """SIGTERM on rank 0 while it solves for x*: the solve stops at its next gradient (instead of
    running to convergence), the run checkpoints step 0 and resumes to the uninterrupted end."""
    import mpicomp.problems as problems

    args = ["--iters", 12, "--log-every", 4]
    whole_dir, cut_dir = whole_and_cut(comm, mpi_shared_tmp)
    rc, whole = run(comm, apps.diana.main, whole_dir, *args)
    solve, asked = problems.reference_optimum, []

    def signalled_solve(problem, **kwargs):
        should_stop = kwargs["should_stop"]
        kwargs["should_stop"] = lambda: asked.append(should_stop()) or asked[-1]
        os.kill(os.getpid(), signal.SIGTERM)
        return solve(problem, **kwargs)

    monkeypatch.setattr(problems, "reference_optimum", signalled_solve)
    rc, cut = run(comm, apps.diana.main, cut_dir, *args)
    monkeypatch.setattr(problems, "reference_optimum", solve)
    assert rc == EXIT_CHECKPOINTED
    if comm.rank == 0:
        assert asked == [True]  # stopped at the first gradient of the solve
        assert cut.status == "running" and cut.attrs["checkpoint_step"] == 0 and cut.n_rows == 0
    assert_resumes_to(comm, cut_dir, args, whole)


def test_periodic_checkpoints_resume_and_extend_a_finished_run(comm, mpi_shared_tmp):
    # 13 steps end off the logging grid (row at 13); extended to 25 that row must go
    rc, _ = run(comm, apps.diana.main, mpi_shared_tmp, "--iters", 13, "--checkpoint-every", 4)
    assert rc == EXIT_FINISHED
    rc, t = run(comm, apps.diana.main, mpi_shared_tmp, "--iters", 25, "--checkpoint-every", 4,
                "--resume")
    assert rc == EXIT_FINISHED
    whole_dir = mpi_shared_tmp / "whole"
    if comm.rank == 0:
        whole_dir.mkdir()
    comm.Barrier()
    rc, whole = run(comm, apps.diana.main, whole_dir, "--iters", 25)
    assert rc == EXIT_FINISHED
    if comm.rank == 0:
        assert t["step"].tolist() == whole["step"].tolist() == [0, 10, 20, 25]
        assert t.config["iters"] == 25  # the trace describes the run that finished it
        np.testing.assert_array_equal(t.final_x, whole.final_x)
        for k in ("loss", "bits_up", "wire_bytes", "net_time"):
            np.testing.assert_array_equal(t[k], whole[k], err_msg=k)


def test_resume_with_other_settings_is_refused(comm, mpi_shared_tmp, capsys):
    rc, _ = run(comm, apps.diana.main, mpi_shared_tmp, "--iters", 6, "--checkpoint-every", 3)
    assert rc == EXIT_FINISHED
    rc, t = run(comm, apps.diana.main, mpi_shared_tmp, "--iters", 9, "--lr", 0.5, "--resume")
    assert rc == EXIT_BAD_INPUT
    if comm.rank == 0:
        err = capsys.readouterr().err
        assert "does not fit this run" in err and "lr was 'theory', now 0.5" in err


# ------------------------------------------------------------------------------------------
# Bad input: a clear message, the same non-zero exit on every rank, a readable trace
# ------------------------------------------------------------------------------------------
def write_shared(comm, path, text):
    if comm.rank == 0:
        path.write_text(text)
    comm.Barrier()
    return path


def failed_with(comm, t, capsys, *fragments):
    if comm.rank != 0:
        return
    err = capsys.readouterr().err
    for fragment in fragments:
        assert fragment in err, err
        if t is not None:
            assert fragment in t.attrs["error"]
    if t is not None:
        assert t.status == "failed"


LIBSVM_OK = "1 1:0.5 2:1.0\n-1 1:-0.5 3:2.0\n1 2:0.3\n-1 1:1.5 2:-1\n"


@pytest.mark.parametrize("lines,extra,fragments", [
    (LIBSVM_OK + "1 1:0.5 2:x\n", [], ["data.svm:5:", "not a finite number"]),
    (LIBSVM_OK + "1 2:0.5 5:1\n", ["--features", 3],
     ["data.svm:5:", "out of range", "largest valid index is 3"]),
    (LIBSVM_OK.replace("-1 1:-0.5", "2 1:-0.5"), [],
     ["logistic problem cannot use these labels", "3"]),
])
def test_bad_data_file(comm, mpi_shared_tmp, capsys, lines, extra, fragments):
    path = write_shared(comm, mpi_shared_tmp / "data.svm", lines)
    rc, t = run(comm, apps.diana.main, mpi_shared_tmp, "--data", f"libsvm:{path}", *extra)
    assert rc == EXIT_BAD_INPUT
    failed_with(comm, t, capsys, *fragments)


@pytest.mark.parametrize("args,fragments", [
    (["--lrr", "0.1"], ["unknown flag '--lrr'", "did you mean '--lr'", "--log-every"]),
    (["--set", "alpah=0.1"],
     ["unknown setting 'alpah' in --set", "did you mean 'alpha'", "momentum"]),
    (["--compressor", "qsgd:q=3"], ["compressor (from --compressor)", "valid parameters"]),
    (["--lr", "-1"], ["lr (from --lr): -1.0 is out of range"]),
    (["--topology", "ring"], ["'ring' is not valid; choose one of server, allgather, two-phase"]),
    (["--compressor", "qsgd:s=1e999"],
     ["compressor (from --compressor): cannot convert float infinity"]),
])
def test_bad_settings(comm, mpi_shared_tmp, capsys, args, fragments):
    rc, t = run(comm, apps.diana.main, mpi_shared_tmp, *args)
    assert rc == EXIT_BAD_INPUT and t is None  # refused before anything is written
    failed_with(comm, None, capsys, *fragments)


@pytest.mark.parametrize("app,args,fragments", [
    (apps.signsgd, ["--compressor", "sign"], ["unknown flag '--compressor'"]),
    (apps.signsgd, ["--topology", "two-phase"], ["choose one of server, allgather, bitsliced"]),
    (apps.qadam, ["--weight-quant", "uniform:bits=40"],
     ["weight_quant (from --weight-quant)", "1..16"]),
    (apps.qadam, ["--error-feedback", "maybe"],
     ["error_feedback (from --error-feedback)", "true or false"]),
    (apps.choco, ["--gamma", 0],
     ["gamma (from --gamma): 0.0 is out of range; valid values lie in (0, 1]"]),
    (apps.malcom, ["--gamma", 1.5],
     ["gamma (from --gamma): 1.5 is out of range; valid values lie in (0, 1]"]),
    (apps.malcom, ["--l1", -0.1],
     ["l1 (from --l1): -0.1 is out of range; valid values lie in [0, inf]"]),
    (apps.malcom, ["--topology", "moebius"],
     ["unknown topology 'moebius': choose one of ring, torus"]),
    (apps.choco, ["--tau", 0.5], ["tau (from --tau): 0.5 is out of range"]),
    (apps.dpsgd, ["--compressor", "qsgd"], ["unknown flag '--compressor'"]),
    (apps.malcom, ["--downlink", "natural"], ["unknown flag '--downlink'"]),
])
def test_bad_settings_of_the_other_methods(comm, mpi_shared_tmp, capsys, app, args, fragments):
    rc, t = run(comm, app.main, mpi_shared_tmp, *args)
    assert rc == EXIT_BAD_INPUT and t is None
    failed_with(comm, None, capsys, *fragments)


@pytest.mark.parametrize("app,args,fragments", [
    (apps.signsgd, ["--byzantine", 9], ["byzantine=9 adversaries do not fit", "choose 0 …"]),
    (apps.signsgd, ["--lr", "theory"], ["signSGD has no theory value of lr", "--lr 0.01"]),
    (apps.qadam, ["--topology", "allgather"],
     ["topology 'allgather' does not fit qadam: choose one of server"]),
    (apps.efsgd, ["--downlink", "natural"], ["EF-SGD needs the exact mean", "--downlink identity"]),
    (apps.malcom, ["--topology", "torus:rows=5"], ["torus: rows=5 does not divide n="]),
    (apps.choco, ["--topology", "edges:missing-graph.txt"],
     ["cannot read the edge list missing-graph.txt: No such file"]),
    (apps.malcom, ["--lr", "theory"], ["Malcom-PSGD has no theory value of lr", "--lr 0.5"]),
])
def test_settings_a_method_cannot_use_fail_the_run_with_a_clear_message(
        comm, mpi_shared_tmp, capsys, app, args, fragments):
    rc, t = run(comm, app.main, mpi_shared_tmp, *args)
    assert rc == EXIT_BAD_INPUT
    failed_with(comm, t, capsys, *fragments)


def test_no_error_feedback_flag(comm, mpi_shared_tmp):
    rc, t = run(comm, apps.qadam.main, mpi_shared_tmp, "--no-error-feedback", "--iters", 4)
    assert rc == EXIT_FINISHED
    if comm.rank == 0:
        assert t.config["error_feedback"] is False
        assert json.loads(t.attrs["hyperparameters"])["error_feedback"] is False


def test_unknown_key_in_a_config_file(comm, mpi_shared_tmp, capsys):
    path = write_shared(comm, mpi_shared_tmp / "run.toml", 'iters = 5\nlr = 0.1\nstep_size = 3\n')
    rc, _ = run(comm, apps.diana.main, mpi_shared_tmp, "--config", path)
    assert rc == EXIT_BAD_INPUT
    failed_with(comm, None, capsys, f"unknown setting 'step_size' in {path} (line 3)", "log_every")


def test_unwritable_trace_path(comm, mpi_shared_tmp, capsys):
    blocker = write_shared(comm, mpi_shared_tmp / "plain-file", "")
    trace = blocker / "run.h5"  # a directory that is a regular file: fails also as root
    rc = apps.diana.main(["--trace", str(trace), "--iters", "3"], comm)
    assert comm.allgather(rc) == [EXIT_BAD_INPUT] * comm.size
    failed_with(comm, None, capsys, str(trace))


def test_a_diverging_step_size_stops_with_status_diverged(comm, mpi_shared_tmp, capsys):
    rc, t = run(comm, apps.dcgd.main, mpi_shared_tmp, "--problem", "least_squares", "--data",
                "synthetic,n=100,d=8", "--lr", 50, "--compressor", "identity", "--iters", 2000)
    assert rc == EXIT_DIVERGED
    if comm.rank == 0:
        err = capsys.readouterr().err
        assert "diverged at step" in err and "lr=50" in err
        assert t.status == "diverged" and "diverged" in t.attrs["error"]
        assert t["step"][-1] < 2000 and not np.isfinite(t["loss"][-1])
        assert np.all(np.diff(t["step"]) > 0)  # one row per step, also for the last one


@pytest.mark.parametrize("where,rank", [("load_data", -1), ("reference_point", 0),
                                        ("DIANA.build", -1)])
def test_a_setup_failure_on_one_rank_fails_every_rank_alike(comm, mpi_shared_tmp, capsys,
                                                            monkeypatch, where, rank):
    import mpicomp.setup as setup_module

    failing = comm.size - 1 if rank == -1 else rank

    def boom(*args, **kwargs):
        raise OSError(f"{where} cannot go on here")

    if comm.rank == failing:
        owner, _, name = where.rpartition(".")
        monkeypatch.setattr(ALGORITHMS[owner.lower()] if owner else setup_module, name, boom)
    rc, t = run(comm, apps.diana.main, mpi_shared_tmp, "--iters", 3)
    assert rc == EXIT_BAD_INPUT  # run() checks every rank returned the same
    failed_with(comm, t, capsys, f"{where} cannot go on here")


def test_held_out_metrics_on_real_data(comm, mpi_shared_tmp):
    rc, t = run(comm, apps.diana.main, mpi_shared_tmp, "--data", "breast_cancer", "--test-fraction",
                0.25, "--iters", 40, "--log-every", 20, "--l2", 0.01)
    assert rc == EXIT_FINISHED
    if comm.rank != 0:
        return
    from mpicomp.problems.data import load_split

    _, test = load_split("breast_cancer", 0.25, split_seed=0)
    held_out = make_problem("logistic", test.A, test.y, l2=0.01)
    x = t.final_x
    assert t["test_accuracy"][-1] == np.mean(np.where(test.A @ x >= 0, 1.0, -1.0) == test.y)
    assert t["test_accuracy"][-1] > 0.9 and t["test_accuracy"][0] == np.mean(test.y == 1.0)
    assert t["test_loss"][-1] == pytest.approx(held_out.loss(x), rel=1e-12)
    assert t.attrs["n_samples"] == 569 - len(test.y)


@pytest.mark.parametrize("what", ["feature index 2^40", "batch 10^12"])
def test_sizes_that_cannot_fit_fail_before_allocating(comm, mpi_shared_tmp, capsys, what):
    """A model or minibatch larger than the machine's memory: one message with the size and the
    limit, exit 2 on every rank, status failed (not a MemoryError traceback per rank)."""
    from mpicomp.limits import memory_bytes

    limit = f"more than this machine's {memory_bytes() / 2**30:.3g} GiB of memory"
    if what == "batch 10^12":
        rc, t = run(comm, apps.diana.main, mpi_shared_tmp, "--batch", 10**12, "--iters", 3)
        fragments = ("--batch 1000000000000 needs ", limit)
    else:
        path = write_shared(comm, mpi_shared_tmp / "huge.svm", f"1 1:1 {2**40}:2\n-1 2:1\n" * 4)
        rc, t = run(comm, apps.diana.main, mpi_shared_tmp, "--data", f"libsvm:{path}", "--iters", 3)
        fragments = (f"{path}: {2**40} features: a model of {2**40} coordinates needs", limit)
    assert rc == EXIT_BAD_INPUT
    failed_with(comm, t, capsys, *fragments)


@pytest.mark.parametrize("kind", ["config", "data"])
def test_a_device_or_fifo_is_refused_instead_of_read(comm, mpi_shared_tmp, capsys, kind):
    fifo = mpi_shared_tmp / "pipe"
    if comm.rank == 0:
        os.mkfifo(fifo)  # reading it would block every rank
    comm.Barrier()
    for path in (fifo, "/dev/zero"):  # /dev/zero would never end
        flag = ["--config", path] if kind == "config" else ["--data", f"libsvm:{path}"]
        rc, _ = run(comm, apps.diana.main, mpi_shared_tmp, *flag, "--iters", 3, "--overwrite")
        assert rc == EXIT_BAD_INPUT
        what = "config file" if kind == "config" else "LIBSVM file"
        failed_with(comm, None, capsys, f"{what} {path} is not a regular file")


def test_a_config_file_larger_than_the_cap_is_refused(comm, mpi_shared_tmp, capsys):
    from mpicomp.limits import CONFIG_MAX_BYTES

    lines = CONFIG_MAX_BYTES // 10 + 1  # of 10 bytes each: just over the cap
    path = write_shared(comm, mpi_shared_tmp / "big.toml", "# padding\n" * lines)
    rc, _ = run(comm, apps.diana.main, mpi_shared_tmp, "--config", path)
    assert rc == EXIT_BAD_INPUT
    failed_with(comm, None, capsys, f"config file {path} has {10 * lines} bytes, more than the "
                f"{CONFIG_MAX_BYTES}")


def _forge(path, how: str) -> str:
    """Change the checkpoint at ``path`` as ``how`` says; the fragment the refusal must show."""
    import json

    import h5py

    with h5py.File(path, "r+") as f:
        last = f[sorted(name for name in f if name.startswith("rank_"))[-1]]
        step = int(f.attrs["step"])
        if how == "ranks disagree on step":
            last.attrs["scalar:step"] = step + 4
            return f"step {step + 4} differs from the checkpoint's step {step}"
        if how == "negative step":
            f.attrs["step"] = -5
            return "attribute 'step' = -5 is not a non-negative integer"
        if how == "too many trace rows":
            f.attrs["trace_rows"] = 99
            return f"it keeps 99 trace rows, more than the {step // 4 + 1} a run logging every 4"
        if how == "huge compressed array":  # a few KB on disk, 2 GiB once read
            del last["x"]
            last.create_dataset("x", shape=(2**28,), dtype="f8", compression="gzip",
                                chunks=(2**20,))
            return "x has shape (268435456,) and dtype float64; this run's state needs (16,)"
        if how == "wrong dtype":
            x = last["x"][()]
            del last["x"]
            last["x"] = x.astype(np.float32)
            return "x has shape (16,) and dtype float32; this run's state needs (16,) and float64"
        if how == "unknown member":
            last["junk"] = np.zeros(3)
            return "does not hold this run's state: missing [], unknown ['junk']"
        if how == "foreign generator":
            saved = json.loads(last.attrs["generator:rng"])
            saved["bit_generator"] = "default_rng"
            last.attrs["generator:rng"] = json.dumps(saved)
            return "generator 'rng' is a 'default_rng'; this run's is a PCG64"
    raise AssertionError(how)


@pytest.mark.parametrize("how", ["ranks disagree on step", "negative step", "too many trace rows",
                                 "huge compressed array", "wrong dtype", "unknown member",
                                 "foreign generator"])
def test_a_forged_checkpoint_is_refused_before_it_is_used(comm, mpi_shared_tmp, capsys, how):
    """Every rank exits 2 with one message naming what is wrong; nothing from the forged file
    is allocated or trusted (a checkpoint is checked against this run's own fresh State)."""
    args = ["--iters", 12, "--log-every", 4, "--checkpoint-every", 8]
    rc, _ = run(comm, apps.diana.main, mpi_shared_tmp, *args)
    assert rc == EXIT_FINISHED
    fragment = _forge(mpi_shared_tmp / "run.ckpt.h5", how) if comm.rank == 0 else None
    fragment = comm.bcast(fragment, root=0)
    if comm.rank == 0:
        capsys.readouterr()
    rc, t = run(comm, apps.diana.main, mpi_shared_tmp, "--iters", 20, "--log-every", 4,
                "--checkpoint-every", 8, "--resume")
    assert rc == EXIT_BAD_INPUT
    failed_with(comm, None, capsys, fragment)
    if comm.rank == 0:  # refused before the trace was opened: it keeps every row it had
        assert t.status == "finished" and t["step"].tolist() == [0, 4, 8, 12]
