"""Peak memory of a run per rank against what the rank must hold.

Run under MPI: ``mpiexec -n 64 python -m mpicomp.bench memory``. Each rank runs an app as a user
runs it (`mpicomp.run.Run` with the app's defaults, ``--data`` and ``--iters`` from the command
line, a trace in a temporary directory) and reports its peak resident set size
(``getrusage``'s ``ru_maxrss``) against the budget

    1.5 × (its shard + the method's vectors + 120 MB of interpreter and libraries)

where the shard is the bytes of its data (values, indices, labels) and the vectors the bytes of
the method's state after the last step. The ratio peak / budget (≤ 1: within budget) is
printed for rank 0 (which also writes the trace and solves for ``x*``) and for the worst other
rank.
"""

from __future__ import annotations

import dataclasses
import json
import resource
import shutil
import tempfile

LIBRARIES_MB = 120.0
SLACK = 1.5


def _nbytes(value) -> int:
    """Bytes of the arrays in a state field (arrays, lists and tuples of them)."""
    if isinstance(value, (list, tuple)):
        return sum(_nbytes(v) for v in value)
    return int(getattr(value, "nbytes", 0)) if hasattr(value, "shape") else 0


def _shard_bytes(problem) -> int:
    A = problem.A
    parts = [A.data, A.indices, A.indptr] if hasattr(A, "indptr") else [A]
    return sum(int(p.nbytes) for p in parts) + int(problem.b.nbytes)


def measure(app: str, argv: list[str], comm) -> dict:
    """Run ``app`` with ``argv`` on ``comm``; this rank's figures (MB)."""
    from importlib import import_module

    from ..algorithms import settings_of
    from ..config import parse_config
    from ..run import EXIT_FINISHED, Run

    module = import_module(f"mpicomp.apps.{app}")
    algorithm = module.main.algorithm
    workdir = comm.bcast(tempfile.mkdtemp(prefix="mpicomp-memory-") if comm.rank == 0 else None)
    try:
        cfg = parse_config([*argv, "--trace", f"{workdir}/run.h5", "--progress", "off",
                            "--quiet"], settings_of(algorithm), prog=f"apps.{app}",
                           defaults=module.DEFAULTS)
        run = Run(algorithm, cfg, comm)
        states = []
        loop = run.loop
        run.loop = lambda algo, state, rows: loop(algo, states.append(state) or state, rows)
        status = run.execute()
        run.recorder.lock.release()
        if status != EXIT_FINISHED:
            raise RuntimeError(f"apps.{app} ended with exit status {status}")
        state = states[-1]
        vectors = sum(_nbytes(getattr(state, f.name)) for f in dataclasses.fields(state))
        shard = _shard_bytes(run.setup.objective.problem)
    finally:
        comm.Barrier()
        if comm.rank == 0:
            shutil.rmtree(workdir, ignore_errors=True)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    mb = 1 << 20
    budget = SLACK * (shard / mb + vectors / mb + LIBRARIES_MB)
    return {"rank": comm.rank, "peak_mb": peak, "shard_mb": shard / mb,
            "vectors_mb": vectors / mb, "budget_mb": budget, "ratio": peak / budget}


def main(args) -> int:
    from mpi4py import MPI

    comm = MPI.COMM_WORLD
    argv = ["--iters", str(args.iters)] + (["--data", args.data] if args.data else [])
    mine = measure(args.app, argv, comm)
    rows = comm.gather(mine, root=0)
    if comm.rank != 0:
        return 0
    others = rows[1:] or rows
    worst = max(others, key=lambda r: r["ratio"])
    print(f"apps.{args.app} on {comm.size} rank{'s' if comm.size > 1 else ''}, data "
          f"{args.data or 'the app default'}: peak RSS / (1.5 × (shard + vectors + "
          f"{LIBRARIES_MB:g} MB))")
    print(f"{'rank':>6} {'peak MB':>9} {'shard MB':>9} {'vectors MB':>11} {'budget MB':>10} "
          f"{'ratio':>6}")
    for row in (rows[0], worst) if comm.size > 1 else (rows[0],):
        print(f"{row['rank']:>6} {row['peak_mb']:>9.1f} {row['shard_mb']:>9.2f} "
              f"{row['vectors_mb']:>11.2f} {row['budget_mb']:>10.1f} {row['ratio']:>6.2f}")
    total = sum(r["peak_mb"] for r in rows)
    print(f"all ranks: {total:.0f} MB peak RSS in all, {total / comm.size:.0f} MB a rank")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump({"ranks": comm.size, "app": args.app, "data": args.data, "rows": rows},
                      fh, indent=1)
    return 0 if max(r["ratio"] for r in rows) <= 1.0 or args.no_check else 1


__all__ = ["measure", "main", "LIBRARIES_MB", "SLACK"]
