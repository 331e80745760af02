"""Start-up of an app on many ranks against the start-up of MPI itself.

``python -m mpicomp.bench startup --ranks 64`` (not under mpiexec: it launches the runs). Timed,
interleaved, ``--repeat`` times each, by the wall clock around the whole launch:

- the baseline: ``mpiexec -n N python -c "from mpi4py import MPI; MPI.COMM_WORLD.Barrier()"``,
  what any MPI program pays to start its ranks;
- the app: ``mpiexec -n N python -m mpicomp.apps.APP --iters 1`` with its default data, the
  trace in a temporary directory. One step of the default problem takes milliseconds, so its
  time is the time to the first step, plus that step and closing the trace.

Printed: the median seconds of each, the app's seconds beyond the baseline, and the ratio.
Warm caches are what the first (untimed) launch of each leaves behind: Numba's cache or the
ahead-of-time kernels of ``python -m mpicomp.compile``, and the operating system's file cache.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time


def _mpiexec() -> str:
    """``$MPIEXEC``, else the ``mpiexec`` beside this Python (the MPI its mpi4py was built
    for, as a virtual environment's mpich wheel), else the first on ``PATH``."""
    beside = os.path.join(os.path.dirname(sys.executable), "mpiexec")
    if os.environ.get("MPIEXEC"):
        return os.environ["MPIEXEC"]
    return beside if os.access(beside, os.X_OK) else (shutil.which("mpiexec") or "mpiexec")


def _timed(command: list[str], env: dict) -> float:
    start = time.perf_counter()
    out = subprocess.run(command, env=env, capture_output=True, text=True,
                         stdin=subprocess.DEVNULL)
    elapsed = time.perf_counter() - start
    if out.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} ended with exit status {out.returncode}:\n"
                           f"{out.stderr[-2000:]}")
    return elapsed


def main(args) -> int:
    mpiexec = _mpiexec()
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    ranks = ["-n", str(args.ranks)]
    workdir = tempfile.mkdtemp(prefix="mpicomp-startup-")
    try:
        baseline = [mpiexec, *ranks, sys.executable, "-c",
                    "from mpi4py import MPI; MPI.COMM_WORLD.Barrier()"]
        app = [mpiexec, *ranks, sys.executable, "-m", f"mpicomp.apps.{args.app}", "--iters", "1",
               "--quiet", "--progress", "off", "--overwrite", "--trace",
               os.path.join(workdir, "run.h5")]
        _timed(app, env)  # warm-up: caches
        times: dict[str, list[float]] = {"baseline": [], "app": []}
        for _ in range(args.repeat):
            times["baseline"].append(_timed(baseline, env))
            times["app"].append(_timed(app, env))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    base, run = (statistics.median(times[k]) for k in ("baseline", "app"))
    print(f"start-up on {args.ranks} ranks, median of {args.repeat} interleaved launches "
          "(wall clock)")
    print(f"MPI alone (mpi4py, one barrier): {base:.1f} s")
    print(f"apps.{args.app} --iters 1:       {run:.1f} s   ({run - base:.1f} s beyond MPI; "
          f"ratio {run / base:.2f})")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump({"ranks": args.ranks, "app": args.app, "times": times}, fh, indent=1)
    return 0


__all__ = ["main"]
