"""EF-SGD: compressed SGD with error feedback, for any (biased) operator (SPEC §1.5)."""

from __future__ import annotations

import dataclasses

import numpy as np

from ..comm.aggregate import Aggregator
from .base import LocalObjective, StepInfo, copy_of, require_number, zeros_like
from .centralised import CentralisedAlgorithm, require_exact_downlink


@dataclasses.dataclass
class EFSGDState:
    """``x`` (the same on every rank), this rank's error memory ``e``, the step count and this
    rank's generators."""

    x: np.ndarray
    e: np.ndarray
    step: int
    rng: np.random.Generator
    sample_rng: np.random.Generator


class EFSGD(CentralisedAlgorithm):
    """Error-feedback SGD: each worker compresses its step plus what compression dropped before.

    Parameters
    ----------
    objective : LocalObjective
    comm : Communicator
    aggregator : Aggregator
        Forms ``(1/n) Σ_i Δ_i`` exactly on every rank (server, allgather, or two-phase with an
        exact downlink).
    lr : float
        ``γ``.
    batch : int
        Minibatch size (0: full local gradients).

    Notes
    -----
    ::

        worker i:  p_i = γg_i + e_i;   Δ_i = C(p_i);   e_i ← p_i − Δ_i;   send Δ_i
        all:       x ← prox_{γR}(x − (1/n)Σ Δ_i)

    Without a regulariser the virtual iterate ``x̃ = x − ē`` (``ē = (1/n)Σ e_i``) is plain SGD:
    ``x_{t+1} − ē_{t+1} = x_t − ē_t − γḡ_t`` exactly, whatever ``C`` drops. SPEC §1.5 writes this
    invariant with ``+e``; with its own update ``e ← p − Δ`` and ``x ← x − Δ`` the sign is ``−``,
    as in the paper (Karimireddy et al., eq. (EF) and the proof of Thm. II). Any operator works,
    biased ones (``scaled_sign``, ``topk``) included; no ``theory`` step: give ``--lr``.

    References
    ----------
    Seide, Fu, Droppo, Li, Yu, "1-bit stochastic gradient descent and its application to
    data-parallel distributed training of speech DNNs", Interspeech 2014. Karimireddy, Rebjock,
    Stich, Jaggi, "Error feedback fixes SignSGD and other gradient compression schemes", ICML 2019.
    Stich, Karimireddy, "The error-feedback framework", JMLR 2020.
    """

    name = "efsgd"
    state_type = EFSGDState
    default_downlink = "identity"

    def __init__(self, objective: LocalObjective, comm, aggregator: Aggregator, *, lr: float,
                 batch: int = 0):
        super().__init__(objective, comm, lr=lr, batch=batch)
        require_exact_downlink(aggregator, "EF-SGD",
                               "error feedback corrects the workers' compression, not the server's")
        self.aggregator = aggregator

    @classmethod
    def build(cls, cfg, objective, comm, smoothness):
        return cls(objective, comm, cls.aggregator_for(cfg, objective, comm),
                   lr=require_number(cfg.lr, "lr", "EF-SGD", 0.1), batch=cfg.batch)

    def init(self, x0, seeds):
        x = copy_of(x0)
        return self.new_state(seeds, x=x, e=zeros_like(x))

    def advance(self, state: EFSGDState) -> StepInfo:
        p = self.lr * self.local_gradient(state) + state.e
        agg = self.aggregator.reduce(p, state.rng, own=True)
        state.e = p - agg.own
        state.x = self.objective.prox(state.x - agg.mean, self.lr)
        return StepInfo(agg.bits_up, agg.bits_down)
