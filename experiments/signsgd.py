"""signSGD and Signum with majority vote against SGD, and against workers that flip their signs.

Run ``mpiexec -n 9 python -m experiments.signsgd [--out DIR] [--data SPEC]`` (any size ≥ 3; an
odd one avoids tied votes): logistic regression on the bundled ``digits:binary`` (1797 × 64),
shuffled over the workers, ℓ2 = 10⁻³.

Bernstein, Wang, Azizzadenesheli, Anandkumar, "signSGD: compressed optimisation for non-convex
problems" (2018) and Bernstein, Zhao, Azizzadenesheli, Anandkumar, "signSGD with majority vote
is communication efficient and fault tolerant" (2019) report:

1. with minibatches, signSGD and Signum with a majority vote train about as well as SGD per step
   while each worker sends 1 bit a coordinate instead of 32, both ways;
2. the vote still converges when K < n/2 workers send flipped signs, and fails at K ≥ n/2;
3. the vote's error on each sign falls as voters are added.
"""

from __future__ import annotations

import apps.dcgd
import apps.signsgd
import numpy as np

from experiments.runs import excess, per_worker_step
from experiments.runs import main as experiment_main
from mpicomp.algorithms import rank_generators
from mpicomp.comm.aggregate import MajorityVote
from mpicomp.comm.communicator import Communicator

DATA = "digits:binary"
COMMON = ("--shard", "shuffled", "--dtype", "float32", "--log-every", 10)

#: (label, app, flags) against SGD: minibatches of 32 per worker
METHODS = [
    ("SGD, fp32 mean (γ = 0.5)", "dcgd",
     ("--compressor", "identity", "--downlink", "identity", "--lr", 0.5)),
    ("signSGD, majority vote (γ = 0.01)", "signsgd", ("--lr", 0.01)),
    ("Signum, β = 0.9, majority vote (γ = 0.005)", "signsgd", ("--lr", 0.005, "--momentum", 0.9)),
]


def against_sgd(run, comm) -> None:
    iters = run.iters(600)
    traces = [run(app, apps.signsgd.DEFAULTS if app == "signsgd" else apps.dcgd.DEFAULTS,
                  "--data", run.dataset(DATA), *COMMON, "--batch", 32, "--iters", iters, *flags)
              for _, app, flags in METHODS]
    if comm.rank != 0:
        return
    rows = [[name, f"{excess(t, 10):.4f}", f"{per_worker_step(t):.0f}",
             f"{per_worker_step(t, 'bits_down'):.0f}"]
            for (name, _, _), t in zip(METHODS, traces)]
    run.table(f"Minibatch training on {traces[0].attrs['data']}, {comm.size} workers, batches of "
              f"32, {iters} steps (F − F*: mean of the last 10 rows)",
              ["method", "F − F*", "bits up / worker / step", "bits down / worker / step"], rows)
    run.figure("signsgd-vs-sgd", traces, [m[0] for m in METHODS],
               "F − F* against steps and bits sent", y="excess", x=("step", "bits"))


def byzantine(run, comm) -> None:
    n = comm.size
    rows, traces, labels = [], [], []
    for k in range(n + 1):
        t = run("signsgd", apps.signsgd.DEFAULTS, "--data", run.dataset(DATA), *COMMON,
                "--batch", 0, "--lr", 0.003, "--iters", run.iters(300), "--byzantine", k)
        if comm.rank == 0:
            f0 = t["loss"][0] - t.attrs["f_star"]
            rows.append([str(k), "yes" if 2 * k < n else ("tie" if 2 * k == n else "no"),
                         f"{excess(t):.4f}", f"{excess(t) / f0:.3f}"])
            if k in (0, (n - 1) // 2, (n + 1) // 2):
                traces.append(t)
                labels.append(f"K = {k} flipping")
    run.table(f"signSGD, majority vote of {n} workers, K flipping their signs (full gradients, "
              "δ = 0.003)",
              ["K", "K < n/2", "F − F* at the end", "fraction of F(x⁰) − F*"], rows)
    run.figure("signsgd-byzantine", traces, labels, "Majority vote with flipping workers",
               y="excess", x=("step",))


def vote_error_rates(comm, objective, x, voters, draws: int, batch: int, rng) -> dict:
    """``{m: P(vote_j ≠ sign ∇f(x)_j)}`` for votes of the first m ranks (each m in ``voters``),
    over ``draws`` minibatch gradients of ``batch`` samples per rank; as rank 0 counts it."""
    truth = np.where(comm.allreduce(objective.grad(x)) < 0, -1.0, 1.0)
    groups = {m: comm.Split(color=int(comm.rank >= m)) for m in voters}
    votes = {m: MajorityVote(Communicator(g), "server") for m, g in groups.items()}
    wrong = dict.fromkeys(voters, 0)
    for _ in range(draws):
        g = objective.grad(x, rng.integers(0, objective.n_samples, size=batch))
        for m, vote in votes.items():
            wrong[m] += int(np.sum(vote.vote(g).mean != truth))
    for m in voters:
        votes[m].close()
        groups[m].Free()
    return comm.bcast({m: wrong[m] / (draws * x.size) for m in voters}, root=0)


def vote_error(run, comm, batch: int = 16) -> None:
    """The vote's sign error with 1, 3, 5, … voters, minibatch gradients at x = 0."""
    from mpicomp.algorithms.base import LocalObjective
    from mpicomp.problems import make_problem
    from mpicomp.problems.data import load, shard

    draws = run.iters(300)
    data = load(run.dataset(DATA), seed=0, groups=comm.size)
    mine = shard(data, comm.rank, comm.size, "shuffled")
    objective = LocalObjective(make_problem("logistic", mine.A, mine.y, l2=1e-3),
                               comm.size * mine.n_samples / data.n_samples)
    sizes = list(range(1, comm.size + 1, 2))
    rate = vote_error_rates(comm, objective, np.zeros(data.n_features), sizes, draws, batch,
                            rank_generators(0, comm.size, comm.rank)[1])
    run.table(f"Sign error of the vote (minibatches of {batch} at x = 0, {draws} draws of "
              f"d = {data.n_features} signs)", ["voters", "P(vote ≠ sign ∇f)"],
              [[str(m), f"{rate[m]:.3f}"] for m in sizes])


def main(argv=None, comm=None) -> int:
    return experiment_main("experiments.signsgd", __doc__.splitlines()[0], "signsgd",
                           [against_sgd, byzantine, vote_error], argv, comm)


if __name__ == "__main__":
    raise SystemExit(main())
