"""Top-k with and without error feedback: EF-SGD against plain compressed SGD (DCGD).

Run ``mpiexec -n 8 python -m experiments.error_feedback [--out DIR] [--data SPEC]``: logistic
regression on the bundled ``digits:binary`` (1797 × 64), split by label over the workers,
ℓ2 = 0.05, full local gradients, top-10 % of the coordinates.

Karimireddy, Rebjock, Stich, Jaggi, "Error feedback fixes SignSGD and other gradient compression
schemes" (2019) report that a biased compressor such as top-k used plainly leaves SGD far from
the optimum, and that adding the dropped part back next step (error feedback) restores
convergence to within O(γ²) of it.
"""

from __future__ import annotations

import apps.dcgd
import apps.efsgd

from experiments.runs import excess
from experiments.runs import main as experiment_main

DATA = "digits:binary"
COMMON = ("--shard", "label", "--l2", 0.05, "--compressor", "topk:k=0.1", "--log-every", 10)
METHODS = [("EF-SGD", "efsgd", apps.efsgd.DEFAULTS), ("DCGD", "dcgd", apps.dcgd.DEFAULTS)]


def top_k(run, comm) -> None:
    rows, traces, labels = [], [], []
    for lr in (0.2, 0.05):
        for name, app, defaults in METHODS:
            t = run(app, defaults, "--data", run.dataset(DATA), *COMMON, "--lr", lr,
                    "--iters", run.iters(1000))
            if comm.rank == 0:
                rows.append([name, f"{lr:g}", f"{t['dist_to_opt_sq'][-1]:.2e}", f"{excess(t):.2e}"])
                traces.append(t)
                labels.append(f"{name}, γ = {lr:g}")
    if comm.rank == 0:
        run.table(f"Top-10 % with and without error feedback on {traces[0].attrs['data']}, "
                  f"{comm.size} workers split by label (full gradients, "
                  f"{traces[0]['step'][-1]} steps)",
                  ["method", "γ", "‖x − x*‖²", "F − F*"], rows)
        run.figure("error-feedback", traces, labels, "Top-10 % with and without error feedback",
                   y="excess", x=("step",))


def main(argv=None, comm=None) -> int:
    return experiment_main("experiments.error_feedback", __doc__.splitlines()[0], "error-feedback",
                           [top_k], argv, comm)


if __name__ == "__main__":
    raise SystemExit(main())
