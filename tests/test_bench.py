"""The benchmarks report what they measure: rows for every operator, exact bit and byte
figures, and clean errors (timings themselves are not asserted)."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from mpicomp.bench import compressors
from mpicomp.compress import make_compressor


def test_compressor_rows_have_exact_bits(tmp_path):
    d = 4096
    rows = compressors.run(d=d, repeat=1)
    assert [r["operator"] for r in rows] == [make_compressor(s).spec()
                                             for s in compressors.DEFAULT_SPECS]
    for r in rows:
        assert r["encode_ratio"] > 0 and r["decode_ratio"] > 0
    by_op = {r["operator"]: r for r in rows}
    assert by_op["sign"]["bits_per_coord"] == 1.0 and by_op["sign"]["wire_bytes"] == 8 + d // 8
    assert by_op["natural"]["bits_per_coord"] == 9.0
    assert by_op["qsgd:s=4"]["bits_per_coord"] == (32 + 4 * d) / d  # one norm + 4-bit fields


def test_compressor_cli_writes_json_and_rejects_bad_specs(tmp_path):
    out = tmp_path / "bench.json"
    cmd = [sys.executable, "-m", "mpicomp.bench", "compressors", "--d", "2048", "--repeat", "1",
           "--ops", "sign", "topk:k=0.1", "--json", str(out)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "| `sign` |" in done.stdout
    assert [r["operator"] for r in json.loads(out.read_text())["rows"]] == ["sign", "topk:k=0.1"]
    bad = subprocess.run(cmd[:-4] + ["--ops", "nosuch"], capture_output=True, text=True,
                         timeout=300)
    assert (bad.returncode == 2 and "unknown compressor 'nosuch'" in bad.stderr
            and "Traceback" not in bad.stderr)


@pytest.mark.mpi(min_size=2)
def test_collectives_bytes_are_exact(comm):
    from mpicomp.bench.collectives import run
    from mpicomp.comm.aggregate import TwoPhaseAggregator
    from mpicomp.comm.communicator import Communicator

    d, n = 2**12 + 5, comm.size
    rows = run(comm, sizes=[d], specs=["sign"], repeat=1)
    two_phase = next(r for r in rows if r["aggregator"] == "twophase")
    chunks = np.diff(TwoPhaseAggregator(Communicator(comm), "sign").bounds(d))
    # chunk q: n−1 uplink copies to its owner, then its owner's copy to the n−1 others
    payload = 8 + -(-chunks // 8)
    want = int(2 * (n - 1) * payload.sum())
    assert two_phase["bytes_moved"] == want
    assert two_phase["bytes"] == pytest.approx(n * (2 * (n - 1) * 4 * d // n) / want)
    vote = next(r for r in rows if r["aggregator"] == "vote-bitsliced")
    words = -(-d // 64)
    assert vote["bytes_moved"] == n * (2 * (n - 1) * (8 * words * int(n).bit_length()) // n)


@pytest.mark.mpi
def test_step_rows_and_dcgd_identity_matches_the_hand_written_loop(comm, mpi_shared_tmp, capsys):
    from mpicomp.bench import step
    from mpicomp.bench.__main__ import build_parser

    out = mpi_shared_tmp / "step.json"
    args = build_parser().parse_args(["step", "--dims", "8", "40", "--iters", "12", "--repeat", "2",
                                      "--warmup", "2", "--n", "64", "--json", str(out)])
    assert step.main(args) == 0
    if comm.rank == 0:
        found = json.loads(out.read_text())
        rows = found["rows"]
        assert sorted((r["method"], r["d"]) for r in rows) == sorted(
            (m, d) for m in step.METHODS for d in (8, 40))
        for r in rows:
            assert r["ranks"] == comm.size and len(r["ratios"]) == 2
            assert r["loop_s"] > 0 and r["method_s"] > 0 and r["ratio"] > 0
        assert [c["d"] for c in found["x_check"]] == [8, 40]
        assert all(c["ok"] and c["max_rel_diff"] <= 1e-10 for c in found["x_check"])
        printed = capsys.readouterr().out
        assert all(f"| {m} | {d} |" in printed for m in step.METHODS for d in (8, 40))


@pytest.mark.mpi
def test_step_hand_written_loop_is_what_dcgd_identity_computes(comm, mpi_shared_tmp):
    from mpicomp.bench import step
    from mpicomp.trace import read_trace

    case = step.prepare(comm, 24, 96, 1e-3, 3, "theory", tuple(step.METHODS))
    _, x = step.hand_loop(comm, case, 30)
    trace = str(mpi_shared_tmp / "dcgd.h5")
    stamps = step.driven(comm, "dcgd/identity", case, 30, 1e-3, 3, trace)
    assert len(stamps) == 30 and np.all(np.diff(stamps) >= 0)
    case.lr *= 1 + 1e-6  # a step that differs in the 7th digit is told apart
    _, other = step.hand_loop(comm, case, 30)
    if comm.rank == 0:
        final = read_trace(trace).final_x
        assert np.linalg.norm(x - case.x0) > 0.1 * np.linalg.norm(x)  # it moved
        np.testing.assert_allclose(final, x, rtol=1e-10, atol=0)
        assert np.max(np.abs(other - x)) > 1e-9 * np.max(np.abs(x))


@pytest.mark.mpi
def test_step_rejects_a_warmup_longer_than_the_run(comm, capsys):
    from mpicomp.bench.__main__ import main

    assert main(["step", "--dims", "8", "--iters", "5", "--warmup", "4"]) == 2
    assert "--warmup 4 leaves too few steps" in capsys.readouterr().err


def _check_model_rows(found: dict, names: list, ranks: int, repeat: int) -> None:
    rows = found["rows"]
    assert [r["method"] for r in rows] == names
    assert found["ranks"] == ranks and found["baseline"] == names[0] and found["dim"] > 0
    for r in rows:
        assert r["ranks"] == ranks and len(r["ratios"]) == len(r["cpu_ratios"]) == repeat
        assert len(r["ms_per_step_runs"]) == len(r["cpu_ms_per_step_runs"]) == repeat
        for key in ("ms_per_step", "ratio", "cpu_ms_per_step", "cpu_ratio"):
            assert np.isfinite(r[key]) and r[key] > 0, (r["method"], key, r[key])
        assert all(np.isfinite(v) and v > 0 for v in r["ratios"] + r["cpu_ratios"])
    assert rows[0]["ratios"] == [1.0] * repeat  # the baseline against itself, round by round


def test_model_cli_one_rank_compares_with_plain_torch(tmp_path):
    from mpicomp.bench import model

    out = tmp_path / "model.json"
    cmd = [sys.executable, "-m", "mpicomp.bench", "model", "--model", "mlp", "--batch", "8",
           "--n", "48", "--iters", "3", "--repeat", "2", "--warmup", "1", "--json", str(out)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    found = json.loads(out.read_text())
    _check_model_rows(found, [model.TORCH, model.BASELINE], 1, 2)
    assert found["model"] == "mlp" and found["batch"] == 8 and found["threads"] == 1
    # the same weights and batches: one step apart by rounding only
    assert found["first_step_rel_diff"] < 1e-5
    assert f"| {model.TORCH} |" in done.stdout and f"| {model.BASELINE} |" in done.stdout
    assert "target: dcgd/identity / torch SGD ≤ 1.1" in done.stdout
    bad = subprocess.run(cmd[:-2] + ["--methods", "nosuch"], capture_output=True, text=True,
                         timeout=300)
    assert (bad.returncode == 2 and "unknown methods ['nosuch']" in bad.stderr
            and "Traceback" not in bad.stderr)


@pytest.mark.mpi
def test_model_rows_for_every_method(comm, mpi_shared_tmp, capsys):
    import torch

    from mpicomp.bench import model
    from mpicomp.bench.__main__ import build_parser

    out = mpi_shared_tmp / "model.json"
    argv = ["model", "--model", "lenet", "--batch", "4", "--n", "32", "--iters", "2",
            "--repeat", "2", "--warmup", "1", "--json", str(out)]
    if comm.size == 1:  # one rank compares with torch unless methods are named
        argv += ["--methods", *model.METHODS]
    threads = torch.get_num_threads()
    try:
        assert model.main(build_parser().parse_args(argv)) == 0
    finally:
        torch.set_num_threads(threads)
    if comm.rank == 0:
        found = json.loads(out.read_text())
        _check_model_rows(found, list(model.METHODS), comm.size, 2)
        bits = {r["method"]: r["bits_up_per_step"] for r in found["rows"]}
        d = found["dim"]
        assert bits[model.BASELINE] == 32 * d and bits["signum m=0.9"] == d
        assert bits["dcgd/natural"] == 9 * d > bits["dcgd/qsgd:s=4"]
        printed = capsys.readouterr().out
        assert all(f"| {m} |" in printed for m in model.METHODS)


@pytest.mark.mpi
def test_model_rejects_bad_sizes(comm, capsys):
    from mpicomp.bench.__main__ import main

    assert main(["model", "--model", "mlp", "--iters", "0"]) == 2
    assert "need --iters ≥ 1" in capsys.readouterr().err


@pytest.mark.mpi
def test_memory_reports_the_shard_each_rank_holds(comm):
    """Each rank's shard is its rows of the set (8 bytes a value and a label), the method's
    vectors those of DIANA's state, and the ratio is the peak over the stated budget."""
    from mpicomp.bench import memory

    n, d = 1000, 40
    row = memory.measure("diana", ["--iters", "3", "--data",
                                   f"synthetic:logistic,n={n},d={d}"], comm)
    mine = n // comm.size + (comm.rank < n % comm.size)
    assert row["shard_mb"] * (1 << 20) == mine * (d + 1) * 8
    assert row["vectors_mb"] * (1 << 20) >= 2 * d * 8  # at least x and the shift h_i
    assert row["peak_mb"] > 20
    budget = memory.SLACK * (row["shard_mb"] + row["vectors_mb"] + memory.LIBRARIES_MB)
    assert row["budget_mb"] == pytest.approx(budget)
    assert row["ratio"] == pytest.approx(row["peak_mb"] / budget)


def test_startup_times_the_app_against_mpi_alone(tmp_path, capsys):
    """Both launches run (a failing one fails the bench), interleaved, and the app, which
    imports, builds and steps on top of MPI's start-up, takes longer than MPI alone."""
    from mpicomp.bench.__main__ import main

    out = tmp_path / "startup.json"
    assert main(["startup", "--ranks", "2", "--repeat", "2", "--json", str(out)]) == 0
    times = json.loads(out.read_text())["times"]
    assert len(times["baseline"]) == len(times["app"]) == 2
    assert min(times["app"]) > min(times["baseline"]) > 0
    assert "beyond MPI" in capsys.readouterr().out
