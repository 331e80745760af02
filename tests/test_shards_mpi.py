"""Shard-sized set-up on real MPI ranks: the reference solve over the ranks' shards
(`ShardSum`) finds the optimum of the whole set, and the driver's big-data path gives the trace
the gathered path gives, to the solver's tolerance."""

from __future__ import annotations

import apps.diana
import numpy as np
import pytest

import mpicomp.setup as driver_setup
from mpicomp.problems import make_problem, solve_reference
from mpicomp.problems.data import load
from mpicomp.problems.distributed import ShardSum
from mpicomp.problems.shards import read_part
from mpicomp.run import EXIT_BAD_INPUT, EXIT_FINISHED
from mpicomp.trace import read_trace

pytestmark = pytest.mark.mpi
SPEC = "synthetic:logistic,n=301,d=12,h=1"


def shard_sum(comm, l1=0.0, spec=SPEC, problem="logistic"):
    part = read_part(spec, comm.rank, comm.size, how="shuffled", seed=4)
    local = make_problem(problem, part.mine.A, part.mine.y, l1=l1, l2=0.02)
    return ShardSum(local, part.mine.n_samples / part.summary.n_samples, comm)


@pytest.mark.parametrize("l1", [0.0, 0.01])
def test_the_sum_over_shards_has_the_whole_sets_optimum(comm, l1):
    total = shard_sum(comm, l1)
    whole = load(SPEC, seed=4, groups=comm.size)
    reference = make_problem("logistic", whole.A, whole.y, l1=l1, l2=0.02)
    if comm.rank != 0:
        total.serve()
        return
    try:
        x = np.random.default_rng(1).standard_normal(12)
        assert total.loss(x) == pytest.approx(reference.loss(x), rel=1e-13)
        np.testing.assert_allclose(total.grad(x), reference.grad(x), rtol=1e-12, atol=1e-15)
        assert total.smoothness() >= reference.smoothness() * (1 - 1e-12)
        found = solve_reference(total, tol=1e-11)
    finally:
        total.release()
    want = solve_reference(reference, tol=1e-11)
    assert found.converged and found.method.startswith("FISTA" if l1 else "L-BFGS-B")
    np.testing.assert_allclose(found.x, want.x, atol=1e-8)
    assert found.f == pytest.approx(want.f, rel=1e-12)


def test_a_failing_rank_ends_the_solve_on_every_rank(comm):
    total = shard_sum(comm)
    if comm.size > 1 and comm.rank == comm.size - 1:
        total.local.grad = lambda x: (_ for _ in ()).throw(OSError("no gradient here"))
    if comm.rank != 0:
        total.serve()  # returns: rank 0 releases the ranks after the failure
        return
    try:
        if comm.size > 1:
            with pytest.raises(RuntimeError, match=rf"rank {comm.size - 1}: OSError: no gradient"):
                total.grad(np.zeros(12))
        assert np.isfinite(total.loss(np.zeros(12)))  # a failure does not stop the service
    finally:
        total.release()


def run_diana(comm, tmp, name, *flags):
    trace = str(tmp / f"{name}.h5")
    rc = apps.diana.main(["--data", SPEC, "--trace", trace, "--progress", "off", "--iters", "20",
                          "--log-every", "5", *flags], comm)
    assert comm.allgather(rc) == [rc] * comm.size
    comm.Barrier()
    return rc, (read_trace(trace) if comm.rank == 0 else None)


def test_big_sets_are_solved_over_the_shards(comm, mpi_shared_tmp, monkeypatch):
    """Above the gather limit the driver solves for x* over the shards: the same run, with
    x*, F* and ‖x − x*‖² equal to the gathered solve's within the solver's tolerance and every
    other column bit for bit."""
    rc, gathered = run_diana(comm, mpi_shared_tmp, "gathered")
    monkeypatch.setattr(driver_setup, "GATHER_LIMIT_BYTES", 0)
    rc2, spread = run_diana(comm, mpi_shared_tmp, "spread")
    assert rc == rc2 == EXIT_FINISHED
    if comm.rank != 0:
        return
    assert spread.attrs["f_star"] == pytest.approx(gathered.attrs["f_star"], rel=1e-12)
    np.testing.assert_allclose(spread["dist_to_opt_sq"], gathered["dist_to_opt_sq"],
                               rtol=1e-7, atol=1e-16)
    for column in ("loss", "grad_norm_sq", "bits_up"):
        np.testing.assert_array_equal(spread[column], gathered[column])


def test_a_failure_in_the_spread_solve_fails_every_rank(comm, mpi_shared_tmp, monkeypatch):
    monkeypatch.setattr(driver_setup, "GATHER_LIMIT_BYTES", 0)
    if comm.rank == 0:
        def boom(*args, **kwargs):
            raise OSError("the solver broke")

        monkeypatch.setattr(driver_setup, "reference_point", boom)
    rc, trace = run_diana(comm, mpi_shared_tmp, "broken")
    assert rc == EXIT_BAD_INPUT
    if comm.rank == 0:
        assert trace.status == "failed" and "the solver broke" in trace.attrs["error"]
