"""What every algorithm shares: the local objective, per-rank random streams, the step contract.

An algorithm is built once per rank over that rank's `LocalObjective` and a `Communicator`;
``init(x0, seeds)`` returns its State (a dataclass holding everything a resumed run needs:
models, shifts, momenta, error memories and the random generators) and ``step(state)`` advances
it by one iteration. ``step`` is collective: every rank calls it in lockstep. It updates the
state's arrays in place and returns ``(state, StepInfo)``.
"""

from __future__ import annotations

import dataclasses
import math
from typing import ClassVar, Optional

import numpy as np

from ..backend import get_xp, to_device, to_host
from ..config import Setting


class DivergenceError(RuntimeError):
    """The iterates left the floating-point range (NaN or Inf); raised on every rank alike."""

    def __init__(self, step: int, what: str):
        super().__init__(f"diverged at step {step}: {what} has NaN or Inf")
        self.step = step
        self.what = what


@dataclasses.dataclass
class StepInfo:
    """What one step cost this rank: information bits sent towards and received from the
    aggregate (the payloads' exact ``nbits``)."""

    bits_up: int = 0
    bits_down: int = 0


def rank_generators(seed: int, size: int, rank: int) -> tuple[np.random.Generator, np.random.Generator]:
    """``(compression, sampling)`` generators of ``rank``: the two children of
    ``SeedSequence(seed).spawn(size)[rank]``. A serial reference that replays rank r's draws
    uses the same two streams."""
    child = np.random.SeedSequence(seed).spawn(size)[rank]
    compress, sample = child.spawn(2)
    return np.random.default_rng(compress), np.random.default_rng(sample)


class LocalObjective:
    """Rank i's share ``w_i f_i`` of the global objective, with ``w_i = n·m_i/N``.

    With shards of ``m_i`` of the ``N`` samples, ``(1/n) Σ_i w_i f_i(x) = (1/N) Σ_samples ℓ``:
    the plain mean over ranks that every aggregator forms is then the gradient of the loss over
    the whole data set (the problem `mpicomp.problems.reference_optimum` solves), also when the
    shard sizes differ. The regulariser ``R`` is global: `prox` and `regulariser` are not
    weighted.

    The algorithms keep their state in host (NumPy) arrays, where the compressors work; when
    the shard lives on the GPU, `loss` and `grad` move ``x`` (and minibatch indices) there and
    the gradient back, so only ``d``-vectors cross the bus each step.

    Parameters
    ----------
    problem : Problem
        Over this rank's shard (NumPy or CuPy data).
    weight : float
        ``w_i`` (1 for equal shards).
    """

    def __init__(self, problem, weight: float = 1.0):
        self.problem = problem
        self.weight = float(weight)
        self.device = "cpu" if get_xp(problem.b) is np else "gpu"

    @property
    def dim(self) -> int:
        return self.problem.dim

    @property
    def n_samples(self) -> int:
        return self.problem.n_samples

    def loss(self, x) -> float:
        return self.weight * self.problem.loss(to_device(x, self.device))

    def grad(self, x, batch=None) -> np.ndarray:
        if batch is not None:
            batch = to_device(batch, self.device)
        g = to_host(self.problem.grad(to_device(x, self.device), batch))
        return g if self.weight == 1.0 else self.weight * g

    def smoothness(self) -> Optional[float]:
        L = self.problem.smoothness()
        return None if L is None else self.weight * L

    def regulariser(self, x) -> float:
        return self.problem.regulariser(x)

    def prox(self, z, step: float):
        return self.problem.prox(z, step) if self.problem.l1 else z


class Algorithm:
    """Base class: subclasses set the class attributes and implement `init`, `step`, `model`.

    Attributes
    ----------
    name : str
        The ``algorithm`` attribute of traces.
    settings : tuple of Setting
        Settings of this algorithm beyond `mpicomp.config.COMMON_SETTINGS` (flags of its app).
    topologies : tuple of str
        Values of the ``topology`` setting it runs on.
    """

    name: ClassVar[str] = "algorithm"
    settings: ClassVar[tuple[Setting, ...]] = ()
    topologies: ClassVar[tuple[str, ...]] = ("server", "allgather", "two-phase")
    state_type: ClassVar[type]
    #: downlink compressor when ``--downlink none`` (None: the aggregator's own default)
    default_downlink: ClassVar[Optional[str]] = None
    #: ``c`` of the theory step ``1/(L(1 + c·ω/n))`` of compressed-gradient methods
    step_factor: ClassVar[float]
    #: common settings this algorithm has no use for (its app has no such flag)
    unused_settings: ClassVar[tuple[str, ...]] = ()
    #: attributes listed in the trace's ``hyperparameters`` (``theory`` values resolved)
    reported: ClassVar[tuple[str, ...]] = ("lr", "batch")
    #: trace columns of this algorithm beyond the standard ones (values from `metrics`)
    columns: ClassVar[tuple[str, ...]] = ()

    def __init__(self, objective: LocalObjective, comm, *, lr: float, batch: int = 0):
        if not (isinstance(lr, (int, float)) and math.isfinite(lr) and lr > 0):
            raise ValueError(f"lr must be a finite number > 0, got {lr!r}")
        self.objective = objective
        self.comm = comm
        self.lr = float(lr)
        self.batch = int(batch)
        self.setup_info = StepInfo()  # bits of one-time exchanges in init (added at step 0)

    # -- the contract ----------------------------------------------------------------------
    def init(self, x0, seeds: tuple[np.random.Generator, np.random.Generator]):  # pragma: no cover
        """The State at ``x0``; ``seeds`` are this rank's `rank_generators`."""
        raise NotImplementedError

    def step(self, state):  # pragma: no cover
        """One collective iteration: ``(state, StepInfo)`` (arrays updated in place)."""
        raise NotImplementedError

    def close(self) -> None:
        """Free what the algorithm holds beyond its communicator (MPI ops, datatypes)."""

    def model(self, state):
        """The model the trace reports (the same on every rank; collective for methods whose
        ranks hold different models)."""
        return state.x

    def metrics(self, state, model) -> dict:
        """Values of `columns` at this state (collective; ``model`` is `model`'s value)."""
        return {}

    @classmethod
    def check_topology(cls, spec: str, size: int) -> None:
        """A ValueError unless the ``topology`` setting fits this method on ``size`` ranks."""
        if spec not in cls.topologies:
            raise ValueError(f"topology {spec!r} does not fit {cls.name}: choose one of "
                             f"{', '.join(cls.topologies)}")

    # -- building from a run config -----------------------------------------------------------
    @classmethod
    def build(cls, cfg, objective: LocalObjective, comm, smoothness: Optional[float]) -> "Algorithm":
        """The algorithm for a run `Config` on this rank (no communication): the aggregator of
        ``cfg.topology`` with ``cfg.compressor`` and the downlink (their parameters checked
        against the lengths they will compress), then `from_config`.
        ``smoothness`` is ``max_i L_i`` over all ranks (None for non-convex problems)."""
        from ..comm.aggregate import make_aggregator

        downlink = cfg.downlink if cfg.downlink not in ("", "none") else None
        if downlink is None and cfg.topology != "allgather":
            downlink = cls.default_downlink
        aggregator = make_aggregator(cfg.topology, comm, cfg.compressor, downlink=downlink,
                                     dim=objective.dim)
        return cls.from_config(objective, comm, aggregator, cfg, smoothness)

    @classmethod
    def from_config(cls, objective, comm, aggregator, cfg, smoothness):  # pragma: no cover
        raise NotImplementedError

    def compressor_spec(self) -> str:
        """The ``compressor`` attribute of traces: the uplink operator as the registry names it."""
        return self.aggregator.op.spec()

    def hyperparameters(self) -> dict:
        """The values this run uses (the trace's ``hyperparameters`` attribute)."""
        return {name: getattr(self, name) for name in self.reported}

    # -- theory step -----------------------------------------------------------------------
    @classmethod
    def theory_lr(cls, op, dim: int, n: int, smoothness, problem: str, down=None) -> float:
        """``1/(L(1 + ω_M)(1 + c·ω/n))`` with ``c = step_factor``, ``ω`` the uplink operator's
        and ``ω_M`` the downlink's (0 without one), or a ValueError saying which number to give
        instead (no smoothness constant, or a biased operator).

        The ``(1 + ω_M)`` factor is the bidirectional bound of Horváth et al. (natural
        compression, Thm. 3); ``ω_M(d)`` also bounds a two-phase downlink's ω on chunks of
        ``d/n`` coordinates, which is no larger for every operator here.
        """
        L = require_smoothness(smoothness, "lr", problem)
        omega_down = 0.0 if down is None else omega_of(down, dim, "lr")
        return 1.0 / (L * (1.0 + omega_down) * (1.0 + cls.step_factor * omega_of(op, dim, "lr") / n))

    @classmethod
    def resolved_lr(cls, cfg, aggregator, dim: int, n: int, smoothness) -> float:
        """``cfg.lr``, or `theory_lr` for the aggregator's operators when it is ``"theory"``."""
        if cfg.lr != "theory":
            return cfg.lr
        return cls.theory_lr(aggregator.op, dim, n, smoothness, cfg.problem, getattr(aggregator, "down", None))

    # -- helpers ---------------------------------------------------------------------------
    def gradient(self, state):
        """``∇(w_i f_i)`` at ``state.x``: full, or over ``batch`` samples drawn with replacement
        from ``state.sample_rng``."""
        if self.batch <= 0:
            return self.objective.grad(state.x)
        rows = state.sample_rng.integers(0, self.objective.n_samples, size=self.batch)
        return self.objective.grad(state.x, rows)

    def check_finite(self, vector, state, what: str) -> None:
        """Raise DivergenceError on every rank if ``vector`` has NaN/Inf on any rank (one
        one-byte ``Allreduce``; compressors reject non-finite input, so this comes first)."""
        from mpi4py import MPI

        ok = bool(np.isfinite(vector).all())
        if not self.comm.comm.allreduce(ok, op=MPI.LAND):
            raise DivergenceError(state.step, what)


def require_smoothness(smoothness: Optional[float], setting: str, problem_name: str) -> float:
    """``L`` for a ``theory`` default, or a ValueError telling the user to give ``setting``."""
    if smoothness is None or not math.isfinite(smoothness) or smoothness <= 0:
        raise ValueError(
            f"{setting}=theory needs a smoothness constant L, and the {problem_name} problem has "
            f"none (it is non-convex); give a number, e.g. --{setting.replace('_', '-')} 0.05")
    return float(smoothness)


def omega_of(op, d: int, setting: str) -> float:
    """``ω(d)`` of an unbiased operator, or a ValueError telling the user to give ``setting``."""
    omega = op.omega(d) if op.unbiased else None
    if omega is None:
        raise ValueError(
            f"{setting}=theory needs an unbiased compressor with a known ω; {op.spec()} is "
            f"biased: give {setting} a number (--{setting.replace('_', '-')} VALUE)")
    return float(omega)


def require_number(value, setting: str, method: str, example: float):
    """``value``, or a ValueError when it is ``theory`` (a method without an analysed step)."""
    if value == "theory":
        flag = "--" + setting.replace("_", "-")
        raise ValueError(f"{method} has no theory value of {setting}: give {flag} a number (e.g. {flag} {example:g})")
    return value


def require_exact_downlink(aggregator, method: str, reason: str) -> None:
    """A ValueError unless every rank receives the exact aggregate (no lossy downlink)."""
    down = getattr(aggregator, "down", None)
    if down is not None and down.name != "identity":
        raise ValueError(f"{method} needs the exact mean on every rank ({reason}); a lossy downlink "
                         f"({down.spec()}) breaks that: use --downlink identity (the default for {method})")

