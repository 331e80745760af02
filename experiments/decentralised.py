"""Malcom-PSGD against CHOCO-SGD: the bits each needs for the same loss, on real MPI ranks.

Run ``mpiexec -n 8 python -m experiments.decentralised [--out DIR]`` (any size ≥ 2). Every run is
an app run in this process writing its trace to ``DIR``; rank 0 prints Markdown tables (kept in
``DIR/summary.md`` with the figures):

1. for each problem, CHOCO-SGD with QSGD in its fixed-length code (``qsgd:s=4``) and Malcom-PSGD
   with the same quantiser in the vector source code (``qsgd:s=4,coder=golomb``), the same graph,
   steps, ``τ``, ``γ`` and ℓ1 prox: the bits each had sent when its loss first reached the higher
   of their two final losses, and the ratio (Campbell et al. report ~75 % fewer);
2. D-PSGD, CHOCO-SGD and Malcom-PSGD on a ring and a torus: the loss and consensus error reached
   and the bits per rank and step.

Problems: ℓ1-regularised logistic regression with a sparse planted model (heterogeneous synthetic
data), and the bundled real data sets ``digits`` (softmax, 10 classes) and ``breast_cancer``.
"""

from __future__ import annotations

import json

import apps.choco
import apps.dpsgd
import apps.malcom
import numpy as np

from experiments.runs import main as experiment_main
from experiments.runs import per_worker_step

#: (name, problem, data, shard, λ1)
PROBLEMS = [
    ("synthetic, 5 % non-zero x*, d = 512", "logistic",
     "synthetic:logistic,n=8192,d=512,h=1,density=0.05", "contiguous", 0.01),
    ("digits, softmax, d = 640", "softmax", "digits", "shuffled", 0.01),
    ("breast_cancer, logistic, d = 30", "logistic", "breast_cancer", "shuffled", 0.01),
]


def malcom_against_choco(run, comm, problem: str, data: str, l1: float, *,
                         shard: str = "contiguous", s: int = 4, iters: int = 300,
                         graph: str = "ring", lr: float = 0.5, gamma: float = 0.5,
                         figure: str | None = None) -> dict | None:
    """CHOCO-SGD (``qsgd:s``, fixed-length) and Malcom-PSGD (``qsgd:s,coder=golomb``) with the same
    settings. On rank 0 ``{"excess", "choco_bits", "malcom_bits", "ratio", "sparsity", "step"}``:
    the target is the higher of the two final losses, and each method's bits are those it had
    sent (``bits_up``, all ranks) at its first row with the loss at or below it."""
    common = ("--problem", problem, "--data", data, "--shard", shard, "--l1", l1, "--lr", lr,
              "--gamma", gamma, "--iters", iters, "--topology", graph, "--log-every", 1)
    choco = run("choco", apps.choco.DEFAULTS, *common, "--compressor", f"qsgd:s={s}")
    malcom = run("malcom", apps.malcom.DEFAULTS, *common,
                 "--compressor", f"qsgd:s={s},coder=golomb")
    if comm.rank != 0:
        return None
    if figure:
        run.figure(figure, [choco, malcom],
                   [f"CHOCO-SGD, qsgd:s={s}", f"Malcom-PSGD, qsgd:s={s} + source code"],
                   f"Malcom-PSGD against CHOCO-SGD on {data}", y="excess", x=("step", "bits_up"))
    target = max(choco["loss"][-1], malcom["loss"][-1])
    c, m = (int(np.flatnonzero(t["loss"] <= target)[0]) for t in (choco, malcom))
    choco_bits, malcom_bits = float(choco["bits_up"][c]), float(malcom["bits_up"][m])
    return {"excess": float(target - choco.attrs["f_star"]), "choco_bits": choco_bits,
            "malcom_bits": malcom_bits, "ratio": malcom_bits / choco_bits,
            "sparsity": float(malcom["sparsity"][m]), "step": int(malcom["step"][m])}


def bits_at_equal_loss(run, comm) -> None:
    rows = []
    for i, (name, problem, data, shard, l1) in enumerate(PROBLEMS):
        r = malcom_against_choco(run, comm, problem, data, l1, shard=shard, iters=run.iters(300),
                                 figure=f"malcom-{data.split(':')[0]}" if i < 2 else None)
        if comm.rank == 0:
            rows.append([name, f"{r['excess']:.2e}", str(r["step"]), f"{r['choco_bits']:.3g}",
                         f"{r['malcom_bits']:.3g}", f"{r['ratio']:.3f}", f"{r['sparsity']:.2f}"])
    run.table(f"Malcom-PSGD against CHOCO-SGD on a ring of {comm.size} (QSGD s = 4, τ = 1 + ω, "
          f"γ = 0.5, η = 0.5, λ1 = 0.01, full gradients, {run.iters(300)} steps)",
          ["problem", "F − F* reached by both", "at step (Malcom)", "bits, CHOCO", "bits, Malcom",
           "ratio", "zeros in x̄"], rows)


def methods_on_graphs(run, comm) -> None:
    rows = []
    data = PROBLEMS[0][2]
    for graph in ("ring", "torus"):
        for name, algorithm, defaults in (("D-PSGD", "dpsgd", apps.dpsgd.DEFAULTS),
                                          ("CHOCO-SGD", "choco", apps.choco.DEFAULTS),
                                          ("Malcom-PSGD", "malcom", apps.malcom.DEFAULTS)):
            t = run(algorithm, defaults, "--data", data, "--topology", graph,
                    "--iters", run.iters(300))
            if comm.rank == 0:
                gap = json.loads(t.attrs["hyperparameters"])["spectral_gap"]
                rows.append([graph, f"{gap:.3f}", name, f"{t['loss'][-1] - t.attrs['f_star']:.2e}",
                             f"{t['consensus_error'][-1]:.2e}", f"{t['sparsity'][-1]:.2f}",
                             f"{per_worker_step(t):.0f}"])
    run.table(f"The gossip methods on {comm.size} ranks (the synthetic problem above; the apps' "
          f"defaults: λ1 = 0.01, η = 0.5, γ = 0.5, qsgd:s=4, {run.iters(300)} steps)",
          ["graph", "δ_W", "method", "F − F*", "Σ‖x_i − x̄‖²", "zeros in x̄",
           "bits / rank / step"], rows)


def main(argv=None, comm=None) -> int:
    return experiment_main("experiments.decentralised", __doc__.splitlines()[0], "decentralised",
                           [bits_at_equal_loss, methods_on_graphs], argv, comm, takes_data=False)


if __name__ == "__main__":
    raise SystemExit(main())
