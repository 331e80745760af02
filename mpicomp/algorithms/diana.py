"""DIANA: compressed gradient differences with learned shifts (SPEC §2.2)."""

from __future__ import annotations

import dataclasses

import numpy as np

from ..backend import to_like
from ..comm.aggregate import Aggregator
from ..config import Setting
from .base import LocalObjective, StepInfo, copy_of, zeros_like
from .centralised import CentralisedAlgorithm, omega_of, require_exact_downlink


@dataclasses.dataclass
class DIANAState:
    """``x`` and ``h = (1/n)Σ h_i`` (the same on every rank), this rank's shift ``h_i``, the
    momentum buffer ``v``, the step count and this rank's generators."""

    x: np.ndarray
    h_local: np.ndarray
    h_mean: np.ndarray
    v: np.ndarray
    step: int
    rng: np.random.Generator
    sample_rng: np.random.Generator


class DIANA(CentralisedAlgorithm):
    """DIANA: each worker compresses the difference between its gradient and a shift it learns.

    Parameters
    ----------
    objective : LocalObjective
    comm : Communicator
    aggregator : Aggregator
        Forms ``(1/n) Σ_i Δ̂_i``; every rank receives it, so every rank keeps ``h``.
    lr : float
        ``γ``.
    alpha : float
        Shift step ``α`` (0 gives DCGD exactly).
    momentum : float
        ``β`` of the heavy-ball buffer ``v`` (0: none).
    shift_init : {"zero", "grad"}
        ``h_i⁰ = 0``, or ``∇f_i(x⁰)`` (one exact allreduce of ``d`` values at the start).
    batch : int
        Minibatch size (0: full local gradients).

    Notes
    -----
    ::

        worker i:  Δ_i = g_i − h_i;   Δ̂_i = C(Δ_i);   h_i ← h_i + α Δ̂_i
        all:       ĝ = h + (1/n)Σ Δ̂_i;   v = βv + ĝ;   x ← prox_{γR}(x − γv);
                   h ← h + α(1/n)Σ Δ̂_i

    ``theory`` defaults: ``α = 1/(ω + 1)`` and ``γ = 1/(L(1 + 6ω/n))`` with ``L = max_i L_i``
    (a safe step of the DIANA analyses for that ``α``). With full gradients and an unbiased
    ``C`` the shifts learn ``∇f_i(x*)``, the messages vanish, and ``x`` converges linearly to
    the exact optimum where DCGD stalls at a noise floor.

    References
    ----------
    Mishchenko, Gorbunov, Takáč, Richtárik, "Distributed learning with compressed gradient
    differences", arXiv:1901.09269, 2019. Horváth, Kovalev, Mishchenko, Stich, Richtárik,
    "Stochastic distributed learning with gradient quantization and variance reduction", 2019.
    """

    name = "diana"
    state_type = DIANAState
    step_factor = 6.0
    default_downlink = "identity"  # two-phase sends the averaged chunks exactly (see __init__)
    reported = ("lr", "alpha", "momentum", "batch", "shift_init")
    settings = (
        Setting("alpha", "theory", "theory",
                "shift step α: a number in [0, 1] or 'theory' (1/(ω+1))", low=0.0, high=1.0),
        Setting("momentum", "float", 0.0, "heavy-ball β of the aggregated estimate", low=0.0,
                high=1.0, high_open=True),
        Setting("shift_init", "text", "zero", "initial shifts h_i: zero, or grad (∇f_i(x⁰))",
                choices=("zero", "grad")),
    )

    def __init__(self, objective: LocalObjective, comm, aggregator: Aggregator, *, lr: float,
                 alpha: float, momentum: float = 0.0, shift_init: str = "zero", batch: int = 0):
        super().__init__(objective, comm, lr=lr, batch=batch)
        self.check_settings(alpha=alpha, momentum=momentum, shift_init=shift_init)
        require_exact_downlink(aggregator, "DIANA", "h must stay (1/n)Σ h_i, else ĝ is biased for "
                               "good and the exact optimum is lost")
        self.aggregator = aggregator
        self.alpha = float(alpha)
        self.momentum = float(momentum)
        self.shift_init = shift_init

    @classmethod
    def theory_alpha(cls, op, dim: int) -> float:
        """``1/(ω + 1)``."""
        return 1.0 / (omega_of(op, dim, "alpha") + 1.0)

    @classmethod
    def build(cls, cfg, objective, comm, smoothness):
        d = objective.dim
        aggregator = cls.aggregator_for(cfg, objective, comm)
        alpha = cls.theory_alpha(aggregator.compressor, d) if cfg.alpha == "theory" else cfg.alpha
        lr = cls.resolved_lr(cfg, aggregator, d, comm.size, smoothness)
        return cls(objective, comm, aggregator, lr=lr, alpha=alpha, momentum=cfg.momentum,
                   shift_init=cfg.shift_init, batch=cfg.batch)

    def init(self, x0, seeds):
        x = copy_of(x0)
        h_local = zeros_like(x)
        h_mean = zeros_like(x)
        if self.shift_init == "grad":
            h_local[...] = self.objective.grad(x)
            h_mean[...] = to_like(self.comm.allreduce(h_local) / self.comm.size, h_mean)
            bits = h_local.size * 8 * h_local.itemsize
            self.setup_info = StepInfo(bits, bits)
        return self.new_state(seeds, x=x, h_local=h_local, h_mean=h_mean, v=zeros_like(x))

    def advance(self, state: DIANAState) -> StepInfo:
        g = self.local_gradient(state)
        agg = self.aggregator.reduce(g - state.h_local, state.rng, own=self.alpha > 0)
        if self.alpha > 0:
            state.h_local += self.alpha * agg.own
        estimate = state.h_mean + agg.mean
        if self.alpha > 0:
            state.h_mean += self.alpha * agg.mean
        if self.momentum:
            state.v = self.momentum * state.v + estimate
            estimate = state.v
        state.x = self.objective.prox(state.x - self.lr * estimate, self.lr)
        return StepInfo(agg.bits_up, agg.bits_down)
