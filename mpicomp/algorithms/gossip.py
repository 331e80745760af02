"""Decentralised (proximal) SGD over a gossip graph: D-PSGD, CHOCO-SGD, Malcom-PSGD (SPEC §3).

No server: each rank holds its own model ``x_i`` and talks only to its neighbours in the graph
(`mpicomp.comm.gossip.Gossip`: an MPI distributed-graph communicator and this rank's row of
the mixing matrix ``W``). The model a run reports is the network average ``x̄`` (one uncounted
``Allreduce`` when a trace row is written), and the trace adds ``consensus_error``
(``Σ_i ‖x_i − x̄‖²``) and ``sparsity`` (the share of exact zeros in ``x̄``).
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from ..backend import is_device_array, namespace, to_host
from ..comm import graphs
from ..comm.aggregate import buffer_of, encode_finite
from ..comm.agreement import finite_bits
from ..comm.gossip import Gossip
from ..compress import device, make_compressor
from ..compress.base import value_bits
from ..compress.registry import check_lengths
from ..config import Setting
from .base import (
    Algorithm,
    LocalObjective,
    StepInfo,
    copy_of,
    require_number,
    uplink_operator,
    zeros_like,
)

SCHEDULES = ("constant", "sqrt")
ORDERS = ("adapt-combine", "combine-adapt")


def _valid_graph(spec: str) -> None:
    kind = spec.partition(":")[0].strip()
    if kind not in graphs.BUILDERS:
        raise ValueError(f"unknown topology {kind!r}: choose one of {', '.join(graphs.BUILDERS)}")


GRAPH_SETTINGS = (
    Setting("topology", "text", "ring",
            "communication graph: ring, torus[:rows=R], hypercube, complete, star, "
            "erdos_renyi[:p=P,seed=S], edges:PATH (one 'i j' pair a line)", check=_valid_graph),
    Setting("mixing", "text", "metropolis", "mixing weights of W", choices=graphs.WEIGHTS),
    Setting("schedule", "text", "constant", "step size η_t: constant η, or sqrt: η/√(t+1)",
            choices=SCHEDULES),
)


@dataclasses.dataclass
class DPSGDState:
    """This rank's model ``x``, the step count and this rank's generators."""

    x: np.ndarray
    step: int
    rng: np.random.Generator
    sample_rng: np.random.Generator


@dataclasses.dataclass
class ChocoState:
    """This rank's model ``x``, its public copy ``x_hat`` (what the neighbours know of ``x``),
    ``mixed`` = ``Σ_j w_ij x̂_j`` over this rank and its neighbours (one buffer, not a copy per
    neighbour), the step count and this rank's generators."""

    x: np.ndarray
    x_hat: np.ndarray
    mixed: np.ndarray
    step: int
    rng: np.random.Generator
    sample_rng: np.random.Generator


class GossipAlgorithm(Algorithm):
    """What the gossip methods share: the graph, the step-size schedule, the network average and
    the consensus metrics. Subclasses implement `build`, `init` and `advance`."""

    topologies = ()  # any graph of `mpicomp.comm.graphs` that fits the rank count
    unused_settings = ("downlink",)
    settings = GRAPH_SETTINGS
    columns = ("consensus_error", "sparsity")
    diverging = "the gradient step"

    def __init__(self, objective: LocalObjective, comm, gossip: Gossip, *, lr: float,
                 schedule: str = "constant", batch: int = 0):
        super().__init__(objective, comm, lr=lr, batch=batch)
        self.check_settings(schedule=schedule)
        self.gossip = gossip
        self.schedule = schedule
        # only reported (`hyperparameters`): one rank computes it, sparse, and broadcasts it
        self.spectral_gap = gossip.spectral_gap()

    @classmethod
    def check_topology(cls, spec: str, size: int) -> None:
        graphs.make_graph(spec, size)  # a ValueError names what does not fit

    @classmethod
    def make_gossip(cls, cfg, comm) -> Gossip:
        return Gossip(comm, graphs.make_graph(cfg.topology, comm.size), cfg.mixing)

    def close(self) -> None:
        self.gossip.close()

    def step_size(self, step: int) -> float:
        """``η_t``: ``η``, or ``η/√(t+1)`` for the ``sqrt`` schedule."""
        return self.lr if self.schedule == "constant" else self.lr / math.sqrt(step + 1)

    def hyperparameters(self) -> dict:
        graph = self.gossip.topology
        return {**super().hyperparameters(), "spectral_gap": self.spectral_gap,
                "edges": len(graph.edges), "max_degree": int(graph.degrees().max(initial=0))}

    def model(self, state):
        """The network average ``x̄ = (1/n) Σ_i x_i`` (collective; not counted as traffic)."""
        from mpi4py import MPI

        total = np.empty(state.x.size, dtype=np.float64)
        self.comm.mpi_comm.Allreduce(np.asarray(to_host(state.x), dtype=np.float64), total,
                                     op=MPI.SUM)
        return total / self.comm.size

    def metrics(self, state, model) -> dict:
        """``consensus_error`` ``Σ_i ‖x_i − x̄‖²`` and ``sparsity`` of ``x̄`` (collective)."""
        from mpi4py import MPI

        local = float(np.sum((np.asarray(to_host(state.x), dtype=np.float64) - model) ** 2))
        return {"consensus_error": self.comm.mpi_comm.allreduce(local, op=MPI.SUM),
                "sparsity": float(np.mean(model == 0)) if model.size else math.nan}

    def half_step(self, state) -> tuple[np.ndarray, float]:
        """``(x_i − η_t g_i, η_t)``, ``g_i`` the (minibatch) gradient at ``x_i``; NaN/Inf in it
        on any rank is a DivergenceError on every rank (before a compressor sees it)."""
        eta = self.step_size(state.step)
        return state.x - eta * self.local_gradient(state), eta


class DPSGD(GossipAlgorithm):
    """D-PSGD: decentralised (proximal) SGD with exact gossip of the models.

    Parameters
    ----------
    objective : LocalObjective
    comm : Communicator
    gossip : Gossip
        The graph and this rank's row of ``W``.
    lr : float
        ``η`` (``η_t = η`` or ``η/√(t+1)``, see ``schedule``).
    order : {"adapt-combine", "combine-adapt"}
        Gradient step before gossip (the form CHOCO-SGD reduces to) or after it (Lian et al.).
    schedule : {"constant", "sqrt"}
    batch : int
        Minibatch size (0: full local gradients).

    Notes
    -----
    ::

        adapt-combine:  x_i ← prox_{η_t R}( Σ_j w_ij (x_j − η_t g_j) )
        combine-adapt:  x_i ← prox_{η_t R}( Σ_j w_ij x_j − η_t g_i )       (SPEC §3.2)

    ``g_i`` is the gradient at ``x_i``. Each step sends the raw model (``32d`` or ``64d`` bits)
    to every neighbour. CHOCO-SGD with the identity and ``γ = 1`` is the adapt-combine form; the
    two forms share their fixed points and rates. Without an ℓ1 term the prox is the identity.

    References
    ----------
    Lian, Zhang, Zhang, Hsieh, Zhang, Liu, "Can decentralized algorithms outperform centralized
    algorithms? A case study for decentralized parallel stochastic gradient descent", NeurIPS
    2017. Koloskova, Stich, Jaggi, "Decentralized stochastic optimization and gossip algorithms
    with compressed communication", ICML 2019 (Algorithm 3, the adapt-combine form).
    """

    name = "dpsgd"
    title = "D-PSGD"
    state_type = DPSGDState
    unused_settings = ("downlink", "compressor", "per_layer")
    reported = ("lr", "order", "schedule", "batch")
    settings = GRAPH_SETTINGS + (
        Setting("order", "text", "adapt-combine",
                "gradient step before the gossip average (adapt-combine) or after (combine-adapt)",
                choices=ORDERS),
    )

    def __init__(self, objective: LocalObjective, comm, gossip: Gossip, *, lr: float,
                 order: str = "adapt-combine", schedule: str = "constant", batch: int = 0):
        super().__init__(objective, comm, gossip, lr=lr, schedule=schedule, batch=batch)
        self.check_settings(order=order)
        self.order = order

    @classmethod
    def build(cls, cfg, objective, comm, smoothness):
        lr = require_number(cfg.lr, "lr", cls.title, 0.5)
        return cls(objective, comm, cls.make_gossip(cfg, comm), lr=lr, order=cfg.order,
                   schedule=cfg.schedule, batch=cfg.batch)

    def compressor_spec(self) -> str:
        return "identity"

    def init(self, x0, seeds):
        return self.new_state(seeds, x=copy_of(x0))

    @property
    def diverging(self) -> str:
        return "the gradient step" if self.order == "adapt-combine" else "the gradient"

    def advance(self, state: DPSGDState) -> StepInfo:
        if self.order == "adapt-combine":
            half, eta = self.half_step(state)
            z = self.gossip.mix(half, finite_bits(half))
        else:
            eta = self.step_size(state.step)
            g = self.local_gradient(state)
            z = self.gossip.mix(state.x, finite_bits(g)) - eta * g
        state.x = self.objective.prox(z, eta)
        return StepInfo(bits_up=value_bits(state.x.dtype) * state.x.size * self.gossip.degree)


class ChocoSGD(GossipAlgorithm):
    """CHOCO-SGD: decentralised SGD with compressed gossip of model residuals.

    Parameters
    ----------
    objective : LocalObjective
    comm : Communicator
    gossip : Gossip
    op : Compressor
        ``Q`` before scaling (any operator; its wire format is what travels).
    lr : float
        ``η``.
    gamma : float
        Consensus step ``γ`` in (0, 1].
    tau : float
        ``τ ≥ 1``: the messages are ``Q(·)/τ`` (for an unbiased ``Q`` with variance ``ω``,
        ``τ = 1 + ω`` makes it a contraction, as CHOCO's analysis needs).
    schedule : {"constant", "sqrt"}
    batch : int

    Notes
    -----
    ::

        x_i^½ = x_i − η_t g_i
        q_i   = Q(x_i^½ − x̂_i)/τ;        send q_i to the neighbours
        x̂_i  ← x̂_i + q_i;                 m_i ← m_i + Σ_j w_ij q_j   (j: i and its neighbours)
        x_i   ← prox_{η_t R}( x_i^½ + γ(m_i − x̂_i) )

    ``m_i = Σ_j w_ij x̂_j`` is one buffer: ``Σ_j w_ij(x̂_j − x̂_i) = m_i − x̂_i`` because the row
    of ``W`` sums to one, so no rank keeps a copy per neighbour. ``x̂ = m = 0`` at the start.
    Because ``W`` is doubly stochastic the gossip term sums to zero over the network: the step
    keeps the average of the models (before the prox). With the identity and ``γ = 1``,
    ``x̂_j = x_j^½`` and the step is D-PSGD's adapt-combine form. ``Σ_j w_ij q_j`` adds the
    decoded messages in ascending rank order in float64. With ``--l1`` the consensus point goes
    through the prox, as in Malcom-PSGD (`MalcomPSGD`); without, this is the paper's method.
    Each step sends ``nbits(q_i)`` to each of ``deg_i`` neighbours (``bits_up``).

    References
    ----------
    Koloskova, Stich, Jaggi, "Decentralized stochastic optimization and gossip algorithms with
    compressed communication", ICML 2019 (Algorithm 2; ``τ`` for ``qsgd_s``, Section 5).
    """

    name = "choco"
    title = "CHOCO-SGD"
    state_type = ChocoState
    reported = ("lr", "gamma", "tau", "schedule", "batch")
    settings = GRAPH_SETTINGS + (
        Setting("gamma", "float", 0.5, "consensus step γ in (0, 1]", low=0.0, high=1.0,
                low_open=True),
        Setting("tau", "theory", "theory",
                "messages are Q(·)/τ: a number ≥ 1, or theory (1 + ω of an unbiased Q, 1 for a "
                "biased one)", low=1.0),
    )
    default_lr = 0.5  # the example a "no theory value" error gives

    def __init__(self, objective: LocalObjective, comm, gossip: Gossip, op, *, lr: float,
                 gamma: float = 0.5, tau: float = 1.0, schedule: str = "constant", batch: int = 0):
        super().__init__(objective, comm, gossip, lr=lr, schedule=schedule, batch=batch)
        self.check_settings(gamma=gamma, tau=tau)
        self.compressor = make_compressor(op)
        self.gamma, self.tau = float(gamma), float(tau)
        self.staging = device.Staging()  # payload buffers of device models

    @staticmethod
    def theory_tau(op, dim: int) -> float:
        """``1 + ω(d)`` for an unbiased operator (``1 + min(d/s², √d/s)`` for QSGD with
        ``s ≥ 2`` levels), ``1`` for a biased one (already a contraction)."""
        omega = op.omega(dim) if op.unbiased else None
        return 1.0 if omega is None else 1.0 + float(omega)

    @classmethod
    def build(cls, cfg, objective, comm, smoothness):
        op = make_compressor(uplink_operator(cfg, objective))
        check_lengths(op, [objective.dim])  # every message is a whole model's residual
        lr = require_number(cfg.lr, "lr", cls.title, cls.default_lr)
        tau = cls.theory_tau(op, objective.dim) if cfg.tau == "theory" else cfg.tau
        return cls(objective, comm, cls.make_gossip(cfg, comm), op, lr=lr, gamma=cfg.gamma,
                   tau=tau, schedule=cfg.schedule, batch=cfg.batch)

    def compressor_spec(self) -> str:
        return self.compressor.spec()

    def copies_sent(self) -> int:
        return self.gossip.degree

    def init(self, x0, seeds):
        x = copy_of(x0)
        return self.new_state(seeds, x=x, x_hat=zeros_like(x), mixed=zeros_like(x))

    def received(self, bufs, d: int, dtype, like) -> list:
        """The messages' ``q = Q(·)/τ`` from their bytes (the sender applies the same to its
        own), where ``like`` lives: on a device, all decoded after one upload."""
        if is_device_array(like):
            qs = device.decode_each(self.compressor, bufs, [d] * len(bufs), dtype, like,
                                    self.staging)
        else:
            qs = [self.compressor.decode(buf, d, dtype) for buf in bufs]
        return qs if self.tau == 1.0 else [q / self.tau for q in qs]

    def advance(self, state: ChocoState) -> StepInfo:
        half, eta = self.half_step(state)
        d, dtype = half.size, half.dtype
        self.staging.begin()
        payload, flags = encode_finite(self.compressor, half - state.x_hat, state.rng,
                                       self.staging)
        nbytes = self.compressor.nbytes_max(d, dtype) if self.compressor.fixed_size else None
        got = self.gossip.exchange(buffer_of(payload), flags, nbytes)
        got[self.gossip.rank] = payload.buffer
        xp = namespace(half)
        change = xp.zeros(d, dtype=xp.float64, device=half.device)
        order = sorted(got)
        for j, q in zip(order, self.received([got[j] for j in order], d, dtype, half)):
            change += self.gossip.row[j] * q
            if j == self.gossip.rank:
                state.x_hat += q
        state.mixed += xp.astype(change, dtype, copy=False)
        state.x = self.objective.prox(half + self.gamma * (state.mixed - state.x_hat), eta)
        return StepInfo(bits_up=payload.nbits * self.gossip.degree)


class MalcomPSGD(ChocoSGD):
    """Malcom-PSGD: proximal SGD with compressed, source-coded gossip of model residuals.

    Parameters are those of `ChocoSGD`; the app's defaults are the paper's choices: QSGD levels
    sent in the vector source code (``qsgd:s=S,coder=golomb``, `mpicomp.compress.coding`),
    ``τ = 1 + min(d/s², √d/s)``, an ℓ1 term and ``η_t = η/√(t+1)``.

    Notes
    -----
    ::

        x_i^½ = x_i − η_t g_i
        q_i   = Q(x_i^½ − x̂_i)/τ,  Q dithering with s levels, τ = 1 + min(d/s², √d/s)
        encode q_i's levels with the source coder; send to the neighbours; x̂_j ← x̂_j + q_j
        z_i   = x_i^½ + γ Σ_j w_ij (x̂_j − x̂_i)
        x_i   ← prox_{η_t λ1‖·‖₁}(z_i)          (soft threshold: exact zeros)

    The iteration is `ChocoSGD`'s (with the prox); what Malcom adds is the ℓ1 prox, which makes
    the models and so the residuals sparse, and the source coder, whose length falls with that
    sparsity (``d·Ĥ`` bits, where fixed-width QSGD always sends ``d(1 + ⌈log₂(s+1)⌉)``). With
    ``λ1 = 0`` and the identity it is CHOCO-SGD. (For ``s = 1``, ``τ = 1 + ω`` uses the tight
    ``ω = √d − 1``, i.e. ``τ = √d``, where SPEC's formula gives ``1 + √d``.)

    References
    ----------
    Campbell, Liu, Woldemariam, Scaglione, "Malcom-PSGD: inexact proximal gradient descent with
    communication-efficient decentralized optimization", 2023 (arXiv:2311.05760).
    """

    name = "malcom"
    title = "Malcom-PSGD"

