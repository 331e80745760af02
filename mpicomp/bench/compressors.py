"""Encode/decode speed of every operator as a ratio to a memory copy of the same array.

Each repeat times, back to back, ``np.copyto`` of the vector into a preallocated array,
``encode`` (which allocates its buffer) and ``decode`` into a preallocated array (``out=``, as an
aggregator reusing its buffer does); the reported figure is the median over repeats of
(operator time / the faster of the two copies timed around it). Times are the CPU time of the
calling thread (``time.thread_time``): on a shared machine another process's load stretches wall
time but not the CPU time this thread spends.

With ``threads`` > 1 every operator is then run as many times again with that many kernel
threads (`mpicomp.compress.kernels.set_threads`; one untimed call first wakes the pool), and
the speed-up is median one-thread wall time / median N-thread wall time
(``time.perf_counter``); the N-thread process CPU time (``time.process_time``, all threads)
over the one-thread one shows the work the threads added. Only wall time can show a speed-up,
so run it where N cores are free.
"""

from __future__ import annotations

import os
import sys
import time

import numpy as np

from ..compress import kernels, make_compressor

#: operators and the issue's targets (median ratio to the copy): (encode, decode)
DEFAULT_SPECS = {
    "identity": (None, 2.5),
    "fp16": (2.0, 2.5),
    "bf16": (2.0, 2.5),
    "sign": (1.3, 2.5),
    "scaled_sign": (1.5, 2.5),
    "scaled_sign:block=512": (1.5, 2.5),
    "natural": (3.0, 2.5),
    "dither:p=inf,s=1": (4.0, 2.5),
    "qsgd:s=4": (4.0, 2.5),
    "qsgd:s=16,block=512": (4.0, 2.5),
    "qsgd:s=4,coder=elias": (None, None),
    "qsgd:s=4,coder=golomb": (None, None),
    "terngrad": (4.0, 2.5),
    "terngrad:clip=2.5": (4.0, 2.5),
    "terngrad:block=512,clip=2.5": (4.0, 2.5),
    "natural_dither:s=8": (4.0, 2.5),
    "randk:k=0.01": (2.0, 2.5),
    "randk:k=0.01,shared=1": (2.0, 2.5),
    "topk:k=0.01": (10.0, 2.5),
    "topk:k=0.01+natural": (None, 2.5),
    "uniform:bits=8,block=512": (None, 2.5),
}


def _time(clock, fn, *args, **kwargs):
    """(seconds of ``clock``, result) of one call ``fn(*args, **kwargs)``."""
    t0 = clock()
    result = fn(*args, **kwargs)
    return clock() - t0, result


def _timed(op, x, rng, dst, d, dtype):
    """(encode, decode) of one round as {clock name: seconds}, and the payload."""
    clocks = {"cpu": time.thread_time, "wall": time.perf_counter, "process": time.process_time}
    starts = {name: clock() for name, clock in clocks.items()}
    payload = op.encode(x, rng)
    mids = {name: clock() for name, clock in clocks.items()}
    op.decode(payload.buffer, d, dtype, out=dst)
    ends = {name: clock() for name, clock in clocks.items()}
    enc = {name: mids[name] - starts[name] for name in clocks}
    dec = {name: ends[name] - mids[name] for name in clocks}
    return enc, dec, payload


def _speedups(one: list, many: list) -> dict:
    """Median one-thread / N-thread wall time, and N-thread / one-thread process CPU time, of
    encode and decode, from the (encode, decode) clock readings of each round."""

    def median(rounds, step, clock):
        return float(np.median([r[step][clock] for r in rounds]))

    out = {}
    for step, name in enumerate(("encode", "decode")):
        out[f"{name}_speedup"] = median(one, step, "wall") / median(many, step, "wall")
        out[f"{name}_cpu_ratio"] = median(many, step, "process") / median(one, step, "process")
    return out


def run(d: int = 2**24, repeat: int = 7, specs=None, dtype=np.float32, seed: int = 0,
        threads: int = 1) -> list[dict]:
    """Measure every operator; return one row per operator (with ``threads`` > 1 also the
    speed-ups from that many kernel threads)."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(d).astype(dtype)
    dst = np.empty_like(x)
    rows = []
    for spec in specs or DEFAULT_SPECS:
        op = make_compressor(spec)
        small = x[:1000].copy()
        op.decode(op.encode(small, rng).buffer, small.size, dtype)  # compile / warm up
        enc, dec, rounds = [], [], {1: [], threads: []}
        for _ in range(repeat):
            before, _ = _time(time.thread_time, np.copyto, dst, x)
            one_enc, one_dec, payload = _timed(op, x, rng, dst, d, dtype)
            after, _ = _time(time.thread_time, np.copyto, dst, x)
            base = max(min(before, after), 1e-9)  # a tiny d can time below the clock's tick
            enc.append(one_enc["cpu"] / base)
            dec.append(one_dec["cpu"] / base)
            rounds[1].append((one_enc, one_dec))
        if threads > 1:
            old = kernels.set_threads(threads)
            try:
                _timed(op, x, rng, dst, d, dtype)  # wakes the thread pool
                rounds[threads] = [_timed(op, x, rng, dst, d, dtype)[:2] for _ in range(repeat)]
            finally:
                kernels.set_threads(old)
        target = DEFAULT_SPECS.get(spec, (None, None))
        row = {
            "operator": op.spec(),
            "encode_ratio": float(np.median(enc)),
            "decode_ratio": float(np.median(dec)),
            "bits_per_coord": payload.nbits / d,
            "wire_bytes": payload.nbytes,
            "encode_target": target[0],
            "decode_target": target[1],
            "copy_ms": base * 1e3,
        }
        if threads > 1:
            row.update(threads=threads, **_speedups(rounds[1], rounds[threads]))
        rows.append(row)
    return rows


def table(rows: list[dict], d: int, kernel_kind: str) -> str:
    """Markdown table of the rows."""

    def mark(value, target):
        return f"{value:.2f}" + ("" if target is None
                                 else (" ✓" if value <= target else f" ✗ (≤ {target:g})"))

    n = rows[0].get("threads", 1) if rows else 1
    extra_head = (f" encode ×{n} threads | decode ×{n} threads |" if n > 1 else "")
    lines = [
        f"d = {d}, float32, kernels = {kernel_kind}; ratio = median(op CPU time / np.copyto CPU "
        "time), one thread" + (f"; ×{n}: one-thread wall time / {n}-thread wall time "
                               "(process CPU time ratio in brackets)" if n > 1 else ""),
        "",
        "| operator | encode / copy | decode / copy | bits per coordinate | wire bytes |"
        + extra_head,
        "|---|---|---|---|---|" + ("---|---|" if n > 1 else ""),
    ]
    for r in rows:
        line = (f"| `{r['operator']}` | {mark(r['encode_ratio'], r['encode_target'])} | "
                f"{mark(r['decode_ratio'], r['decode_target'])} | {r['bits_per_coord']:.4g} | "
                f"{r['wire_bytes']} |")
        if n > 1:
            line += (f" {r['encode_speedup']:.2f} ({r['encode_cpu_ratio']:.2f}) |"
                     f" {r['decode_speedup']:.2f} ({r['decode_cpu_ratio']:.2f}) |")
        lines.append(line)
    return "\n".join(lines)


def add_arguments(parser) -> None:
    """This benchmark's options beyond ``--d``, ``--repeat``, ``--ops``, ``--kernels`` and
    ``--json``: ``--threads N``."""
    parser.add_argument("--threads", type=int, default=1,
                        help="also run every operator with N kernel threads and report the "
                        "speed-up (default 1: one thread only)")


def allow_threads(n: int) -> None:
    """Let Numba's pool hold ``n`` threads: ``python -m mpicomp.bench`` pins
    ``NUMBA_NUM_THREADS=1`` for its one-core runs, which only counts before Numba is imported."""
    if n > 1 and "numba" not in sys.modules:
        current = int(os.environ.get("NUMBA_NUM_THREADS", "0") or 0)
        if current and current < n:
            os.environ["NUMBA_NUM_THREADS"] = str(n)


def main(args) -> int:
    threads = int(getattr(args, "threads", 1) or 1)
    allow_threads(threads)
    kernels.threads()  # a bad MPICOMP_THREADS is reported before any timing
    kind = args.kernels or ("numba" if kernels.active() else "numpy")
    if threads > 1:
        kernels.set_threads(threads)  # checked against Numba's pool before any timing
        kernels.set_threads(1)
    with kernels.forced(kind):
        rows = run(d=args.d, repeat=args.repeat, specs=args.ops or None, threads=threads)
    print(table(rows, args.d, kind))
    if args.json:
        import json

        with open(args.json, "w") as fh:
            json.dump({"benchmark": "compressors", "d": args.d, "kernels": kind,
                       "threads": threads, "rows": rows}, fh, indent=1)
    return 0


if __name__ == "__main__":  # python -m mpicomp.bench.compressors [--threads N] …
    import argparse

    parser = argparse.ArgumentParser(prog="python -m mpicomp.bench.compressors",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--d", type=int, default=2**24, help="vector length (default 2^24)")
    parser.add_argument("--repeat", type=int, default=7, help="timed repeats (median)")
    parser.add_argument("--ops", nargs="*", help="operator specs (default: every operator)")
    parser.add_argument("--kernels", choices=("numba", "numpy"), help="force a kernel path")
    parser.add_argument("--json", help="also write the rows to this JSON file")
    add_arguments(parser)
    sys.exit(main(parser.parse_args()))
