"""What a run records: its trace (rank 0 writes it), the per-rank counters, and the test metrics.

`Recorder` owns the HDF5 `TraceWriter` and its lock, this rank's `Counters`, ``x*`` and the
held-out problem. A trace row (`Recorder.log`, collective) is one ``Allreduce`` of the local
losses and gradients at the model and one ``Gather`` of the per-rank counters; rank 0 appends
it under failure agreement, so a trace that cannot be written (a full disk) stops every rank.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import sys
from collections.abc import Callable

import numpy as np

from . import __version__
from .algorithms import ALGORITHMS, DivergenceError
from .backend import to_host, to_like
from .checkpoint import CheckpointError
from .comm.agreement import RunError
from .comm.communicator import Communicator
from .config import Config
from .progress import Progress
from .tracelock import TraceLock

RANK_COLUMNS = ("bits_up", "bits_down", "wire_bytes", "wall_time", "net_time")


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
    def restored(cls, saved: dict, comm: Communicator) -> Counters:
        try:
            comm.stats.restore(saved["comm_stats"])
            return cls(int(saved["bits_up"]), int(saved["bits_down"]), float(saved["wall_time"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise CheckpointError(f"the checkpoint's counters are damaged: {exc!r}") from None


#: The counters a checkpoint holds for each rank (`Counters.saved`).
COUNTER_NAMES = (*(field.name for field in dataclasses.fields(Counters)), "comm_stats")


class Recorder:
    """The trace of one run and what its rows need (every rank holds one; rank 0 writes).

    Parameters
    ----------
    algorithm : str
        The algorithm's name (the trace's ``algorithm`` attribute).
    cfg : Config
    mpi_comm : mpi4py.MPI.Intracomm
        The run's communicator (rows are collective over it).
    agree : callable
        ``agree(fn)``: ``fn()`` under the run's failure agreement.
    """

    def __init__(self, algorithm: str, cfg: Config, mpi_comm, agree: Callable):
        self.algorithm, self.cfg, self.mpi_comm, self.agree = algorithm, cfg, mpi_comm, agree
        self.rank, self.size = mpi_comm.Get_rank(), mpi_comm.Get_size()
        self.trace = None  # the TraceWriter, on rank 0
        self.lock = TraceLock(cfg.trace)  # claimed by rank 0 (`open`)
        self.last_logged = -1  # step of the last trace row
        self.counters = Counters()
        self.x_star: np.ndarray | None = None
        self.test = None  # the held-out problem

    # -- the file ------------------------------------------------------------------------------
    def open(self, resume_rows: int | None) -> None:
        """Rank 0: a new trace, or for --resume the old one cut back to the checkpoint's rows."""
        if self.rank != 0:  # the other ranks never import h5py for the trace
            return
        from mpi4py import MPI

        from .trace import STANDARD_COLUMNS, TraceWriter

        cfg = self.cfg
        try:  # before the trace is touched: one live run per trace, whatever HDF5's locking
            os.makedirs(os.path.dirname(os.path.abspath(cfg.trace)), exist_ok=True)
            self.lock.acquire()
        except OSError as exc:
            raise RunError(f"cannot create trace file {cfg.trace}: {exc}") from None
        if resume_rows is not None:
            self.trace = TraceWriter.reopen(cfg.trace, rows=resume_rows)
            return
        if os.path.lexists(cfg.trace) and not cfg.overwrite:
            raise RunError(f"{cfg.trace} exists (an earlier run's trace?); pass --overwrite to "
                           "replace it, --resume to continue its run from a checkpoint, or --trace "
                           "to name a new file")
        attrs = {"algorithm": self.algorithm, "compressor": cfg.compressor or "",
                 "topology": cfg.topology, "world_size": self.size, "config": cfg.to_json(),
                 "mpi_library": MPI.Get_library_version().strip().splitlines()[0],
                 "mpicomp_version": __version__}
        accuracy = ["test_accuracy"] if cfg.test_fraction else []
        columns = [*STANDARD_COLUMNS, "test_loss", *accuracy, *ALGORITHMS[self.algorithm].columns]
        self.trace = TraceWriter(cfg.trace, attrs, columns, RANK_COLUMNS, self.size)

    def describe(self, setup) -> None:
        """Take ``x*`` and the test problem from `Setup`; rank 0 writes the run's attributes
        (collective: agreed, so a full disk fails every rank)."""
        self.x_star, self.test = setup.x_star, setup.test
        self.agree(lambda: self.rank == 0 and self.trace.set_attrs(config=self.cfg.to_json(),
                                                                   **setup.attrs))

    def finish(self, x) -> None:
        """Rank 0 closes the trace with ``final/x`` (collective, agreed) and prints what the run
        found."""
        self.agree(lambda: self.rank == 0 and self.trace.finish(
            "finished", final_x=np.asarray(to_host(x), dtype=np.float64)))
        if self.rank == 0:
            self.summary()

    def mark_failed(self, status: str, message: str) -> str:
        """Rank 0: write ``status`` and ``message`` into the trace (when it is open and writing
        is not what failed); returns the message, with why the trace could not take it."""
        if self.rank == 0 and self.trace is not None and self.trace.is_open:
            from .trace import TraceError

            try:
                self.trace.finish(status, error=message)
            except TraceError as exc:
                message += f" (nor could the trace record it: {exc})"
            except Exception:  # the trace stays readable with status running
                pass
        return message

    def checkpoint_meta(self, step: int) -> dict:
        """Rank 0: the root attributes of a checkpoint at ``step``."""
        # a final row off the logging grid is dropped on resume (a longer run has none)
        off_grid = self.last_logged == step and step % self.cfg.log_every
        return {"step": step, "trace_rows": self.trace.rows - bool(off_grid),
                "world_size": self.size, "algorithm": self.algorithm,
                "config": self.cfg.to_json()}

    def note_checkpoint(self, path, step: int) -> None:
        """Rank 0: the trace names the checkpoint written at ``step``."""
        if self.rank == 0:
            self.trace.set_attrs(checkpoint=str(path), checkpoint_step=step)

    # -- rows ----------------------------------------------------------------------------------
    def log(self, algo, state, progress: Progress | None, check: bool = True) -> None:
        """One trace row (collective): global loss and gradient at the model, counters."""
        from mpi4py import MPI

        obj = algo.objective
        self.last_logged = state.step
        x = np.asarray(to_host(algo.model(state)), dtype=np.float64)  # a log row's copy
        extra = algo.metrics(state, x)
        on_device = to_like(x, obj.problem.b)  # the shard's device: the model goes back there
        with np.errstate(all="ignore"), obj.problem.evaluation():  # leaves training state be
            local = np.concatenate([[obj.loss(on_device)],
                                    to_host(obj.grad(on_device))]).astype(np.float64)
        total = np.empty_like(local)
        self.mpi_comm.Allreduce(local, total, op=MPI.SUM)
        total /= self.size
        per_rank = self.mpi_comm.gather(self.counters.vector(algo.comm), root=0)
        layers = self.layer_attrs(algo)
        loss = float(total[0]) + obj.regulariser(x)
        finite = math.isfinite(loss) and bool(np.isfinite(x).all())

        def write_row():  # agreed: a trace that cannot be written (a full disk) stops every rank
            if self.rank == 0:
                self.append_row(state.step, loss, total[1:], x, per_rank, extra)
                if layers:
                    self.trace.set_attrs(**layers)

        self.agree(write_row)
        if self.rank == 0 and progress is not None:
            progress.update(state.step, f"loss {loss:.6g}", force=True)
        if check and not finite:
            raise DivergenceError(state.step, "the loss")

    def layer_attrs(self, algo) -> dict:
        """With ``--per-layer``: the trace attributes ``layers`` (JSON list of ``[name, size]``)
        and ``layer_bits_up`` (JSON list: information bits of the compressed messages of every
        rank so far, each copy a gossip rank sends counted, per layer, at the last row: they sum
        to ``bits_up`` but for one-time exact exchanges such as DIANA's ``--shift-init grad``);
        collective. Empty otherwise."""
        from mpi4py import MPI

        from .algorithms.base import layered_operator

        op = layered_operator(algo)
        if op is None:
            return {}
        total = np.empty_like(op.total_bits)
        self.mpi_comm.Allreduce(op.total_bits * algo.copies_sent(), total, op=MPI.SUM)
        return {"layers": json.dumps([[n, s] for n, s in zip(op.names or (), op.sizes)]),
                "layer_bits_up": json.dumps(total.tolist())}

    def append_row(self, step: int, loss: float, grad: np.ndarray, x: np.ndarray, per_rank: list,
                   extra: dict) -> None:
        """Rank 0: the trace row from the global values, every rank's counters and the
        algorithm's own columns (``extra``)."""
        ranks = {name: np.array([v[i] for v in per_rank]) for i, name in enumerate(RANK_COLUMNS)}
        star = self.x_star
        with np.errstate(all="ignore"):
            row = {
                "step": step, "loss": loss, "grad_norm_sq": float(grad @ grad),
                "dist_to_opt_sq": math.nan if star is None else float(np.sum((x - star) ** 2)),
                "bits_up": int(ranks["bits_up"].sum()), "bits_down": int(ranks["bits_down"].sum()),
                "wire_bytes": int(ranks["wire_bytes"].sum()),
                "wall_time": float(ranks["wall_time"].max()),
                "net_time": float(ranks["net_time"].max()),
                **self.test_metrics(x), **extra,
            }
        self.trace.append(row, ranks)

    def test_metrics(self, x) -> dict:
        """``test_loss`` (objective on the held-out set) and ``test_accuracy`` (classifiers)."""
        test = self.test
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
             f"  wall time {found['wall_time']:.3g} s, "
             f"network-model time {found['net_time']:.3g} s",
             f"  analyse: python -m mpicomp.analyze {trace} "
             f"--plot {os.path.splitext(trace)[0]}.png"]
    return "\n".join(lines)
