"""signSGD and Signum with majority vote, 1 bit a coordinate each way (SPEC §2.3)."""

from __future__ import annotations

import dataclasses

import numpy as np

from ..backend import namespace, to_like
from ..comm.aggregate import VOTE_MODES, MajorityVote
from ..comm.agreement import finite_bits
from ..config import Setting
from .base import LocalObjective, StepInfo, copy_of, require_number, zeros_like
from .centralised import CentralisedAlgorithm

ATTACKS = ("flip", "random")


@dataclasses.dataclass
class SignumState:
    """``x`` (the same on every rank), this rank's momentum ``m``, the step count and this
    rank's generators (``rng`` also draws a random attacker's signs)."""

    x: np.ndarray
    m: np.ndarray
    step: int
    rng: np.random.Generator
    sample_rng: np.random.Generator


def signs(v: np.ndarray) -> np.ndarray:
    """±1 with sign(0) = +1 (the rule of the `sign` operator's bits)."""
    xp = namespace(v)
    return xp.astype(xp.where(v < 0, -1.0, 1.0), v.dtype)


class Signum(CentralisedAlgorithm):
    """signSGD / Signum with majority vote: workers send the signs of their momenta, every rank
    steps along the sign of their sum.

    Parameters
    ----------
    objective : LocalObjective
    comm : Communicator
    vote : MajorityVote
        Forms ``sign(Σ_i s_i)`` on every rank (server, allgather or bit-sliced counters).
    lr : float
        ``δ``.
    momentum : float
        ``β`` (0: signSGD).
    weight_decay : float
        ``λ``, applied after the vote.
    byzantine : int
        The last ``byzantine`` ranks are adversaries (0 … n).
    attack : {"flip", "random"}
        What an adversary sends: ``−sign(m_i)``, or uniformly random signs from its generator.
    batch : int
        Minibatch size (0: full local gradients).

    Notes
    -----
    ::

        worker i:  m_i ← βm_i + (1 − β)g_i;   send s_i = sign(m_i)   (1 bit a coordinate)
        server:    v = sign(Σ_i s_i);   send v                     (1 bit a coordinate)
        all:       x ← prox_{δR}(x − δ(v + λx))

    ``sign(0) = +1`` for messages and votes: a tied vote (as many −1 as +1, only for even n)
    is +1. The ℓ1 term, if any, is applied by its prox after the step. With fewer than n/2
    adversaries the vote still follows the honest majority (Bernstein et al. 2019, Thm. 2);
    with more than n/2 flipping signs it ascends. No ``theory`` step: give ``--lr``.

    References
    ----------
    Bernstein, Wang, Azizzadenesheli, Anandkumar, "signSGD: compressed optimisation for
    non-convex problems", ICML 2018. Bernstein, Zhao, Azizzadenesheli, Anandkumar, "signSGD with
    majority vote is communication efficient and fault tolerant", ICLR 2019.
    """

    name = "signsgd"
    state_type = SignumState
    topologies = VOTE_MODES
    unused_settings = ("compressor", "downlink", "per_layer")
    reported = ("lr", "momentum", "weight_decay", "byzantine", "attack", "batch")
    settings = (
        Setting("topology", "text", "server",
                "how the vote is formed: server (1 bit up, 1 bit down), allgather (every rank "
                "counts every sign), bitsliced (an Allreduce of ⌈log₂(n+1)⌉-bit counters)",
                choices=VOTE_MODES),
        Setting("momentum", "float", 0.0,
                "β of the workers' momentum (0: signSGD; Signum: e.g. 0.9)", low=0.0, high=1.0,
                high_open=True),
        Setting("weight_decay", "float", 0.0, "λ of the decay applied after the vote", low=0.0),
        Setting("byzantine", "int", 0, "number of adversarial workers (the last K ranks)", low=0),
        Setting("attack", "text", "flip", "what the adversaries send", choices=ATTACKS),
    )

    def __init__(self, objective: LocalObjective, comm, vote: MajorityVote, *, lr: float,
                 momentum: float = 0.0, weight_decay: float = 0.0, byzantine: int = 0,
                 attack: str = "flip", batch: int = 0):
        super().__init__(objective, comm, lr=lr, batch=batch)
        self.check_settings(momentum=momentum, weight_decay=weight_decay, attack=attack)
        if not 0 <= byzantine <= comm.size:
            raise ValueError(f"byzantine={byzantine} adversaries do not fit {comm.size} workers: "
                             f"choose 0 … {comm.size}")
        self.vote = vote
        self.momentum, self.weight_decay = float(momentum), float(weight_decay)
        self.byzantine, self.attack = int(byzantine), attack
        self.adversary = comm.rank >= comm.size - self.byzantine

    @classmethod
    def build(cls, cfg, objective, comm, smoothness):
        lr = require_number(cfg.lr, "lr", "signSGD", 0.01)
        return cls(objective, comm, MajorityVote(comm, cfg.topology), lr=lr, momentum=cfg.momentum,
                   weight_decay=cfg.weight_decay, byzantine=cfg.byzantine, attack=cfg.attack,
                   batch=cfg.batch)

    def compressor_spec(self) -> str:
        return "sign"

    def close(self) -> None:
        self.vote.close()

    def init(self, x0, seeds):
        x = copy_of(x0)
        return self.new_state(seeds, x=x, m=zeros_like(x))

    def message(self, state: SignumState) -> np.ndarray:
        """The vector whose signs this rank sends: its momentum, or an adversary's ±1."""
        if not self.adversary:
            return state.m  # the vote encodes sign(m) itself
        if self.attack == "flip":
            return -signs(state.m)  # not −m: sign(−0) would still be +1
        coins = (2.0 * state.rng.integers(0, 2, size=state.m.size) - 1.0).astype(state.m.dtype)
        return to_like(coins, state.m)  # drawn on the host: d values uploaded

    def advance(self, state: SignumState) -> StepInfo:
        g = self.local_gradient(state)
        flags = finite_bits(g)  # an adversary's message would hide its gradient's NaN
        state.m = self.momentum * state.m + (1.0 - self.momentum) * g
        agg = self.vote.vote(self.message(state), flags)
        state.x = self.objective.prox(state.x - self.lr * (agg.mean + self.weight_decay * state.x),
                                      self.lr)
        return StepInfo(agg.bits_up, agg.bits_down)
