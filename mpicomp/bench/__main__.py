"""Command line: ``python -m mpicomp.bench compressors|collectives|step|model|memory|startup
[options]`` (``--help``)."""

from __future__ import annotations

import argparse
import os
import sys

# one core, as the benchmark specifies: pin BLAS/OpenMP pools before NumPy loads them
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ.setdefault(_var, "1")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m mpicomp.bench", description=__doc__)
    sub = parser.add_subparsers(dest="what", required=True,
                                metavar="{compressors,collectives,step,model,memory,startup}")
    comp = sub.add_parser("compressors",
                          help="encode/decode time of every operator vs a memory copy")
    comp.add_argument("--d", type=int, default=None,
                      help="vector length (default 2^24 on the CPU, 2^26 on the GPU)")
    comp.add_argument("--repeat", type=int, default=7, help="timed repeats (median is reported)")
    comp.add_argument("--ops", nargs="*", help="operator specs (default: every operator)")
    comp.add_argument("--kernels", choices=("numba", "numpy"), help="force a kernel path")
    comp.add_argument("--json", help="also write the rows to this JSON file")
    comp.add_argument("--device", choices=("cpu", "gpu"), default="cpu",
                      help="gpu: the GPU kernels vs a device copy, timed with CUDA events")
    from .compressors import add_arguments as compressor_arguments

    compressor_arguments(comp)
    coll = sub.add_parser("collectives",
                          help="compressed aggregation vs MPI.Allreduce (run under mpiexec)")
    coll.add_argument("--log2d", type=int, nargs="+", default=[20, 24],
                      help="log2 of the vector lengths")
    coll.add_argument("--repeat", type=int, default=5, help="timed repeats (median is reported)")
    coll.add_argument("--ops", nargs="*", help="operator specs (default: sign natural qsgd:s=4)")
    coll.add_argument("--network", default="10gbe", help="network-model profile (default 10gbe)")
    coll.add_argument("--json", help="also write the rows to this JSON file (rank 0)")
    memory = sub.add_parser("memory", help="peak RSS per rank of an app's run vs its shard, "
                            "its vectors and 120 MB of libraries (run under mpiexec)")
    memory.add_argument("--app", default="diana", help="the app (default diana)")
    memory.add_argument("--data", help="--data of the run (default: the app's)")
    memory.add_argument("--iters", type=int, default=5, help="steps (default 5)")
    memory.add_argument("--no-check", action="store_true",
                        help="exit 0 even when a rank is over its budget")
    memory.add_argument("--json", help="also write every rank's figures to this JSON file")
    startup = sub.add_parser("startup", help="seconds from mpiexec to the end of a one-step run "
                             "vs MPI's own start-up (launches mpiexec itself)")
    startup.add_argument("--ranks", type=int, default=64, help="ranks (default 64)")
    startup.add_argument("--app", default="diana", help="the app (default diana)")
    startup.add_argument("--repeat", type=int, default=3,
                         help="interleaved launches of each (median; default 3)")
    startup.add_argument("--json", help="also write the times to this JSON file")
    step = sub.add_parser("step", help="time per step of DCGD, DIANA, natural vs a hand-written "
                          "mpi4py loop (run under mpiexec)")
    step.add_argument("--dims", type=int, nargs="+", default=[64, 1024, 65536],
                      help="model dimensions d (default 64 1024 65536)")
    step.add_argument("--iters", type=int, default=100, help="steps per run (default 100)")
    step.add_argument("--repeat", type=int, default=3,
                      help="interleaved repeats (the median ratio is reported; default 3)")
    step.add_argument("--warmup", type=int, default=5, help="steps not timed (default 5)")
    step.add_argument("--n", type=int, default=256, help="samples in all (default 256)")
    step.add_argument("--l2", type=float, default=1e-3, help="l2 weight (default 1e-3)")
    step.add_argument("--seed", type=int, default=0, help="seed of the data (default 0)")
    step.add_argument("--lr", default="theory",
                      help="step size, or theory: the smallest theory step of the methods")
    step.add_argument("--methods", nargs="*", help="dcgd/identity, diana, natural (default all)")
    step.add_argument("--json", help="also write the rows to this JSON file (rank 0)")
    model = sub.add_parser("model", help="time per step of a PyTorch network: mpicomp's DCGD vs "
                           "a plain PyTorch SGD step (1 rank), the compressed methods vs "
                           "DCGD/identity (under mpiexec)")
    model.add_argument("--model", default="resnet20",
                       help="network (mlp, lenet, resnet20, resnet18; default resnet20)")
    model.add_argument("--batch", type=int, default=32, help="minibatch per rank (default 32)")
    model.add_argument("--iters", type=int,
                       help="timed steps per round (default 20 on one rank, 5 on several)")
    model.add_argument("--repeat", type=int, help="interleaved rounds (the median ratio is "
                       "reported; default 5 on one rank, 3 on several)")
    model.add_argument("--warmup", type=int, help="untimed steps of each contender first "
                       "(default 3 on one rank, 2 on several)")
    model.add_argument("--threads", type=int, default=1,
                       help="torch.set_num_threads (default 1)")
    model.add_argument("--n", type=int, default=256, help="synthetic images in all (default 256)")
    model.add_argument("--seed", type=int, default=0, help="seed of data, weights and batches")
    model.add_argument("--methods", nargs="*",
                       help="methods to compare with dcgd/identity (default: all under mpiexec; "
                       "on one rank the comparison is with plain PyTorch unless this is given)")
    model.add_argument("--json", help="also write the rows to this JSON file (rank 0)")
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.what == "compressors" and args.device == "gpu":
            from .gpu_compressors import main as run_gpu_compressors

            return run_gpu_compressors(args)
        if args.what == "compressors":
            from .compressors import main as run_compressors

            if args.d is None:
                args.d = 2**24
            return run_compressors(args)
        if args.what == "model":
            from .model import main as run_model

            return run_model(args)
        if args.what == "startup":
            from .startup import main as run_startup

            return run_startup(args)
        if args.what == "memory":
            from .memory import main as run_memory

            return run_memory(args)
        if args.what == "step":
            from .step import main as run_step

            return run_step(args)
        from .collectives import main as run_collectives

        return run_collectives(args)
    except ValueError as exc:  # a bad spec or set-up: say what, no traceback
        print(f"{parser.prog} {args.what}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
