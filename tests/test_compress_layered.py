"""`PerLayer`: an operator applied to each segment (layer) of the vector, against the serial
per-segment reference, with exact bit counts and every DecodeError path."""

from __future__ import annotations

import math

import numpy as np
import pytest

from mpicomp.compress import DecodeError, PerLayer, kernels, make_compressor, per_layer
from mpicomp.compress.base import HEADER, HEADER_BYTES, MAGIC
from mpicomp.compress.layered import pack_stream, stream_part

SIZES = [37, 5, 100, 64, 3, 91]  # odd lengths: segments start at every bit offset
D = sum(SIZES)
NAMES = [f"layer{i}.weight" for i in range(len(SIZES))]
SPECS = [
    "identity", "fp16", "bf16", "sign", "scaled_sign", "scaled_sign:block=7", "natural",
    "dither:p=inf,s=5,block=30", "qsgd:s=4", "qsgd:s=4,block=16", "qsgd:s=7,coder=elias",
    "qsgd:s=5,block=30,coder=golomb", "terngrad", "terngrad:block=10,pack=trits",
    "terngrad:clip=2.5", "natural_dither:s=8", "natural_dither:p=1,s=3,block=4",
    "uniform:bits=3,block=5", "uniform:bits=8,rounding=stochastic", "topk:k=3", "topk:k=0.1",
    "randk:k=3", "randk:k=0.2,shared=1", "topk:k=0.3+natural", "topk:k=3+qsgd",
    "randk:k=0.5+qsgd:s=2,coder=elias",
]
VARIABLE = ["qsgd:s=7,coder=elias", "qsgd:s=5,block=30,coder=golomb",
            "randk:k=0.5+qsgd:s=2,coder=elias"]
DTYPES = [np.float32, np.float64]
KINDS = ["numba", "numpy"] if kernels.HAVE_NUMBA else ["numpy"]
SEED = 7


def vector(dtype=np.float32, seed=0, d=D):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(d) * np.exp(rng.uniform(-2, 2, d))
    x[min(40, d - 1)] = 0.0  # an exact zero (in segment 1 of SIZES)
    return x.astype(dtype)


def serial(base, x, sizes, seed):
    """The reference: base.encode of each segment in turn with one generator."""
    rng = np.random.default_rng(seed)
    values, bits, lo = [], [], 0
    for n in sizes:
        p = base.encode(x[lo : lo + n], rng)
        values.append(base.decode(p.buffer, n, x.dtype))
        bits.append(p.nbits)
        lo += n
    return np.concatenate(values), bits


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda t: np.dtype(t).name)
@pytest.mark.parametrize("spec", SPECS)
def test_values_and_bits_equal_the_serial_reference(spec, dtype):
    base, op = make_compressor(spec), per_layer(spec, SIZES, NAMES)
    x = vector(dtype)
    p = op.encode(x, np.random.default_rng(SEED))
    y = op.decode(p.buffer, D, dtype)
    want, bits = serial(base, x, SIZES, SEED)
    assert y.dtype == dtype and np.array_equal(y, want) and np.isfinite(y).all()
    assert p.nbits == sum(bits)
    assert op.last_bits.dtype == np.int64 and op.last_bits.tolist() == bits
    assert op.last_bits.sum() == p.nbits
    assert op.segment_bits(p.buffer, dtype).tolist() == bits
    record = base.extra_header + (0 if base.fixed_size else 4)
    assert op.extra_header == len(SIZES) * record
    assert p.nbytes == HEADER_BYTES + op.extra_header + math.ceil(p.nbits / 8)
    assert p.buffer[1] == PerLayer.code
    assert p.nbytes <= op.nbytes_max(D, dtype)
    if op.fixed_size:
        assert p.nbits == op.body_bits(D, dtype) == sum(base.body_bits(n, dtype) for n in SIZES)
        assert p.nbytes == op.nbytes_max(D, dtype)
    out = np.full(D, np.nan, dtype=dtype)
    assert op.decode(p.buffer, D, dtype, out=out) is out and np.array_equal(out, want)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda t: np.dtype(t).name)
@pytest.mark.parametrize("spec", SPECS)
def test_decode_add_equals_decode_then_add(spec, dtype):
    op = per_layer(spec, SIZES)
    p = op.encode(vector(dtype), np.random.default_rng(SEED))
    start = np.random.default_rng(1).standard_normal(D)
    acc = start.copy()
    op.decode_add(p.buffer, D, dtype, acc)
    assert op.accumulates(dtype) == make_compressor(spec).accumulates(dtype)
    assert np.array_equal(acc, start + op.decode(p.buffer, D, dtype).astype(np.float64))


@pytest.mark.skipif(not kernels.HAVE_NUMBA, reason="needs numba to compare the two kernel paths")
@pytest.mark.parametrize("spec", ["qsgd:s=7,coder=elias", "natural", "scaled_sign:block=7",
                                  "uniform:bits=3,block=5", "topk:k=0.3+natural"])
def test_numba_and_numpy_paths_write_identical_bytes(spec):
    got = {}
    for kind in KINDS:
        with kernels.forced(kind):
            op = per_layer(spec, SIZES)
            p = op.encode(vector(), np.random.default_rng(SEED))
            got[kind] = (p.buffer.tobytes(), op.decode(p.buffer, D, np.float32).tobytes())
    assert got["numba"] == got["numpy"]


def test_properties_follow_the_base():
    sizes = [10, 3, 50]
    for spec in SPECS:
        base, op = make_compressor(spec), per_layer(spec, sizes)
        assert (op.unbiased, op.randomised, op.fixed_size) == (
            base.unbiased, base.randomised, base.fixed_size)
        assert op.spec() == f"{base.spec()}|layers=3"
        assert op.min_length() == 63
        if base.unbiased:
            assert op.omega(63) == max(base.omega(n) for n in sizes)
        else:
            assert op.omega(63) is None
        deltas = [base.delta(n) for n in sizes]
        assert op.delta(63) == (None if None in deltas else min(deltas))
        assert op.max_body_bits(63) == sum(base.max_body_bits(n) for n in sizes)
        assert op.nbytes_max(0) == HEADER_BYTES + op.extra_header  # what payload_bits reads
    assert per_layer("qsgd:s=4", sizes).omega(63) == make_compressor("qsgd:s=4").omega(50)
    assert per_layer("topk:k=2", sizes).delta(63) == 2 / 50
    # a fraction rounds per segment: the worst segment is not always the longest
    assert per_layer("randk:k=0.2", [5, 100]).omega(105) == 4.0
    for call in (lambda op: op.omega(62), lambda op: op.body_bits(64),
                 lambda op: op.max_body_bits(1)):
        with pytest.raises(ValueError, match="not the sum 63 of the segment sizes"):
            call(per_layer("qsgd:s=4", sizes))


def test_per_layer_accepts_an_operator_and_names():
    base = make_compressor("topk:k=2+natural")
    op = per_layer(base, (4, 6), names=("a", "b"))
    assert op.base is base and op.sizes == (4, 6) and op.names == ("a", "b")
    assert op.bounds.tolist() == [0, 4, 10] and op.d == 10
    assert op.last_bits is None
    assert PerLayer(base, np.array([4, 6])).sizes == (4, 6)


def test_unbiased_statistically():
    """qsgd:s=2 per layer: every coordinate's mean over N = 6000 draws lies within 5 standard
    errors (the sample standard deviation over √N, plus 1e-12) of x, and the mean squared
    error is within 5 standard errors below ω‖x‖² (ω the worst segment's)."""
    op = per_layer("qsgd:s=2,block=8", [7, 20, 13])
    x = vector(np.float64, seed=3, d=40)
    n = 6000
    rng = np.random.default_rng(11)
    draws = np.stack([op(x, rng) for _ in range(n)])
    mean, se = draws.mean(axis=0), draws.std(axis=0) / math.sqrt(n)
    assert (np.abs(mean - x) <= 5 * se + 1e-12).all()
    sq = ((draws - x) ** 2).sum(axis=1)
    assert sq.mean() <= op.omega(40) * (x @ x) + 5 * sq.std() / math.sqrt(n)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("spec", ["identity", "sign", "qsgd:s=7,coder=elias", "natural",
                                  "topk:k=3+qsgd", "uniform:bits=4"])
def test_non_finite_input_names_the_index_in_the_whole_vector(spec, kind):
    x = vector()
    x[150] = np.nan  # segment 2, its 8th value
    with kernels.forced(kind), pytest.raises(ValueError, match=r"non-finite.*index 150"):
        per_layer(spec, SIZES).encode(x, np.random.default_rng(0))


def test_a_segment_error_names_the_segment():
    x = vector()
    x[45] = 1e6
    with pytest.raises(ValueError, match=r"segment 2 \('layer2.weight', 100 values at offset "
                                         r"42\): fp16: \|x\[3\]\|"):
        per_layer("fp16", SIZES, NAMES).encode(x)


def test_wrong_input_length():
    op = per_layer("qsgd:s=4", SIZES)
    for n in (D - 1, D + 1, 0):
        with pytest.raises(ValueError, match=f"vector of length {n}, the segment sizes sum to {D}"):
            op.encode(np.ones(n, np.float32), np.random.default_rng(0))
    with pytest.raises(ValueError, match="vector of length"):
        op.encode_body(np.ones(D - 1, np.float32), np.random.default_rng(0))
    assert op.last_bits is None


@pytest.mark.parametrize("sizes", [[3, 0, 4], [3, -1], [], [2.5, 3], [True, 2], ["3"]])
def test_sizes_must_be_positive_integers(sizes):
    with pytest.raises(ValueError, match="sizes"):
        per_layer("sign", sizes)


def test_bad_construction():
    with pytest.raises(ValueError, match="2 names for 3 segment sizes"):
        per_layer("sign", [1, 2, 3], names=["a", "b"])
    with pytest.raises(ValueError, match="itself per-layer"):
        per_layer(per_layer("sign", [2, 2]), [4])
    with pytest.raises(TypeError, match="must be a Compressor"):
        PerLayer("sign", [4])
    with pytest.raises(ValueError, match=r"topk:k=10 keeps more coordinates than the 5 of "
                                         r"segment 1 \('b', 5 values at offset 20\); use k ≤ 5"):
        per_layer("topk:k=10", [20, 5, 30], names=["a", "b", "c"])
    with pytest.raises(ValueError, match="randk:k=4\\+natural keeps more coordinates than the 3"):
        per_layer("randk:k=4+natural", [10, 3])
    per_layer("topk:k=0.5", [1, 2, 3])  # a fraction fits any segment


def test_pack_stream_and_stream_part_round_trip():
    rng = np.random.default_rng(0)
    for _ in range(200):
        lengths = rng.integers(0, 40, size=rng.integers(1, 6)).tolist()
        parts = []
        for bits in lengths:
            data = rng.integers(0, 256, size=-(-bits // 8) + rng.integers(0, 2), dtype=np.uint8)
            parts.append((data, bits))
        stream = pack_stream(parts)
        total = sum(lengths)
        assert stream.size == -(-total // 8)
        if total % 8:
            assert stream[-1] >> (total % 8) == 0
        flat = np.unpackbits(stream, bitorder="little")
        offset = 0
        for data, bits in parts:
            want = np.unpackbits(data, bitorder="little")[:bits]
            assert np.array_equal(flat[offset : offset + bits], want)
            seg = stream_part(stream, offset, bits)
            assert seg.size == -(-bits // 8)
            assert np.array_equal(np.unpackbits(seg, bitorder="little")[:bits], want)
            assert not bits % 8 or seg[-1] >> (bits % 8) == 0
            offset += bits


# -- DecodeError paths -------------------------------------------------------------------------
def encoded(spec, dtype=np.float32):
    op = per_layer(spec, SIZES, NAMES)
    return op, op.encode(vector(dtype), np.random.default_rng(SEED))


@pytest.mark.parametrize("spec", SPECS)
def test_truncated_and_padded_buffers(spec):
    op, p = encoded(spec)
    for cut in (1, 3, p.nbytes - HEADER_BYTES - op.extra_header, p.nbytes // 2, p.nbytes - 3,
                p.nbytes):
        with pytest.raises(DecodeError):
            op.decode(p.buffer[: p.nbytes - cut], D, np.float32)
    with pytest.raises(DecodeError, match="too long"):
        op.decode(np.concatenate([p.buffer, np.zeros(1, np.uint8)]), D, np.float32)


@pytest.mark.parametrize("spec", ["sign", "qsgd:s=7,coder=elias", "topk:k=3"])
def test_header_mismatches(spec):
    op, p = encoded(spec)
    with pytest.raises(DecodeError, match=f"dimension {D}, expected {D + 1}"):
        op.decode(p.buffer, D + 1, np.float32)
    with pytest.raises(DecodeError, match="float64"):
        op.decode(p.buffer, D, np.float64)
    base = make_compressor(spec)
    plain = base.encode(vector(), np.random.default_rng(0))
    with pytest.raises(DecodeError, match=f"operator code {base.code}, not 15"):
        op.decode(plain.buffer, D, np.float32)
    with pytest.raises(DecodeError, match=f"operator code 15, not {base.code}"):
        base.decode(p.buffer, D, np.float32)
    with pytest.raises(DecodeError, match="decode_add|operator code"):
        op.decode_add(plain.buffer, D, np.float32, np.zeros(D))


def test_a_forged_dimension_is_rejected():
    op, p = encoded("sign")
    forged = p.buffer.copy()
    forged[:HEADER_BYTES] = np.frombuffer(HEADER.pack(MAGIC, 15, 1, 0, D + 8), np.uint8)
    with pytest.raises(DecodeError, match=f"dimension {D + 8} is not the sum {D}"):
        op.decode(forged, D + 8, np.float32)
    with pytest.raises(DecodeError, match=f"dimension {D + 8} is not the sum {D}"):
        op.decode_add(forged, D + 8, np.float32, np.zeros(D + 8))


@pytest.mark.parametrize("spec", VARIABLE)
def test_corrupted_segment_bit_counts(spec):
    op, p = encoded(spec)
    base = op.base
    record = base.extra_header + 4
    field = HEADER_BYTES + 2 * record + base.extra_header  # segment 2's bit count
    bits = int(p.buffer[field : field + 4].view("<u4")[0])
    assert bits == op.last_bits[2]
    most = base.max_body_bits(100)
    for claim, match in [(most + 1, r"segment 2 \('layer2.weight'.*claims"),
                         (2**32 - 1, "claims"), (bits + 8, "truncated"),
                         (bits - 8, "too long"), (bits + 1, None), (bits - 1, None)]:
        bad = p.buffer.copy()
        bad[field : field + 4] = np.array([claim], "<u4").view(np.uint8)
        with pytest.raises(DecodeError, match=match):
            op.decode(bad, D, np.float32)
        with pytest.raises(DecodeError, match=match):
            op.decode_add(bad, D, np.float32, np.zeros(D))


def test_nonzero_padding_is_rejected():
    op, p = encoded("sign")  # 300 sign bits: 4 padding bits in the last byte
    assert p.nbits % 8
    bad = p.buffer.copy()
    bad[-1] |= 0x80
    with pytest.raises(DecodeError, match="padding"):
        op.decode(bad, D, np.float32)


def test_a_segment_decode_error_names_the_segment():
    op, p = encoded("identity")  # 32 bits a value: segment 1 starts at body byte 4 · 37
    bad = p.buffer.copy()
    at = HEADER_BYTES + 4 * (37 + 2)
    bad[at : at + 4] = np.frombuffer(np.float32(np.inf).tobytes(), np.uint8)
    with pytest.raises(DecodeError, match=r"segment 1 \('layer1.weight'.*coordinate 2 is inf"):
        op.decode(bad, D, np.float32)


@pytest.mark.parametrize("spec", ["qsgd:s=7,coder=elias", "natural", "topk:k=0.3+natural",
                                  "randk:k=0.2,shared=1", "uniform:bits=3,block=5"])
# uniform's decoder casts corrupted float32 block ends to float64 before rejecting them
@pytest.mark.filterwarnings("ignore:invalid value encountered in cast:RuntimeWarning")
def test_flipped_bytes_decode_finite_or_raise(spec):
    op, p = encoded(spec)
    rng = np.random.default_rng(5)
    for _ in range(300):
        bad = p.buffer.copy()
        at = rng.integers(HEADER_BYTES, bad.size, size=rng.integers(1, 4))
        bad[at] ^= rng.integers(1, 256, size=at.size, dtype=np.uint8)
        try:
            y = op.decode(bad, D, np.float32)
        except DecodeError:
            continue
        assert y.shape == (D,) and np.isfinite(y).all()
