"""Problems and algorithms on an array API namespace that is not NumPy: every method's iterates
with the shard and the state in ``array_api_strict`` arrays on a non-default device (which
refuses every implicit conversion to NumPy) equal its iterates under NumPy, on every rank.
The exchange stages each message explicitly (`mpicomp.backend.GenericRuntime`), so a host
round trip hidden anywhere in a step raises instead of passing silently."""

from __future__ import annotations

import numpy as np
import pytest

import mpicomp
from mpicomp.backend import to_host

xps = pytest.importorskip("array_api_strict")
pytestmark = pytest.mark.mpi

DEVICE = xps.Device("device1")

CASES = [  # algorithm, compressor, topology, hyper-parameters
    ("dcgd", "qsgd:s=4", "server", {"lr": 0.5}),
    ("dcgd", "natural", "allgather", {"lr": 0.5}),
    ("diana", "dither:p=inf,s=1", "two-phase",
     {"lr": 0.2, "alpha": 0.5, "momentum": 0.5, "downlink": "identity"}),
    ("efsgd", "scaled_sign", "server", {"lr": 0.1}),
    ("qadam", "scaled_sign:block=4", "server", {"lr": 0.05, "weight_quant": "uniform:bits=8"}),
    ("signsgd", None, "allgather", {"lr": 0.05, "momentum": 0.9}),
    ("choco", "qsgd:s=4", "ring", {"lr": 0.2, "gamma": 0.5}),
    ("dpsgd", None, "ring", {"lr": 0.2}),
]


def iterates(comm, name, compressor, topology, hyper, strict: bool, steps=6, batch=0):
    data = mpicomp.make_synthetic("logistic", n_samples=12 * comm.size + 5, n_features=9,
                                  heterogeneity=1.0, groups=comm.size, seed=3)
    objective = mpicomp.local_objective(comm, data, "logistic", l2=0.05)
    if strict:  # the same shard on the strict device
        problem = objective.problem
        problem.A = xps.asarray(problem.A, device=DEVICE)
        problem.b = xps.asarray(problem.b, device=DEVICE)
        objective = mpicomp.LocalObjective(problem, objective.weight)
    algo = mpicomp.make_algorithm(name, objective, comm, compressor, topology, batch=batch,
                                  **hyper)
    x0 = np.zeros(9)
    start = xps.asarray(x0, device=DEVICE) if strict else x0
    xs = []
    mpicomp.run_steps(algo, start, steps, seed=5,
                      each=lambda before, state, info: xs.append(to_host(state.x).copy()))
    algo.close()
    return np.array(xs)


@pytest.mark.parametrize("name,compressor,topology,hyper", CASES)
def test_iterates_on_a_strict_device_equal_numpys(comm, name, compressor, topology, hyper):
    expected = iterates(comm, name, compressor, topology, hyper, strict=False)
    got = iterates(comm, name, compressor, topology, hyper, strict=True)
    assert np.isfinite(expected).all() and not np.array_equal(expected[0], expected[-1])
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-15)


def test_minibatches_on_a_strict_device_equal_numpys(comm):
    args = ("diana", "qsgd:s=4", "server", {"lr": 0.2, "alpha": 0.5})
    expected = iterates(comm, *args, strict=False, batch=4)
    got = iterates(comm, *args, strict=True, batch=4)
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-15)
