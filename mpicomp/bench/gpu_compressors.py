"""GPU encode/decode speed of every operator with GPU kernels, as a ratio to a device copy.

``python -m mpicomp.bench compressors --device gpu``: for each operator, each repeat times with
CUDA events, back to back on CuPy's current stream, a device copy of the vector
(``cupy.copyto`` into a preallocated array), the encode (the block scales and the kernels that
write the body, into a reused device buffer) and the decode into a preallocated vector; the
figure is the median over repeats of (operator time / the faster of the two copies around it).
Staging the payload to the host (`mpicomp.compress.device.encode`) is not part of it: that is
the communicator's cost, timed by the collectives benchmark. Also reported: encode throughput
in GB/s of input read, and the copy's own bandwidth (read + write).
"""

from __future__ import annotations

import numpy as np

from ..backend import import_cupy
from ..compress import make_compressor

#: the operators with GPU kernels; the issue's target for each: ≤ 2 device copies both ways
DEFAULT_SPECS = ("identity", "fp16", "bf16", "sign", "scaled_sign", "scaled_sign:block=512",
                 "natural", "dither:p=inf,s=1", "qsgd:s=4", "qsgd:s=16,block=512", "terngrad",
                 "terngrad:clip=2.5", "natural_dither:s=8", "uniform:bits=8,block=512",
                 "randk:k=0.01", "randk:k=0.01,shared=1")
TARGET = 2.0


def run(d: int = 2**26, repeat: int = 7, specs=None, dtype=np.float32, seed: int = 0) -> list[dict]:
    """Measure every operator on the GPU; one row per operator."""
    from ..compress.cuda import new_status
    from ..compress.cuda.codec import codec_for

    try:
        cp = import_cupy()
    except RuntimeError as exc:  # no CuPy: the benchmark's usage error, exit 2
        raise ValueError(str(exc)) from None
    x = cp.asarray(np.random.default_rng(seed).standard_normal(d).astype(dtype))
    dst = cp.empty_like(x)

    def elapsed(fn) -> float:
        start, end = cp.cuda.Event(), cp.cuda.Event()
        start.record()
        fn()
        end.record()
        end.synchronize()
        return cp.cuda.get_elapsed_time(start, end) / 1e3

    rows = []
    for spec in specs or DEFAULT_SPECS:
        op = make_compressor(spec)
        codec = codec_for(op)
        if codec is None:
            raise ValueError(f"{spec!r} has no GPU kernels: choose among "
                             f"{', '.join(DEFAULT_SPECS)}")
        head = 8 + op.extra_header
        body = cp.empty(op.nbytes_max(d, dtype) - head, dtype=cp.uint8)
        status = new_status(cp)
        out = cp.empty_like(x)

        def encode(op=op, codec=codec, body=body, status=status):
            return codec.encode(op, x, 0x5EED, codec.scales(op, x), body, status)

        extra = encode()  # compile and warm up

        def decode(op=op, codec=codec, body=body, status=status, extra=extra, out=out):
            codec.decode(op, extra, body, d, np.dtype(dtype), out, False, status)

        decode()
        enc, dec, copies = [], [], []
        for _ in range(repeat):
            before = elapsed(lambda: cp.copyto(dst, x))
            t_enc = elapsed(encode)
            t_dec = elapsed(decode)
            after = elapsed(lambda: cp.copyto(dst, x))
            base = min(before, after)
            copies.append(base)
            enc.append(t_enc / base if base else float("nan"))
            dec.append(t_dec / base if base else float("nan"))
        copy = float(np.median(copies))
        encode_ratio = float(np.median(enc))
        rows.append({
            "operator": op.spec(), "encode_ratio": encode_ratio,
            "decode_ratio": float(np.median(dec)),
            "encode_gbps": x.nbytes / (encode_ratio * copy) / 1e9 if copy else float("nan"),
            "copy_ms": copy * 1e3,
            "copy_gbps": 2 * x.nbytes / copy / 1e9 if copy else float("nan"),
            "bits_per_coord": op.body_bits(d, dtype) / d,
        })
    return rows


def table(rows: list[dict], d: int) -> str:
    """Markdown table of the rows."""

    def mark(value):
        return f"{value:.2f}" + (" ✓" if value <= TARGET else f" ✗ (≤ {TARGET:g})")

    copy = rows[0] if rows else {"copy_ms": float("nan"), "copy_gbps": float("nan")}
    lines = [
        f"d = {d}, float32, GPU kernels; ratio = median(op time / device copy time), CUDA events;"
        f" device copy {copy['copy_ms']:.3f} ms ({copy['copy_gbps']:.0f} GB/s read + write)",
        "",
        "| operator | encode / copy | decode / copy | encode GB/s (input) | bits per coordinate |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(f"| `{r['operator']}` | {mark(r['encode_ratio'])} | "
                     f"{mark(r['decode_ratio'])} | {r['encode_gbps']:.0f} | "
                     f"{r['bits_per_coord']:.4g} |")
    return "\n".join(lines)


def main(args) -> int:
    d = args.d if args.d is not None else 2**26
    rows = run(d=d, repeat=args.repeat, specs=args.ops or None)
    print(table(rows, d))
    if args.json:
        import json

        with open(args.json, "w") as fh:
            json.dump({"benchmark": "compressors", "device": "gpu", "d": d, "rows": rows}, fh,
                      indent=1)
    return 0
