"""The driver every app shares: config → set-up → loop → trace.

``main(algorithm, argv, mpi_comm)`` is what ``python -m apps.diana`` runs: rank 0 parses the
command line (flags, ``--config FILE.toml``, ``--set``; ``--help`` needs no MPI) and broadcasts
the `Config`; rank 0 opens the trace (`mpicomp.recorder`), or for ``--resume`` checks the
checkpoint and cuts the trace back to it; every rank builds its part (`mpicomp.setup`); then
the loop runs one collective ``step`` per iteration. The step's exchange also carries each
rank's stop request and the finiteness of what it sends (`mpicomp.comm.agreement`), so a step
that goes well costs its data collectives alone. Every ``log_every`` steps a trace row; every
``checkpoint_every`` steps, and after the step that carried a SIGTERM or SIGUSR2 (a request
made between steps travels with the next step's data), a checkpoint beside the trace.

Failures end the whole job: an error that every rank meets in set-up (a bad data file, a trace
path that cannot be written) is agreed collectively, reported once by rank 0, written into the
trace (``status=failed``, attribute ``error``) and returned as exit status 2; NaN/Inf in the
iterates is agreed the same way (``status=diverged``, exit 3); anything unexpected on one rank
prints that rank's traceback and calls ``MPI_Abort``, so no rank is left waiting.

Exit status: 0 finished, 1 unexpected error, 2 bad input, 3 diverged, 75 stopped by a signal
after writing a checkpoint (resume with ``--resume``).
"""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable, Sequence

import numpy as np

from .algorithms import ALGORITHMS, DivergenceError, rank_generators, settings_of
from .algorithms.base import layered_operator
from .backend import to_host, to_like
from .checkpoint import (
    checkpoint_path,
    load_scattered,
    read_resume_meta,
    restore_state,
    save_gathered,
)
from .comm.agreement import RunError, agree, any_rank
from .compile import compile_once
from .config import Config, broadcast_config, build_parser, parse_config
from .progress import Progress
from .recorder import COUNTER_NAMES, Counters, Recorder
from .setup import Setup, build_run

EXIT_FINISHED, EXIT_ERROR, EXIT_BAD_INPUT, EXIT_DIVERGED, EXIT_CHECKPOINTED = 0, 1, 2, 3, 75
STOP_SIGNALS = ("SIGTERM", "SIGUSR2")
__all__ = ["main", "Run", "RunError", "settings_of", "EXIT_FINISHED", "EXIT_ERROR",
           "EXIT_BAD_INPUT", "EXIT_DIVERGED", "EXIT_CHECKPOINTED"]


class Run:
    """One training run on this rank (all ranks build one and call `execute` together)."""

    def __init__(self, algorithm: str, cfg: Config, mpi_comm,
                 on_step: Callable[[int], None] | None = None):
        self.algorithm, self.cfg, self.mpi_comm = algorithm, cfg, mpi_comm
        self.rank, self.size = mpi_comm.Get_rank(), mpi_comm.Get_size()
        self.on_step = on_step
        self.stop_requested = False  # set by SIGTERM/SIGUSR2 (`install_stop_handlers`)
        self.ckpt_path = checkpoint_path(cfg.trace)
        self.recorder = Recorder(algorithm, cfg, mpi_comm, self.agree)
        self.setup: Setup | None = None

    def agree(self, fn, *args):
        """``fn(*args)`` on every rank; any exception anywhere is a RunError everywhere."""
        return agree(self.mpi_comm, fn, *args)

    def note(self, text: str) -> None:
        if self.rank == 0:
            print(f"{self.algorithm}: {text}", file=sys.stderr, flush=True)

    def fail(self, status: str, message: str) -> None:
        """Mark the trace (rank 0; not when writing it is what failed) and report once."""
        message = self.recorder.mark_failed(status, message)
        self.note(f"error: {message}")

    def build(self) -> Setup:
        """Data → problem → x* → communicator → algorithm (`build_run`; collective)."""
        return build_run(self.cfg, self.algorithm, self.mpi_comm, self.agree,
                         lambda: self.stop_requested,
                         lambda: any_rank(self.mpi_comm, self.stop_requested))

    # -- the run ---------------------------------------------------------------------------------
    def execute(self) -> int:
        # signals from the start, so that one during set-up (data, x*) stops the run at step 0
        # with a checkpoint; overflow and NaN in the iterates are agreed on and reported once
        # as divergence (exit 3), not as NumPy warnings from every rank first
        with stop_signals(self), np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            return self._execute()

    def _execute(self) -> int:
        cfg, recorder = self.cfg, self.recorder
        resumed_rows = 0
        if cfg.resume:  # the trace is opened (and cut back) only once the checkpoint is checked
            meta = self.mpi_comm.bcast(self.agree(lambda: self.rank == 0 and read_resume_meta(
                self.ckpt_path, cfg, self.algorithm, self.size)), root=0)
            resumed_rows = int(meta["trace_rows"])
        else:
            self.agree(recorder.open, None)
        setup = self.setup = self.build()
        algo = setup.algorithm
        try:
            x0 = to_host(algo.objective.problem.initial_point(np.random.default_rng(cfg.seed)))
            x0 = to_like(np.asarray(x0, dtype=cfg.dtype), algo.objective.problem.b)
            state = algo.init(x0,
                              rank_generators(cfg.seed, self.size, self.rank))
            recorder.counters = Counters(algo.setup_info.bits_up, algo.setup_info.bits_down)
            if cfg.resume:  # the fresh State is the template the checkpoint must match
                extra = extra_arrays(algo)
                record, saved = load_scattered(self.mpi_comm, self.agree, self.ckpt_path, state,
                                               COUNTER_NAMES, extra)
                restore_extra_arrays(algo, {name: record[name][1] for name in extra})
                state, recorder.counters = self.agree(lambda: (
                    restore_state(algo.state_type, record, state),
                    Counters.restored(saved, algo.comm)))
                self.agree(recorder.open, resumed_rows)
            recorder.describe(setup)  # on --resume too: the trace describes the run that goes on
            return self.loop(algo, state, resumed_rows)
        finally:
            algo.close()
            setup.communicator.mpi_comm.Free()

    def loop(self, algo, state, resumed_rows: int) -> int:
        cfg, recorder, communicator = self.cfg, self.recorder, algo.comm
        progress = Progress(self.algorithm, cfg.iters, start=state.step, mode=cfg.progress,
                            enabled=self.rank == 0)
        try:
            if state.step == 0 and resumed_rows == 0:
                # a stop asked for during set-up: a step-0 checkpoint before any row (x* may
                # not be known yet; the resumed run writes row 0 with it)
                if any_rank(self.mpi_comm, self.stop_requested):
                    return self.stop(algo, state)
                recorder.log(algo, state, progress)
            last_saved = state.step
            while state.step < cfg.iters:
                t0 = time.perf_counter()
                communicator.stop_requested = self.stop_requested  # sent with the step's data
                state, info = algo.step(state)
                recorder.counters.bits_up += info.bits_up
                recorder.counters.bits_down += info.bits_down
                recorder.counters.wall_time += time.perf_counter() - t0
                if self.on_step is not None:
                    self.on_step(state.step)
                if state.step % cfg.log_every == 0:
                    recorder.log(algo, state, progress)
                else:
                    progress.update(state.step)
                if cfg.checkpoint_every and state.step % cfg.checkpoint_every == 0:
                    self.save(algo, state)
                    last_saved = state.step
                if communicator.stop_agreed and state.step < cfg.iters:
                    return self.stop(algo, state)
            if state.step % cfg.log_every:  # the last step, off the logging grid
                recorder.log(algo, state, progress)
            if cfg.checkpoint_every and last_saved != state.step:
                self.save(algo, state)
        except DivergenceError as exc:
            progress.close()
            if recorder.last_logged != state.step:  # the row of the step that diverged
                recorder.log(algo, state, None, check=False)
            self.fail("diverged", f"{exc}; the step size lr={getattr(algo, 'lr', '?'):g} is too "
                      "large for this problem (try a smaller --lr, or --lr theory)")
            return EXIT_DIVERGED
        progress.close()
        recorder.finish(algo.model(state))
        return EXIT_FINISHED

    # -- checkpoints -----------------------------------------------------------------------------
    def save(self, algo, state) -> None:
        """Every rank's State, its problem's own arrays (batch-norm statistics) and counters into
        the checkpoint beside the trace (collective)."""
        recorder = self.recorder
        save_gathered(self.mpi_comm, self.agree, self.ckpt_path, state,
                      recorder.counters.saved(algo.comm),
                      lambda: recorder.checkpoint_meta(state.step), extra_arrays(algo))
        self.agree(recorder.note_checkpoint, self.ckpt_path, state.step)

    def stop(self, algo, state) -> int:
        """Checkpoint ``state`` (collective) and close the trace: the signalled end of a run."""
        self.save(algo, state)
        self.note(f"stopped by a signal at step {state.step}; checkpoint {self.ckpt_path}; "
                  "continue with --resume")
        if self.rank == 0:
            self.recorder.trace.close()
        return EXIT_CHECKPOINTED


def extra_arrays(algo) -> dict:
    """What a checkpoint holds beyond the State: the problem's own arrays (a network's
    batch-norm statistics) and, with ``--per-layer``, the bits sent per layer so far."""
    extra = algo.objective.problem.checkpoint_arrays()
    layered = layered_operator(algo)
    if layered is not None:
        extra["layer_bits"] = layered.total_bits.copy()
    return extra


def restore_extra_arrays(algo, arrays: dict) -> None:
    """Put back what `extra_arrays` saved (checked against this run's by the reader)."""
    layered = layered_operator(algo)
    if layered is not None:
        layered.total_bits[...] = arrays.pop("layer_bits")
    algo.objective.problem.restore_arrays(arrays)


@contextlib.contextmanager
def stop_signals(run: Run):
    """While the block runs, SIGTERM and SIGUSR2 set ``run.stop_requested`` (main thread only:
    Python delivers signals there)."""
    previous = {}
    if threading.current_thread() is threading.main_thread():
        for sig in (getattr(signal, name, None) for name in STOP_SIGNALS):
            if sig is not None:
                previous[sig] = signal.signal(sig, lambda *_: setattr(run, "stop_requested", True))
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def abort_alone(run: Run, exc: BaseException) -> int:
    """A failure of this rank alone: its traceback, the trace marked failed, and ``MPI_Abort``
    so that no rank waits for ever."""
    text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    sys.stderr.write("".join(f"[rank {run.rank}] {line}\n" for line in text.splitlines()))
    sys.stderr.flush()
    run.recorder.mark_failed("failed", f"rank {run.rank}: {type(exc).__name__}: {exc}")
    if run.size > 1:
        run.mpi_comm.Abort(EXIT_ERROR)  # the lock stays, and the next run finds its owner gone
    return EXIT_ERROR


def main(algorithm: str, argv: Sequence[str] | None = None, mpi_comm=None, *,
         defaults: dict | None = None, prog: str | None = None, description: str = "",
         on_step: Callable[[int], None] | None = None) -> int:
    """Run ``algorithm`` with the command line ``argv`` on ``mpi_comm`` (default COMM_WORLD).

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

    def parse() -> Config:
        cfg = parse_config(argv, settings, prog=prog, description=description, defaults=defaults)
        return cfg.replace(trace=cfg.trace or f"{algorithm}.h5")

    mpi_comm = MPI.COMM_WORLD if mpi_comm is None else mpi_comm
    cfg = broadcast_config(mpi_comm, parse, prog)
    if cfg is None:
        return EXIT_BAD_INPUT
    compile_once(mpi_comm)
    if cfg.threads > 1:  # Numba's pool then (the ahead-of-time kernels are single-threaded)
        from .compress.kernels import set_threads

        try:
            set_threads(cfg.threads)
        except ValueError as exc:  # the same on every rank: the same cfg and pool
            if mpi_comm.Get_rank() == 0:
                print(f"{prog}: error: --threads: {exc}", file=sys.stderr, flush=True)
            return EXIT_BAD_INPUT
    run = Run(algorithm, cfg, mpi_comm, on_step)
    try:
        return run.execute()
    except RunError as exc:
        run.fail("failed", str(exc))
        return EXIT_BAD_INPUT
    except BaseException as exc:
        if isinstance(exc, SystemExit) and not exc.code:
            raise
        return abort_alone(run, exc)
    finally:
        run.recorder.lock.release()
