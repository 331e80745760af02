"""Crafted and fuzzed payloads: every decoder returns a vector of the right shape or raises
DecodeError — never another exception, never a crash (issue "Reliability", item 1).

Payloads that once crashed the process are decoded in a child process, so a regression fails
the test instead of killing pytest. The fuzz share is seeded and sized for CI
(``MPICOMP_FUZZ_CASES`` cases per kernel path); ``python tests/fuzz_payloads.py --cases 100000
--seed 1`` is the long run.
"""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import tracemalloc

import fuzz_payloads as fz
import numpy as np
import pytest

from mpicomp.compress import DecodeError, coding, kernels, make_compressor

KINDS = ["numba", "numpy"] if kernels.HAVE_NUMBA else ["numpy"]
IMPLS = ["compiled", "python"] if kernels.HAVE_NUMBA else ["python"]
CASES = int(os.environ.get("MPICOMP_FUZZ_CASES", 1500))

#: the issue's reproducer: qsgd:s=4,coder=elias, d = 100, count 2, norm 1.0, then γ(2), +, γ(1)
#: and a gap with 62 leading zeros (2^63 − 1): prev + gap wrapped to a negative index (exit 139)
ELIAS_GAP_OVERFLOW = "c505010064000000020000000000803f1200000000000000f8ffffffffffffff0b00"


def impl(fn, kind):
    return getattr(fn, "py_func", fn) if kind == "python" else fn


def decode_in_child(cases, kernels_kind: str) -> list[str]:
    """Decode ``cases`` [(spec, d, dtype name, hex)] in a fresh interpreter on kernel path
    ``kernels_kind``; return per case "ok", "DecodeError: …" or the exception. Asserts that the
    child exited normally (a segfault fails here, with the child's stderr)."""
    script = (
        "import json, sys, numpy as np\n"
        "from mpicomp.compress import DecodeError, make_compressor\n"
        "out = []\n"
        "for spec, d, dtype, hexbuf in json.loads(sys.stdin.read()):\n"
        "    try:\n"
        "        buf = np.frombuffer(bytes.fromhex(hexbuf), np.uint8)\n"
        "        y = make_compressor(spec).decode(buf, d, dtype)\n"
        "        out.append('ok' if y.shape == (d,) and y.dtype == np.dtype(dtype)"
        " else 'bad shape')\n"
        "    except DecodeError as exc:\n"
        "        out.append('DecodeError: ' + str(exc))\n"
        "    except Exception as exc:\n"
        "        out.append(type(exc).__name__ + ': ' + str(exc))\n"
        "print(json.dumps(out))\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], input=json.dumps(cases),
                          capture_output=True, text=True, env=fz.child_env(kernels_kind),
                          timeout=600)
    assert proc.returncode == 0, (f"decoder child died with exit code {proc.returncode}:\n"
                                  f"{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def spliced(spec: str, d: int, writer: fz.BitWriter, nnz: int, dtype=np.float32) -> str:
    """A valid payload of ``spec`` whose coded stream is replaced by ``writer``'s bits, with the
    non-zero count ``nnz`` and (in a composition) the inner bit count set to match; as hex."""
    op = make_compressor(spec)
    x = np.random.default_rng(0).standard_normal(d).astype(dtype)
    buf = bytearray(op.encode(x, np.random.default_rng(1)).buffer.tobytes())
    fields = fz.layout(op, d, dtype)
    stream = fz.field_span(fields, "stream", 8 * len(buf))[0]
    out = writer.splice(buf, stream)
    fz.set_bits(out, fz.field_span(fields, "nnz", 0)[0], 32, nnz)
    inner = fz.field_span(fields, "inner_bits", 0)
    if inner:
        scalars = fz.field_span(fields, "scalars", 0)[0]
        fz.set_bits(out, inner[0], 32, stream + len(writer.bits) - scalars)
    return out.hex()


def overflowing_gap() -> fz.BitWriter:
    w = fz.BitWriter()
    for gap in (2, 2**63 - 1):
        w.gamma(gap)
        w.uint(0, 1)
        w.gamma(1)
    return w


def test_issue_reproducer_is_the_34_byte_payload():
    buf = bytes.fromhex(ELIAS_GAP_OVERFLOW)
    assert len(buf) == 34
    assert struct.unpack_from("<BBBBII", buf) == (0xC5, 5, 1, 0, 100, 2)
    ours = bytes.fromhex(spliced("qsgd:s=4,coder=elias", 100, overflowing_gap(), 2))
    # the same header and stream; the issue's norm is 1.0 and its stream one zero byte longer
    assert ours[:12] == buf[:12] and ours[16:] == buf[16:33] and buf[33] == 0


@pytest.mark.parametrize("kind", KINDS)
def test_crafted_payloads_raise_decode_error_in_a_child(kind):
    # each once crashed (exit 139) or could index out of range; decoded in a subprocess
    long_zeros = fz.BitWriter()
    long_zeros.zeros(63)
    long_zeros.ones(70)
    many = fz.BitWriter()  # one entry, but nnz far above what the stream can hold
    many.gamma(1)
    many.uint(0, 1)
    many.gamma(1)
    past_d = fz.BitWriter()  # a first gap of d + 1
    past_d.gamma(101)
    past_d.uint(1, 1)
    past_d.gamma(1)
    cases = [
        ("qsgd:s=4,coder=elias", 100, "float32", ELIAS_GAP_OVERFLOW),
        ("topk:k=0.5+qsgd:s=4,coder=elias", 100, "float32",
         spliced("topk:k=0.5+qsgd:s=4,coder=elias", 100, overflowing_gap(), 2)),
        ("randk:k=0.5,shared=1+qsgd:s=2,block=8,coder=elias", 64, "float64",
         spliced("randk:k=0.5,shared=1+qsgd:s=2,block=8,coder=elias", 64, overflowing_gap(), 2,
                 np.float64)),
        ("qsgd:s=4,coder=elias", 100, "float32",
         spliced("qsgd:s=4,coder=elias", 100, long_zeros, 1)),
        ("qsgd:s=4,coder=elias", 100, "float32", spliced("qsgd:s=4,coder=elias", 100, many, 99)),
        ("qsgd:s=4,coder=elias", 100, "float32", spliced("qsgd:s=4,coder=elias", 100, past_d, 1)),
    ]
    results = decode_in_child(cases, kind)
    for (spec, *_), got in zip(cases, results):
        assert got.startswith("DecodeError"), (spec, got)
    assert "position at or past d" in results[0] and "at most" in results[4]


@pytest.mark.parametrize("kind", IMPLS)
def test_gamma_reader_bounds_its_value(kind):
    read = impl(coding.read_gamma, kind)
    w = fz.BitWriter()
    w.gamma(2**63 - 1)  # 62 leading zeros: the largest value that fits an int64
    buf = np.frombuffer(w.splice(bytearray(), 0), np.uint8)
    assert read(buf, 0, len(w.bits)) == (2**63 - 1, 125)
    w = fz.BitWriter()
    w.zeros(63)
    w.ones(64)
    buf = np.frombuffer(w.splice(bytearray(), 0), np.uint8)
    assert read(buf, 0, len(w.bits))[1] == -1


@pytest.mark.parametrize("kind", IMPLS)
def test_golomb_reader_stops_at_the_room_left(kind):
    read = impl(coding.read_golomb, kind)
    out = np.zeros(64, np.uint8)
    end = coding.write_golomb(out, 0, 40, 7)
    assert read(out, 0, end, 7, 40) == (40, end)
    assert read(out, 0, end, 7, 39)[1] == -1  # the run claims more than the room
    ones = np.full(64, 0xFF, np.uint8)  # a unary part of 512 ones stops after room // b + 1
    assert read(ones, 0, 512, 3, 10)[1] == -1
    assert read(out, 0, end, 7, -1)[1] == -1


@pytest.mark.parametrize("runs", [(9, 0), (7, 5)])
@pytest.mark.parametrize("kind", IMPLS)
def test_golomb_placers_reject_runs_past_the_positions_left(kind, runs):
    # symbol 1 twice among 10 positions (b = ⌈ln2·8/2⌉ = 3): a first run of 9 leaves no
    # position for the second hit; runs 7 and 5 pass the end
    counts = np.array([8, 2, 0], np.int64)
    order = coding._coding_order(counts)
    out = np.zeros(32, np.uint8)
    pos = coding.write_gamma(out, 0, 3)
    pos = coding.write_gamma(out, pos, 1)
    header = pos
    for g in runs:
        pos = coding.write_golomb(out, pos, g, 3)
    for place in (coding._place_by_tree, coding._place_by_scan):
        sym = np.zeros(10, np.int64)
        assert impl(place, kind)(out, header, pos, counts, order, sym) == -1
    assert impl(coding.golomb_decode, kind)(out, pos, 3, np.zeros(10, np.int64)) == -1


def test_header_counts_do_not_drive_allocations():
    # a count of 2^32 − 1 non-zeros (or a composition's inner bit count of 2^32 − 1) is
    # rejected before anything of that size is allocated
    for spec, field in (("qsgd:s=4,coder=elias", "nnz"),
                        ("topk:k=0.5+qsgd:s=4,coder=golomb", "inner_bits")):
        op = make_compressor(spec)
        d = 1000
        buf = bytearray(
            op.encode(np.ones(d, np.float32), np.random.default_rng(0)).buffer.tobytes())
        fz.set_bits(buf, fz.field_span(fz.layout(op, d, np.float32), field, 0)[0], 32, 2**32 - 1)
        op.decode(op.encode(np.ones(d, np.float32), np.random.default_rng(0)).buffer, d)  # warm
        tracemalloc.start()
        with pytest.raises(DecodeError):
            op.decode(np.frombuffer(bytes(buf), np.uint8), d, np.float32)
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert peak < fz.memory_bound(d, len(buf))


@pytest.mark.parametrize("kind", KINDS + (["python"] if kernels.HAVE_NUMBA else []))
def test_fuzzed_payloads(kind):
    # the plain-Python path (no JIT) is slow: a tenth of the cases
    cases = CASES if kind != "python" else max(50, CASES // 10)
    result = fz.fuzz(kind, cases, seed=20240601, memcheck_every=5, timeout=900)
    assert not result["failures"], "\n\n".join(result["failures"][:5])
    assert result["returned"] > 0 and result["decode_error"] > 0
