"""Multi-threaded kernels (`kernels.set_threads`, ``MPICOMP_THREADS``): the same bytes as one
thread, whatever the size and block; the thread count is validated with a clear error."""

from __future__ import annotations

import numpy as np
import pytest

from mpicomp.compress import kernels, make_compressor, threads

pytestmark = pytest.mark.skipif(not kernels.HAVE_NUMBA, reason="threads need the Numba kernels")

THREADED = ["natural", "qsgd:s=4", "qsgd:s=16,block=512", "dither:p=inf,s=5,block=300",
            "terngrad", "terngrad:block=10,clip=2.5", "terngrad:clip=2.5", "natural_dither:s=8",
            "natural_dither:p=inf,s=3,block=20", "qsgd:s=7,coder=elias", "terngrad:pack=trits"]


def pool_size() -> int:
    return threads.numba_pool_size() or 1


@pytest.fixture
def restore_threads():
    old = threads._threads
    yield
    threads._threads = old


def vector(d, dtype, seed=0):
    rng = np.random.default_rng(seed + d)
    return (rng.standard_normal(d) * np.exp(rng.uniform(-3, 3, d))).astype(dtype)


def encoded(spec, x, n):
    old = kernels.set_threads(n)
    try:
        op = make_compressor(spec)
        p = op.encode(x, np.random.default_rng(7))
        return p.buffer.tobytes(), op.decode(p.buffer, x.size, x.dtype).tobytes()
    finally:
        kernels.set_threads(old)


@pytest.mark.skipif(pool_size() < 2, reason="Numba's pool has one thread")
@pytest.mark.parametrize("spec", THREADED)
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
def test_threads_write_the_bytes_of_one_thread(spec, dtype, monkeypatch, restore_threads):
    monkeypatch.setattr(threads, "MIN_PARALLEL", 0)  # split even the short vectors
    for d in (1, 7, 2048, 2049, 4097, 3 * 2048 + 5, 20011):
        x = vector(d, dtype)
        assert encoded(spec, x, 2) == encoded(spec, x, 1), (spec, d)


@pytest.mark.skipif(pool_size() < 2, reason="Numba's pool has one thread")
def test_threads_above_the_threshold_and_errors_in_a_later_part(restore_threads):
    d = threads.MIN_PARALLEL + 12345  # odd: the last part ends inside a chunk
    x = vector(d, np.float32)
    for spec in ("natural", "qsgd:s=4,block=1000", "terngrad:block=777,clip=2.5"):
        assert encoded(spec, x, 2) == encoded(spec, x, 1), spec
    y = x.copy()
    y[d - 5] = np.inf  # in the second part: the first bad index, as on one thread
    messages = []
    for n in (1, 2):
        kernels.set_threads(n)
        with pytest.raises(ValueError) as err:
            make_compressor("natural").encode(y, np.random.default_rng(0))
        messages.append(str(err.value))
    assert messages[0] == messages[1] and f"index {d - 5}" in messages[0]


@pytest.mark.parametrize("bad", [0, -2, 1.5, True, None, "two", "", " 3x", "0"])
def test_set_threads_rejects_a_bad_count_naming_it(bad, restore_threads):
    with pytest.raises(ValueError, match="integer ≥ 1") as err:
        kernels.set_threads(bad)
    assert repr(bad) in str(err.value)


def test_set_threads_beyond_numbas_pool_names_the_limit(restore_threads):
    limit = pool_size()
    with pytest.raises(ValueError, match=f"from 1 to {limit}") as err:
        kernels.set_threads(limit + 1)
    assert f"threads={limit + 1}" in str(err.value) and "NUMBA_NUM_THREADS" in str(err.value)


def test_set_threads_returns_the_previous_count(restore_threads):
    kernels.set_threads(1)
    assert kernels.set_threads("1") == 1 and kernels.threads() == 1


def test_environment_variable_is_read_on_first_use(monkeypatch, restore_threads):
    threads._threads = None
    monkeypatch.setenv("MPICOMP_THREADS", "1")
    assert kernels.threads() == 1
    threads._threads = None
    monkeypatch.setenv("MPICOMP_THREADS", "lots")
    with pytest.raises(ValueError, match="MPICOMP_THREADS='lots'"):
        kernels.threads()
    threads._threads = None
    monkeypatch.delenv("MPICOMP_THREADS")
    assert kernels.threads() == 1
