"""Compressed training of a convolutional network: signSGD, natural compression, QAdam, Malcom-PSGD.

Run ``mpiexec -n 4 python -m experiments.deep [--out DIR] [--data SPEC] [--quick]`` (any size;
K < n/2 flipping workers needs n ≥ 3): a PyTorch LeNet-5 (``--problem nn --model lenet``, 19,754
parameters on 8×8 images) on the bundled ``digits`` (1797 images 1×8×8, 10 classes), 20 % held
out for the test accuracy (seeded split), the training part shuffled over the workers,
minibatches of 32 per worker, float32 models and messages (so the uncompressed baseline sends
the 32 bits a coordinate the papers compare with), weight decay 10⁻³. ``--data cifar10:DIR``
trains a ResNet-20 with random crops and flips on CIFAR-10 (its official test set), and
``--data mnist:DIR`` LeNet-5 on MNIST, with more steps and their own target accuracy (see
`SETTINGS`: first guesses, not tuned like digits'); ``--quick`` runs 1/20 of the steps (on the
first 2048 training images of an image set).

Learning rates are given (a network has no theory step); each method's was picked from a small
grid on digits (SGD γ ∈ {0.1, 0.2, 0.3}, signSGD and Signum δ ∈ {5·10⁻⁴, 10⁻³, 2·10⁻³}, the
gossip methods η ∈ {0.1, 0.2}; Adam's η = 10⁻³ as usual). The test accuracy and loss of a table
are their means over the last 15 % of the steps (3 trace rows), the bits to the target those
sent (up + down, all ranks) when the test accuracy first reached it.

The claims checked, from the seed papers' deep-learning experiments:

1. Bernstein, Wang, Azizzadenesheli, Anandkumar (2018) and Bernstein, Zhao, Azizzadenesheli,
   Anandkumar (2019): signSGD and Signum with a majority vote reach SGD's test accuracy while
   each worker sends 1 bit a coordinate each way instead of 32, and the vote tolerates a
   minority of workers that flip their signs;
2. Horváth, Ho, Horváth, Sahu, Canini, Richtárik, "Natural compression for distributed deep
   learning" (2019): C_nat both ways (9 bits a float32) trains to the same accuracy as fp32,
   so it needs several times fewer bits for a target accuracy;
3. Chen, Shen, Huang, Lian, Lin, Zhao, Ji, Zhang, "Quantized Adam with error feedback" (2021):
   Adam with 1-bit (scaled sign) gradients matches full-precision Adam when the workers keep
   their quantisation error, and falls behind without it;
4. Campbell, Liu, Woldemariam, Scaglione, "Malcom-PSGD" (2023): on a ring, ℓ1 proximal steps and
   a source code for the quantised residuals need fewer bits than CHOCO-SGD (Koloskova, Stich,
   Jaggi 2019) for the same accuracy.
"""

from __future__ import annotations

import weakref

import apps.choco
import apps.dcgd
import apps.dpsgd
import apps.malcom
import apps.natural
import apps.qadam
import apps.signsgd
import numpy as np

from experiments.runs import main as experiment_main
from experiments.runs import per_worker_step, shown

DATA = "digits"
#: data kind: (model flags, steps, target test accuracy)
SETTINGS = {
    "digits": (("--model", "lenet"), 400, 0.9),
    "mnist": (("--model", "lenet"), 1000, 0.97),
    "cifar10": (("--model", "resnet20", "--augment"), 4000, 0.6),
}
QUICK_IMAGES = 2048  # training images of an image set kept by --quick
TAIL = 0.15  # share of the steps at the end over which a table averages accuracy and loss
COMMON = ("--problem", "nn", "--test-fraction", 0.2, "--shard", "shuffled", "--dtype", "float32",
          "--batch", 32)
SGD_LR, SIGNSGD_LR, SIGNUM_LR, ADAM_LR, GOSSIP_LR = 0.2, 0.002, 0.001, 0.001, 0.2
#: the quantiser both gossip methods send (Malcom-PSGD in the Golomb source code)
GOSSIP_Q = "qsgd:s=4,block=256"
MALCOM_L1 = 1e-4


class Setup:
    """The data spec, model flags, steps and target accuracy of this run's ``--data``."""

    def __init__(self, run):
        self.data = run.dataset(DATA)
        kind = self.data.partition(":")[0]
        model, steps, self.target = SETTINGS.get(kind, SETTINGS[DATA])
        if run.quick and kind in ("mnist", "cifar10") and ",n=" not in self.data:
            self.data += f",n={QUICK_IMAGES}"
        self.iters = run.iters(steps)
        rows = 1 if run.quick else 20  # trace rows after the first (each evaluates the model)
        self.flags = (*COMMON, "--data", self.data, *model, "--iters", self.iters,
                      "--log-every", max(1, self.iters // rows))

    def __call__(self, run, app: str, defaults: dict, *flags):
        """The trace of ``app`` with these settings and ``flags``; a run another section has
        already made (the fp32 SGD baseline) is read back, not repeated."""
        algorithm = "dcgd" if app == "natural" else app
        done = _DONE.setdefault(run, {})
        key = (algorithm, *map(str, (*self.flags, *flags)))
        if key not in done:
            done[key] = run(algorithm, defaults, *self.flags, *flags)
        return done[key]


#: each runner's traces by (algorithm, flags...) (rank 0; None elsewhere)
_DONE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def accuracy(t, column: str = "test_accuracy") -> float:
    """Mean of ``column`` over the rows of the last `TAIL` of the steps (the last row at least)."""
    step = t["step"]
    return float(np.mean(t[column][step >= min(step[-1], (1 - TAIL) * step[-1])]))


def to_target(t, target: float) -> tuple[float, float]:
    """``(step, bits)`` at the first row with a test accuracy ≥ ``target`` (bits up + down,
    all ranks); NaNs if the run never reached it."""
    hit = np.flatnonzero(t["test_accuracy"] >= target)
    if not hit.size:
        return float("nan"), float("nan")
    return float(t["step"][hit[0]]), float(t["bits_up"][hit[0]] + t["bits_down"][hit[0]])


def header(target: float) -> list[str]:
    return ["method", "test accuracy", "test loss", "bits up / worker / step",
            "bits down / worker / step", f"step to {target:.0%}",
            f"bits to {target:.0%} (up + down, all ranks)"]


def row(name: str, t, target: float) -> list[str]:
    step, bits = to_target(t, target)
    return [name, f"{accuracy(t):.3f}", f"{accuracy(t, 'test_loss'):.3g}",
            f"{per_worker_step(t):.3g}", f"{per_worker_step(t, 'bits_down'):.3g}",
            shown(step, ".0f"), shown(bits)]


def caption(s: Setup, t, comm, what: str) -> str:
    return (f"{what} on {t.attrs['data']} ({t.attrs['config']['model']}, d = {t.attrs['dim']}), "
            f"{comm.size} workers, batches of 32, {s.iters} steps; test accuracy and loss: "
            f"mean over the last {TAIL:.0%} of the steps")


def verdict(agree: bool) -> str:
    return "agrees" if agree else "disagrees"


def figure(run, name: str, traces, labels, title: str) -> None:
    run.figure(name, traces, labels, title, y="test_accuracy", x=("step", "bits"), log_y=False)


def report(run, s: Setup, comm, names, traces, what: str, name: str, title: str) -> None:
    """A section's table (`header`, one `row` per run, `caption` of ``what``) and figure."""
    run.table(caption(s, traces[0], comm, what), header(s.target),
              [row(label, t, s.target) for label, t in zip(names, traces)])
    figure(run, name, traces, names, title)


def sign_methods(run, comm) -> None:
    s = Setup(run)
    n = comm.size
    minority, majority = (n - 1) // 2, n // 2 + 1
    cases = [("SGD, fp32 mean", "dcgd", apps.dcgd.DEFAULTS,
              ("--compressor", "identity", "--downlink", "identity", "--lr", SGD_LR)),
             ("signSGD, majority vote", "signsgd", apps.signsgd.DEFAULTS,
              ("--lr", SIGNSGD_LR)),
             ("Signum β = 0.9, majority vote", "signsgd", apps.signsgd.DEFAULTS,
              ("--lr", SIGNUM_LR, "--momentum", 0.9))]
    for k in (minority, majority):
        if k:
            side = "minority" if 2 * k < n else "majority"
            cases.append((f"Signum, {k} of {n} flipping ({side})",
                          "signsgd", apps.signsgd.DEFAULTS,
                          ("--lr", SIGNUM_LR, "--momentum", 0.9, "--byzantine", k,
                           "--attack", "flip")))
    traces = [s(run, app, defaults, *flags) for _, app, defaults, flags in cases]
    if comm.rank != 0:
        return
    names = [c[0] for c in cases]
    report(run, s, comm, names, traces, f"Sign methods against SGD (γ = {SGD_LR}; signSGD "
           f"δ = {SIGNSGD_LR}, Signum δ = {SIGNUM_LR})", "deep-signsgd",
           "Sign methods with a majority vote against SGD")
    sgd, signsgd, signum, *flipped = (accuracy(t) for t in traces)
    lines = [f"- With the vote each worker sends "
             f"{per_worker_step(traces[0]) / per_worker_step(traces[2]):.0f}× fewer bits each "
             f"way than SGD. Test accuracy: SGD {sgd:.3f}, Signum {signum:.3f} "
             f"({signum - sgd:+.3f}: {verdict(signum >= sgd - 0.02)} with Bernstein et al. "
             f"(2018, 2019) that the vote matches SGD, tolerance 0.02), signSGD without "
             f"momentum {signsgd:.3f} ({signsgd - sgd:+.3f}: {verdict(signsgd >= sgd - 0.02)})."]
    flips = dict(zip([k for k in (minority, majority) if k], flipped))
    if minority:
        acc = flips[minority]
        lines.append(f"- {minority} of {n} workers flipping: Signum reaches {acc:.3f} "
                     f"({acc - signum:+.3f} against none): {verdict(acc >= signum - 0.03)} that "
                     "the vote tolerates a minority of flipping workers (tolerance 0.03).")
    acc = flips[majority]
    lines.append(f"- {majority} of {n} flipping (a majority): {acc:.3f}, {verdict(acc < 0.5)} "
                 "that the vote fails once the flipping workers outvote the others (the papers' "
                 "K ≥ n/2).")
    run.note("\n".join(lines) + "\n")


def natural(run, comm) -> None:
    s = Setup(run)
    cases = [("fp32 both ways", "dcgd", apps.dcgd.DEFAULTS,
              ("--compressor", "identity", "--downlink", "identity")),
             ("C_nat both ways", "natural", {**apps.dcgd.DEFAULTS, **apps.natural.DEFAULTS},
              ("--compressor", "natural", "--downlink", "natural"))]
    traces = [s(run, app, defaults, *flags, "--lr", SGD_LR) for _, app, defaults, flags in cases]
    if comm.rank != 0:
        return
    names = [c[0] for c in cases]
    report(run, s, comm, names, traces, f"Natural compression both ways against fp32 (SGD, "
           f"γ = {SGD_LR})", "deep-natural", "Natural compression both ways against fp32")
    (fp32, nat), bits = (accuracy(t) for t in traces), [to_target(t, s.target)[1] for t in traces]
    per_coord = per_worker_step(traces[1]) / int(traces[1].attrs["dim"])
    saving = (f"{bits[0] / bits[1]:.1f}× fewer bits to {s.target:.0%}"
              if not np.isnan(bits[0] / bits[1]) else f"{s.target:.0%} not reached by both")
    run.note(f"- C_nat sends {per_coord:.2f} bits a coordinate each way and reaches {nat:.3f} "
             f"against fp32's {fp32:.3f} ({saving}): {verdict(nat >= fp32 - 0.02)} with Horváth "
             "et al. (2019), no accuracy lost at 9 bits instead of 32 (tolerance 0.02).\n")


def qadam(run, comm) -> None:
    s = Setup(run)
    cases = [("Adam, full precision", ("--compressor", "identity")),
             ("1-bit scaled sign, error feedback", ("--compressor", "scaled_sign")),
             ("1-bit scaled sign, no error feedback",
              ("--compressor", "scaled_sign", "--no-error-feedback"))]
    traces = [s(run, "qadam", apps.qadam.DEFAULTS, *flags, "--lr", ADAM_LR)
              for _, flags in cases]
    if comm.rank != 0:
        return
    names = [c[0] for c in cases]
    report(run, s, comm, names, traces, f"Quantised Adam against Adam (η = {ADAM_LR}, β1 = 0.9, "
           "β2 = 0.999; exact weights back)", "deep-qadam",
           "Quantised Adam with and without error feedback")
    adam, ef, no_ef = (accuracy(t) for t in traces)
    steps = [to_target(t, s.target)[0] for t in traces]
    later = steps[2] > steps[1] or (np.isnan(steps[2]) and not np.isnan(steps[1]))
    behind = no_ef < ef - 0.005 or later
    reached = (f"{s.target:.0%} at step {shown(steps[2], '.0f')} against "
               f"{shown(steps[1], '.0f')} with it" if not np.all(np.isnan(steps[1:]))
               else f"{s.target:.0%} reached by neither")
    run.note(f"- Error feedback: {ef:.3f} against full-precision Adam's {adam:.3f}, "
             f"{verdict(ef >= adam - 0.02)} with Chen et al. (2021) that 1-bit Adam with error "
             f"feedback matches it (tolerance 0.02). Without it: {no_ef:.3f}, {reached}: "
             f"{verdict(behind)} that it falls behind"
             f"{' (slower, but no divergence)' if behind and no_ef >= ef - 0.05 else ''}.\n")


def gossip(run, comm) -> None:
    s = Setup(run)
    common = ("--topology", "ring", "--lr", GOSSIP_LR)
    cases = [("D-PSGD, exact fp32 gossip", "dpsgd", apps.dpsgd.DEFAULTS, ("--l1", 0)),
             ("CHOCO-SGD, QSGD fixed length", "choco", apps.choco.DEFAULTS,
              ("--compressor", GOSSIP_Q, "--gamma", 0.5, "--l1", 0)),
             ("Malcom-PSGD, λ1 = 0 (source code only)", "malcom", apps.malcom.DEFAULTS,
              ("--compressor", f"{GOSSIP_Q},coder=golomb", "--gamma", 0.5, "--l1", 0)),
             (f"Malcom-PSGD, λ1 = {MALCOM_L1:g}", "malcom", apps.malcom.DEFAULTS,
              ("--compressor", f"{GOSSIP_Q},coder=golomb", "--gamma", 0.5, "--l1", MALCOM_L1))]
    traces = [s(run, app, defaults, *common, *flags) for _, app, defaults, flags in cases]
    if comm.rank != 0:
        return
    names = [c[0] for c in cases]
    rows = []
    for name, t in zip(names, traces):  # one "bits sent" column, and the zeros of x̄
        full = row(name, t, s.target)
        rows.append([*full[:3], f"{per_worker_step(t):.3g}", *full[5:],
                     f"{t['sparsity'][-1]:.4f}"])
    run.table(caption(s, traces[0], comm, f"Decentralised on a ring: Malcom-PSGD against "
                      f"CHOCO-SGD ({GOSSIP_Q}, τ = 1 + ω, γ = 0.5, η = {GOSSIP_LR}; the "
                      "network average x̄)"),
              ["method", "test accuracy", "test loss", "bits sent / worker / step",
               *header(s.target)[5:], "zeros in x̄"], rows)
    figure(run, "deep-malcom", traces, names, "Malcom-PSGD against CHOCO-SGD on a ring")
    choco, coded, malcom = traces[1:]
    bits = [to_target(t, s.target)[1] for t in (choco, malcom)]
    zeros = float(malcom["sparsity"][-1])
    if not per_worker_step(choco):  # one rank: a ring without edges sends nothing
        run.note("- One worker: no gossip, so no bits to compare.\n")
        return
    ratio = bits[1] / bits[0]
    coder = per_worker_step(coded) / per_worker_step(choco)
    prox = per_worker_step(malcom) / per_worker_step(coded)
    claim = (f"{ratio:.2f} of CHOCO-SGD's, which {verdict(ratio < 1)} with Campbell et al. "
             "(2023) that it needs fewer" if not np.isnan(ratio) else "not reached by both, so "
             "Campbell et al.'s (2023) claim of fewer bits is not checked here")
    run.note(f"- Malcom-PSGD (λ1 = {MALCOM_L1:g}) reaches {accuracy(malcom):.3f} against "
             f"CHOCO-SGD's {accuracy(choco):.3f}; its bits to {s.target:.0%}: {claim}. The "
             f"source code alone sends {coder:.2f} of CHOCO's bits a step (the same iterates: "
             f"QSGD's levels, coded losslessly); the ℓ1 prox on top {prox:.3f} of that, its "
             f"models {zeros:.2%} zeros"
             f"{': the saving is the code, not the sparsity' if prox > 0.95 else ''}.\n")


def main(argv=None, comm=None) -> int:
    return experiment_main("experiments.deep", __doc__.splitlines()[0], "deep",
                           [sign_methods, natural, qadam, gossip], argv, comm)


if __name__ == "__main__":
    raise SystemExit(main())
