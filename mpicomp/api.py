"""The glue of the public API (`mpicomp`): a communicator, a rank's objective, an algorithm
from its parts, and a loop that runs it.

Everything here composes the library's own pieces exactly as the command-line driver does
(`mpicomp.setup`), minus the run configuration: no traces, checkpoints or failure agreement.
See the `mpicomp` package docstring for an example.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

__all__ = ["communicator", "local_objective", "make_algorithm", "run_steps", "trajectory"]


def communicator(mpi_comm=None, network=None):
    """A `mpicomp.comm.communicator.Communicator`: byte collectives with traffic counters.

    Parameters
    ----------
    mpi_comm : mpi4py.MPI.Intracomm or Communicator, optional
        The MPI communicator to wrap (used as it is: the caller owns it). Default: a new
        ``MPI.COMM_WORLD.Dup()``, so the library's messages never mix with the caller's. A
        `Communicator` is returned unchanged.
    network : str or NetworkModel, optional
        Network profile for simulated time (``"1gbe"``, ``"10gbe"``, ``"100gib"``,
        ``"custom:alpha=…,beta=…"``); counted in ``stats`` as ``model_seconds``.
    """
    from .comm.communicator import Communicator

    if isinstance(mpi_comm, Communicator):
        if network is not None:
            raise ValueError("network applies to a new Communicator; this one already has "
                             f"{mpi_comm.network!r}")
        return mpi_comm
    if mpi_comm is None:
        from mpi4py import MPI

        mpi_comm = MPI.COMM_WORLD.Dup()
    return Communicator(mpi_comm, network=network)


def local_objective(comm, data, problem: str = "logistic", *, l1: float = 0.0, l2: float = 1e-3,
                    shard: str = "contiguous", seed: int = 0, **options):
    """This rank's weighted share ``w_i f_i`` of ``problem`` over ``data``, as the driver builds it.

    Every rank passes the whole data set; each keeps its shard (`mpicomp.problems.data.shard`)
    with weight ``w_i = n·m_i/N`` (``m_i`` of the ``N`` samples on this rank, ``n`` ranks), so
    that the plain mean over ranks of the local gradients is the gradient over the whole data
    set, also when the shards differ in size. No communication.

    Parameters
    ----------
    comm : Communicator or mpi4py.MPI.Intracomm
        Anything with ``rank`` and ``size``.
    data : Dataset or str
        The whole data set (`make_synthetic`, `mpicomp.problems.data.load`), or a ``--data``
        spec such as ``"synthetic:logistic,n=400,d=20"`` or ``"libsvm:PATH"``, loaded as the
        driver loads it (``seed``, ``groups = size``, the problem's synthetic kind and labels).
    problem : str
        A name of `mpicomp.problems.PROBLEMS` (``"logistic"``, ``"least_squares"``, ``"lasso"``,
        ``"softmax"``, ``"mlp"``, ``"nn"``).
    l1, l2 : float
        Regularisation weights (the command line's defaults).
    shard : {"contiguous", "random", "label"}
        How the samples are split over the ranks (``--shard``).
    seed : int
        Seed of a random split and of a data spec.
    **options
        Further problem options (``hidden`` for the MLP; ``model``, ``augment``, ``seed`` for
        ``"nn"``); ``n_classes`` and a network's ``image_shape`` default to the data's.

    Returns
    -------
    mpicomp.algorithms.LocalObjective
    """
    from .algorithms import LocalObjective
    from .problems import make_problem
    from .problems.data import load
    from .problems.data import shard as take_shard
    from .setup import CLASSIFIERS, LIBSVM_TASK, data_spec, image_shape_of

    if isinstance(data, str):
        from types import SimpleNamespace

        # the problem's synthetic kind, and the task of LIBSVM labels
        spec = data_spec(SimpleNamespace(data=data, problem=problem))
        libsvm = ({"task": LIBSVM_TASK[problem]}
                  if spec.startswith("libsvm:") and problem in LIBSVM_TASK else {})
        data = load(spec, seed=seed, groups=comm.size, **libsvm)
    if problem in CLASSIFIERS:
        options.setdefault("n_classes", data.n_classes)
    if problem == "nn":  # a PyTorch model (`mpicomp.nn.NeuralNetwork`) of the data's images
        options.setdefault("image_shape", image_shape_of(data))
    mine = take_shard(data, comm.rank, comm.size, how=shard, seed=seed)
    local = make_problem(problem, mine.A, mine.y, l1=l1, l2=l2, **options)
    return LocalObjective(local, comm.size * mine.n_samples / data.n_samples)


def _algorithm_class(name):
    from .algorithms import ALGORITHMS, Algorithm

    if isinstance(name, type) and issubclass(name, Algorithm):
        return name
    try:
        return ALGORITHMS[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown algorithm {name!r}: choose one of "
                         f"{', '.join(sorted(ALGORITHMS))}") from None


def make_algorithm(name, objective, comm, compressor=None, topology: str | None = None, *,
                   downlink=None, mixing: str = "metropolis", **hyperparameters):
    """The algorithm ``name`` on this rank, with the exchange its family needs (collective).

    The same as building the parts by hand: an aggregator (`make_aggregator`) for DCGD, DIANA,
    EF-SGD and QAdam; a `MajorityVote` for signSGD/Signum; a `Gossip` over a graph
    (`make_graph`) for D-PSGD, CHOCO-SGD and Malcom-PSGD. Nothing is defaulted behind your back:
    ``downlink=None`` is the aggregator's own default (server: the exact mean; two-phase: the
    uplink operator), not the command line's per-method default.

    Parameters
    ----------
    name : str or Algorithm subclass
        A key of `ALGORITHMS` (``"dcgd"``, ``"diana"``, ``"efsgd"``, ``"qadam"``, ``"signsgd"``,
        ``"dpsgd"``, ``"choco"``, ``"malcom"``) or the class itself.
    objective : LocalObjective
        This rank's share (`local_objective`).
    comm : Communicator or mpi4py.MPI.Intracomm
        An mpi4py communicator is wrapped as it is (`communicator`).
    compressor : str or Compressor, optional
        The operator (`make_compressor` spec). Default ``"identity"``; signSGD takes none (its
        messages are signs) and D-PSGD only the identity (it sends whole models).
    topology : str, optional
        Centralised methods: the aggregator, ``"server"`` (default), ``"allgather"`` or
        ``"two-phase"``; signSGD: the vote, ``"server"`` (default), ``"allgather"`` or
        ``"bitsliced"``; gossip methods: a graph spec, ``"ring"`` (default), ``"torus"``,
        ``"erdos_renyi:p=0.5,seed=1"``, …
    downlink : str or Compressor, optional
        The server's or two-phase aggregator's downlink operator (centralised methods only).
    mixing : {"metropolis", "uniform"}
        Gossip weights (gossip methods only).
    **hyperparameters
        The class's keyword arguments: ``lr`` (always), ``batch``, ``alpha`` (DIANA), ``gamma``
        and ``tau`` (CHOCO, Malcom), ``momentum`` (Signum), … — see each class.

    Raises
    ------
    ValueError
        An unknown name, a topology the method does not run on, or an argument its family has
        no use for.
    """
    from .algorithms import DPSGD, ChocoSGD, Signum
    from .comm.aggregate import MajorityVote, make_aggregator

    cls = _algorithm_class(name)
    comm = communicator(comm)
    gossip_family = issubclass(cls, (DPSGD, ChocoSGD))
    if downlink is not None and (gossip_family or issubclass(cls, Signum)):
        raise ValueError(f"{cls.name} has no downlink: only the aggregators of DCGD, DIANA, "
                         "EF-SGD and QAdam re-compress what they send back")
    if mixing != "metropolis" and not gossip_family:
        raise ValueError(f"{cls.name} does not gossip: mixing={mixing!r} has no use")
    if gossip_family:
        return _gossip_method(cls, objective, comm, compressor, topology or "ring", mixing,
                              hyperparameters)
    topology = "server" if topology is None else topology
    cls.check_topology(topology, comm.size)
    if issubclass(cls, Signum):
        if compressor is not None and _compressor_spec(compressor) != "sign":
            raise ValueError(f"{cls.name} sends signs: it takes no compressor (got "
                             f"{_compressor_spec(compressor)})")
        return cls(objective, comm, MajorityVote(comm, topology), **hyperparameters)
    aggregator = make_aggregator(topology, comm, "identity" if compressor is None else compressor,
                                 downlink=downlink, dim=objective.dim)
    return cls(objective, comm, aggregator, **hyperparameters)


def _gossip_method(cls, objective, comm, compressor, topology: str, mixing: str,
                   hyperparameters: dict):
    """`make_algorithm` for D-PSGD, CHOCO-SGD and Malcom-PSGD: a `Gossip` over the graph."""
    from .algorithms import ChocoSGD
    from .comm.gossip import Gossip
    from .comm.graphs import make_graph

    cls.check_topology(topology, comm.size)
    choco = issubclass(cls, ChocoSGD)
    if not choco and compressor is not None and _compressor_spec(compressor) != "identity":
        raise ValueError(f"{cls.name} sends whole models: it takes no compressor (got "
                         f"{_compressor_spec(compressor)}); CHOCO-SGD and Malcom-PSGD compress")
    gossip = Gossip(comm, make_graph(topology, comm.size), mixing)
    if choco:
        return cls(objective, comm, gossip, "identity" if compressor is None else compressor,
                   **hyperparameters)
    return cls(objective, comm, gossip, **hyperparameters)


def _compressor_spec(compressor) -> str:
    from .compress import make_compressor

    return make_compressor(compressor).spec()


def run_steps(algo, x0, iters: int, seed: int = 0,
              each: Callable[[dict, object, object], None] | None = None):
    """Run ``iters`` steps of ``algo`` from ``x0`` and return the final State (collective).

    Parameters
    ----------
    algo : Algorithm
    x0 : array
        The starting model (its dtype is the models' and messages' dtype: float64 or float32).
    iters : int
    seed : int
        This rank's random streams are ``rank_generators(seed, size, rank)``, as the command
        line's ``--seed`` makes them: the same seed gives the same run.
    each : callable, optional
        ``each(before, state, info)`` after every step: ``before`` maps the names of the
        state's arrays to copies taken before the step, ``info`` is the step's `StepInfo`
        (bits sent and received).

    Returns
    -------
    State
        The algorithm's state dataclass (``state.x`` is this rank's model; `Algorithm.model`
        gives the reported one, the network average for gossip methods).
    """
    from .algorithms import rank_generators

    state = algo.init(x0, rank_generators(seed, algo.comm.size, algo.comm.rank))
    for _ in range(int(iters)):
        before = ({k: v.copy() for k, v in vars(state).items() if isinstance(v, np.ndarray)}
                  if each is not None else None)
        state, info = algo.step(state)
        if each is not None:
            each(before, state, info)
    return state


def trajectory(algo, x0, iters: int, seed: int = 0) -> list:
    """This rank's iterates ``[x⁰, x¹, …, x^iters]`` of ``algo`` (copies; collective)."""
    xs = [np.array(x0, copy=True)]
    run_steps(algo, x0, iters, seed, each=lambda before, state, info: xs.append(state.x.copy()))
    return xs
