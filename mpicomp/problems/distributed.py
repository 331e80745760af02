"""The whole-data problem as a sum over the ranks' shards, for the reference solve of big data.

``F(x) = Σ_r w_r F_r(x)`` with ``w_r = m_r / m`` (``m_r`` of the ``m`` training samples on rank
``r``): the mean loss over all samples is the weighted mean of the shard means, and the ℓ2 and
ℓ1 terms are the same on every rank (the weights sum to one). `ShardSum` is that problem on
rank 0, evaluated collectively: each ``loss``/``grad`` broadcasts ``x`` and sums the ranks'
weighted values with one reduction, while the other ranks `serve` those requests until rank 0
`release`s them. So the solver (`reference.solve_reference`) runs unchanged on rank 0, and no
rank holds more than its shard.

The sum is ordered by the reduction, not by the rows, so ``x*`` agrees with the single-process
solve over the gathered data to the solver's tolerance, not bit for bit.
"""

from __future__ import annotations

import numpy as np

from .base import Problem

_LOSS, _GRAD, _RELEASE = 0, 1, 2


class ShardSum(Problem):
    """``Σ_r w_r F_r`` over the shards of ``mpi_comm``'s ranks (built on every rank; rank 0
    calls it, the others `serve`).

    Parameters
    ----------
    local : Problem
        This rank's problem over its shard, on the host in float64.
    weight : float
        ``w_r = m_r / m``.
    mpi_comm : mpi4py.MPI.Intracomm
    """

    def __init__(self, local: Problem, weight: float, mpi_comm):
        from mpi4py import MPI

        self.local, self.weight, self.mpi_comm = local, float(weight), mpi_comm
        self.l1, self.l2 = local.l1, local.l2
        self.A, self.b = local.A, local.b
        self.convex, self.name = local.convex, local.name
        self._sum = MPI.SUM
        self._dim = local.dim
        self._n = int(mpi_comm.allreduce(local.n_samples))
        self._released = False
        mine = local.smoothness()
        found = mpi_comm.allgather(None if mine is None else self.weight * mine)
        self._L = None if any(v is None for v in found) else float(sum(found))

    @property
    def dim(self) -> int:
        return self._dim

    @property
    def n_samples(self) -> int:
        return self._n

    def __repr__(self) -> str:
        return (f"ShardSum({self.local.name}, m={self._n}, dim={self._dim} over "
                f"{self.mpi_comm.Get_size()} ranks, l1={self.l1:g}, l2={self.l2:g})")

    # -- evaluated collectively ----------------------------------------------------------------
    def loss(self, x, batch=None) -> float:
        if batch is not None:
            raise ValueError("the sum over shards is evaluated over whole shards (batch=None)")
        return float(self._evaluate(_LOSS, x)[0])

    def grad(self, x, batch=None, rng=None):
        if batch is not None:
            raise ValueError("the sum over shards is evaluated over whole shards (batch=None)")
        return self._evaluate(_GRAD, x)

    def smoothness(self) -> float | None:
        """``Σ_r w_r L_r``, a bound on the smoothness of ``Σ_r w_r f_r`` (found when built)."""
        return self._L

    def _data_loss(self, x, rows):  # pragma: no cover - loss is evaluated as a whole
        raise NotImplementedError

    def _data_grad(self, x, rows):  # pragma: no cover - grad is evaluated as a whole
        raise NotImplementedError

    def _data_smoothness(self):  # pragma: no cover - smoothness is evaluated as a whole
        raise NotImplementedError

    def _evaluate(self, what: int, x) -> np.ndarray:
        """Rank 0: the weighted sum over ranks of the loss (a 1-vector) or the gradient."""
        if self.mpi_comm.Get_rank() != 0:
            raise RuntimeError("ShardSum is evaluated on rank 0; the other ranks serve()")
        x = np.ascontiguousarray(self._check_x(np.asarray(x, dtype=np.float64)))
        self.mpi_comm.bcast(what, root=0)
        self.mpi_comm.Bcast(x, root=0)
        return self._reduce(what, x)

    def _reduce(self, what: int, x: np.ndarray) -> np.ndarray:
        """This rank's weighted value summed over ranks onto rank 0 (NaN from a rank whose
        evaluation failed, and the failure's text, so no rank is left waiting)."""
        try:
            mine = (np.array([self.local.loss(x)]) if what == _LOSS
                    else np.asarray(self.local.grad(x), dtype=np.float64))
            mine, failure = self.weight * mine, None
        except Exception as exc:  # reported by rank 0 below
            mine = np.full(1 if what == _LOSS else self._dim, np.nan)
            failure = f"{type(exc).__name__}: {exc}"
        total = np.empty_like(mine) if self.mpi_comm.Get_rank() == 0 else None
        self.mpi_comm.Reduce(mine, total, op=self._sum, root=0)
        failures = self.mpi_comm.gather(failure, root=0)
        if self.mpi_comm.Get_rank() == 0:
            bad = [(r, text) for r, text in enumerate(failures) if text is not None]
            if bad:
                raise RuntimeError("the reference solve failed on " + "; ".join(
                    f"rank {r}: {text}" for r, text in bad))
        return total

    # -- the other ranks --------------------------------------------------------------------------
    def serve(self) -> None:
        """Ranks other than 0: evaluate what rank 0 asks for until it `release`s them."""
        x = np.empty(self._dim)
        while True:
            what = self.mpi_comm.bcast(None, root=0)
            if what == _RELEASE:
                return
            self.mpi_comm.Bcast(x, root=0)
            self._reduce(what, x)

    def release(self) -> None:
        """Rank 0: let the serving ranks go (once; call it however the solve ended)."""
        if not self._released:
            self._released = True
            self.mpi_comm.bcast(_RELEASE, root=0)


__all__ = ["ShardSum"]
