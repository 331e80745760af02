"""Quantised Adam with and without error feedback, and the loss floor of quantised weights.

Run ``mpiexec -n 8 python -m experiments.qadam [--out DIR] [--data SPEC]``: logistic regression
on the bundled ``digits:binary`` (1797 × 64), shuffled over the workers, ℓ2 = 10⁻³, minibatches
of 16 per worker.

Chen, Shen, Huang, Lian, Lin, Zhao, Ji, Zhang, "Quantized Adam with error feedback" (2021)
report:

1. Adam whose workers send 1-bit (scaled sign) gradients diverges from full-precision Adam
   unless each worker keeps its quantisation error and adds it to the next gradient; with error
   feedback it matches full precision;
2. quantising the weights the server sends back leaves a loss floor that falls with the grid's
   resolution.
"""

from __future__ import annotations

import apps.qadam

from experiments.runs import excess, per_worker_step
from experiments.runs import main as experiment_main

DATA = "digits:binary"
COMMON = ("--shard", "shuffled", "--beta2", 0.99, "--batch", 16, "--log-every", 10)
CASES = [("full precision (identity)", ["--compressor", "identity"]),
         ("1-bit scaled sign, error feedback", ["--compressor", "scaled_sign"]),
         ("1-bit scaled sign, no error feedback",
          ["--compressor", "scaled_sign", "--no-error-feedback"])]


def _run(run, lr: float, *args):
    return run("qadam", apps.qadam.DEFAULTS, "--data", run.dataset(DATA), *COMMON, "--lr", lr,
               "--iters", run.iters(400), *args)


def error_feedback(run, comm) -> None:
    traces = [_run(run, 0.003, *args) for _, args in CASES]
    if comm.rank != 0:
        return
    rows = [[name, f"{excess(t, 10):.5f}", f"{per_worker_step(t):.0f}"]
            for (name, _), t in zip(CASES, traces)]
    run.table(f"Quantised Adam on {traces[0].attrs['data']}, {comm.size} workers (η = 0.003, "
              "β2 = 0.99, minibatches of 16, F − F*: mean of the last 10 rows)",
              ["gradient quantiser", "F − F*", "bits up / worker / step"], rows)
    run.figure("qadam-error-feedback", traces, [c[0] for c in CASES],
               "Quantised Adam with and without error feedback", y="excess",
               x=("step", "bits_up"))


def weight_grid(run, comm) -> None:
    rows, traces, labels = [], [], []
    for bits in (None, 8, 4, 2, 1):
        extra = [] if bits is None else ["--weight-quant", f"uniform:bits={bits},block=16"]
        t = _run(run, 0.01, "--compressor", "scaled_sign", *extra)
        if comm.rank == 0:
            name = "exact" if bits is None else f"{bits} bit" + "s" * (bits > 1)
            rows.append([name, f"{excess(t, 10):.5f}", f"{per_worker_step(t, 'bits_down'):.0f}"])
            traces.append(t)
            labels.append(f"weights: {name}")
    if comm.rank == 0:
        run.table("Loss floor against the weight grid (η = 0.01, uniform grid per block of 16, "
                  "error feedback on the gradients, F − F*: mean of the last 10 rows)",
                  ["weights sent as", "F − F*", "bits down / worker / step"], rows)
        run.figure("qadam-weights", traces, labels, "Quantised Adam by the weights' grid",
                   y="excess", x=("step",))


def main(argv=None, comm=None) -> int:
    return experiment_main("experiments.qadam", __doc__.splitlines()[0], "qadam",
                           [error_feedback, weight_grid], argv, comm)


if __name__ == "__main__":
    raise SystemExit(main())
