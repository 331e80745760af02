"""Losses and gradients over a local shard (SPEC §4), and the reference optimum ``x*``.

>>> from mpicomp.problems import make_problem
>>> p = make_problem("logistic", A, b, l2=1e-3)          # doctest: +SKIP
>>> g = p.grad(x, batch=idx); L = p.smoothness()          # doctest: +SKIP
"""

from __future__ import annotations

from .base import Problem
from .least_squares import LeastSquares
from .logistic import LogisticRegression
from .mlp import MLP
from .reference import ReferenceInterrupted, ReferenceResult, reference_optimum, solve_reference
from .softmax import SoftmaxRegression

PROBLEMS: dict[str, type[Problem]] = {
    "logistic": LogisticRegression,
    "least_squares": LeastSquares,
    "lasso": LeastSquares,
    "softmax": SoftmaxRegression,
    "mlp": MLP,
}


def make_problem(name: str, A, b, **kwargs) -> Problem:
    """Build the problem called ``name`` (one of `PROBLEMS`) over the shard ``(A, b)``.

    ``kwargs`` are the problem's hyper-parameters: ``l1``, ``l2``, and ``n_classes`` (softmax,
    mlp) or ``hidden`` (mlp). ``"lasso"`` is least squares; give it ``l1 > 0``.
    """
    try:
        cls = PROBLEMS[name]
    except KeyError:
        raise ValueError(
            f"unknown problem {name!r}: choose one of {', '.join(sorted(PROBLEMS))}"
        ) from None
    return cls(A, b, **kwargs)


__all__ = [
    "Problem", "LogisticRegression", "LeastSquares", "SoftmaxRegression", "MLP", "PROBLEMS",
    "make_problem", "ReferenceInterrupted", "ReferenceResult", "reference_optimum",
    "solve_reference",
]
