"""DCGD and DIANA on real MPI ranks: equal to the serial references, and what the theory says
they reach (DIANA the exact optimum, DCGD a noise floor)."""

from __future__ import annotations

import numpy as np
import pytest
from reference_algorithms import Workers, run_dcgd, run_diana
from shared_data import SEED, dataset

from mpicomp import local_objective, make_algorithm, trajectory
from mpicomp.algorithms import DCGD, DIANA, rank_generators
from mpicomp.compress import make_compressor
from mpicomp.problems import make_problem, solve_reference

pytestmark = pytest.mark.mpi


CASES = [
    ("dither:p=inf,s=1", "server", None),
    ("qsgd:s=2,block=5", "allgather", None),
    ("natural", "two-phase", None),
    ("dither:p=2,s=1", "server", "natural"),
    ("qsgd:s=3,coder=elias", "two-phase", "identity"),
]


@pytest.mark.parametrize("compressor,topology,downlink", CASES)
@pytest.mark.parametrize("batch", [0, 7])
def test_dcgd_equals_serial_reference(comm, compressor, topology, downlink, batch):
    data = dataset(comm.size)
    algo = make_algorithm(DCGD, local_objective(comm, data, l2=0.1), comm, compressor, topology,
                          downlink=downlink, lr=0.3, batch=batch)
    x0 = np.zeros(data.n_features)
    got = trajectory(algo, x0, 12, seed=SEED)
    workers = Workers(data, comm.size, l2=0.1, seed=SEED)
    want = run_dcgd(workers, x0, compressor, topology, 0.3, 12, batch=batch, downlink=downlink)
    for t, (a, b) in enumerate(zip(got, want)):
        np.testing.assert_array_equal(a, b, err_msg=f"step {t}")


# DIANA keeps h = (1/n)Σ h_i only with an exact mean on every rank: lossless downlinks
DIANA_CASES = [
    ("dither:p=inf,s=1", "server", None),
    ("qsgd:s=2,block=5", "allgather", None),
    ("natural", "two-phase", "identity"),
    ("qsgd:s=3,coder=elias", "two-phase", "identity"),
]


@pytest.mark.parametrize("compressor,topology,downlink", DIANA_CASES)
@pytest.mark.parametrize("momentum,l1", [(0.0, 0.0), (0.5, 0.02)])
def test_diana_equals_serial_reference(comm, compressor, topology, downlink, momentum, l1):
    data = dataset(comm.size)
    algo = make_algorithm(DIANA, local_objective(comm, data, l1=l1, l2=0.1), comm, compressor,
                          topology, downlink=downlink, lr=0.2, alpha=0.3, momentum=momentum,
                          batch=5)
    x0 = np.full(data.n_features, 0.1)
    got = trajectory(algo, x0, 12, seed=SEED)
    workers = Workers(data, comm.size, l1=l1, l2=0.1, seed=SEED)
    want = run_diana(workers, x0, compressor, topology, 0.2, 0.3, 12, momentum=momentum, batch=5,
                     downlink=downlink)
    for t, (a, b) in enumerate(zip(got, want)):
        np.testing.assert_array_equal(a, b, err_msg=f"step {t}")


@pytest.mark.parametrize("topology", ["server", "allgather", "two-phase"])
def test_diana_with_alpha_zero_is_dcgd_step_for_step(comm, topology):
    data = dataset(comm.size)
    down = "identity" if topology == "two-phase" else None
    diana = make_algorithm(DIANA, local_objective(comm, data, l2=0.1), comm, "qsgd:s=2", topology,
                           downlink=down, lr=0.4, alpha=0.0, batch=4)
    dcgd = make_algorithm(DCGD, local_objective(comm, data, l2=0.1), comm, "qsgd:s=2", topology,
                          downlink=down, lr=0.4, batch=4)
    x0 = np.zeros(data.n_features)
    for t, (a, b) in enumerate(zip(trajectory(diana, x0, 15, seed=SEED),
                                   trajectory(dcgd, x0, 15, seed=SEED))):
        np.testing.assert_array_equal(a, b, err_msg=f"step {t}")


def test_bits_of_a_step_are_the_payload_bits(comm):
    # ℓ∞ dithering, s = 1, one block: a 64-bit norm, then sign + 1 level bit per coordinate
    data = dataset(comm.size)
    algo = make_algorithm(DIANA, local_objective(comm, data, l2=0.1), comm, "dither:p=inf,s=1",
                          "server", lr=0.1, alpha=0.5)
    state = algo.init(np.zeros(data.n_features), rank_generators(SEED, comm.size, comm.rank))
    _, info = algo.step(state)
    d = data.n_features
    assert info.bits_up == 64 + 2 * d
    assert info.bits_down == 64 * d  # the exact float64 mean comes back


@pytest.mark.parametrize("topology,downlink", [("two-phase", None), ("server", "natural")])
def test_diana_refuses_a_lossy_downlink(comm, topology, downlink):
    # h_i learn from their own messages, h from the re-compressed mean: they would drift apart
    with pytest.raises(ValueError, match="DIANA needs the exact mean"):
        make_algorithm(DIANA, local_objective(comm, dataset(comm.size), l2=0.1), comm, "natural",
                       topology, downlink=downlink, lr=0.1, alpha=0.5)


def distances(comm, cls, compressor, iters, topology="server", **kwargs):
    """‖x − x*‖² after ``iters`` full-gradient steps with theory step sizes."""
    data = dataset(comm.size, n=60 * comm.size, d=10, h=2.0)
    x_star = solve_reference(make_problem("logistic", data.A, data.y, l2=0.05)).x
    probe = make_algorithm(DCGD, local_objective(comm, data, l2=0.05), comm, compressor, topology,
                           lr=1.0, downlink="identity" if topology == "two-phase" else None)
    L = max(comm.allgather(probe.objective.smoothness()))
    agg = probe.aggregator
    lr = cls.theory_lr(agg.compressor, data.n_features, comm.size, L, "logistic")
    extra = {"alpha": DIANA.theory_alpha(agg.compressor, data.n_features)} if cls is DIANA else {}
    algo = make_algorithm(cls, local_objective(comm, data, l2=0.05), comm, compressor, topology,
                          lr=lr, **extra, **kwargs,
                          downlink="identity" if topology == "two-phase" else None)
    x = trajectory(algo, np.zeros(data.n_features), iters, seed=SEED)[-1]
    return float(np.sum((x - x_star) ** 2))


def test_diana_reaches_the_optimum_where_dcgd_stalls(comm, mpi_skip_unless):
    # heterogeneous logistic regression (one data distribution per rank), full gradients, ℓ∞
    # dithering: DIANA's shifts learn ∇f_i(x*) and the error vanishes; DCGD keeps a noise floor
    # ∝ γω/n Σ‖∇f_i(x*)‖², which needs at least two different workers
    mpi_skip_unless(comm.size >= 2, "the noise floor comes from differences between workers")
    diana = distances(comm, DIANA, "dither:p=inf,s=1", 1000)
    dcgd = distances(comm, DCGD, "dither:p=inf,s=1", 1000)
    assert diana < 1e-10, diana
    assert dcgd > 1e-4, dcgd
    # the same through the two-phase aggregator (chunks compressed up, averages sent exactly)
    assert distances(comm, DIANA, "dither:p=inf,s=1", 1000, topology="two-phase") < 1e-10


def test_diana_with_l1_reaches_the_sparse_optimum_with_exact_zeros(comm):
    data = dataset(comm.size, n=60 * comm.size, d=16, h=0.5, density=0.25)
    whole = make_problem("logistic", data.A, data.y, l1=0.03, l2=0.05)
    x_star = solve_reference(whole).x
    algo = make_algorithm(DIANA, local_objective(comm, data, l1=0.03, l2=0.05), comm,
                          "dither:p=inf,s=1", "server", lr=0.5,
                          alpha=DIANA.theory_alpha(make_compressor("dither:p=inf,s=1"), 16))
    x = trajectory(algo, np.zeros(16), 1500, seed=SEED)[-1]
    zeros = x_star == 0
    assert 0 < zeros.sum() < 16
    assert np.sum((x - x_star) ** 2) < 1e-10
    assert np.array_equal(x == 0, zeros)  # exact zeros, on the optimum's support
