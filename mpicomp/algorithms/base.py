"""What every algorithm shares: the local objective, per-rank random streams, the step contract.

An algorithm is built once per rank over that rank's `LocalObjective` and a `Communicator`;
``init(x0, seeds)`` returns its State (a dataclass holding everything a resumed run needs:
models, shifts, momenta, error memories and the random generators) and ``step(state)`` advances
it by one iteration. ``step`` is collective: every rank calls it in lockstep. It updates the
state's arrays in place and returns ``(state, StepInfo)``.

Subclasses implement ``advance(state) -> StepInfo``, the iteration itself; `Algorithm.step`
counts the step and turns NaN/Inf that the exchange found on any rank (NonFiniteInput, raised on
every rank alike) into a DivergenceError naming the step.
"""

from __future__ import annotations

import dataclasses
import math
from typing import ClassVar

import numpy as np

from ..backend import is_device_array, namespace
from ..comm.agreement import NonFiniteInput
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


def rank_generators(seed: int, size: int,
                    rank: int) -> tuple[np.random.Generator, np.random.Generator]:
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

    ``x`` lives where the shard does (NumPy on the host, CuPy on the GPU): `loss` and `grad`
    compute there and return there. Only minibatch indices, drawn from the rank's host
    generator, are uploaded (``8·batch`` bytes a step).

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
        self.device = "gpu" if is_device_array(problem.b) else "cpu"

    @property
    def dim(self) -> int:
        return self.problem.dim

    @property
    def n_samples(self) -> int:
        return self.problem.n_samples

    def loss(self, x) -> float:
        return self.weight * self.problem.loss(x)

    def grad(self, x, batch=None, rng: np.random.Generator | None = None):
        """``∇(w_i f_i)(x)``; ``rng`` (the rank's sampling generator) goes to a problem that
        draws per batch (a neural network's data augmentation)."""
        g = self.problem.grad(x, batch, rng=rng)  # host indices: checked there, then uploaded
        return g if self.weight == 1.0 else self.weight * g

    def smoothness(self) -> float | None:
        L = self.problem.smoothness()
        return None if L is None else self.weight * L

    def regulariser(self, x) -> float:
        return self.problem.regulariser(x)

    def prox(self, z, step: float):
        return self.problem.prox(z, step) if self.problem.l1 else z


class Algorithm:
    """What every method shares: the objective, the communicator, ``lr`` and ``batch``, the step
    contract and the run's hooks. The two families build on it: `CentralisedAlgorithm`
    (``mpicomp.algorithms.centralised``: an aggregator, theory steps) and
    ``GossipAlgorithm`` (``mpicomp.algorithms.gossip``: a graph). Subclasses set the class
    attributes and implement `build`, `init`, `advance` and `compressor_spec`.

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
    topologies: ClassVar[tuple[str, ...]] = ()
    state_type: ClassVar[type]
    #: common settings this algorithm has no use for (its app has no such flag)
    unused_settings: ClassVar[tuple[str, ...]] = ()
    #: attributes listed in the trace's ``hyperparameters`` (``theory`` values resolved)
    reported: ClassVar[tuple[str, ...]] = ("lr", "batch")
    #: trace columns of this algorithm beyond the standard ones (values from `metrics`)
    columns: ClassVar[tuple[str, ...]] = ()
    #: what a DivergenceError says had NaN or Inf (the vector whose finiteness is agreed)
    diverging = "the gradient"

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

    def step(self, state):
        """One collective iteration: ``(state, StepInfo)`` (arrays updated in place)."""
        try:
            info = self.advance(state)
        except NonFiniteInput:
            raise DivergenceError(state.step, self.diverging) from None
        state.step += 1
        return state, info

    def advance(self, state) -> StepInfo:  # pragma: no cover
        """The iteration: update ``state``'s arrays (not its step count) and say what it cost."""
        raise NotImplementedError

    def close(self) -> None:
        """Free what the algorithm holds beyond its communicator (MPI ops, datatypes)."""

    def model(self, state):
        """The model the trace reports (the same on every rank; collective for methods whose
        ranks hold different models)."""
        return state.x

    def copies_sent(self) -> int:
        """Copies of each encoded message this rank sends, as ``bits_up`` counts them: one
        towards a server or into an allgather (gossip: one per neighbour)."""
        return 1

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
    def build(cls, cfg, objective: LocalObjective, comm,  # pragma: no cover
              smoothness: float | None) -> Algorithm:
        """The algorithm for a run `Config` on this rank (no communication; the one
        construction hook). ``smoothness`` is ``max_i L_i`` over all ranks (None for
        non-convex problems)."""
        raise NotImplementedError

    def compressor_spec(self) -> str:  # pragma: no cover
        """The ``compressor`` attribute of traces: the operator as the registry names it."""
        raise NotImplementedError

    def hyperparameters(self) -> dict:
        """The values this run uses (the trace's ``hyperparameters`` attribute)."""
        return {name: getattr(self, name) for name in self.reported}

    # -- helpers ---------------------------------------------------------------------------
    def check_settings(self, **values) -> None:
        """Check constructor arguments against this method's `Setting` of the same name (its
        type, choices and bounds: one rule for flags, TOML files and Python callers); a
        ValueError (ConfigError) names the argument, the value and the valid ones."""
        settings = {s.name: s for s in self.settings}
        for name, value in values.items():
            settings[name].convert(value, source=f"{type(self).__name__}({name}=...)")

    def new_state(self, seeds, **arrays):
        """A fresh ``state_type`` at step 0 with this rank's `rank_generators` ``seeds``
        (``(compression, sampling)``) and the given arrays."""
        rng, sample_rng = seeds
        return self.state_type(**arrays, step=0, rng=rng, sample_rng=sample_rng)

    def gradient(self, state):
        """``∇(w_i f_i)`` at ``state.x``: full, or over ``batch`` samples drawn with replacement
        from ``state.sample_rng``."""
        if self.batch <= 0:
            return self.objective.grad(state.x)
        rows = state.sample_rng.integers(0, self.objective.n_samples, size=self.batch)
        return self.objective.grad(state.x, rows, rng=state.sample_rng)

    def local_gradient(self, state):
        """`gradient` in the dtype of ``state.x`` (its finiteness is agreed by the exchange
        that sends what is computed from it)."""
        return namespace(state.x).astype(self.gradient(state), state.x.dtype, copy=False)


def uplink_operator(cfg, objective: LocalObjective):
    """``cfg.compressor``, or with ``--per-layer`` that operator applied to each parameter
    tensor of the network on its own (`mpicomp.compress.layered.PerLayer`)."""
    if not cfg.per_layer:
        return cfg.compressor
    layout = getattr(objective.problem, "layout", None)
    if layout is None:
        raise ValueError("--per-layer compresses the parameter tensors of a network one by one: "
                         "it needs --problem nn")
    if cfg.topology == "two-phase":
        raise ValueError("--per-layer needs --topology server or allgather: two-phase splits "
                         "the vector into one chunk per rank, across the layers")
    from ..compress import per_layer

    return per_layer(cfg.compressor, [math.prod(shape) for _, shape in layout],
                     [name for name, _ in layout])


def layered_operator(algo):
    """The `PerLayer` operator ``algo`` sends with (``--per-layer``), or None."""
    from ..compress import PerLayer

    op = getattr(getattr(algo, "aggregator", None), "compressor", None)
    op = getattr(algo, "compressor", None) if op is None else op
    return op if isinstance(op, PerLayer) else None


def copy_of(x0):
    """A fresh copy of ``x0`` in its own namespace and device (the state's first array)."""
    return namespace(x0).asarray(x0, copy=True)


def zeros_like(x):
    """Zeros of ``x``'s shape, dtype and device."""
    return namespace(x).zeros_like(x)


def require_number(value, setting: str, method: str, example: float):
    """``value``, or a ValueError when it is ``theory`` (a method without an analysed step)."""
    if value == "theory":
        flag = "--" + setting.replace("_", "-")
        raise ValueError(f"{method} has no theory value of {setting}: give {flag} a number "
                         f"(e.g. {flag} {example:g})")
    return value
