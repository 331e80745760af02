"""Failure agreement: a failure on one rank becomes the same exception on every rank.

MPI has no way to tell the other ranks that one of them failed, so a rank that raises where the
others enter a collective leaves them waiting for ever. Two ways to agree, both collective:

- `collectively` runs a function on every rank and exchanges the outcomes (one pickled
  ``allgather``): for set-up and other cold paths, where any exception may happen.
- On the hot path the outcome travels as a few control bits (`STOP`, `NON_FINITE`, `FAILED`)
  inside the collective that moves the data (`mpicomp.comm.communicator`); only when `FAILED`
  is set do the ranks exchange the failures' texts (`raise_agreed`), so a step that goes well
  costs no extra collective.
"""

from __future__ import annotations

#: control bits a rank raises in a fused exchange: a stop was requested (SIGTERM/SIGUSR2), its
#: input vector had NaN/Inf, or it failed (its message follows through `raise_agreed`)
STOP, NON_FINITE, FAILED = 1, 2, 4


class AggregationError(RuntimeError):
    """A rank failed inside an aggregation; raised identically on every rank."""


class NonFiniteInput(AggregationError):
    """Some rank's vector held NaN or Inf (raised on every rank, before anything is decoded)."""


def finite_bits(x) -> int:
    """0 when ``x`` holds no NaN or Inf, else `NON_FINITE` (the control bit a rank sends).
    For a device ``x`` the verdict is one scalar read from the device."""
    from ..backend import is_device_array, namespace
    from ..compress import kernels

    if is_device_array(x):
        xp = namespace(x)
        return 0 if bool(xp.all(xp.isfinite(x))) else NON_FINITE
    return 0 if kernels.backend().all_finite(x) else NON_FINITE


def failure_text(exc: BaseException) -> str:
    """How a failure is reported to the other ranks."""
    return f"{type(exc).__name__}: {exc}"


def raise_agreed(comm, failure: str | None, error=AggregationError, *, kinds=None):
    """Exchange every rank's failure text (None: no failure; one pickled ``allgather``) and
    raise ``error`` on every rank when any rank failed (collective).

    The message lists ``rank r: text`` for each failing rank; ``error.causes`` holds them as
    ``(rank, text)``. ``kinds`` maps an exception class name to the class to raise instead when
    every failure is of that class, with the failing ranks' own messages (a `PayloadSizeError`
    found on the root stays a PayloadSizeError everywhere).
    """
    raw = getattr(comm, "mpi_comm", comm)
    failures = [(r, f) for r, f in enumerate(raw.allgather(failure)) if f]
    if not failures:
        return
    names = {text.split(":", 1)[0] for _, text in failures}
    if kinds and len(names) == 1 and names <= set(kinds):
        raise kinds[names.pop()]("; ".join(text.split(": ", 1)[1] for _, text in failures))
    exc = error("; ".join(f"rank {r}: {f}" for r, f in failures))
    exc.causes = failures
    raise exc


def wait_patiently(comm) -> None:
    """Return when every rank of ``comm`` has called this: a barrier that sleeps while it waits
    (`communicator.wait_all`), for cold paths. MPI implementations spin while they wait, so
    ranks done with a phase early would take the cores from those still working when the ranks
    outnumber the cores (64 ranks on a laptop, or one rank solving for ``x*``)."""
    from mpi4py import MPI

    from .communicator import wait_all

    raw = getattr(comm, "mpi_comm", comm)
    if raw.Get_size() > 1:
        wait_all(MPI, [raw.Ibarrier()])


def collectively(comm, fn, *args, catch=(ValueError, TypeError), error=AggregationError):
    """Run ``fn(*args)``; if it raises one of ``catch`` on any rank, raise ``error`` on every rank.

    ``comm`` is a `Communicator` or an mpi4py communicator. The message lists each failing
    rank's exception; ``error.causes`` holds them as ``(rank, exception text)``. DecodeError and
    PayloadSizeError are ValueErrors, so the default catches what aggregation can raise.
    """
    try:
        result, failure = fn(*args), None
    except catch as exc:
        result, failure = None, failure_text(exc)
    raise_agreed(comm, failure, error)
    return result


class RunError(RuntimeError):
    """A failure every rank of a run agrees on (bad input); the message is for the user."""


def agree(comm, fn, *args, error=RunError):
    """``fn(*args)`` on every rank; any exception anywhere becomes ``error`` everywhere, with
    its message once when every failing rank says the same (cold paths: set-up, files)."""
    def then_wait(*args):
        try:
            return fn(*args)
        finally:  # the ranks done first sleep until the last one is (cold paths)
            wait_patiently(comm)

    try:
        return collectively(comm, then_wait, *args, catch=(Exception,), error=error)
    except error as exc:
        texts = {text for _, text in getattr(exc, "causes", ())}
        if len(texts) == 1:
            exc.args = (texts.pop().split(": ", 1)[-1],)
        raise


def any_rank(comm, flag: bool) -> bool:
    """Whether ``flag`` is true on any rank (one ``allreduce``; collective)."""
    from mpi4py import MPI

    return bool(getattr(comm, "mpi_comm", comm).allreduce(bool(flag), op=MPI.LOR))
