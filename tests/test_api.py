"""The public surface of ``import mpicomp`` without MPI: every name resolves lazily and cheaply,
the docstring's example uses only public names, a rank's weighted share of the data adds up to
the whole problem, and the run loop hands out what it promises. The MPI side is test_api_mpi.py."""

from __future__ import annotations

import ast
import dataclasses
import subprocess
import sys
import textwrap
import types

import numpy as np
import pytest

import mpicomp


def docstring_example() -> str:
    """The script of the package docstring's Example section."""
    doc = mpicomp.__doc__
    lines = doc[doc.index("``example.py`` and run"):].splitlines()
    assert lines[0].endswith("::")
    body = []
    for line in lines[1:]:
        if line.strip() and not line.startswith("    "):
            break
        body.append(line)
    return textwrap.dedent("\n".join(body)).strip() + "\n"


def fake_ranks(size):
    return [types.SimpleNamespace(rank=r, size=size) for r in range(size)]


def test_import_is_cheap_and_resolving_names_starts_no_mpi():
    # the CLI's --help relies on it: only communicating calls import mpi4py
    code = ("import sys, mpicomp\n"
            "before = sorted(m for m in ('mpi4py', 'numpy', 'scipy') if m in sys.modules)\n"
            "for name in mpicomp.__all__: getattr(mpicomp, name)\n"
            "print(before, 'mpi4py' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.split() == ["[]", "False"]


def test_every_public_name_resolves_and_is_listed():
    assert len(mpicomp.__all__) == len(set(mpicomp.__all__))
    for name in mpicomp.__all__:
        assert getattr(mpicomp, name) is not None, name
    assert set(mpicomp.__all__) <= set(dir(mpicomp))
    namespace = {}
    exec("from mpicomp import *", namespace)
    assert set(mpicomp.__all__) <= set(namespace)
    assert mpicomp.DIANA is mpicomp.ALGORITHMS["diana"]
    assert set(mpicomp.ALGORITHMS.values()) == {mpicomp.DCGD, mpicomp.DIANA, mpicomp.EFSGD,
                                                mpicomp.QAdam, mpicomp.Signum, mpicomp.DPSGD,
                                                mpicomp.ChocoSGD, mpicomp.MalcomPSGD}
    from mpicomp.problems.data import load

    assert mpicomp.load_dataset is load
    with pytest.raises(AttributeError, match="no attribute 'build'"):
        _ = mpicomp.build  # the attribute access itself is what must raise


def test_docstring_example_uses_only_public_names():
    tree = ast.parse(docstring_example())
    used = {node.attr for node in ast.walk(tree)
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
            and node.value.id == "mpicomp"}
    assert {"communicator", "local_objective", "make_aggregator", "run_steps"} <= used
    assert used <= set(mpicomp.__all__), used - set(mpicomp.__all__)
    assert len(docstring_example().splitlines()) <= 15  # it is the README's example too


@pytest.mark.parametrize("size", [1, 3, 4])
def test_weighted_shares_add_up_to_the_whole_problem(size):
    # unequal shards (37 per rank plus a remainder): (1/n) Σ_i w_i f_i = F over all samples
    data = mpicomp.make_synthetic("logistic", n_samples=37 * size + 2, n_features=9,
                                  heterogeneity=1.0, groups=size, seed=4)
    shares = [mpicomp.local_objective(c, data, "logistic", l2=0.1) for c in fake_ranks(size)]
    whole = mpicomp.make_problem("logistic", data.A, data.y, l2=0.1)
    x = np.linspace(-1.0, 1.0, 9)
    assert sum(s.n_samples for s in shares) == data.n_samples
    assert sum(s.weight for s in shares) == pytest.approx(size, rel=1e-15)
    assert isinstance(shares[0], mpicomp.LocalObjective)
    assert np.mean([s.loss(x) for s in shares]) == pytest.approx(whole.loss(x), rel=1e-12)
    np.testing.assert_allclose(np.mean([s.grad(x) for s in shares], axis=0), whole.grad(x),
                               rtol=1e-12, atol=1e-15)


def test_local_objective_takes_a_data_spec_as_the_driver_does():
    spec = "synthetic:logistic,n=50,d=6,h=1"
    [a, b] = fake_ranks(2)
    data = mpicomp.load_dataset(spec, seed=7, groups=2)
    from_spec = mpicomp.local_objective(b, spec, l1=0.01, seed=7)
    from_data = mpicomp.local_objective(b, data, l1=0.01, seed=7)
    x = np.full(6, 0.3)
    assert from_spec.weight == from_data.weight and from_spec.n_samples == from_data.n_samples == 25
    np.testing.assert_array_equal(from_spec.grad(x), from_data.grad(x))
    # the command line's default
    assert from_spec.problem.l1 == 0.01 and from_spec.problem.l2 == 1e-3
    # a softmax problem takes its class count from the data ("synthetic" picks the multiclass kind)
    softmax = mpicomp.local_objective(a, "synthetic:n=60,d=5,classes=4", "softmax")
    assert softmax.dim == 5 * 4


def test_make_algorithm_names_the_choices_of_an_unknown_method():
    with pytest.raises(ValueError, match="unknown algorithm 'adam'.*choco, dcgd, diana"):
        mpicomp.make_algorithm("adam", None, None)


@dataclasses.dataclass
class CountState:
    x: np.ndarray
    step: int
    seed_draw: float


class Doubler:
    """x ← 2x + (a draw of the compression stream), on a fake rank 1 of 3."""

    comm = types.SimpleNamespace(rank=1, size=3)

    def init(self, x0, seeds):
        return CountState(np.array(x0, dtype=float), 0, float(seeds[0].random()))

    def step(self, state):
        state.x = 2 * state.x + state.seed_draw
        state.step += 1
        return state, state.step


def test_run_steps_and_trajectory_use_this_ranks_streams_and_report_every_step():
    seen = []
    state = mpicomp.run_steps(
        Doubler(), np.ones(2), 3, seed=11,
        each=lambda before, state, info: seen.append((before["x"], state.x.copy(), info)))
    draw = mpicomp.rank_generators(11, 3, 1)[0].random()
    assert state.seed_draw == draw and state.step == 3
    assert [info for _, _, info in seen] == [1, 2, 3]
    for before, after, _ in seen:  # ``before`` is a copy taken before the step
        np.testing.assert_array_equal(after, 2 * before + draw)
    xs = mpicomp.trajectory(Doubler(), np.ones(2), 3, seed=11)
    assert len(xs) == 4
    np.testing.assert_array_equal(xs[0], np.ones(2))
    np.testing.assert_array_equal(xs[-1], state.x)
    assert (mpicomp.run_steps(Doubler(), np.ones(2), 0).seed_draw
            == mpicomp.rank_generators(0, 3, 1)[0].random())
