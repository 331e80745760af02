"""DIANA against DCGD with QSGD and TernGrad: ℓ2 against ℓ∞ dithering, and block sizes.

Run ``mpiexec -n 8 python -m experiments.diana [--out DIR] [--data SPEC]``: logistic regression
on the bundled ``digits:binary`` (1797 × 64, even against odd digits), split by label so that the
workers' gradients differ at the optimum, ℓ2 = 0.05, full local gradients; the same step γ = 0.2
(about 1/L) for every method in the first comparison, DIANA's theory step
γ = 1/(L(1 + 6ω/n)) in the second, where ω is what a block size changes. Any binary data set
works, e.g. ``--data libsvm:a9a``.

Mishchenko, Gorbunov, Takáč, Richtárik, "Distributed learning with compressed gradient
differences" (2019), and Horváth, Kovalev, Mishchenko, Stich, Richtárik, "Stochastic distributed
learning with gradient quantization and variance reduction" (2019) report:

1. DCGD with unbiased quantisation (QSGD, TernGrad) stalls at a neighbourhood of x* whose size
   grows with ω and with the gradients' spread at x*; DIANA, which quantises differences to
   learned shifts, converges linearly to x* at the same cost per step;
2. ℓ∞ dithering has a smaller variance than ℓ2 dithering at the same bits, so it converges faster;
3. smaller blocks lower the variance further, at 64 bits per block for the norms (float64).
"""

from __future__ import annotations

import json

import apps.dcgd
import apps.diana
import numpy as np

from experiments.runs import bits_to_reach, excess, shown
from experiments.runs import main as experiment_main
from mpicomp.analyze import summarize
from mpicomp.compress import make_compressor

DATA = "digits:binary"
COMMON = ("--shard", "label", "--l2", 0.05, "--log-every", 5)
ITERS = 400
TOL = 1e-6
BLOCK_TOL = 1e-3

#: (label, app, compressor) of the first comparison
METHODS = [
    ("GD, uncompressed (fp64)", "dcgd", "identity"),
    ("DCGD + QSGD (ℓ2, s = 1)", "dcgd", "qsgd:s=1"),
    ("DCGD + TernGrad (ℓ∞, s = 1)", "dcgd", "terngrad"),
    ("DIANA, ℓ2 dithering, s = 1", "diana", "dither:p=2,s=1"),
    ("DIANA, ℓ∞ dithering, s = 1", "diana", "dither:p=inf,s=1"),
]


def _run(run, app: str, compressor: str, *extra):
    defaults = apps.diana.DEFAULTS if app == "diana" else apps.dcgd.DEFAULTS
    return run(app, defaults, "--data", run.dataset(DATA), *COMMON, "--iters", run.iters(ITERS),
               "--compressor", compressor, *extra)



def _omega(compressor: str, d: int) -> float:
    return make_compressor(compressor).omega(d)


def methods(run, comm) -> None:
    traces = [_run(run, app, spec, "--lr", 0.2) for _, app, spec in METHODS]
    if comm.rank != 0:
        return
    d = int(traces[0].attrs["dim"])
    rows = []
    for (name, _, spec), t in zip(METHODS, traces):
        rows.append([name, f"{_omega(spec, d):.2f}", f"{summarize(t)['bits_per_coord_up']:.2f}",
                     f"{excess(t):.2e}", f"{t['dist_to_opt_sq'][-1]:.2e}",
                     shown(bits_to_reach(t, TOL))])
    run.table(f"Logistic regression on {traces[0].attrs['data']}, {comm.size} workers split by "
              f"label (ℓ2 = 0.05, γ = 0.2, full gradients, {traces[0]['step'][-1]} steps)",
              ["method", "ω", "bits up / coordinate", "F − F* at the end", "‖x − x*‖² at the end",
               f"bits up + down to F − F* < {TOL:g}"], rows)
    run.figure("diana-methods", traces, [m[0] for m in METHODS],
               "F − F* against steps, bits sent and network-model time", y="excess")


def blocks(run, comm) -> None:
    rows, traces, labels = [], [], []
    for p in ("2", "inf"):
        for block in (0, 16, 4):
            spec = f"dither:p={p},s=1" + (f",block={block}" if block else "")
            t = _run(run, "diana", spec, "--lr", "theory")
            if comm.rank != 0:
                continue
            d = int(t.attrs["dim"])
            norm = f"ℓ{'∞' if p == 'inf' else '2'}"
            hit = np.flatnonzero(t["loss"] - t.attrs["f_star"] < BLOCK_TOL)
            rows.append([norm, str(block or d), f"{_omega(spec, d):.2f}",
                         f"{json.loads(t.attrs['hyperparameters'])['lr']:.3f}",
                         f"{summarize(t)['bits_per_coord_up']:.2f}",
                         f"{excess(t):.2e}", str(t["step"][hit[0]]) if hit.size else "not reached",
                         shown(bits_to_reach(t, BLOCK_TOL, ['bits_up']))])
            traces.append(t)
            labels.append(f"{norm}, block {block or d}")
    if comm.rank == 0:
        run.table("DIANA with its theory step, dithering with s = 1 by norm and block size "
                  "(same problem)",
                  ["norm", "block", "ω", "γ", "bits up / coordinate",
                   f"F − F* after {t['step'][-1]} steps", f"steps to F − F* < {BLOCK_TOL:g}",
                   "bits up to it"], rows)
        run.figure("diana-blocks", traces, labels,
                   "DIANA with its theory step by norm and block size", y="excess",
                   x=("step", "bits"))


def main(argv=None, comm=None) -> int:
    return experiment_main("experiments.diana", __doc__.splitlines()[0], "diana", [methods, blocks],
                           argv, comm)


if __name__ == "__main__":
    raise SystemExit(main())
