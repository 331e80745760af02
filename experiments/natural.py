"""Natural compression and natural dithering against standard dithering and uncompressed SGD.

Run ``mpiexec -n 8 python -m experiments.natural [--out DIR] [--data SPEC]``: logistic regression
on the bundled ``digits:binary`` (1797 × 64), shuffled over the workers, ℓ2 = 0.05, float32,
full local gradients, γ = 0.2 for every method.

Horváth, Ho, Horváth, Sahu, Canini, Richtárik, "Natural compression for distributed deep
learning" (2019) report:

1. C_nat (random rounding to a power of two, 9 bits a float32) has ω = 1/8: it converges in
   about the same steps as no compression, so it needs several times fewer bits, and it can
   compress both directions;
2. natural dithering (levels 2^(1−s), …, 1/2, 1) has a far smaller variance than standard
   dithering (levels 1/s, …, 1) at the same bits, so it reaches a lower loss for the bits.
"""

from __future__ import annotations

import apps.dcgd
import apps.natural

from experiments.runs import bits_to_reach, excess, shown
from experiments.runs import main as experiment_main
from mpicomp.analyze import summarize
from mpicomp.compress import make_compressor

DATA = "digits:binary"
COMMON = ("--shard", "shuffled", "--l2", 0.05, "--dtype", "float32", "--lr", 0.2, "--log-every", 5)
DEFAULTS = {**apps.dcgd.DEFAULTS, **apps.natural.DEFAULTS}

#: (label, uplink, downlink)
BIDIRECTIONAL = [("fp32 both ways", "identity", "identity"),
                 ("C_nat up, fp32 down", "natural", "identity"),
                 ("C_nat both ways", "natural", "natural")]
DITHERS = [("fp32 (uncompressed)", "identity"), ("C_nat", "natural"),
           ("standard dithering, s = 2", "dither:p=2,s=2"),
           ("natural dithering, s = 2", "natural_dither:p=2,s=2"),
           ("standard dithering, s = 8", "dither:p=2,s=8"),
           ("natural dithering, s = 8", "natural_dither:p=2,s=8")]


def _run(run, up: str, down: str):
    return run("dcgd", DEFAULTS, "--data", run.dataset(DATA), *COMMON, "--iters", run.iters(300),
               "--compressor", up, "--downlink", down)


def bidirectional(run, comm) -> None:
    traces = [_run(run, up, down) for _, up, down in BIDIRECTIONAL]
    if comm.rank != 0:
        return
    rows = []
    for tol in (1e-2, 1e-4, 1e-5):
        bits = [bits_to_reach(t, tol) for t in traces]
        rows.append([f"{tol:g}", *map(shown, bits), shown(bits[0] / bits[2], ".2f")])
    run.table(f"Bidirectional natural compression on {traces[0].attrs['data']}, {comm.size} "
              "workers: bits (up + down, all ranks) to reach F − F*",
              ["F − F* below", *(name for name, _, _ in BIDIRECTIONAL),
               "saving, fp32 / C_nat both ways"], rows)
    run.figure("natural-bidirectional", traces, [b[0] for b in BIDIRECTIONAL],
               "Natural compression both ways against fp32", y="excess", x=("step", "bits"))


def dithering(run, comm) -> None:
    traces = [_run(run, spec, "identity") for _, spec in DITHERS]
    if comm.rank != 0:
        return
    d = int(traces[0].attrs["dim"])
    rows = [[name, f"{make_compressor(spec).omega(d):.3f}",
             f"{summarize(t)['bits_per_coord_up']:.2f}",
             f"{excess(t):.2e}", shown(bits_to_reach(t, 1e-4, ['bits_up']))]
            for (name, spec), t in zip(DITHERS, traces)]
    run.table(f"Natural against standard dithering (ℓ2 norm, one block of d = {d}; DCGD, γ = 0.2, "
              f"{traces[0]['step'][-1]} steps; fp32 downlink)",
              ["uplink", "ω", "bits up / coordinate", "F − F* at the end",
               "bits up to F − F* < 1e-4"], rows)
    run.figure("natural-dithering", traces, [name for name, _ in DITHERS],
               "Natural dithering against standard dithering", y="excess", x=("step", "bits_up"))


def main(argv=None, comm=None) -> int:
    return experiment_main("experiments.natural", __doc__.splitlines()[0], "natural",
                           [bidirectional, dithering], argv, comm)


if __name__ == "__main__":
    raise SystemExit(main())
