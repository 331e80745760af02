"""Bodies written in place (`Compressor.write_body`) and reused scratch arrays: every byte is
written, and payloads or decoded vectors the caller keeps never share memory."""

from __future__ import annotations

import numpy as np
import pytest

from mpicomp.compress import make_compressor
from mpicomp.compress.base import HEADER_BYTES

IN_PLACE = ["identity", "fp16", "bf16", "sign", "scaled_sign", "scaled_sign:block=7", "natural",
            "dither:p=inf,s=5,block=300", "qsgd:s=4", "qsgd:s=16,block=33", "terngrad",
            "terngrad:block=10,clip=2.5", "terngrad:pack=trits", "natural_dither:s=8"]
KEPT = IN_PLACE + ["qsgd:s=4,coder=elias", "qsgd:s=4,coder=golomb", "topk:k=0.1+natural"]


def vector(d, dtype, seed=0):
    rng = np.random.default_rng(seed + d)
    return (rng.standard_normal(d) * np.exp(rng.uniform(-3, 3, d)) / 1e3).astype(dtype)


@pytest.mark.parametrize("spec", IN_PLACE)
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
def test_write_body_writes_every_byte(spec, dtype):
    op = make_compressor(spec)
    assert op.writes_in_place
    for d in (0, 1, 7, 9, 100, 2049, 5003):
        x = vector(d, dtype)
        want = op.encode(x, np.random.default_rng(1)).buffer
        for garbage in (0x00, 0xA5, 0xFF):  # what np.empty may hold
            body = np.full(want.size - HEADER_BYTES - op.extra_header, garbage, np.uint8)
            op.write_body(x, np.random.default_rng(1), body)
            np.testing.assert_array_equal(body, want[HEADER_BYTES + op.extra_header :])


@pytest.mark.parametrize("spec", KEPT)
def test_kept_payloads_and_decodes_do_not_alias(spec):
    op = make_compressor(spec)
    x, y = vector(3001, np.float32, 1), vector(3001, np.float32, 2)
    first = op.encode(x, np.random.default_rng(5))
    copy = first.buffer.copy()
    second = op.encode(y, np.random.default_rng(6))
    assert not np.shares_memory(first.buffer, second.buffer)
    np.testing.assert_array_equal(first.buffer, copy)  # the second encode left it alone
    a = op.decode(first.buffer, x.size, np.float32)
    b = op.decode(second.buffer, y.size, np.float32)
    assert not np.shares_memory(a, b)
    np.testing.assert_array_equal(a, op.decode(copy, x.size, np.float32))


def test_encode_body_of_in_place_operators_is_their_write_body():
    op = make_compressor("qsgd:s=4,block=16")
    x = vector(1001, np.float64)
    extra, body, nbits = op.encode_body(x, np.random.default_rng(2))
    payload = op.encode(x, np.random.default_rng(2))
    assert extra == b"" and nbits == payload.nbits
    np.testing.assert_array_equal(body, payload.buffer[HEADER_BYTES:])
