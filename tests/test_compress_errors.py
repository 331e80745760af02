"""Bad input: every case is a clear exception that names the problem, never silent garbage."""

from __future__ import annotations

import numpy as np
import pytest

from mpicomp.compress import DecodeError, kernels, make_compressor

SPECS = [
    "identity", "fp16", "bf16", "sign", "scaled_sign:block=7", "dither:p=inf,s=5,block=300",
    "qsgd:s=4,block=512", "qsgd:s=7,coder=elias", "qsgd:s=5,block=300,coder=golomb", "terngrad",
    "terngrad:pack=trits", "natural",
    "natural_dither:s=8", "topk:k=0.01", "randk:k=0.02", "randk:k=0.02,shared=1",
    "topk:k=0.3+natural", "randk:k=0.5+qsgd:s=2,coder=elias",
]
KINDS = ["numba", "numpy"] if kernels.HAVE_NUMBA else ["numpy"]


def payload(spec, d=1000, dtype=np.float32, seed=0):
    x = np.random.default_rng(seed).standard_normal(d).astype(dtype)
    op = make_compressor(spec)
    return op, op.encode(x, np.random.default_rng(1))


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("spec", SPECS)
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_input_is_rejected(spec, bad, kind):
    x = np.random.default_rng(0).standard_normal(3000).astype(np.float32)
    x[1234] = bad
    with kernels.forced(kind), pytest.raises(ValueError, match=r"non-finite.*index 1234"):
        make_compressor(spec).encode(x, np.random.default_rng(0))


@pytest.mark.parametrize("spec", SPECS)
def test_truncated_buffer(spec):
    op, p = payload(spec)
    for cut in (1, p.nbytes // 2, p.nbytes - 3):
        with pytest.raises(DecodeError):
            op.decode(p.buffer[:-cut] if cut < p.nbytes else p.buffer[:0], 1000, np.float32)


@pytest.mark.parametrize("spec", SPECS)
def test_extra_bytes(spec):
    op, p = payload(spec)
    with pytest.raises(DecodeError):
        op.decode(np.concatenate([p.buffer, np.zeros(1, np.uint8)]), 1000, np.float32)


@pytest.mark.parametrize("spec", SPECS)
def test_header_mismatches(spec):
    op, p = payload(spec)
    with pytest.raises(DecodeError, match="dimension 1000, expected 999"):
        op.decode(p.buffer, 999, np.float32)
    with pytest.raises(DecodeError, match="float64"):
        op.decode(p.buffer, 1000, np.float64)
    bad = p.buffer.copy()
    bad[0] ^= 0xFF
    with pytest.raises(DecodeError, match="magic"):
        op.decode(bad, 1000, np.float32)
    other = make_compressor("sign" if spec != "sign" else "natural")
    with pytest.raises(DecodeError, match="operator code"):
        other.decode(p.buffer, 1000, np.float32)


@pytest.mark.parametrize("kind", KINDS)
def test_corrupted_dither_field_is_detected(kind):
    # s = 2 needs 2 level bits: the level pattern 3 cannot occur; a sign bit on level 0 neither
    op = make_compressor("qsgd:s=2")
    x = np.zeros(16, np.float32)
    x[0] = 1.0
    p = op.encode(x, np.random.default_rng(0))
    body = 8 + 4  # header, one float32 norm; 3-bit fields, so coordinate 8 is bits 0-2 of byte 3
    for byte, mask in ((body + 3, 0b011), (body + 3, 0b100)):  # level 3 / sign on level 0
        buf = p.buffer.copy()
        buf[byte] |= mask
        with kernels.forced(kind), pytest.raises(DecodeError,
                                                 match="corrupted field at coordinate"):
            op.decode(buf, 16, np.float32)


@pytest.mark.parametrize("kind", KINDS)
def test_corrupted_natural_exponent_is_detected(kind):
    op, p = payload("natural")
    buf = p.buffer.copy()
    buf[8] = 0xFF  # first 8 bits: the exponent field of coordinate 0 becomes all ones
    with kernels.forced(kind), pytest.raises(DecodeError, match="coordinate 0"):
        op.decode(buf, 1000, np.float32)


def test_corrupted_norm_and_padding_and_indices():
    op, p = payload("qsgd:s=4")
    buf = p.buffer.copy()
    buf[8:12] = np.frombuffer(np.float32(np.nan).tobytes(), np.uint8)
    with pytest.raises(DecodeError, match="finite"):
        op.decode(buf, 1000, np.float32)
    op, p = payload("sign", d=1001)  # 1001 bits: 7 padding bits in the last byte
    buf = p.buffer.copy()
    buf[-1] |= 0x80
    with pytest.raises(DecodeError, match="padding"):
        op.decode(buf, 1001, np.float32)
    op, p = payload("topk:k=5")  # packed indices after 5 float32 values
    buf = p.buffer.copy()
    buf[8 + 20 :] = 0xFF  # indices no longer increasing / out of range
    with pytest.raises(DecodeError):
        op.decode(buf, 1000, np.float32)
    op, p = payload("terngrad:pack=trits")
    buf = p.buffer.copy()
    buf[20] = 250
    with pytest.raises(DecodeError, match="242"):
        op.decode(buf, 1000, np.float32)
    op, p = payload("qsgd:s=4,coder=elias", d=50)
    buf = p.buffer.copy()
    buf[8:12] = np.frombuffer(np.uint32(10**6).tobytes(), np.uint8)  # claimed non-zeros > d
    with pytest.raises(DecodeError, match="non-zeros"):
        op.decode(buf, 50, np.float32)


def test_not_a_byte_buffer():
    op, p = payload("sign")
    with pytest.raises(DecodeError, match="uint8"):
        op.decode(p.buffer.astype(np.int16), 1000, np.float32)


@pytest.mark.parametrize(
    "spec,match",
    [
        ("qsgd:s=0", "s=0.*integer ≥ 1"),
        ("dither:s=2.5", "s=2.5.*integer ≥ 1"),
        ("dither:p=3", "unknown norm p=3.*1, 2, inf"),
        ("dither:p=two", "unknown norm.*1, 2, inf"),
        ("qsgd:coder=huffman", "unknown coder 'huffman'.*dense, elias"),
        ("terngrad:pack=nibbles", "unknown pack.*bits, trits"),
        ("terngrad:clip=-1", "clip"),
        ("topk:k=0", "k=0.*> 0"),
        ("topk:k=2.5", "integer"),
        ("qsgd:block=-4", "block"),
        ("quantum", "unknown compressor 'quantum'.*qsgd.*topk"),
        ("qsgd:levels=4", "unknown parameter 'levels'.*valid parameters: s, block, coder"),
        ("sign:block=4", "unknown parameter 'block'.*none"),
        ("qsgd:s", "key=value"),
        ("natural+topk:k=3", "first operator must be a sparsifier"),
        ("topk:k=3+randk:k=2", "second operator must be dense"),
        ("topk:k=3+natural+sign", "two parts"),
        ("", "non-empty"),
    ],
)
def test_bad_specs(spec, match):
    with pytest.raises(ValueError, match=match):
        make_compressor(spec)


def test_k_larger_than_d():
    with pytest.raises(ValueError, match="k=20 exceeds the dimension d=10"):
        make_compressor("topk:k=20").encode(np.ones(10, np.float32))
    with pytest.raises(ValueError, match="k=20 exceeds"):
        make_compressor("randk:k=20").encode(np.ones(10, np.float32), np.random.default_rng(0))


def test_bad_vectors():
    op = make_compressor("sign")
    with pytest.raises(ValueError, match="1-D"):
        op.encode(np.ones((3, 3), np.float32))
    with pytest.raises(TypeError, match="float32 or float64"):
        op.encode(np.ones(3, np.int64))
    with pytest.raises(ValueError, match="randomised: pass rng"):
        make_compressor("natural").encode(np.ones(3, np.float32))


def test_overflowing_casts():
    with pytest.raises(ValueError, match="float16 range"):
        make_compressor("fp16").encode(np.array([1.0, 7e4], np.float32))
    big = np.array([np.finfo(np.float32).max], np.float32)
    with pytest.raises(ValueError, match="round up past the largest finite power of two"):
        for seed in range(64):  # rounds up with probability ≈ 1 − 2⁻²³
            make_compressor("natural").encode(big, np.random.default_rng(seed))
