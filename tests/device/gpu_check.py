"""A device check of `check.sh`: GPU payload bytes against the CPU's.

    python tests/device/gpu_check.py [--max-d N]   # every GPU operator, d up to N

It encodes random vectors (odd sizes, blocks, both dtypes) with the GPU kernels and with
the CPU path, with the same key and the same block scales, and compares the payloads byte for
byte; it then decodes the CPU's payload on the device and compares with the CPU decode. With
``NUMBA_ENABLE_CUDASIM=1`` and the test suite's CuPy stand-in it runs on a CPU (small d only).
The speed of the same kernels is ``python -m mpicomp.bench compressors --device gpu``.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

#: the operators with GPU kernels, as the registry spells them
SPECS = ("identity", "fp16", "bf16", "sign", "scaled_sign", "scaled_sign:block=64", "natural",
         "dither:p=2,s=3", "dither:p=inf,s=7,block=64", "qsgd:s=4", "qsgd:s=15,block=512",
         "terngrad", "terngrad:clip=2.5,block=64", "natural_dither:p=2,s=8",
         "natural_dither:p=inf,s=8,block=64", "uniform:bits=8", "uniform:bits=4,block=64",
         "randk:k=0.01", "randk:k=0.01,shared=1")


def _sizes(max_d: int) -> list[int]:
    sizes = [1, 7, 64, 65, 333, 1031, 4097, 65_537, 1 << 20, (1 << 24) - 3]
    return [d for d in sizes if d <= max_d]


def check_bytes(max_d: int) -> int:
    """Compare GPU and CPU payloads; print one line an operator; return the failure count."""
    import cupy as cp

    from mpicomp.compress import make_compressor
    from mpicomp.compress.base import HEADER_BYTES
    from mpicomp.compress.counter_rng import draw_key
    from mpicomp.compress.cuda import NONE, new_status
    from mpicomp.compress.cuda.codec import codec_for

    failures = 0
    for spec in SPECS:
        op = make_compressor(spec)
        codec = codec_for(op)
        if codec is None:
            print(f"FAIL {spec}: no GPU codec")
            failures += 1
            continue
        checked = 0
        for dtype in (np.float32, np.float64):
            for d in _sizes(max_d):
                if op.min_length() > d:
                    continue
                x = (np.random.default_rng(d).standard_normal(d) * 3).astype(dtype)
                cpu = op.encode(x, np.random.default_rng(1)).buffer
                head = HEADER_BYTES + op.extra_header
                key = draw_key(np.random.default_rng(1)) if op.randomised else 0
                xd = cp.asarray(x)
                scales = tuple(cp.asarray(s) for s in codec.host_scales(op, x))
                body = cp.empty(cpu.size - head, dtype=cp.uint8)
                status = new_status(cp)
                extra = codec.encode(op, xd, key, scales, body, status)
                got = cp.asnumpy(body)
                out = cp.empty(d, dtype=dtype)
                codec.decode(op, extra, cp.asarray(cpu[head:]), d, np.dtype(dtype), out, False,
                             status)
                same_bytes = extra == cpu[HEADER_BYTES:head].tobytes() and np.array_equal(
                    got, cpu[head:])
                same_values = np.array_equal(cp.asnumpy(out), op.decode(cpu, d, dtype),
                                             equal_nan=True)
                clean = bool((cp.asnumpy(status) == NONE).all())
                if not (same_bytes and same_values and clean):
                    print(f"FAIL {spec} {np.dtype(dtype).name} d={d}: bytes {same_bytes}, "
                          f"decode {same_values}, status {cp.asnumpy(status)}")
                    failures += 1
                checked += 1
        print(f"ok   {spec}: {checked} cases identical to the CPU's bytes and values")
    return failures


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-d", type=int, default=1 << 24, help="largest d (default 2^24)")
    args = parser.parse_args(argv)
    failures = check_bytes(args.max_d)
    print(f"payload bytes: {failures} failures")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
