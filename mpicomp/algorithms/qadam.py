"""Quantised distributed Adam with error feedback, on a parameter server (SPEC §2.5)."""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from ..backend import namespace
from ..comm.aggregate import ServerAggregator, make_aggregator
from ..compress import make_compressor
from ..compress.registry import check_lengths
from ..config import Setting
from .base import (
    LocalObjective,
    StepInfo,
    copy_of,
    require_number,
    uplink_operator,
    zeros_like,
)
from .centralised import CentralisedAlgorithm


@dataclasses.dataclass
class QAdamState:
    """The weights ``x`` the workers hold (``Q_x`` of the server's, the same on every rank), the
    server's full-precision weights ``server_x`` (on the root; empty elsewhere), this rank's
    Adam moments ``m``, ``v`` and error ``e``, the step count and this rank's generators."""

    x: np.ndarray
    server_x: np.ndarray
    m: np.ndarray
    v: np.ndarray
    e: np.ndarray
    step: int
    rng: np.random.Generator
    sample_rng: np.random.Generator


SCHEDULES = ("constant", "sqrt")


def _valid_weight_quant(spec: str) -> None:
    if spec != "none":
        make_compressor(spec)


class QAdam(CentralisedAlgorithm):
    """Quantised Adam: workers run Adam locally and send quantised, error-compensated steps.

    Parameters
    ----------
    objective : LocalObjective
    comm : Communicator
    aggregator : ServerAggregator
        Gathers ``Q_g(δ_i)`` on the server (its ``op`` is ``Q_g``).
    lr : float
        ``η``.
    schedule : {"constant", "sqrt"}
        ``η_t = η``, or ``η/√(t + 1)`` (the decay of the paper's analysis).
    beta1, beta2, eps : float
        Adam's constants.
    error_feedback : bool
        Keep ``e_i`` (False: ``e_i = 0``, plain quantised Adam).
    weight_quant : str or Compressor, optional
        ``Q_x``, the operator the server sends the weights with (None: exact).
    batch : int
        Minibatch size (0: full local gradients).

    Notes
    -----
    ::

        worker i:  m_i ← β1 m_i + (1 − β1) g_i;   v_i ← β2 v_i + (1 − β2) g_i²
                   δ_i = η m_i/(√v_i + ε) + e_i;   Δ_i = Q_g(δ_i);   e_i ← δ_i − Δ_i;   send Δ_i
        server:    x ← x − (1/n)Σ Δ_i;   send x̃ = Q_x(x)   (it keeps the full x)
        worker i:  g_i = ∇f_i(x̃) at the next step

    As in the paper there is no bias correction of the moments. The loss in the trace is that
    of ``x̃``, the weights the workers compute with. The virtual
    iterate ``x − (1/n)Σ e_i`` moves by exactly ``−(1/n)Σ η m_i/(√v_i + ε)`` each step.

    References
    ----------
    Chen, Shen, Huang, Yin, Zhang, "Quantized Adam with error feedback", ACM TIST 2021
    (arXiv:2004.14180). Kingma, Ba, "Adam: a method for stochastic optimization", ICLR 2015.
    """

    name = "qadam"
    state_type = QAdamState
    topologies = ("server",)
    unused_settings = ("downlink",)
    reported = ("lr", "schedule", "beta1", "beta2", "eps", "error_feedback", "batch")
    settings = (
        Setting("schedule", "text", "constant", "step η_t: constant η, or sqrt: η/√(t+1)",
                choices=SCHEDULES),
        Setting("beta1", "float", 0.9, "Adam's β1", low=0.0, high=1.0, high_open=True),
        Setting("beta2", "float", 0.999, "Adam's β2", low=0.0, high=1.0, high_open=True),
        Setting("eps", "float", 1e-8, "Adam's ε", low=0.0, low_open=True),
        Setting("error_feedback", "bool", True, "keep each worker's quantisation error e_i"),
        Setting("weight_quant", "text", "none",
                "operator Q_x the server sends the weights with, e.g. uniform:bits=8,block=64 "
                "(none: exact)", check=_valid_weight_quant),
    )

    def __init__(self, objective: LocalObjective, comm, aggregator: ServerAggregator, *, lr: float,
                 schedule: str = "constant", beta1: float = 0.9, beta2: float = 0.999,
                 eps: float = 1e-8, error_feedback: bool = True, weight_quant=None,
                 batch: int = 0):
        super().__init__(objective, comm, lr=lr, batch=batch)
        if not isinstance(aggregator, ServerAggregator):
            raise ValueError("quantised Adam runs on a parameter server: use the server topology")
        self.check_settings(schedule=schedule, beta1=beta1, beta2=beta2, eps=eps)
        self.aggregator = aggregator
        self.schedule = schedule
        self.beta1, self.beta2, self.eps = float(beta1), float(beta2), float(eps)
        self.error_feedback = bool(error_feedback)
        self.weight_quant = make_compressor(weight_quant or "identity")

    @classmethod
    def build(cls, cfg, objective, comm, smoothness):
        lr = require_number(cfg.lr, "lr", "quantised Adam", 0.01)
        aggregator = make_aggregator("server", comm, uplink_operator(cfg, objective),
                                     dim=objective.dim)
        weight_quant = None if cfg.weight_quant == "none" else make_compressor(cfg.weight_quant)
        if weight_quant is not None:  # the server sends the whole weight vector with it
            check_lengths(weight_quant, [objective.dim], setting="weight_quant")
        return cls(objective, comm, aggregator, lr=lr, schedule=cfg.schedule, beta1=cfg.beta1,
                   beta2=cfg.beta2, eps=cfg.eps, error_feedback=cfg.error_feedback,
                   weight_quant=weight_quant, batch=cfg.batch)

    def hyperparameters(self) -> dict:
        return {**super().hyperparameters(), "weight_quant": self.weight_quant.spec()}

    def init(self, x0, seeds):
        rng = seeds[0]
        xp = namespace(x0)
        x0 = xp.asarray(x0)
        server_x = copy_of(x0) if self.aggregator.is_root else xp.empty(0, dtype=x0.dtype)
        self.aggregator.start(x0)  # the weights are received where x0 lives
        x, bits = self.send_weights(server_x, rng, x0.size, x0.dtype)
        self.setup_info = StepInfo(0, bits)
        return self.new_state(seeds, x=x, server_x=server_x, m=zeros_like(x), v=zeros_like(x),
                              e=zeros_like(x))

    def send_weights(self, server_x: np.ndarray, rng, d: int, dtype) -> tuple[np.ndarray, int]:
        """``(Q_x(x), bits received)``: the server's weights as every worker holds them
        (``server_x`` is read on the root only)."""
        return self.aggregator.broadcast(server_x, rng, d, dtype, op=self.weight_quant)

    def step_size(self, step: int) -> float:
        """``η_t`` at step ``t`` (counted from 0)."""
        return self.lr / math.sqrt(step + 1) if self.schedule == "sqrt" else self.lr

    def advance(self, state: QAdamState) -> StepInfo:
        g = self.local_gradient(state)
        state.m = self.beta1 * state.m + (1.0 - self.beta1) * g
        state.v = self.beta2 * state.v + (1.0 - self.beta2) * g * g
        delta = self.step_size(state.step) * state.m / (namespace(state.v).sqrt(state.v) + self.eps)
        if self.error_feedback:
            delta = delta + state.e
        up = self.aggregator.gather(delta, state.rng, own=self.error_feedback)
        if self.aggregator.is_root and up.mean is not None:  # None: the broadcast raises
            state.server_x = state.server_x - up.mean
        state.x, bits_down = self.send_weights(state.server_x, state.rng, state.x.size,
                                               state.x.dtype)
        if self.error_feedback:
            state.e = delta - up.own
        return StepInfo(up.bits_up, bits_down)
