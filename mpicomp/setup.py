"""Building a run on one rank: data → shard → problem → x* → communicator → algorithm.

`build_run` is what every rank calls once its configuration is agreed: each local phase (data,
problem, algorithm) runs under the caller's failure agreement (``agree``), so a failure on any
rank fails every rank alike before the next collective, and rank 0 alone solves for ``x*``.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable
from typing import Any

import numpy as np

from .algorithms import ALGORITHMS, LocalObjective
from .backend import is_sparse, node_rank, to_device, use_local_gpu
from .comm.communicator import Communicator
from .comm.cuda_aware import check_gpu_aware
from .config import Config
from .limits import check_dimension, check_fits

SYNTHETIC_KIND = {"logistic": "logistic", "least_squares": "least_squares",
                  "lasso": "least_squares", "softmax": "multiclass", "mlp": "multiclass",
                  "nn": "multiclass"}
LIBSVM_TASK = {"logistic": "binary", "least_squares": "regression", "lasso": "regression",
               "softmax": "multiclass", "mlp": "multiclass", "nn": "multiclass"}
CLASSIFIERS = ("softmax", "mlp", "nn")


def data_spec(cfg: Config) -> str:
    """``--data``, with the synthetic kind chosen by the problem when the spec leaves it out."""
    spec = cfg.data.strip()
    if spec != "synthetic" and not spec.startswith(("synthetic:", "synthetic,")):
        return spec
    rest = spec[len("synthetic") + 1:]
    if rest and "=" not in rest.split(",")[0]:
        return spec  # the kind is given
    return f"synthetic:{SYNTHETIC_KIND[cfg.problem]}" + (f",{rest}" if rest else "")


def load_data(cfg: Config, algorithm: str, rank: int, size: int):
    """This rank's `shards.Part` of the data set (rank 0: every rank's parts, for a source that
    it reads alone and hands out; the others None), after the checks of the settings that need
    no data (no communication, so a failure here can be agreed on).

    LIBSVM labels are mapped for the problem: two classes to ±1 for logistic regression,
    integer classes to ``0..C−1`` for softmax and the MLP, kept as read for least squares.
    """
    from .problems.shards import read_part

    ALGORITHMS[algorithm].check_topology(cfg.topology, size)
    network_only = [flag for flag, used in (("--model", cfg.model != "lenet"),
                                            ("--augment", cfg.augment),
                                            ("--per-layer", cfg.per_layer)) if used]
    if cfg.problem != "nn" and network_only:
        verb = "is" if len(network_only) == 1 else "are"
        raise ValueError(f"{' and '.join(network_only)} {verb} for neural networks: add "
                         f"--problem nn (the problem is {cfg.problem})")
    spec = data_spec(cfg)
    options = {}
    if spec.startswith("libsvm:"):
        options = {"n_features": cfg.features or None, "zero_based": cfg.zero_based,
                   "task": LIBSVM_TASK[cfg.problem]}
    try:
        return read_part(spec, rank, size, how=cfg.shard, seed=cfg.seed,
                         test_fraction=cfg.test_fraction, **options)
    except ValueError as exc:
        if options and "task=" in str(exc):
            raise ValueError(f"the {cfg.problem} problem cannot use these labels: {exc}") from None
        raise


def problem_options(cfg: Config, train) -> dict:
    options = {"l1": cfg.l1, "l2": cfg.l2}
    if cfg.problem in CLASSIFIERS:
        options["n_classes"] = train.n_classes
    if cfg.problem == "mlp":
        options["hidden"] = cfg.hidden
    if cfg.problem == "nn":
        options.update(model=cfg.model, augment=cfg.augment, seed=cfg.seed,
                       image_shape=image_shape_of(train))
    return options


def image_shape_of(data) -> tuple[int, int, int]:
    """``(C, H, W)`` of a data set's images; data without an image shape is one row of
    pixels, ``(1, 1, d)``."""
    return getattr(data, "image_shape", None) or (1, 1, data.n_features)


def limit_torch_threads(size: int) -> None:
    """One PyTorch thread a rank when several ranks share a node (unless OMP_NUM_THREADS says
    otherwise), as for NumPy's kernels: threads beyond the cores slow every rank down."""
    import os

    import torch

    if size > 1 and "OMP_NUM_THREADS" not in os.environ:
        torch.set_num_threads(1)


def _as_dtype(A, dtype):
    return A.astype(dtype) if A.dtype != dtype else A


def _on_device(A, device: str):
    if device == "cpu":
        return A
    if is_sparse(A):
        from cupyx.scipy.sparse import csr_matrix

        return csr_matrix(A)
    return to_device(A, device)


def _row_bytes(A) -> float:
    """Bytes of one sample of ``A`` (its values and, when sparse, their column indices)."""
    if is_sparse(A):
        return (A.data.nbytes + A.indices.nbytes) / max(A.shape[0], 1)
    return A.dtype.itemsize * A.shape[1]


@dataclasses.dataclass
class Setup:
    """Everything one rank built for a run."""

    objective: LocalObjective
    algorithm: Any
    communicator: Communicator
    x_star: np.ndarray | None
    f_star: float
    smoothness: float | None
    test: Any
    attrs: dict  # trace attributes known once built


def local_objective(cfg: Config, part, size: int):
    """``(test problem or None, objective, its smoothness)``: the held-out problem (rank 0),
    this rank's weighted problem over its part and its smoothness bound (no communication, so
    a failure here can be agreed on). Sizes that cannot fit fail before they are allocated."""
    from .problems import make_problem

    whole, mine = part.summary, part.mine
    check_dimension(f"the data set {whole.name}", whole.n_features)
    check_fits(f"--batch {cfg.batch}", cfg.batch * (_row_bytes(mine.A) + 16))  # + index, loss
    if cfg.problem == "nn":
        limit_torch_threads(size)
    A = _on_device(_as_dtype(mine.A, np.dtype(cfg.dtype)), cfg.device)
    local = make_problem(cfg.problem, A,
                         _on_device(mine.y, cfg.device), **problem_options(cfg, whole))
    if cfg.problem == "nn" and cfg.batch == 1 and local.has_batch_norm():
        raise ValueError(f"--batch 1 cannot train {cfg.model}: batch norm needs two samples a "
                         "batch (use --batch 2 or more)")
    test = part.test
    if test is not None and cfg.problem == "nn":  # the same network (its batch-norm statistics)
        test = local.with_data(test.A, test.y)
    elif test is not None:  # the held-out problem, on the host, in float64
        test = make_problem(cfg.problem, test.A, test.y, **problem_options(cfg, whole))
    objective = LocalObjective(local, size * mine.n_samples / whole.n_samples)
    return test, objective, objective.smoothness()


#: training sets up to this size (values and indices) are gathered on rank 0 for the solve of
#: x*, which is then that of one process over the whole set, bit for bit; larger ones are
#: solved as a sum over the ranks' shards (`problems.distributed.ShardSum`)
GATHER_LIMIT_BYTES = 32 << 20


def reference_problem(cfg: Config, part, mpi_comm, agree: Callable, trained=None):
    """The whole training set's problem for the solve of ``x*`` (collective): on rank 0 the
    problem over the gathered shards (small sets, `GATHER_LIMIT_BYTES`) or a `ShardSum` on
    every rank (larger ones); None on the other ranks of a gathered set. ``trained``, the
    rank's training problem, serves as its term of the sum when it holds the shard itself
    (host, float64), so the shard's smoothness is not computed twice. What can fail is local
    and agreed on; the collectives run outside the agreement."""
    from .problems import make_problem

    mine = part.mine
    options = problem_options(cfg, part.summary)
    if mpi_comm.allreduce(_row_bytes(mine.A) * mine.n_samples) > GATHER_LIMIT_BYTES:
        from .problems.distributed import ShardSum

        def local_problem():
            if trained is not None and trained.A is mine.A:
                return trained
            local = make_problem(cfg.problem, mine.A, mine.y, **options)
            local.smoothness()  # computed here, where a failure is agreed on
            return local

        local = agree(local_problem)
        return ShardSum(local, mine.n_samples / part.summary.n_samples, mpi_comm)
    pieces = mpi_comm.gather((mine.meta["indices"], mine.A, mine.y), root=0)

    def whole_problem():
        if pieces is None:
            return None
        rows = np.concatenate([p[0] for p in pieces])
        order = np.argsort(rows, kind="stable")
        A = _stacked([p[1] for p in pieces])
        return make_problem(cfg.problem, A[order],
                            np.concatenate([p[2] for p in pieces])[order], **options)

    return agree(whole_problem)


def _stacked(blocks):
    if is_sparse(blocks[0]):
        import scipy.sparse as sp

        return sp.vstack(blocks, format="csr")
    return np.concatenate(blocks)


def reference_point(cfg: Config, problem, should_stop: Callable[[], bool]) -> tuple:
    """``(x*, F(x*))`` of the whole training set's ``problem`` (`reference_problem`; rank 0),
    or ``(None, nan)``: also when ``should_stop()`` turns true during the solve (a stop
    request; the resumed run solves)."""
    from .problems import ReferenceInterrupted, reference_optimum

    try:
        return reference_optimum(problem, warn=False, should_stop=should_stop)
    except ReferenceInterrupted:
        return None, math.nan


def solve_reference(cfg: Config, part, mpi_comm, agree: Callable,
                    should_stop: Callable[[], bool], trained=None) -> tuple:
    """``(x*, F(x*))`` on every rank (collective), ``(None, nan)`` without one: a non-convex
    problem, ``--no-reference``, or a stop request during the solve. ``trained``: see
    `reference_problem`."""
    from .problems import is_convex

    if not (cfg.reference and is_convex(cfg.problem)):
        return None, math.nan
    problem = reference_problem(cfg, part, mpi_comm, agree, trained)

    def solve():
        if mpi_comm.Get_rank() != 0:  # a ShardSum's evaluations, or nothing (gathered)
            return None if problem is None else problem.serve()
        try:
            return reference_point(cfg, problem, should_stop)
        finally:
            getattr(problem, "release", lambda: None)()

    return mpi_comm.bcast(agree(solve), root=0)


def build_run(cfg: Config, algorithm: str, mpi_comm, agree: Callable,
              stop_requested: Callable[[], bool], stop_agreed: Callable[[], bool]) -> Setup:
    """Data → problem → x* → communicator → algorithm on this rank (collective).

    ``agree(fn, *args)`` runs a local phase under failure agreement; ``stop_requested()`` says
    whether this rank was asked to stop (it interrupts the solve for x*), ``stop_agreed()``
    whether any rank was (collective; the solve is then skipped, and the resumed run solves).
    """
    from .problems.shards import scatter_parts, scattered

    rank, size = mpi_comm.Get_rank(), mpi_comm.Get_size()
    if cfg.device == "gpu":  # each rank of a node on its own GPU, round robin
        agree(use_local_gpu, node_rank(mpi_comm))
    part = agree(load_data, cfg, algorithm, rank, size)
    if scattered(data_spec(cfg)):
        part = scatter_parts(mpi_comm, part)
    test, objective, L_mine = agree(local_objective, cfg, part, size)
    L_all = mpi_comm.allgather(L_mine)
    smoothness = None if any(v is None for v in L_all) else max(L_all)
    x_star, f_star = None, math.nan
    if not stop_agreed():
        x_star, f_star = solve_reference(cfg, part, mpi_comm, agree, stop_requested,
                                         objective.problem)
    network = None if cfg.network == "none" else cfg.network
    agree(check_gpu_aware, cfg.gpu_aware)
    communicator = Communicator(mpi_comm.Dup(), network=network, gpu_aware=cfg.gpu_aware)
    try:
        algo = agree(ALGORITHMS[algorithm].build, cfg, objective, communicator, smoothness)
    except BaseException:
        communicator.mpi_comm.Free()
        raise
    attrs = {
        "compressor": algo.compressor_spec(), "dim": objective.dim,
        "n_samples": part.summary.n_samples, "data": part.summary.name,
        "smoothness": math.nan if smoothness is None else smoothness,
        "f_star": f_star, "hyperparameters": json.dumps(algo.hyperparameters()),
    }
    return Setup(objective, algo, communicator, x_star, f_star, smoothness, test, attrs)
