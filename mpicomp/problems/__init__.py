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


#: the problem backed by a PyTorch model (``pip install 'mpicomp[torch]'``), imported on demand
NEURAL_NETWORK = "nn"


def neural_network_class() -> type[Problem]:
    """`mpicomp.nn.NeuralNetwork`, or an ImportError that says how to install PyTorch."""
    try:
        from ..nn.problem import NeuralNetwork
    except ModuleNotFoundError as exc:
        if exc.name != "torch":
            raise
        raise ImportError("the nn problem trains a PyTorch model, and PyTorch is not installed: "
                          "pip install 'mpicomp[torch]'") from None
    return NeuralNetwork


def is_convex(name: str) -> bool:
    """Whether the problem called ``name`` is convex (without importing PyTorch)."""
    return name != NEURAL_NETWORK and PROBLEMS[name].convex


def make_problem(name: str, A, b, **kwargs) -> Problem:
    """Build the problem called ``name`` (one of `PROBLEMS`) over the shard ``(A, b)``.

    ``kwargs`` are the problem's hyper-parameters: ``l1``, ``l2``, and ``n_classes`` (softmax,
    mlp, nn) or ``hidden`` (mlp), ``model``, ``image_shape``, ``augment``, ``seed`` (nn: a
    PyTorch model, `mpicomp.nn.NeuralNetwork`). ``"lasso"`` is least squares; give it
    ``l1 > 0``.
    """
    if name == NEURAL_NETWORK:
        return neural_network_class()(A, b, **kwargs)
    try:
        cls = PROBLEMS[name]
    except KeyError:
        raise ValueError(
            f"unknown problem {name!r}: choose one of "
            f"{', '.join(sorted([*PROBLEMS, NEURAL_NETWORK]))}"
        ) from None
    return cls(A, b, **kwargs)


__all__ = [
    "Problem", "LogisticRegression", "LeastSquares", "SoftmaxRegression", "MLP", "PROBLEMS",
    "make_problem", "NEURAL_NETWORK", "is_convex", "neural_network_class",
    "ReferenceInterrupted", "ReferenceResult", "reference_optimum", "solve_reference",
]
