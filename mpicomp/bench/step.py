"""Time per training step of mpicomp's methods as a ratio to a hand-written mpi4py loop.

Run under MPI: ``mpiexec -n 4 python -m mpicomp.bench step``. For each ``d`` the data are the
apps' synthetic logistic regression, ``synthetic:logistic,n=N,d=D,h=1`` (``--n``), loaded,
sharded and weighted as the driver does (`mpicomp.setup.local_objective`). Compared are

- the baseline, a hand-written loop: ``g_i = w_i ∇f_i(x)`` with the project's problem class on
  this rank's shard, ``comm.Allreduce`` of ``g_i``, ``g /= n``, ``x -= lr·g`` (nothing else);
- ``dcgd/identity`` (``apps.dcgd --compressor identity``: the server topology, a gather and a
  broadcast a step), ``dcgd/identity allgather`` (the same with ``--topology allgather``: one
  collective a step), ``diana`` (``apps.diana``) and ``natural`` (``apps.natural``: natural
  compression both ways, float32), each run as a user
  runs the app: `mpicomp.run.main` with the app's defaults and ``--iters N --log-every N
  --progress off --quiet --no-reference --trace FILE --overwrite --batch 0 --lr LR``, so the
  step includes all the driver does per step (counters, the hook).

All runs of one ``d`` share the data, the start point (``problem.initial_point`` as the driver
draws it) and the step ``lr``: by default the smallest of the methods' theory steps (DIANA's),
so every method is stable.

Timing: a timestamp (``time.perf_counter``) after every step, taken by the loop itself for the
baseline and by the driver's ``on_step`` hook for the methods; a rank's time per step is the
median of the differences between consecutive timestamps after ``--warmup`` steps, and the
reported time is the maximum over ranks (``Allreduce`` MAX; the steps are collective, so the
ranks barely differ). Runs are interleaved: each repeat, for each ``d``, runs the baseline and
then every method; the ratio (method / baseline, > 1: slower than the hand-written loop) is
formed within a repeat, and the median over repeats is reported, with the median times.

Check: ``dcgd/identity`` computes what the baseline computes, so its final ``x`` (read from its
trace) must equal the baseline's to about 10 significant digits (only the summation order of the
mean differs); the largest relative difference is printed and a mismatch fails the run.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile
import time

import numpy as np

#: method → (algorithm, the app's module, extra flags)
METHODS = {
    "dcgd/identity": ("dcgd", "dcgd", ("--compressor", "identity")),
    # the same on the allgather topology: one collective a step where the server takes two
    "dcgd/identity allgather": ("dcgd", "dcgd", ("--compressor", "identity", "--topology",
                                                 "allgather")),
    "diana": ("diana", "diana", ()),
    "natural": ("dcgd", "natural", ()),
}
DATA = "synthetic:logistic,n={n},d={d},h=1"
X_TOLERANCE = 1e-10  # relative, max-norm


@dataclasses.dataclass
class Case:
    """One ``d``: this rank's weighted problem, the start point and the shared step."""

    d: int
    spec: str
    problem: object
    weight: float
    x0: np.ndarray
    lr: float


def app_defaults(app: str) -> dict:
    import importlib

    return importlib.import_module(f"mpicomp.apps.{app}").DEFAULTS


def theory_lr(method: str, d: int, size: int, L: float) -> float:
    """The theory step of ``method`` with its app's operators."""
    from ..algorithms import ALGORITHMS
    from ..compress import make_compressor

    algorithm, app, extra = METHODS[method]
    defaults = app_defaults(app)
    spec = extra[1] if extra else defaults.get("compressor", "identity")
    down = defaults.get("downlink", "none")
    return ALGORITHMS[algorithm].theory_lr(make_compressor(spec), d, size, L, "logistic",
                                           None if down == "none" else make_compressor(down))


def prepare(comm, d: int, n: int, l2: float, seed: int, lr, methods) -> Case:
    """Data, shard and weight as `mpicomp.setup.local_objective` builds them (collective)."""
    from mpi4py import MPI

    from ..algorithms import LocalObjective
    from ..problems import make_problem
    from ..problems.data import load, shard

    rank, size = comm.Get_rank(), comm.Get_size()
    spec = DATA.format(n=n, d=d)
    train = load(spec, seed=seed, groups=size)
    mine = shard(train, rank, size, how="contiguous", seed=seed)
    problem = make_problem("logistic", mine.A, mine.y, l1=0.0, l2=l2)
    weight = size * mine.n_samples / train.n_samples
    x0 = np.asarray(problem.initial_point(np.random.default_rng(seed)), dtype=np.float64)
    if lr == "theory":
        L = comm.allreduce(LocalObjective(problem, weight).smoothness(), op=MPI.MAX)
        lr = min(theory_lr(m, d, size, L) for m in methods)
    return Case(d, spec, problem, weight, x0, float(lr))


def hand_loop(comm, case: Case, iters: int) -> tuple:
    """The baseline: ``(timestamp after each step, final x)``."""
    from mpi4py import MPI

    problem, weight, lr, size = case.problem, case.weight, case.lr, comm.Get_size()
    x = case.x0.copy()
    g = np.empty_like(x)
    stamps = []
    comm.Barrier()
    for _ in range(iters):
        local = problem.grad(x)
        if weight != 1.0:
            local *= weight
        comm.Allreduce(local, g, op=MPI.SUM)
        g /= size
        x -= lr * g
        stamps.append(time.perf_counter())
    return stamps, x


def driven(comm, method: str, case: Case, iters: int, l2: float, seed: int, trace: str) -> list:
    """``method`` through `mpicomp.run.main` as its app runs it: the timestamps of its steps."""
    from ..run import main as run_main

    algorithm, app, extra = METHODS[method]
    argv = ["--data", case.spec, "--iters", str(iters), "--log-every", str(iters),
            "--progress", "off", "--quiet", "--no-reference", "--trace", trace, "--overwrite",
            "--batch", "0", "--lr", repr(case.lr), "--l2", repr(l2), "--seed", str(seed),
            *extra]
    stamps = []
    status = run_main(algorithm, argv, comm, defaults=app_defaults(app),
                      prog=f"python -m mpicomp.apps.{app}",
                      on_step=lambda step: stamps.append(time.perf_counter()))
    if status != 0:
        raise RuntimeError(f"{method} at d={case.d} ended with exit status {status}")
    return stamps


def per_step(comm, stamps: list, warmup: int) -> float:
    """Median interval between consecutive steps after ``warmup``, maximum over ranks."""
    from mpi4py import MPI

    return comm.allreduce(float(np.median(np.diff(stamps[warmup:]))), op=MPI.MAX)


def run(comm, dims=(64, 1024, 65536), iters: int = 100, repeat: int = 3, warmup: int = 5,
        n: int = 256, l2: float = 1e-3, seed: int = 0, lr="theory", methods=tuple(METHODS)):
    """``(rows, checks, lrs)``: one row per (method, d); the check of dcgd/identity's final
    ``x`` per ``d`` (rank 0 reads the traces; the other ranks get the same lists)."""
    from ..trace import read_trace

    if not 0 <= warmup <= iters - 3:
        raise ValueError(f"--warmup {warmup} leaves too few steps of --iters {iters} to time")
    if repeat < 1:
        raise ValueError(f"--repeat must be at least 1, got {repeat}")
    if lr != "theory" and not lr > 0:
        raise ValueError(f"--lr must be a number > 0 or theory, got {lr!r}")
    dims = list(dict.fromkeys(dims))
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise ValueError(f"unknown methods {unknown}: choose from {', '.join(METHODS)}")
    rank = comm.Get_rank()
    cases = [prepare(comm, d, n, l2, seed, lr, methods) for d in dims]
    tmp = comm.bcast(tempfile.mkdtemp(prefix="mpicomp-bench-") if rank == 0 else None, root=0)
    times = {(m, d): ([], []) for m in methods for d in dims}  # (baseline, method) per repeat
    worst = {d: 0.0 for d in dims}
    try:
        for _ in range(repeat):
            for case in cases:
                stamps, x = hand_loop(comm, case, iters)
                base = per_step(comm, stamps, warmup)
                for m in methods:
                    trace = os.path.join(tmp, m.replace("/", "-") + ".h5")
                    t = per_step(comm, driven(comm, m, case, iters, l2, seed, trace), warmup)
                    times[m, case.d][0].append(base)
                    times[m, case.d][1].append(t)
                    if m == "dcgd/identity" and rank == 0:
                        diff = np.max(np.abs(read_trace(trace).final_x - x))
                        diff /= np.max(np.abs(x)) or 1.0
                        worst[case.d] = max(worst[case.d], float(diff))
    finally:
        comm.Barrier()
        if rank == 0:
            shutil.rmtree(tmp, ignore_errors=True)
    rows = []
    for (m, d), (base, t) in times.items():
        ratios = np.array(t) / np.array(base)
        rows.append({"method": m, "d": d, "ranks": comm.Get_size(),
                     "loop_s": float(np.median(base)), "method_s": float(np.median(t)),
                     "ratio": float(np.median(ratios)), "ratios": ratios.tolist(),
                     "loop_s_runs": base, "method_s_runs": t})
    checks = []
    if "dcgd/identity" in methods:
        worst = comm.bcast(worst, root=0)
        checks = [{"d": d, "max_rel_diff": worst[d], "ok": worst[d] <= X_TOLERANCE} for d in dims]
    return rows, checks, {c.d: c.lr for c in cases}


def table(rows: list, checks: list, lrs: dict, args) -> str:
    n = rows[0]["ranks"] if rows else 0
    lines = [
        f"{n} ranks; {DATA.format(n=args.n, d='D')}; {args.iters} steps, {args.repeat} "
        "interleaved repeats",
        f"s/step: median step-to-step interval after {args.warmup} warm-up steps, max over "
        "ranks; ratio: method / hand-written loop of the same repeat, median over repeats "
        "(> 1: slower)",
        "lr: " + ", ".join(f"d={d}: {lr:.4g}" for d, lr in lrs.items()),
        "",
        "| method | d | loop s/step | method s/step | ratio | range over repeats |",
        "|---|---|---|---|---|---|",
    ]
    for r in sorted(rows, key=lambda r: (list(METHODS).index(r["method"]), r["d"])):
        lines.append(f"| {r['method']} | {r['d']} | {r['loop_s']:.3e} | {r['method_s']:.3e} | "
                     f"{r['ratio']:.2f} | {min(r['ratios']):.2f}–{max(r['ratios']):.2f} |")
    if checks:
        lines += ["", "dcgd/identity final x vs the hand-written loop (max relative difference): "
                  + ", ".join(f"d={c['d']}: {c['max_rel_diff']:.1e} "
                              f"{'ok' if c['ok'] else 'MISMATCH'}" for c in checks)]
    return "\n".join(lines)


def main(args) -> int:
    from mpi4py import MPI

    comm = MPI.COMM_WORLD
    lr = args.lr if args.lr == "theory" else float(args.lr)
    rows, checks, lrs = run(comm, dims=args.dims, iters=args.iters, repeat=args.repeat,
                            warmup=args.warmup, n=args.n, l2=args.l2, seed=args.seed, lr=lr,
                            methods=args.methods or tuple(METHODS))
    if comm.Get_rank() == 0:
        print(table(rows, checks, lrs, args), flush=True)
        if args.json:
            found = {"benchmark": "step", "ranks": comm.Get_size(), "iters": args.iters,
                     "repeat": args.repeat, "warmup": args.warmup,
                     "data": DATA.format(n=args.n, d="D"),
                     "lr": {str(d): v for d, v in lrs.items()}, "rows": rows, "x_check": checks}
            with open(args.json, "w") as fh:
                json.dump(found, fh, indent=1)
    return 0 if all(c["ok"] for c in checks) else 1
