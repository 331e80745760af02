"""Time per training step of a PyTorch network: mpicomp against plain PyTorch, and the methods.

``python -m mpicomp.bench model`` (one process) and ``mpiexec -n 4 python -m mpicomp.bench
model``. The problem is the ``nn`` problem (`mpicomp.nn.NeuralNetwork`, ``--model``, default
``resnet20``) over synthetic CIFAR-shaped images: ``--n`` float32 images of shape 3×32×32 with
entries N(0, 1) and uniform labels ``0..9`` (`synthetic_images`, seeded by ``--seed``), built
through the public API (`mpicomp.local_objective` with ``l2=0``, `mpicomp.make_algorithm`,
``algo.init(x0, rank_generators(seed, size, rank))``, ``algo.step(state)``). Minibatches of
``--batch`` samples per rank, ``lr`` 0.1 unless a method says otherwise (`METHODS`).

One rank (no ``mpiexec``, or ``-n 1``): one step of DCGD with the identity compressor against
the PyTorch step a user writes for the same architecture, the same initial weights, the same
batch size and the same batches (indices drawn from the same generator as mpicomp's and
``index_select``-ed from the same data tensor)::

    opt.zero_grad(); loss = F.cross_entropy(model(xb), yb); loss.backward(); opt.step()

with ``torch.optim.SGD(lr=0.1)``. The ratio mpicomp / torch is what mpicomp adds to a step
(target: at most 1.1). Check: before the timing both take one step from the same weights on the
same batch, and the largest relative difference of the two models is printed (rounding only).

Several ranks: every method of ``--methods`` (default all of `METHODS`) against DCGD with the
identity compressor at the same rank count, in the same run (``--methods`` on one rank runs
this comparison there too).

Timing: ``torch.set_num_threads(--threads)`` (default 1) for everything. Each contender first
takes ``--warmup`` untimed steps; then ``--repeat`` rounds, each running ``--iters`` steps of
every contender in turn (A B A B …: interleaved, so a slow spell of the machine hits all alike).
A step's time is the difference of ``time.perf_counter`` stamps taken after consecutive steps
(the first after a barrier before the round); a contender's time in a round is the median over
its steps, maximum over ranks. The ratio to the baseline is formed within a round and its median
over rounds is reported, with the median times and the range of the ratios. The same is done
with the process's CPU time (``time.process_time``): on a machine shared with other work it
leaves out the time the process waited for a core, so its ratio is the steadier one on one
rank; under MPI it includes the time a rank spins in a collective waiting for the others.
Defaults (`DEFAULTS`): 20 steps × 5 rounds after 3 on one rank, 5 × 3 after 2 on several.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time

import numpy as np

IMAGE_SHAPE = (3, 32, 32)
CLASSES = 10
TORCH = "torch SGD"
BASELINE = "dcgd/identity"


@dataclasses.dataclass(frozen=True)
class Method:
    """How `mpicomp.make_algorithm` builds one contender."""

    algorithm: str
    compressor: str | None = None
    topology: str | None = None
    lr: float = 0.1
    options: tuple = ()


#: the compared methods (name → build); sign methods and Adam take small steps so the
#: synthetic run stays finite whatever the number of steps
METHODS = {
    BASELINE: Method("dcgd", "identity"),
    "dcgd/natural": Method("dcgd", "natural"),
    "dcgd/qsgd:s=4": Method("dcgd", "qsgd:s=4"),
    "diana/natural": Method("diana", "natural", options=(("alpha", "theory"),)),
    "signum m=0.9": Method("signsgd", lr=1e-3, options=(("momentum", 0.9),)),
    "qadam/scaled_sign EF": Method("qadam", "scaled_sign", lr=1e-3,
                                   options=(("error_feedback", True),)),
    "choco/topk:k=0.01 ring": Method("choco", "topk:k=0.01", "ring"),
}


#: ``--iters``, ``--repeat``, ``--warmup`` by default on one rank (False) and on several (True):
#: seven methods on n ranks cost 7n/2 times the one-rank comparison's compute per step
DEFAULTS = {False: {"iters": 20, "repeat": 5, "warmup": 3},
            True: {"iters": 5, "repeat": 3, "warmup": 2}}


def synthetic_images(n: int, seed: int = 0):
    """``n`` float32 CIFAR-shaped images (N(0, 1) entries) with uniform labels ``0..9``."""
    from ..problems.data import Dataset

    rng = np.random.default_rng(seed)
    A = rng.standard_normal((n, math.prod(IMAGE_SHAPE)), dtype=np.float32)
    y = rng.integers(0, CLASSES, size=n).astype(np.int64)
    return Dataset(A, y, f"synthetic images n={n} seed={seed}", "multiclass",
                   image_shape=IMAGE_SHAPE)


class MpicompStepper:
    """``method`` on ``comm`` over ``data``: `step` runs one collective step."""

    def __init__(self, comm, data, model: str, method: str, batch: int, seed: int):
        import mpicomp
        from mpicomp.algorithms import rank_generators

        spec = METHODS[method]
        objective = mpicomp.local_objective(comm, data, "nn", model=model, l2=0.0, seed=seed)
        options = dict(spec.options)
        if options.get("alpha") == "theory":
            from mpicomp.algorithms import DIANA
            from mpicomp.compress import make_compressor

            options["alpha"] = DIANA.theory_alpha(make_compressor(spec.compressor),
                                                  objective.dim)
        self.algo = mpicomp.make_algorithm(spec.algorithm, objective, comm, spec.compressor,
                                           spec.topology, lr=spec.lr, batch=batch, **options)
        self.dim = objective.dim
        x0 = objective.problem.initial_point(dtype=data.A.dtype)
        self.state = self.algo.init(x0, rank_generators(seed, comm.Get_size(), comm.Get_rank()))
        self.bits_up = 0

    def step(self) -> None:
        self.state, info = self.algo.step(self.state)
        self.bits_up = info.bits_up

    def x(self) -> np.ndarray:
        return np.asarray(self.state.x)

    def close(self) -> None:
        self.algo.close()


class TorchStepper:
    """The plain PyTorch loop on the same architecture, initial weights and batches as
    `MpicompStepper` of ``dcgd/identity`` on one rank."""

    def __init__(self, data, model: str, batch: int, seed: int, lr: float = 0.1):
        import torch

        from mpicomp.algorithms import rank_generators
        from mpicomp.nn.models import build_model

        with torch.random.fork_rng(devices=[]):  # the initial weights of `NeuralNetwork`
            torch.manual_seed(seed)
            self.model = build_model(model, IMAGE_SHAPE, CLASSES)
        self.model.to(dtype=torch.from_numpy(data.A[:0]).dtype)
        self.model.train()
        self.opt = torch.optim.SGD(self.model.parameters(), lr=lr)
        self.images = torch.from_numpy(np.ascontiguousarray(data.A))
        self.labels = torch.from_numpy(data.y)
        self.n, self.batch = data.A.shape[0], batch
        self.sample_rng = rank_generators(seed, 1, 0)[1]  # mpicomp's sampling stream
        self.F = torch.nn.functional
        self.bits_up = 0

    def step(self) -> None:
        import torch

        rows = torch.from_numpy(self.sample_rng.integers(0, self.n, size=self.batch))
        xb = self.images.index_select(0, rows).reshape(self.batch, *IMAGE_SHAPE)
        yb = self.labels.index_select(0, rows)
        self.opt.zero_grad()
        loss = self.F.cross_entropy(self.model(xb), yb)
        loss.backward()
        self.opt.step()

    def x(self) -> np.ndarray:
        import torch

        with torch.no_grad():
            return torch.cat([p.reshape(-1) for p in self.model.parameters()]).numpy()

    def close(self) -> None:
        pass


def timed_round(comm, stepper, iters: int) -> tuple[float, float]:
    """Median seconds per step of ``iters`` steps, wall-clock and this process's CPU time,
    each the maximum over ranks."""
    from mpi4py import MPI

    comm.Barrier()
    stamps, cpu = [time.perf_counter()], [time.process_time()]
    for _ in range(iters):
        stepper.step()
        stamps.append(time.perf_counter())
        cpu.append(time.process_time())
    mine = np.array([np.median(np.diff(stamps)), np.median(np.diff(cpu))])
    worst = np.empty_like(mine)
    comm.Allreduce(mine, worst, op=MPI.MAX)
    return float(worst[0]), float(worst[1])


def interleaved(comm, steppers: dict, baseline: str, iters: int, repeat: int,
                warmup: int) -> dict:
    """``{name: (wall s/step per round, CPU s/step per round)}`` after ``warmup`` untimed
    steps of each; the rounds run every stepper in turn."""
    for stepper in steppers.values():
        for _ in range(warmup):
            stepper.step()
    times = {name: ([], []) for name in steppers}
    for _ in range(repeat):
        for name, stepper in steppers.items():
            wall, used = timed_round(comm, stepper, iters)
            times[name][0].append(wall)
            times[name][1].append(used)
    return times


def first_step_check(steppers: dict) -> float:
    """One untimed step of both contenders of the one-rank comparison from the same weights
    on the same batch: the largest relative difference of their ``x`` (rounding only)."""
    for stepper in steppers.values():
        stepper.step()
    a, b = steppers[TORCH].x(), steppers[BASELINE].x()
    return float(np.max(np.abs(a - b)) / (np.max(np.abs(a)) or 1.0))


def check_sizes(iters: int, repeat: int, warmup: int, batch: int, n: int, size: int) -> None:
    if iters < 1 or repeat < 1 or warmup < 0:
        raise ValueError(f"need --iters ≥ 1, --repeat ≥ 1 and --warmup ≥ 0, got {iters}, "
                         f"{repeat}, {warmup}")
    if batch < 1:
        raise ValueError(f"--batch must be at least 1, got {batch}")
    if n < size:
        raise ValueError(f"--n {n} images leave some of the {size} ranks without any")


def run(comm, model: str = "resnet20", batch: int = 32, iters: int = 20, repeat: int = 5,
        warmup: int = 3, threads: int = 1, n: int = 256, seed: int = 0, methods=None):
    """``(rows, info)``. One rank with ``methods`` None: torch vs ``dcgd/identity``; otherwise
    every method of ``methods`` (default all) vs ``dcgd/identity`` (added when missing)."""
    import torch

    size = comm.Get_size()
    check_sizes(iters, repeat, warmup, batch, n, size)
    if threads < 1:
        raise ValueError(f"--threads must be at least 1, got {threads}")
    torch.set_num_threads(threads)
    data = synthetic_images(n, seed)
    info = {"model": model, "batch": batch, "n": n, "threads": threads, "ranks": size,
            "iters": iters, "repeat": repeat, "warmup": warmup, "seed": seed}
    if size == 1 and methods is None:
        steppers = {TORCH: TorchStepper(data, model, batch, seed),
                    BASELINE: MpicompStepper(comm, data, model, BASELINE, batch, seed)}
        baseline = TORCH
    else:
        chosen = list(dict.fromkeys(methods or METHODS))
        unknown = [m for m in chosen if m not in METHODS]
        if unknown:
            raise ValueError(f"unknown methods {unknown}: choose from {', '.join(METHODS)}")
        if BASELINE not in chosen:
            chosen.insert(0, BASELINE)
        steppers = {m: MpicompStepper(comm, data, model, m, batch, seed) for m in chosen}
        baseline = BASELINE
    try:
        if baseline == TORCH:
            info["first_step_rel_diff"] = first_step_check(steppers)
        found = interleaved(comm, steppers, baseline, iters, repeat, warmup)
    finally:
        for stepper in steppers.values():
            stepper.close()
    info["baseline"] = baseline
    info["dim"] = next(s.dim for s in steppers.values() if isinstance(s, MpicompStepper))
    base_wall, base_cpu = (np.array(v) for v in found[baseline])
    rows = []
    for name, (wall, used) in found.items():
        ratios, cpu_ratios = np.array(wall) / base_wall, np.array(used) / base_cpu
        rows.append({"method": name, "ranks": size,
                     "ms_per_step": 1e3 * float(np.median(wall)),
                     "ratio": float(np.median(ratios)), "ratios": ratios.tolist(),
                     "cpu_ms_per_step": 1e3 * float(np.median(used)),
                     "cpu_ratio": float(np.median(cpu_ratios)),
                     "cpu_ratios": cpu_ratios.tolist(),
                     "ms_per_step_runs": [1e3 * v for v in wall],
                     "cpu_ms_per_step_runs": [1e3 * v for v in used],
                     "bits_up_per_step": int(steppers[name].bits_up)})
    return rows, info


def table(rows: list, info: dict) -> str:
    base = info["baseline"]
    lines = [
        f"{info['ranks']} rank(s); model {info['model']} (d={info['dim']}), batch "
        f"{info['batch']} per rank of {info['n']} synthetic 3×32×32 float32 images; "
        f"{info['threads']} torch thread(s)",
        f"{info['iters']} steps × {info['repeat']} interleaved rounds after {info['warmup']} "
        "warm-up steps; ms/step: median over rounds of each round's median step (max over "
        "ranks), wall-clock and the process's CPU time; ratio: / "
        f"{base} of the same round, median over rounds (> 1: slower)",
        "",
        f"| method | ms/step | ratio to {base} | range over rounds | CPU ms/step | CPU ratio "
        "| bits up/step |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(f"| {r['method']} | {r['ms_per_step']:.1f} | {r['ratio']:.3f} | "
                     f"{min(r['ratios']):.3f}–{max(r['ratios']):.3f} | "
                     f"{r['cpu_ms_per_step']:.1f} | {r['cpu_ratio']:.3f} | "
                     f"{r['bits_up_per_step'] or '-'} |")
    if "first_step_rel_diff" in info:
        lines += ["", f"target: {BASELINE} / {TORCH} ≤ 1.1. Same weights, same batches: after "
                  "one step the models differ by (max relative) "
                  f"{info['first_step_rel_diff']:.1e}"]
    return "\n".join(lines)


def main(args) -> int:
    from mpi4py import MPI

    comm = MPI.COMM_WORLD
    for name, value in DEFAULTS[comm.Get_size() > 1].items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    rows, info = run(comm, model=args.model, batch=args.batch, iters=args.iters,
                     repeat=args.repeat, warmup=args.warmup, threads=args.threads, n=args.n,
                     seed=args.seed, methods=args.methods)
    if comm.Get_rank() == 0:
        print(table(rows, info), flush=True)
        if args.json:
            with open(args.json, "w") as fh:
                json.dump({"benchmark": "model", **info, "rows": rows}, fh, indent=1)
    return 0
