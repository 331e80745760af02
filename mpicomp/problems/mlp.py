"""A small multilayer perceptron: one tanh hidden layer, softmax output (SPEC §4, non-convex).

Parameters are one flat vector ``x = [W1 (d×h), b1 (h), W2 (h×C), b2 (C)]``, each block
row-major. ``f(x) = (1/m) Σ_j CE(softmax(tanh(a_jᵀW1 + b1) W2 + b2), b_j) + (λ2/2)‖x‖²``
(the ℓ2 term covers the biases too). Binary problems use ``C = 2`` with labels 0/1.
"""

from __future__ import annotations

import numbers

import numpy as np

from ..backend import namespace, to_like
from ._softmax_ops import log_softmax_loss, softmax_residual
from .base import Problem, check_integer_labels, xp_dtype


class MLP(Problem):
    """One-hidden-layer tanh network with softmax cross-entropy, gradient by backpropagation.

    Parameters
    ----------
    hidden : int
        Width ``h`` of the hidden layer.
    n_classes : int, optional
        ``C`` (inferred as ``max(b) + 1`` when omitted; pass it in distributed runs).

    Notes
    -----
    Backpropagation, with ``H = tanh(A W1 + b1)``, ``Z = H W2 + b2``, ``P = softmax(Z)``:
    ``δZ = (P − Y)/m``, ``∇W2 = Hᵀ δZ``, ``∇b2 = Σ_rows δZ``, ``δU = (δZ W2ᵀ) ⊙ (1 − H²)``,
    ``∇W1 = Aᵀ δU``, ``∇b1 = Σ_rows δU``.

    `smoothness` returns None: the loss is non-convex and its gradient has no global Lipschitz
    constant (the curvature in ``W1`` grows with ``‖W2‖``, without bound). `local_smoothness`
    estimates the curvature near a given point, for step sizes chosen by hand.
    """

    name = "mlp"
    convex = False

    def __init__(self, A, b, l1: float = 0.0, l2: float = 0.0, hidden: int = 32,
                 n_classes: int | None = None) -> None:
        super().__init__(A, b, l1=l1, l2=l2)
        if isinstance(hidden, bool) or not isinstance(hidden, numbers.Integral) or hidden < 1:
            raise ValueError(f"hidden must be a positive integer, got {hidden!r}")
        self.hidden = int(hidden)
        self.b, self.n_classes = check_integer_labels(self.b, n_classes, "the MLP")
        d, h, C = self.n_features, self.hidden, self.n_classes
        self._shapes = ((d, h), (h,), (h, C), (C,))
        self._offsets = np.cumsum([0] + [int(np.prod(s)) for s in self._shapes]).tolist()

    def hyperparameters(self):
        return {**super().hyperparameters(), "hidden": self.hidden, "n_classes": self.n_classes}

    @property
    def dim(self) -> int:
        return self._offsets[-1]

    def unpack(self, x):
        """Views ``(W1, b1, W2, b2)`` of the flat parameter vector."""
        o = self._offsets
        xp = namespace(x)
        return tuple(xp.reshape(x[o[i]:o[i + 1]], s) for i, s in enumerate(self._shapes))

    def initial_point(self, rng: np.random.Generator | None = None, dtype=np.float64):
        """Glorot-uniform weights, zero biases; ``rng`` defaults to seed 0 so all ranks agree.

        Drawn on the host (NumPy's generator) and copied explicitly to the device of ``b``."""
        rng = np.random.default_rng(0) if rng is None else rng
        parts = []
        for shape in self._shapes:
            if len(shape) == 2:
                limit = np.sqrt(6.0 / (shape[0] + shape[1]))
                parts.append(rng.uniform(-limit, limit, size=shape).ravel())
            else:
                parts.append(np.zeros(shape))
        xp = namespace(self.b)
        if xp is np:
            return np.asarray(np.concatenate(parts).astype(dtype))
        return xp.astype(to_like(np.concatenate(parts), self.b), xp_dtype(xp, dtype))

    def _forward(self, x, rows):
        A, y, m = self._rows(rows)
        W1, b1, W2, b2 = self.unpack(x)
        H = namespace(x).tanh(A @ W1 + b1)
        loss, P = log_softmax_loss(H @ W2 + b2, y)
        return A, y, m, H, W2, loss, P

    def _data_loss(self, x, rows) -> float:
        return self._forward(x, rows)[5]

    def _data_grad(self, x, rows):
        A, y, m, H, W2, _, P = self._forward(x, rows)
        xp = namespace(x)
        dZ = softmax_residual(P, y) / m
        dU = (dZ @ W2.T) * (1.0 - H * H)
        return xp.concat([
            xp.reshape(A.T @ dU, (-1,)), xp.sum(dU, axis=0),
            xp.reshape(H.T @ dZ, (-1,)), xp.sum(dZ, axis=0),
        ])

    def _data_smoothness(self) -> None:
        return None

    def local_smoothness(self, x, iters: int = 30, eps: float = 1e-6, seed: int = 0) -> float:
        """Estimate ``‖∇²f(x)‖₂`` by power iteration on finite-difference Hessian-vector products.

        A heuristic (valid near ``x`` only), not a bound: ``f`` is non-convex.
        """
        xp = namespace(x)
        v = to_like(np.random.default_rng(seed).standard_normal(self.dim), x)
        v /= _norm(xp, v)
        g0 = self.grad(x)
        est = 0.0
        for _ in range(iters):
            hv = (self.grad(x + eps * v) - g0) / eps
            est = float(_norm(xp, hv))
            if est == 0.0:
                break
            v = hv / est
        return est

    def predict(self, x, A=None):
        """Predicted classes for ``A`` (default: the shard)."""
        A = self.A if A is None else A
        W1, b1, W2, b2 = self.unpack(x)
        xp = namespace(x)
        return xp.argmax(xp.tanh(A @ W1 + b1) @ W2 + b2, axis=1)


def _norm(xp, v):
    """``‖v‖₂``: ``np.linalg.norm`` on the host (as always), the standard ``vector_norm``
    elsewhere."""
    return np.linalg.norm(v) if xp is np else xp.linalg.vector_norm(v)
