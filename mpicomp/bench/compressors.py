"""Encode/decode speed of every operator as a ratio to a memory copy of the same array.

Each repeat times, back to back, ``np.copyto`` of the vector into a preallocated array,
``encode`` (which allocates its buffer) and ``decode`` into a preallocated array (``out=``, as an
aggregator reusing its buffer does); the reported figure is the median over repeats of
(operator time / the faster of the two copies timed around it).
"""

from __future__ import annotations

import time

import numpy as np

from ..compress import kernels, make_compressor

#: operators and the issue's targets (median ratio to the copy): (encode, decode)
DEFAULT_SPECS = {
    "identity": (None, None),
    "fp16": (None, None),
    "bf16": (None, None),
    "sign": (1.5, 1.5),
    "scaled_sign": (1.5, 1.5),
    "scaled_sign:block=512": (1.5, 1.5),
    "natural": (4.0, 3.0),
    "dither:p=inf,s=1": (5.0, 3.0),
    "qsgd:s=4": (5.0, 3.0),
    "qsgd:s=16,block=512": (5.0, 3.0),
    "qsgd:s=4,coder=elias": (None, None),
    "qsgd:s=4,coder=golomb": (None, None),
    "terngrad": (5.0, 3.0),
    "natural_dither:s=8": (5.0, 3.0),
    "randk:k=0.01": (2.0, 2.0),
    "randk:k=0.01,shared=1": (2.0, 2.0),
    "topk:k=0.01": (10.0, 10.0),
    "topk:k=0.01+natural": (None, None),
    "uniform:bits=8,block=512": (None, None),
}


def _time(fn, *args, **kwargs):
    """(seconds, result) of one call ``fn(*args, **kwargs)``."""
    t0 = time.perf_counter()
    result = fn(*args, **kwargs)
    return time.perf_counter() - t0, result


def run(d: int = 2**24, repeat: int = 7, specs=None, dtype=np.float32, seed: int = 0) -> list[dict]:
    """Measure every operator; return one row per operator."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(d).astype(dtype)
    dst = np.empty_like(x)
    rows = []
    for spec in specs or DEFAULT_SPECS:
        op = make_compressor(spec)
        small = x[:1000].copy()
        op.decode(op.encode(small, rng).buffer, small.size, dtype)  # compile / warm up
        enc, dec = [], []
        for _ in range(repeat):
            before, _ = _time(np.copyto, dst, x)
            t_enc, payload = _time(op.encode, x, rng)
            t_dec, _ = _time(op.decode, payload.buffer, d, dtype, out=dst)
            after, _ = _time(np.copyto, dst, x)
            base = min(before, after)
            enc.append(t_enc / base)
            dec.append(t_dec / base)
        target = DEFAULT_SPECS.get(spec, (None, None))
        rows.append(
            {
                "operator": op.spec(),
                "encode_ratio": float(np.median(enc)),
                "decode_ratio": float(np.median(dec)),
                "bits_per_coord": payload.nbits / d,
                "wire_bytes": payload.nbytes,
                "encode_target": target[0],
                "decode_target": target[1],
                "copy_ms": base * 1e3,
            }
        )
    return rows


def table(rows: list[dict], d: int, kernel_kind: str) -> str:
    """Markdown table of the rows."""

    def mark(value, target):
        return f"{value:.2f}" + ("" if target is None
                                 else (" ✓" if value <= target else f" ✗ (≤ {target:g})"))

    lines = [
        f"d = {d}, float32, kernels = {kernel_kind}, one core; "
        "ratio = median(op time / np.copyto time)",
        "",
        "| operator | encode / copy | decode / copy | bits per coordinate | wire bytes |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| `{r['operator']}` | {mark(r['encode_ratio'], r['encode_target'])} | "
            f"{mark(r['decode_ratio'], r['decode_target'])} | {r['bits_per_coord']:.4g} | "
            f"{r['wire_bytes']} |"
        )
    return "\n".join(lines)


def main(args) -> int:
    kind = args.kernels or ("numba" if kernels.active() else "numpy")
    with kernels.forced(kind):
        rows = run(d=args.d, repeat=args.repeat, specs=args.ops or None)
    print(table(rows, args.d, kind))
    if args.json:
        import json

        with open(args.json, "w") as fh:
            json.dump({"benchmark": "compressors", "d": args.d, "kernels": kind, "rows": rows}, fh,
                      indent=1)
    return 0
