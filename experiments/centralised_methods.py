"""What the papers of the centralised methods report, measured with the apps on real MPI ranks.

Run ``mpiexec -n 9 python -m experiments.centralised_methods [--out DIR]`` (any size ≥ 3; an odd
one avoids tied votes). Every run is an app run in this process (``mpicomp.run.main``) writing
its trace to ``DIR``; rank 0 prints Markdown tables of what the traces say:

1. signSGD with majority vote against K workers flipping their signs (Bernstein et al. 2019);
2. the vote's sign error against the number of voters;
3. quantised Adam with and without error feedback, and the loss floor of weight quantisation
   (Chen et al. 2021);
4. bidirectional natural compression against uncompressed SGD: bits to the same loss
   (Horváth et al. 2019);
5. EF-SGD against plain compressed SGD with top-k (Karimireddy et al. 2019).

Data: the apps' synthetic logistic regression (4096 samples, d = 64, ℓ2 = 10⁻³); ``F − F*`` is the
loss above the optimum of the whole data set, as the trace's ``f_star`` gives it.
"""

from __future__ import annotations

import numpy as np

import apps.dcgd
import apps.efsgd
import apps.natural
import apps.qadam
import apps.signsgd
from mpicomp.algorithms import rank_generators
from mpicomp.comm.aggregate import MajorityVote
from mpicomp.comm.communicator import Communicator
from experiments.runs import bits_to_reach, excess, table
from experiments.runs import main as experiment_main

HOMOGENEOUS = "synthetic:logistic,n=4096,d=64,h=0"


def byzantine(run, comm) -> None:
    n = comm.size
    rows = []
    for k in range(n + 1):
        t = run("signsgd", apps.signsgd.DEFAULTS, "--data", HOMOGENEOUS, "--batch", 0, "--byzantine", k)
        if comm.rank == 0:
            f0 = t["loss"][0] - t.attrs["f_star"]
            rows.append([str(k), "yes" if 2 * k < n else ("tie" if 2 * k == n else "no"),
                         f"{excess(t):.4f}", f"{excess(t) / f0:.3f}"])
    table(comm, f"signSGD, majority vote of {n} workers, K flipping their signs (full gradients, δ = 0.01, "
          "300 steps)", ["K", "K < n/2", "F − F* at the end", "fraction of F(x⁰) − F*"], rows)


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


def vote_error(comm, draws: int = 300, batch: int = 16) -> None:
    """The vote's sign error with 1, 3, 5, … voters, minibatch gradients at x = 0."""
    from mpicomp.algorithms.base import LocalObjective
    from mpicomp.problems import make_problem
    from mpicomp.problems.data import load, shard

    data = load(HOMOGENEOUS, seed=0, groups=comm.size)
    mine = shard(data, comm.rank, comm.size)
    objective = LocalObjective(make_problem("logistic", mine.A, mine.y, l2=1e-3),
                               comm.size * mine.n_samples / data.n_samples)
    sizes = list(range(1, comm.size + 1, 2))
    rate = vote_error_rates(comm, objective, np.zeros(data.n_features), sizes, draws, batch,
                            rank_generators(0, comm.size, comm.rank)[1])
    d = data.n_features
    table(comm, f"Sign error of the vote (minibatches of {batch} at x = 0, {draws} draws of d = {d} signs)",
          ["voters", "P(vote ≠ sign ∇f)"], [[str(m), f"{rate[m]:.3f}"] for m in sizes])


def qadam(run, comm) -> None:
    common = ("--data", HOMOGENEOUS, "--lr", 0.003, "--beta2", 0.99, "--iters", 400, "--batch", 16,
              "--log-every", 10)
    cases = [("full precision (identity)", ["--compressor", "identity"]),
             ("1-bit scaled sign, error feedback", ["--compressor", "scaled_sign"]),
             ("1-bit scaled sign, no error feedback", ["--compressor", "scaled_sign", "--no-error-feedback"])]
    rows = []
    for name, args in cases:
        t = run("qadam", apps.qadam.DEFAULTS, *common, *args)
        if comm.rank == 0:
            rows.append([name, f"{excess(t, 10):.5f}", f"{t['bits_up'][-1] / t['step'][-1] / comm.size:.0f}"])
    table(comm, "Quantised Adam (η = 0.003, β2 = 0.99, minibatches of 16, mean over steps 310–400)",
          ["gradient quantiser", "F − F*", "bits up / worker / step"], rows)
    rows = []
    for bits in (None, 8, 4, 3, 2, 1):
        extra = [] if bits is None else ["--weight-quant", f"uniform:bits={bits},block=16"]
        t = run("qadam", apps.qadam.DEFAULTS, *common[:3], 0.01, *common[4:], "--compressor", "scaled_sign", *extra)
        if comm.rank == 0:
            rows.append(["exact" if bits is None else f"{bits} bit" + "s" * (bits > 1), f"{excess(t, 10):.5f}",
                         f"{t['bits_down'][-1] / t['step'][-1] / comm.size:.0f}"])
    table(comm, "Loss floor against the weight grid (η = 0.01, uniform grid per block of 16, mean over "
          "steps 310–400)", ["weights sent as", "F − F*", "bits down / worker / step"], rows)


def natural(run, comm) -> None:
    common = ("--lr", 0.5, "--log-every", 1, "--iters", 200)
    exact = run("dcgd", {**apps.dcgd.DEFAULTS, **apps.natural.DEFAULTS}, *common, "--compressor", "identity",
                "--downlink", "identity")
    nat = run("dcgd", {**apps.dcgd.DEFAULTS, **apps.natural.DEFAULTS}, *common)
    rows = []
    if comm.rank == 0:
        for tol in (1e-2, 1e-3, 1e-4):
            a, b = bits_to_reach(exact, tol), bits_to_reach(nat, tol)
            rows.append([f"{tol:g}", f"{a:.3g}", f"{b:.3g}", f"{a / b:.2f}"])
    table(comm, "Bidirectional natural compression against uncompressed (float32, γ = 0.5, full gradients)",
          ["F − F* below", "bits, fp32 both ways", "bits, C_nat both ways", "ratio"], rows)


def error_feedback(run, comm) -> None:
    rows = []
    for name, algorithm, defaults in (("EF-SGD", "efsgd", apps.efsgd.DEFAULTS), ("DCGD", "dcgd", apps.dcgd.DEFAULTS)):
        for lr in (0.5, 0.1):
            t = run(algorithm, defaults, "--compressor", "topk:k=0.1", "--lr", lr, "--iters", 1000, "--log-every", 100)
            if comm.rank == 0:
                rows.append([name, f"{lr:g}", f"{t['dist_to_opt_sq'][-1]:.2e}", f"{excess(t):.2e}"])
    table(comm, "Top-10 % with and without error feedback (heterogeneous data, full gradients, 1000 steps)",
          ["method", "γ", "‖x − x*‖²", "F − F*"], rows)


def main() -> None:
    experiment_main(__doc__.splitlines()[0], "centralised-runs",
                    [byzantine, lambda run, comm: vote_error(comm), qadam, natural, error_feedback])


if __name__ == "__main__":
    main()
