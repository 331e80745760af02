"""The driver every app shares: config → data → problem → algorithm → loop → trace.

``main(algorithm, argv, comm)`` is what ``python -m apps.diana`` runs:

1. The command line (flags, ``--config FILE.toml``, ``--set``) is parsed on rank 0 and the
   checked `Config` broadcast; ``--help`` needs no MPI.
2. Rank 0 opens the HDF5 trace (`mpicomp.trace`), or for ``--resume`` reads the checkpoint
   beside it and truncates the trace to the checkpoint's rows.
3. Every rank loads the data set, takes its shard, builds its `LocalObjective`, the compressor,
   the aggregator and the algorithm; rank 0 solves for ``x*`` (convex problems) and broadcasts it.
4. The loop: one collective ``step`` per iteration; every ``log_every`` steps one ``Allreduce``
   of the local losses and gradients at the model and one ``Gather`` of the per-rank counters
   give a trace row (rank 0 appends and flushes it). Every ``checkpoint_every`` steps, and at
   the next step after SIGTERM or SIGUSR2 (the flag is agreed by an ``Allreduce``), every rank's
   State is gathered and written beside the trace.

Failures end the whole job: an error that every rank meets in setup (a bad data file, a trace
path that cannot be written) is agreed collectively, reported once by rank 0, written into the
trace (``status=failed``, attribute ``error``) and returned as exit status 2; NaN/Inf in the
iterates is agreed the same way (``status=diverged``, exit 3); anything unexpected on one rank
prints that rank's traceback and calls ``MPI_Abort``, so no rank is left waiting.

Exit status: 0 finished, 1 unexpected error, 2 bad input, 3 diverged, 75 stopped by a signal
after writing a checkpoint (resume with ``--resume``).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import signal
import sys
import time
import traceback
from typing import Any, Callable, Optional, Sequence

import numpy as np

from . import __version__
from .algorithms import ALGORITHMS, DivergenceError, LocalObjective, rank_generators
from .backend import to_device, to_host
from .checkpoint import (CheckpointError, checkpoint_path, read_checkpoint, read_checkpoint_meta,
                         restore_state, state_record, state_spec, write_checkpoint)
from .comm.aggregate import collectively
from .comm.communicator import Communicator
from .config import COMMON_SETTINGS, RESUMABLE, Config, ConfigError, build_parser, parse_config
from .limits import check_dimension, check_fits
from .progress import Progress
from .tracelock import TraceLock

EXIT_FINISHED, EXIT_ERROR, EXIT_BAD_INPUT, EXIT_DIVERGED, EXIT_CHECKPOINTED = 0, 1, 2, 3, 75
STOP_SIGNALS = ("SIGTERM", "SIGUSR2")
RANK_COLUMNS = ("bits_up", "bits_down", "wire_bytes", "wall_time", "net_time")
SYNTHETIC_KIND = {"logistic": "logistic", "least_squares": "least_squares",
                  "lasso": "least_squares", "softmax": "multiclass", "mlp": "multiclass"}
LIBSVM_TASK = {"logistic": "binary", "least_squares": "regression", "lasso": "regression",
               "softmax": "multiclass", "mlp": "multiclass"}


class RunError(RuntimeError):
    """A failure every rank agrees on (bad input); the message is for the user."""


@dataclasses.dataclass
class Counters:
    """This rank's cumulative costs since step 0 that the communicator does not count itself
    (it counts bytes and network-model seconds); checkpointed with its counters."""

    bits_up: int = 0
    bits_down: int = 0
    wall_time: float = 0.0

    def vector(self, comm: Communicator) -> list:
        """The values of `RANK_COLUMNS`."""
        total = comm.stats.total()
        return [self.bits_up, self.bits_down, total.bytes_sent, self.wall_time, total.model_seconds]

    def saved(self, comm: Communicator) -> dict:
        return {**dataclasses.asdict(self), "comm_stats": comm.stats.to_json()}

    @classmethod
    def restored(cls, saved: dict, comm: Communicator) -> "Counters":
        try:
            comm.stats.restore(saved["comm_stats"])
            return cls(int(saved["bits_up"]), int(saved["bits_down"]), float(saved["wall_time"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise CheckpointError(f"the checkpoint's counters are damaged: {exc!r}") from None


#: The counters a checkpoint holds for each rank (`Counters.saved`).
COUNTER_NAMES = (*(field.name for field in dataclasses.fields(Counters)), "comm_stats")


def settings_of(algorithm: str) -> tuple:
    """The common settings the algorithm uses (its own version where it redefines one, e.g. the
    vote modes of ``topology`` for signSGD), then its own."""
    cls = ALGORITHMS[algorithm]
    own = {s.name: s for s in cls.settings}
    common = [own.pop(s.name, s) for s in COMMON_SETTINGS if s.name not in cls.unused_settings]
    return tuple(common) + tuple(own.values())


# --------------------------------------------------------------------------------------------
# Building the pieces
# --------------------------------------------------------------------------------------------
def data_spec(cfg: Config) -> str:
    """``--data``, with the synthetic kind chosen by the problem when the spec leaves it out."""
    spec = cfg.data.strip()
    if spec != "synthetic" and not spec.startswith(("synthetic:", "synthetic,")):
        return spec
    rest = spec[len("synthetic") + 1:]
    if rest and "=" not in rest.split(",")[0]:
        return spec  # the kind is given
    return f"synthetic:{SYNTHETIC_KIND[cfg.problem]}" + (f",{rest}" if rest else "")


def load_data(cfg: Config, size: int):
    """``(train, test or None)``: the whole data set, every rank alike.

    LIBSVM labels are mapped for the problem: two classes to ±1 for logistic regression,
    integer classes to ``0..C−1`` for softmax and the MLP, kept as read for least squares.
    """
    from .problems.data import load, load_split

    spec = data_spec(cfg)
    options = {}
    if spec.startswith("libsvm:"):
        options = {"n_features": cfg.features or None, "zero_based": cfg.zero_based,
                   "task": LIBSVM_TASK[cfg.problem]}
    try:
        if cfg.test_fraction > 0:
            return load_split(spec, cfg.test_fraction, split_seed=cfg.seed, seed=cfg.seed,
                              groups=size, **options)
        return load(spec, seed=cfg.seed, groups=size, **options), None
    except ValueError as exc:
        if options and "task=" in str(exc):
            raise ValueError(f"the {cfg.problem} problem cannot use these labels: {exc}") from None
        raise


def problem_options(cfg: Config, train) -> dict:
    options = {"l1": cfg.l1, "l2": cfg.l2}
    if cfg.problem in ("softmax", "mlp"):
        options["n_classes"] = train.n_classes
    if cfg.problem == "mlp":
        options["hidden"] = cfg.hidden
    return options


def _as_dtype(A, dtype):
    return A.astype(dtype) if A.dtype != dtype else A


def _on_device(A, device: str):
    if device == "cpu":
        return A
    import scipy.sparse as sp

    if sp.issparse(A):
        from cupyx.scipy.sparse import csr_matrix

        return csr_matrix(A)
    return to_device(A, device)


def _row_bytes(A) -> float:
    """Bytes of one sample of ``A`` (its values and, when sparse, their column indices)."""
    import scipy.sparse as sp

    if sp.issparse(A):
        return (A.data.nbytes + A.indices.nbytes) / max(A.shape[0], 1)
    return A.dtype.itemsize * A.shape[1]


@dataclasses.dataclass
class Setup:
    """Everything one rank built for a run."""

    objective: LocalObjective
    algorithm: Any
    communicator: Communicator
    x_star: Optional[np.ndarray]
    f_star: float
    smoothness: Optional[float]
    test: Any
    attrs: dict  # trace attributes known once built


def local_objective(cfg: Config, algorithm: str, rank: int, size: int):
    """``(train, test problem or None, objective, its smoothness)``: the data set, the held-out
    problem, this rank's weighted problem and its smoothness bound (no communication, so a
    failure here can be agreed on). Sizes that cannot fit fail before they are allocated."""
    from .problems import make_problem
    from .problems.data import shard

    ALGORITHMS[algorithm].check_topology(cfg.topology, size)
    train, test = load_data(cfg, size)
    dim = train.A.shape[1]
    check_dimension(f"the data set {train.name}", dim)
    check_fits(f"--batch {cfg.batch}", cfg.batch * (_row_bytes(train.A) + 16))  # + index, loss
    mine = shard(train, rank, size, how=cfg.shard, seed=cfg.seed)
    local = make_problem(cfg.problem, _on_device(_as_dtype(mine.A, np.dtype(cfg.dtype)), cfg.device),
                         _on_device(mine.y, cfg.device), **problem_options(cfg, train))
    if test is not None:  # the held-out problem, on the host, in float64
        test = make_problem(cfg.problem, test.A, test.y, **problem_options(cfg, train))
    objective = LocalObjective(local, size * mine.n_samples / train.n_samples)
    return train, test, objective, objective.smoothness()


def reference_point(cfg: Config, train, should_stop: Callable[[], bool]) -> tuple:
    """``(x*, F(x*))`` over the whole training set, or ``(None, nan)`` (rank 0 only): also when
    ``should_stop()`` turns true during the solve (a stop request; the resumed run solves)."""
    from .problems import ReferenceInterrupted, make_problem, reference_optimum

    whole = make_problem(cfg.problem, train.A, train.y, **problem_options(cfg, train))
    if not (cfg.reference and whole.convex):
        return None, math.nan
    try:
        return reference_optimum(whole, warn=False, should_stop=should_stop)
    except ReferenceInterrupted:
        return None, math.nan


# --------------------------------------------------------------------------------------------
# The run
# --------------------------------------------------------------------------------------------
class Run:
    """One training run on this rank (all ranks build one and call `execute` together)."""

    def __init__(self, algorithm: str, cfg: Config, comm, on_step: Optional[Callable[[int], None]] = None):
        self.algorithm, self.cfg, self.comm = algorithm, cfg, comm
        self.rank, self.size = comm.Get_rank(), comm.Get_size()
        self.on_step = on_step
        self.trace = None  # the TraceWriter, on rank 0
        self.stop_requested = False
        self.last_logged = -1  # step of the last trace row
        self.resumed_rows = 0  # trace rows kept from the checkpoint's run (--resume)
        self.ckpt_path = checkpoint_path(cfg.trace)
        self.trace_lock = TraceLock(cfg.trace)  # claimed by rank 0 (`open_trace`)

    # -- collective helpers ------------------------------------------------------------------
    def agree(self, fn, *args):
        """``fn(*args)`` on every rank; any exception anywhere becomes RunError everywhere
        (its message once if every failing rank says the same)."""
        try:
            return collectively(self.comm, fn, *args, catch=(Exception,), error=RunError)
        except RunError as exc:
            texts = {text for _, text in exc.causes}
            if len(texts) == 1:
                exc.args = (texts.pop().split(": ", 1)[-1],)
            raise

    def fail(self, status: str, message: str) -> None:
        """Mark the trace (rank 0; not when writing it is what failed) and report once."""
        from .trace import TraceError

        if self.rank == 0:
            if self.trace is not None and self.trace.is_open:
                try:
                    self.trace.finish(status, error=message)
                except TraceError as exc:
                    message += f" (nor could the trace record it: {exc})"
            print(f"{self.algorithm}: error: {message}", file=sys.stderr, flush=True)

    def note(self, text: str) -> None:
        if self.rank == 0:
            print(f"{self.algorithm}: {text}", file=sys.stderr, flush=True)

    def stop_agreed(self) -> bool:
        """Whether any rank has been asked to stop (collective)."""
        from mpi4py import MPI

        return self.comm.allreduce(self.stop_requested, op=MPI.LOR)

    def stop(self, algo, state) -> int:
        """Checkpoint ``state`` (collective) and close the trace: the signalled end of a run."""
        self.save(algo, state)
        self.note(f"stopped by a signal at step {state.step}; checkpoint {self.ckpt_path}; "
                  "continue with --resume")
        if self.rank == 0:
            self.trace.close()
        return EXIT_CHECKPOINTED

    # -- phases ------------------------------------------------------------------------------
    def read_resume_meta(self) -> Optional[dict]:
        """Rank 0 reads the checkpoint's root attributes and checks that they fit this run."""
        if self.rank != 0:
            return None
        meta = read_checkpoint_meta(self.ckpt_path)
        problems = check_resumable(meta, self.cfg, self.algorithm, self.size)
        if problems:
            raise CheckpointError(f"{self.ckpt_path} does not fit this run: {problems}")
        return meta

    def resumed_state(self, algo, fresh):
        """``(state, counters)`` from the checkpoint (collective): rank 0 reads every rank's
        State, checked against the shapes, dtypes and generators of ``fresh`` — each rank's
        newly initialised State — before anything is allocated from the file."""
        specs = self.comm.gather(state_spec(fresh), root=0)

        def read():
            if self.rank == 0:
                _, records, counters = read_checkpoint(self.ckpt_path, specs, COUNTER_NAMES)
                return list(zip(records, counters))

        record, saved = self.comm.scatter(self.agree(read), root=0)
        return self.agree(lambda: (restore_state(algo.state_type, record),
                                   Counters.restored(saved, algo.comm)))

    def open_trace(self, resume_rows: Optional[int]) -> None:
        """Rank 0: a new trace, or for --resume the old one cut back to the checkpoint's rows."""
        from mpi4py import MPI

        from .trace import STANDARD_COLUMNS, TraceWriter

        if self.rank != 0:
            return
        cfg = self.cfg
        try:  # before the trace is touched: one live run per trace, whatever HDF5's locking
            os.makedirs(os.path.dirname(os.path.abspath(cfg.trace)), exist_ok=True)
            self.trace_lock.acquire()
        except OSError as exc:
            raise RunError(f"cannot create trace file {cfg.trace}: {exc}") from None
        if resume_rows is not None:
            self.trace = TraceWriter.reopen(cfg.trace, rows=resume_rows)
            return
        if os.path.lexists(cfg.trace) and not cfg.overwrite:
            raise RunError(f"{cfg.trace} exists (an earlier run's trace?); pass --overwrite to "
                           "replace it, --resume to continue its run from a checkpoint, or --trace "
                           "to name a new file")
        attrs = {"algorithm": self.algorithm, "compressor": getattr(cfg, "compressor", ""),
                 "topology": cfg.topology,
                 "world_size": self.size, "config": cfg.to_json(),
                 "mpi_library": MPI.Get_library_version().strip().splitlines()[0],
                 "mpicomp_version": __version__}
        columns = list(STANDARD_COLUMNS) + ["test_loss"] + (["test_accuracy"] if cfg.test_fraction else [])
        columns += ALGORITHMS[self.algorithm].columns
        self.trace = TraceWriter(cfg.trace, attrs, columns, RANK_COLUMNS, self.size)

    def build(self) -> Setup:
        """Data → problem → x* → communicator → algorithm. Each local phase is agreed on by
        all ranks before the next collective, so a failure anywhere fails everywhere alike."""
        cfg, comm = self.cfg, self.comm
        train, test, objective, L_mine = self.agree(local_objective, cfg, self.algorithm,
                                                    self.rank, self.size)
        L_all = comm.allgather(L_mine)
        smoothness = None if any(v is None for v in L_all) else max(L_all)
        x_star, f_star = None, math.nan
        if not self.stop_agreed():  # a stop request skips or interrupts the solve for x*
            solved = self.agree(lambda: reference_point(cfg, train, lambda: self.stop_requested)
                                if self.rank == 0 else None)
            x_star, f_star = comm.bcast(solved, root=0)
        network = None if cfg.network == "none" else cfg.network
        communicator = Communicator(comm.Dup(), network=network, gpu_aware=cfg.gpu_aware)
        try:
            algo = self.agree(ALGORITHMS[self.algorithm].build, cfg, objective, communicator, smoothness)
        except RunError:
            communicator.comm.Free()
            raise
        attrs = {
            "compressor": algo.compressor_spec(), "dim": objective.dim, "n_samples": train.n_samples,
            "data": train.name, "smoothness": math.nan if smoothness is None else smoothness,
            "f_star": f_star, "hyperparameters": json.dumps(algo.hyperparameters()),
        }
        return Setup(objective, algo, communicator, x_star, f_star, smoothness, test, attrs)

    def execute(self) -> int:
        # from the start, so that a signal during set-up (data, x*) stops the run at step 0 with
        # a checkpoint instead of killing it
        previous = install_stop_handlers(self)
        try:
            # overflow and NaN in the iterates are agreed on and reported once as divergence
            # (exit 3), not as NumPy warnings from every rank first
            with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
                return self._execute()
        finally:
            restore_handlers(previous)

    def _execute(self) -> int:
        cfg = self.cfg
        if cfg.resume:  # the trace is opened (and cut back) only once the checkpoint is checked
            meta = self.comm.bcast(self.agree(self.read_resume_meta), root=0)
            self.resumed_rows = int(meta["trace_rows"])
        else:
            self.agree(self.open_trace, None)
        setup = self.setup = self.build()
        algo = setup.algorithm
        try:
            x0 = to_host(algo.objective.problem.initial_point(np.random.default_rng(cfg.seed)))
            state = algo.init(np.asarray(x0, dtype=cfg.dtype),
                              rank_generators(cfg.seed, self.size, self.rank))
            self.counters = Counters(algo.setup_info.bits_up, algo.setup_info.bits_down)
            if cfg.resume:  # the fresh State is the template the checkpoint must match
                state, self.counters = self.resumed_state(algo, state)
                self.agree(self.open_trace, self.resumed_rows)
            # on --resume too: the trace describes the run that continues it
            self.agree(lambda: self.rank == 0 and self.trace.set_attrs(config=cfg.to_json(),
                                                                       **setup.attrs))
            return self.loop(algo, state)
        finally:
            algo.close()
            setup.communicator.comm.Free()

    def loop(self, algo, state) -> int:
        cfg = self.cfg
        progress = Progress(self.algorithm, cfg.iters, start=state.step, mode=cfg.progress,
                            enabled=self.rank == 0)
        try:
            if state.step == 0 and self.resumed_rows == 0:
                # a stop asked for during set-up: a step-0 checkpoint before any row (x* may
                # not be known yet; the resumed run writes row 0 with it)
                if self.stop_agreed():
                    return self.stop(algo, state)
                self.log(algo, state, progress)
            last_saved = state.step
            while state.step < cfg.iters:
                if self.stop_agreed():
                    return self.stop(algo, state)
                t0 = time.perf_counter()
                state, info = algo.step(state)
                self.counters.wall_time += time.perf_counter() - t0
                self.counters.bits_up += info.bits_up
                self.counters.bits_down += info.bits_down
                if self.on_step is not None:
                    self.on_step(state.step)
                if state.step % cfg.log_every == 0:
                    self.log(algo, state, progress)
                else:
                    progress.update(state.step)
                if cfg.checkpoint_every and state.step % cfg.checkpoint_every == 0:
                    self.save(algo, state)
                    last_saved = state.step
            if state.step % cfg.log_every:  # the last step, off the logging grid
                self.log(algo, state, progress)
            if cfg.checkpoint_every and last_saved != state.step:
                self.save(algo, state)
        except DivergenceError as exc:
            progress.close()
            if self.last_logged != state.step:  # the row of the step that diverged
                self.log(algo, state, None, check=False)
            self.fail("diverged", f"{exc}; the step size lr={getattr(algo, 'lr', '?'):g} is too "
                      "large for this problem (try a smaller --lr, or --lr theory)")
            return EXIT_DIVERGED
        progress.close()
        x = algo.model(state)
        self.agree(lambda: self.rank == 0 and self.trace.finish(
            "finished", final_x=np.asarray(x, dtype=np.float64)))
        if self.rank == 0:
            self.summary()
        return EXIT_FINISHED

    # -- metrics -----------------------------------------------------------------------------
    def log(self, algo, state, progress: Optional[Progress], check: bool = True) -> None:
        """One trace row (collective): global loss and gradient at the model, counters."""
        from mpi4py import MPI

        obj = algo.objective
        self.last_logged = state.step
        x = np.asarray(algo.model(state), dtype=np.float64)
        extra = algo.metrics(state, x)
        with np.errstate(all="ignore"):
            local = np.concatenate([[obj.loss(x)], obj.grad(x)]).astype(np.float64)
        total = np.empty_like(local)
        self.comm.Allreduce(local, total, op=MPI.SUM)
        total /= self.size
        per_rank = self.comm.gather(self.counters.vector(algo.comm), root=0)
        loss = float(total[0]) + obj.regulariser(x)
        finite = math.isfinite(loss) and bool(np.isfinite(x).all())

        def write_row():  # agreed: a trace that cannot be written (a full disk) stops every rank
            if self.rank == 0:
                self.append_row(state.step, loss, total[1:], x, per_rank, extra)

        self.agree(write_row)
        if self.rank == 0 and progress is not None:
            progress.update(state.step, f"loss {loss:.6g}", force=True)
        if check and not finite:
            raise DivergenceError(state.step, "the loss")

    def append_row(self, step: int, loss: float, grad: np.ndarray, x: np.ndarray, per_rank: list,
                   extra: dict) -> None:
        """Rank 0: the trace row from the global values, every rank's counters and the
        algorithm's own columns (``extra``)."""
        ranks = {name: np.array([v[i] for v in per_rank]) for i, name in enumerate(RANK_COLUMNS)}
        star = self.setup.x_star
        with np.errstate(all="ignore"):
            row = {
                "step": step, "loss": loss, "grad_norm_sq": float(grad @ grad),
                "dist_to_opt_sq": math.nan if star is None else float(np.sum((x - star) ** 2)),
                "bits_up": int(ranks["bits_up"].sum()), "bits_down": int(ranks["bits_down"].sum()),
                "wire_bytes": int(ranks["wire_bytes"].sum()), "wall_time": float(ranks["wall_time"].max()),
                "net_time": float(ranks["net_time"].max()),
                **self.test_metrics(x), **extra,
            }
        self.trace.append(row, ranks)

    def test_metrics(self, x) -> dict:
        """``test_loss`` (objective on the held-out set) and ``test_accuracy`` (classifiers)."""
        test = self.setup.test
        if test is None:
            return {"test_loss": math.nan}
        with np.errstate(all="ignore"):
            out = {"test_loss": test.loss(x) + test.regulariser(x), "test_accuracy": math.nan}
            if hasattr(test, "predict"):
                out["test_accuracy"] = float(np.mean(test.predict(x) == test.b))
        return out

    def summary(self) -> None:
        """Rank 0, after the trace is closed: what the run found (`closing_summary`)."""
        from .analyze import summarize
        from .trace import read_trace

        found = summarize(read_trace(self.cfg.trace))
        print(closing_summary(found, self.cfg.trace, quiet=self.cfg.quiet), file=sys.stderr,
              flush=True)

    # -- checkpoints -------------------------------------------------------------------------
    def save(self, algo, state) -> None:
        """Gather every rank's State and counters; rank 0 writes the checkpoint (collective)."""
        gathered = self.comm.gather((state_record(state), self.counters.saved(algo.comm)), root=0)

        def write():
            if self.rank == 0:
                # a final row off the logging grid is dropped on resume (a longer run has none)
                off_grid = self.last_logged == state.step and state.step % self.cfg.log_every
                meta = {"step": state.step, "trace_rows": self.trace.rows - bool(off_grid),
                        "world_size": self.size,
                        "algorithm": self.algorithm, "config": self.cfg.to_json()}
                write_checkpoint(self.ckpt_path, meta, [g[0] for g in gathered], [g[1] for g in gathered])
                self.trace.set_attrs(checkpoint=str(self.ckpt_path), checkpoint_step=state.step)

        self.agree(write)


def closing_summary(found: dict, trace: str, quiet: bool = False) -> str:
    """The lines rank 0 prints when a run ends, from its trace's summary
    (`mpicomp.analyze.summarize`); ``quiet``: the first line only."""
    ranks = found["world_size"]
    head = (f"{found['algorithm']}: {found['status']}, {found['steps']} steps on {ranks} "
            f"rank{'s' if ranks != 1 else ''}; trace {trace}")
    if quiet:
        return head
    finite = lambda v: isinstance(v, (int, float)) and math.isfinite(v)  # noqa: E731
    result = [f"final loss {found['loss']:.6g}"]
    if finite(found.get("excess_loss")):
        result.append(f"F − F* {found['excess_loss']:.3g}")
    if finite(found.get("dist_to_opt_sq")):
        result.append(f"‖x − x*‖² {found['dist_to_opt_sq']:.3g}")
    if finite(found.get("final_test_accuracy")):
        result.append(f"test accuracy {found['final_test_accuracy']:.4f}")
    lines = [head, "  " + ", ".join(result),
             f"  bits per coordinate per worker and step: up {found['bits_per_coord_up']:.4g}, "
             f"down {found['bits_per_coord_down']:.4g}",
             f"  wall time {found['wall_time']:.3g} s, network-model time {found['net_time']:.3g} s",
             f"  analyse: python -m mpicomp.analyze {trace} --plot {os.path.splitext(trace)[0]}.png"]
    return "\n".join(lines)


def check_resumable(meta: dict, cfg: Config, algorithm: str, size: int) -> str:
    """What differs between a checkpoint and this run ('' when it may resume)."""
    if meta.get("algorithm") != algorithm:
        return f"it is a {meta.get('algorithm')} checkpoint, not {algorithm}"
    if int(meta["world_size"]) != size:
        return f"it was written by {meta['world_size']} ranks, this run has {size}"
    saved = json.loads(meta["config"])
    now = cfg.as_dict()
    differ = sorted(k for k in set(saved) | set(now) if k not in RESUMABLE and saved.get(k) != now.get(k))
    if differ:
        return "settings differ: " + ", ".join(f"{k} was {saved.get(k)!r}, now {now.get(k)!r}" for k in differ)
    if int(meta["step"]) > cfg.iters:
        return f"it is at step {meta['step']}, beyond --iters {cfg.iters}"
    rows = int(meta["step"]) // cfg.log_every + 1  # rows 0, log_every, ... up to its step
    if int(meta["trace_rows"]) > rows:
        return (f"it keeps {meta['trace_rows']} trace rows, more than the {rows} a run logging "
                f"every {cfg.log_every} steps has at step {meta['step']}")
    return ""


def install_stop_handlers(run: Run) -> dict:
    """SIGTERM/SIGUSR2 set ``run.stop_requested`` (main thread only; returns the old handlers)."""
    import threading

    previous = {}
    if threading.current_thread() is not threading.main_thread():
        return previous

    def handler(signum, frame):
        run.stop_requested = True

    for name in STOP_SIGNALS:
        sig = getattr(signal, name, None)
        if sig is not None:
            previous[sig] = signal.signal(sig, handler)
    return previous


def restore_handlers(previous: dict) -> None:
    for sig, old in previous.items():
        signal.signal(sig, old)


# --------------------------------------------------------------------------------------------
# Entry point
# --------------------------------------------------------------------------------------------
def main(algorithm: str, argv: Optional[Sequence[str]] = None, comm=None, *,
         defaults: Optional[dict] = None, prog: Optional[str] = None, description: str = "",
         on_step: Optional[Callable[[int], None]] = None) -> int:
    """Run ``algorithm`` with the command line ``argv`` on ``comm`` (default COMM_WORLD).

    ``defaults`` are the app's settings over the built-in ones; ``on_step(step)`` is called on
    every rank after each step (tests use it to send a signal at a chosen step).
    Returns the exit status (see the module docs).
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    prog = prog or f"python -m apps.{algorithm}"
    settings = settings_of(algorithm)
    description = description or (ALGORITHMS[algorithm].__doc__ or "").strip().splitlines()[0]
    if "-h" in argv or "--help" in argv:
        build_parser(prog, description, settings, defaults or {}).print_help()
        return EXIT_FINISHED
    from mpi4py import MPI

    comm = MPI.COMM_WORLD if comm is None else comm
    parsed = None
    if comm.Get_rank() == 0:
        try:
            cfg = parse_config(argv, settings, prog=prog, description=description, defaults=defaults)
            parsed = (cfg.replace(trace=cfg.trace or f"{algorithm}.h5"), None)
        except ConfigError as exc:
            parsed = (None, str(exc))
        except Exception as exc:  # never leave the other ranks waiting in the broadcast
            parsed = (None, f"{type(exc).__name__}: {exc}")
    cfg, error = comm.bcast(parsed, root=0)
    if error:
        if comm.Get_rank() == 0:
            print(f"{prog}: error: {error}", file=sys.stderr, flush=True)
        return EXIT_BAD_INPUT
    run = Run(algorithm, cfg, comm, on_step)
    try:
        return run.execute()
    except RunError as exc:
        run.fail("failed", str(exc))
        return EXIT_BAD_INPUT
    except BaseException as exc:  # a failure of this rank alone: end the whole job now
        if isinstance(exc, SystemExit) and not exc.code:
            raise
        text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        sys.stderr.write("".join(f"[rank {comm.Get_rank()}] {line}\n" for line in text.splitlines()))
        sys.stderr.flush()
        if run.trace is not None:
            try:
                run.trace.finish("failed", error=f"rank {comm.Get_rank()}: {type(exc).__name__}: {exc}")
            except Exception:  # the trace stays readable with status running
                pass
        if comm.Get_size() > 1:
            comm.Abort(EXIT_ERROR)  # the lock stays, and the next run finds its owner gone
        return EXIT_ERROR
    finally:
        run.trace_lock.release()
