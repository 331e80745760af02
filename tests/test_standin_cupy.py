"""Tests of the strict CuPy stand-in (``tests/standin/cupy``): what it refuses, what it counts,
and that it works as CuPy for ``array_api_compat``, NumPy-style code and mpicomp's backend.

The stand-in is imported through a module-scoped fixture with ``tests/standin`` first on
``sys.path``; at teardown every ``cupy*`` and ``array_api_compat.cupy*`` module it brought in
is dropped again (and anything there before is put back), so the rest of the session never sees
a fake ``cupy``.
"""

from __future__ import annotations

import json
import operator
import os
import pickle
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

STANDIN = Path(__file__).resolve().parent / "standin"
KEYS = ("h2d", "d2h", "h2d_bytes", "d2h_bytes", "sync", "scalar_reads", "pinned_allocs")


def _is_standin_module(name: str) -> bool:
    return name.split(".")[0] in ("cupy", "cupyx") or name.startswith("array_api_compat.cupy")


def _drop_standin_modules() -> None:
    for name in [n for n in sys.modules if _is_standin_module(n)]:
        del sys.modules[name]
    compat = sys.modules.get("array_api_compat")
    if compat is not None and "cupy" in vars(compat):
        delattr(compat, "cupy")  # else ``from .. import cupy`` returns the stale submodule


@pytest.fixture(scope="module")
def cp():
    """The stand-in ``cupy`` module, imported from ``tests/standin``."""
    saved = {n: m for n, m in sys.modules.items() if _is_standin_module(n)}
    compat = sys.modules.get("array_api_compat")
    saved_attr = vars(compat).get("cupy") if compat is not None else None
    _drop_standin_modules()
    try:
        with pytest.MonkeyPatch.context() as mp:
            mp.syspath_prepend(str(STANDIN))
            import cupy

            assert Path(cupy.__file__).resolve().parent == STANDIN / "cupy"
            yield cupy
    finally:
        _drop_standin_modules()
        sys.modules.update(saved)
        if saved_attr is not None:
            compat.cupy = saved_attr


@pytest.fixture(autouse=True)
def _fresh_counters(request):
    if "cp" in request.fixturenames:
        request.getfixturevalue("cp").reset_counters()


def counts(**nonzero: int) -> dict[str, int]:
    """The counters dict with the given keys set and all others zero."""
    return {key: nonzero.get(key, 0) for key in KEYS}


def host(cp, a) -> np.ndarray:
    """A host copy of the device array ``a`` that the counters do not see."""
    assert isinstance(a, cp.ndarray)
    return a.__mpicomp_kernel_array__().copy()


# ------------------------------------------------------------------------------- refusals

D2H_CASES = {
    "np.asarray": lambda a: np.asarray(a),
    "np.array": lambda a: np.array(a),
    "np.sum": lambda a: np.sum(a),
    "np.concatenate": lambda a: np.concatenate([a, a]),
    "np.add(a, 1)": lambda a: np.add(a, 1),
    "np.add(1.0, a)": lambda a: np.add(1.0, a),
    "np.isfinite": lambda a: np.isfinite(a),
    "pickle": lambda a: pickle.dumps(a),
}


@pytest.mark.parametrize("case", list(D2H_CASES))
def test_implicit_device_to_host_is_refused(cp, case):
    a = cp.arange(4.0)
    with pytest.raises(TypeError, match="Implicit conversion to a NumPy array.*device→host"):
        D2H_CASES[case](a)
    assert cp.counters() == counts()


def _iadd_host(a):
    a += np.ones(4)


def _setitem_host(a):
    a[:2] = np.ones(2)


H2D_CASES = {
    "a + host": lambda cp, a: a + np.ones(4),
    "host + a": lambda cp, a: np.ones(4) + a,
    "host < a": lambda cp, a: np.ones(4) < a,
    "a += host": lambda cp, a: _iadd_host(a),
    "a[host index]": lambda cp, a: a[np.array([0, 1])],
    "a[list index]": lambda cp, a: a[[0, 1]],
    "a[:2] = host": lambda cp, a: _setitem_host(a),
    "cp.sum(host)": lambda cp, a: cp.sum(np.ones(3)),
    "cp.concatenate([a, host])": lambda cp, a: cp.concatenate([a, np.ones(2)]),
    "cp.where(.., list of floats)": lambda cp, a: cp.where(a > 1, a, [0.0, 1.0, 2.0, 3.0]),
    "cp.add(a, list)": lambda cp, a: cp.add(a, [1, 2, 3, 4]),
    "cp.sum(memoryview)": lambda cp, a: cp.sum(memoryview(b"\x01\x02")),
    "cp.from_dlpack(host)": lambda cp, a: cp.from_dlpack(np.ones(2)),
}


@pytest.mark.parametrize("case", list(H2D_CASES))
def test_implicit_host_to_device_is_refused(cp, case):
    a = cp.arange(4.0)
    with pytest.raises(TypeError, match="host→device"):
        H2D_CASES[case](cp, a)
    assert cp.counters() == counts()
    np.testing.assert_array_equal(host(cp, a), np.arange(4.0))  # refused writes wrote nothing


def test_no_buffer_protocol_and_no_device_pointer_protocols(cp):
    a = cp.arange(4.0)
    with pytest.raises(TypeError):
        memoryview(a)
    for name in ("__cuda_array_interface__", "__dlpack__", "__dlpack_device__",
                 "__array_interface__", "__array_struct__", "__buffer__"):
        assert not hasattr(a, name), name
    assert not issubclass(cp.ndarray, np.ndarray)


def test_host_only_numpy_names_are_absent(cp):
    for name in ("frombuffer", "fromfile", "load", "random", "testing", "vectorize"):
        assert not hasattr(cp, name), name
        assert name not in cp.__all__


def test_mpi_send_of_a_device_array_fails(tmp_path):
    script = textwrap.dedent("""
        import cupy
        from mpi4py import MPI

        a, b = cupy.arange(4.0), cupy.zeros(4)
        sends = {
            "Allreduce": lambda: MPI.COMM_SELF.Allreduce(a, b),
            "Isend": lambda: MPI.COMM_SELF.Isend([a, MPI.DOUBLE], dest=0, tag=1),
            "bcast (pickle)": lambda: MPI.COMM_SELF.bcast(a, root=0),
        }
        for name, send in sends.items():
            try:
                send()
            except TypeError:
                print(name, "refused")
            else:
                print(name, "SENT")
    """)
    out = _run_with_standin(script, tmp_path)
    assert out.split("\n") == ["Allreduce refused", "Isend refused", "bcast (pickle) refused"]


def _run_with_standin(script: str, tmp_path: Path, **env: str) -> str:
    environ = {**os.environ, **env}
    environ["PYTHONPATH"] = os.pathsep.join(
        [str(STANDIN), *filter(None, [os.environ.get("PYTHONPATH")])])
    done = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=environ,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


# ---------------------------------------------------------------------- arithmetic and arrays


def test_operators_match_numpy_and_stay_on_the_device(cp):
    x = np.array([0.5, -1.5, 2.0, 3.25])
    n = np.array([3, 1, 2, 6])
    a, k = cp.asarray(x), cp.asarray(n)
    cp.reset_counters()
    f64, f32, z = np.float64(2.0), np.float32(1.5), np.array(3.0)
    cases = {
        "a + 2": (a + 2, x + 2), "2 - a": (2 - a, 2 - x), "a * a": (a * a, x * x),
        "a / 4.0": (a / 4.0, x / 4.0), "3 // a": (3 // a, 3 // x), "a % 2": (a % 2, x % 2),
        "a ** 2": (a**2, x**2), "np.float64 * a": (f64 * a, f64 * x),
        "a * np.float64": (a * f64, x * f64), "np.float32 + a": (f32 + a, f32 + x),
        "0-d numpy - a": (z - a, z - x), "a < np.float64": (a < f64, x < f64),
        "np.float64 < a": (f64 < a, f64 < x), "a == a": (a == a, x == x),
        "-a": (-a, -x), "abs(a)": (abs(a), abs(x)), "k & 2": (k & 2, n & 2),
        "k | k": (k | k, n | n), "k ^ 1": (k ^ 1, n ^ 1), "k << 1": (k << 1, n << 1),
        "~k": (~k, ~n), "a @ a": (a @ a, x @ x), "divmod q": (divmod(a, 2)[0], x // 2),
        "np.float64 ** a": (f64**a, f64**x),
    }
    assert cp.counters() == counts()
    for name, (got, want) in cases.items():
        assert isinstance(got, cp.ndarray), name
        assert got.dtype == want.dtype, name
        np.testing.assert_array_equal(host(cp, got), want, err_msg=name)


def test_inplace_operators_write_the_same_array(cp):
    a = cp.asarray(np.arange(4.0))
    b = a
    a += 1
    a *= cp.full(4, 2.0)
    a -= np.float64(1.0)
    a /= 2
    assert a is b
    np.testing.assert_array_equal(host(cp, a), ((np.arange(4.0) + 1) * 2 - 1) / 2)


def test_zero_d_results_are_device_arrays_and_indexing_gives_views(cp):
    a = cp.asarray(np.arange(6.0))
    cp.reset_counters()
    for r in (a.sum(), a.max(), a.mean(), a.dot(a), cp.linalg.norm(a), cp.count_nonzero(a),
              cp.allclose(a, a), a[2], (a > 2).any()):
        assert isinstance(r, cp.ndarray) and r.ndim == 0
    v = a[2]
    v += 10  # a 0-d view, as in CuPy
    s = a[1:4]
    s[0] = -1.0
    a[cp.asarray(np.array([False, False, False, False, True, False]))] = 7.0
    a[cp.asarray(np.array([5]))] = cp.asarray(np.array([8.0]))[0]
    assert cp.counters() == counts(h2d=3, h2d_bytes=6 + 8 + 8)
    np.testing.assert_array_equal(host(cp, a), [0, -1, 12, 3, 7, 8])
    np.testing.assert_array_equal(host(cp, a[..., None][:, 0]), host(cp, a))
    np.testing.assert_array_equal(host(cp, a[a > 2]), [12, 3, 7, 8])
    assert [float(x) for x in a[:2]] == [0.0, -1.0]


def test_properties_and_methods(cp):
    x = np.arange(12, dtype=np.float32).reshape(3, 4)
    a = cp.asarray(x)
    cp.reset_counters()
    assert (a.shape, a.ndim, a.size, a.dtype, a.nbytes, a.itemsize, a.strides) == (
        x.shape, x.ndim, x.size, x.dtype, x.nbytes, x.itemsize, x.strides)
    assert a.flags.c_contiguous and a.flags["C_CONTIGUOUS"] and not a.T.flags.c_contiguous
    assert a.device == cp.cuda.Device(0)
    assert len(a) == 3 and "array(" in repr(a)
    assert a.astype(np.float32, copy=False) is a
    c = a.astype(np.float64)
    assert c is not a and c.dtype == np.float64
    bytes_view = a.view(np.uint8)
    bytes_view[...] = 0  # a view: writes reach a
    assert not bool(a.any())
    a.fill(2.0)
    assert float(a.sum()) == 24.0
    d = a.copy()
    d[0, 0] = 5.0
    assert float(a[0, 0]) == 2.0  # a copy is independent
    for got, want in ((a.T, np.full((4, 3), 2.0)), (a.reshape(4, 3), np.full((4, 3), 2.0)),
                      (d.ravel()[:2], [5.0, 2.0]), (d.argmax(), 0), (d.min(), 2.0),
                      (d.std() > 0, True), (cp.nonzero(d > 2)[1], [0]), (d.all(), True)):
        assert isinstance(got, cp.ndarray)
        np.testing.assert_array_equal(host(cp, got), want)
    assert cp.counters() == counts(scalar_reads=3)


def test_scalar_reads_are_counted_and_nothing_else(cp):
    a = cp.asarray(np.array([2.5]))
    i = cp.asarray(np.array(3))
    cp.reset_counters()
    reads = [float(a[0]), int(i), bool(a[0] > 1), operator.index(i), a.item(), complex(a[0]),
             f"{a[0]:.1f}", 2.5 in a]
    assert reads == [2.5, 3, True, 3, 2.5, 2.5 + 0j, "2.5", True]
    assert cp.counters() == counts(scalar_reads=len(reads))
    with pytest.raises(ValueError):
        bool(cp.zeros(3))  # ambiguous, as in NumPy, and not counted
    assert cp.counters() == counts(scalar_reads=len(reads))


# --------------------------------------------------------------------------- explicit copies


def test_host_to_device_copies_are_counted_with_their_bytes(cp):
    x = np.arange(5, dtype=np.float32)
    a = cp.asarray(x)
    assert cp.counters() == counts(h2d=1, h2d_bytes=20)
    x[0] = 99.0  # the device array is a copy, not a view of host memory
    assert float(a[0]) == 0.0
    cp.reset_counters()
    assert cp.asarray(a) is a and cp.array(a, copy=False) is a
    b = cp.array(a)  # a device-to-device copy
    assert b is not a and cp.counters() == counts()
    cp.asarray(np.arange(3), dtype=np.float64)
    cp.asarray(1.5)
    cp.array([[1, 2], [3, 4]], dtype=np.int8)
    assert cp.counters() == counts(h2d=3, h2d_bytes=24 + 8 + 4)
    cp.reset_counters()
    a.set(np.full(5, 7.0, np.float32))
    assert cp.counters() == counts(h2d=1, h2d_bytes=20)
    with pytest.raises(TypeError):
        a.set(np.full(5, 7.0))  # dtype mismatch, as in CuPy
    np.testing.assert_array_equal(host(cp, a), np.full(5, 7.0))


def test_device_to_host_copies_are_counted_with_their_bytes(cp):
    a = cp.arange(6, dtype=np.int16)
    h = cp.asnumpy(a)
    assert isinstance(h, np.ndarray)
    np.testing.assert_array_equal(h, np.arange(6))
    assert cp.counters() == counts(d2h=1, d2h_bytes=12, sync=1)
    h[0] = 42  # a copy, not a view of device memory
    assert int(a[0]) == 0
    cp.reset_counters()
    out = np.empty(6, np.int16)
    assert a.get(out=out) is out and a.get(blocking=False).shape == (6,)
    assert a[::2].tolist() == [0, 2, 4]
    assert a.tobytes() == np.arange(6, dtype=np.int16).tobytes()
    assert cp.counters() == counts(d2h=4, d2h_bytes=12 + 12 + 6 + 12, sync=3)
    cp.reset_counters()
    assert cp.asnumpy(np.ones(2)).shape == (2,)  # host data: no copy to count
    assert cp.counters() == counts()


# ----------------------------------------------------------------------- mpicomp's runtime


def test_runtime_offers_exactly_the_backend_methods(cp):
    rt = cp.__mpicomp_runtime__
    public = {n for n in dir(rt) if not n.startswith("_")}
    assert public == {"synchronize", "to_host", "to_device", "copy_to_host", "copy_to_device",
                      "pinned_empty"}


def test_runtime_copies_and_counts(cp):
    rt = cp.__mpicomp_runtime__
    x = np.linspace(0.0, 1.0, 8)
    a = rt.to_device(x)
    assert isinstance(a, cp.ndarray) and cp.counters() == counts(h2d=1, h2d_bytes=64)
    f = rt.to_device(x, dtype=np.float32)
    assert f.dtype == np.float32
    cp.reset_counters()
    h = rt.to_host(a)
    np.testing.assert_array_equal(h, x)
    assert not np.shares_memory(h, a.__mpicomp_kernel_array__())
    assert cp.counters() == counts(d2h=1, d2h_bytes=64, sync=1)
    cp.reset_counters()
    pinned = rt.pinned_empty(64)
    assert pinned.dtype == np.uint8 and pinned.shape == (64,) and pinned.flags.writeable
    assert cp.counters() == counts(pinned_allocs=1)
    cp.reset_counters()
    rt.copy_to_host(a, pinned)  # bytes: float64 into uint8
    np.testing.assert_array_equal(pinned.view(np.float64), x)
    assert cp.counters() == counts(d2h=1, d2h_bytes=64, sync=1)
    cp.reset_counters()
    b = cp.zeros(16, dtype=np.float32)
    rt.copy_to_device(np.arange(8.0), b)
    np.testing.assert_array_equal(host(cp, b.view(np.float64)), np.arange(8.0))
    rt.synchronize()
    assert cp.counters() == counts(h2d=1, h2d_bytes=64, sync=1)
    assert rt.pinned_empty(0).shape == (0,)


def test_runtime_refuses_wrong_sides_and_sizes(cp):
    rt = cp.__mpicomp_runtime__
    a = cp.zeros(4)
    with pytest.raises(TypeError):
        rt.to_device(a)
    with pytest.raises(TypeError):
        rt.to_host(np.zeros(4))
    with pytest.raises(ValueError):
        rt.copy_to_host(a, np.empty(31, np.uint8))
    with pytest.raises(ValueError):
        rt.copy_to_device(np.zeros(3), a)
    with pytest.raises(ValueError):
        rt.copy_to_host(a[::2], np.empty(16, np.uint8))  # a byte copy needs contiguity
    assert cp.counters() == counts()


def test_kernel_array_is_the_storage(cp):
    a = cp.zeros(5, dtype=np.int64)
    storage = a.__mpicomp_kernel_array__()
    assert isinstance(storage, np.ndarray)
    storage[:] = np.arange(5)  # what a simulated kernel does
    view = a[1:3].__mpicomp_kernel_array__()
    view[...] *= 10
    np.testing.assert_array_equal(host(cp, a), [0, 10, 20, 3, 4])
    assert cp.counters() == counts()


# --------------------------------------------------------------------------------- cupy.cuda


def test_cuda_streams_events_devices_and_pinned_memory(cp):
    cuda = cp.cuda
    null = cuda.get_current_stream()
    assert null.ptr == 0 and null is cuda.Stream.null
    null.synchronize()
    s = cuda.Stream(non_blocking=True)
    with s:
        assert cuda.get_current_stream() is s
        s.synchronize()
    assert cuda.get_current_stream() is null
    start, end = cuda.Event(), cuda.Event()
    start.record()
    end.record(s)
    end.synchronize()
    assert cuda.get_elapsed_time(start, end) == 0.0
    with cuda.Device(0) as dev:
        dev.synchronize()
    cuda.runtime.deviceSynchronize()
    assert cp.counters() == counts(sync=5)
    assert cuda.runtime.getDeviceCount() == 1 and cuda.runtime.runtimeGetVersion() == 13000
    mem = cuda.alloc_pinned_memory(24)
    buf = np.frombuffer(mem, np.float64, 3)
    buf[:] = 1.5
    assert cp.counters() == counts(sync=5, pinned_allocs=1)
    with pytest.raises(cuda.runtime.CUDARuntimeError):
        cuda.Device(1)


# --------------------------------------------------------------------- functions and the API


def test_array_api_compat_sees_cupy(cp):
    import array_api_compat

    a = cp.asarray(np.array([3.0, -4.0, 0.0]))
    xp = array_api_compat.array_namespace(a)
    assert xp is sys.modules["array_api_compat.cupy"] and xp.__name__ == "array_api_compat.cupy"
    assert array_api_compat.is_cupy_array(a) and not array_api_compat.is_numpy_array(a)
    cp.reset_counters()
    results = {
        "astype": (xp.astype(a, xp.float32), np.array([3.0, -4.0, 0.0], np.float32)),
        "vector_norm": (xp.linalg.vector_norm(a), 5.0),
        "zeros_like": (xp.zeros_like(a), np.zeros(3)),
        "vecdot": (xp.vecdot(a, a), 25.0),
        "sum": (xp.sum(a), -1.0), "abs": (xp.abs(a), [3.0, 4.0, 0.0]),
        "sign": (xp.sign(a), [1.0, -1.0, 0.0]), "maximum": (xp.maximum(a, 0.0), [3, 0, 0]),
        "where": (xp.where(a > 0, a, xp.zeros_like(a)), [3.0, 0.0, 0.0]),
        "concat": (xp.concat([a, a])[3:], [3.0, -4.0, 0.0]),
        "full": (xp.full((2,), 1.5, dtype=xp.float64), [1.5, 1.5]),
        "empty": (xp.empty((2, 0)), np.empty((2, 0))),
        "unique_values": (xp.unique_values(a), [-4.0, 0.0, 3.0]),
    }
    assert xp.isdtype(a.dtype, "real floating")
    assert cp.counters() == counts()
    for name, (got, want) in results.items():
        assert isinstance(got, cp.ndarray), name
        np.testing.assert_allclose(host(cp, got), want, err_msg=name)
    assert results["astype"][0].dtype == np.float32
    assert xp.asarray([1.0, 2.0]).dtype == np.float64
    assert cp.counters() == counts(h2d=1, h2d_bytes=16)


FUNCTION_CASES = [
    ("abs", [-1.5, 2.0]), ("sign", [-1.5, 0.0]), ("sqrt", [4.0, 9.0]), ("exp", [0.0, 1.0]),
    ("log", [1.0, 2.0]), ("logaddexp", [0.0, 1.0], [1.0, 2.0]), ("maximum", [1.0, 5.0], 2.0),
    ("minimum", [1.0, 5.0], 2.0), ("clip", [-3.0, 0.5, 3.0], -1.0, 1.0),
    ("dot", [1.0, 2.0], [3.0, 4.0]), ("matmul", [[1.0, 2.0]], [[3.0], [4.0]]),
    ("isfinite", [1.0, np.inf, np.nan]), ("isnan", [1.0, np.nan]), ("all", [True, False]),
    ("any", [True, False]), ("sum", [1.0, 2.5]), ("mean", [1.0, 2.0]),
    ("flatnonzero", [0.0, 3.0, 0.0, 1.0]), ("unique", [3, 1, 3]), ("sort", [3.0, 1.0, 2.0]),
    ("argsort", [3.0, 1.0, 2.0]), ("take", [5.0, 6.0, 7.0], [2, 0]), ("repeat", [1, 2], 2),
    ("bincount", [0, 2, 2]), ("cumsum", [1, 2, 3]), ("floor", [1.5, -1.5]),
    ("ceil", [1.5, -1.5]), ("nextafter", [1.0, 2.0], [2.0, 1.0]),
    ("where", [True, False], [1.0, 2.0], [3.0, 4.0]), ("concatenate", ([1.0], [2.0, 3.0])),
    ("stack", ([1.0], [2.0])), ("zeros_like", [1, 2]), ("ones_like", [1.0]),
    ("full_like", [1.0, 2.0], 7.0), ("empty_like", [[1.0]]),
]


def _to_device(cp, value):
    if isinstance(value, tuple):
        return [cp.asarray(np.array(v)) for v in value]
    if isinstance(value, list):
        return cp.asarray(np.array(value))
    return value


@pytest.mark.parametrize("case", FUNCTION_CASES, ids=[c[0] for c in FUNCTION_CASES])
def test_module_functions_wrap_numpy(cp, case):
    name, *args = case
    dev_args = [_to_device(cp, v) for v in args]
    host_args = [[np.array(x) for x in v] if isinstance(v, tuple)
                 else np.array(v) if isinstance(v, list) else v for v in args]
    cp.reset_counters()
    got = getattr(cp, name)(*dev_args)
    want = getattr(np, name)(*host_args)
    assert cp.counters() == counts()
    assert isinstance(got, cp.ndarray)
    if name != "empty_like":
        np.testing.assert_array_equal(host(cp, got), want)
    assert got.shape == np.shape(want) and got.dtype == np.asarray(want).dtype


def test_creation_functions_star_import_and_linalg(cp):
    names: dict = {}
    exec("from cupy import *", names)
    assert {"asarray", "asnumpy", "zeros", "float32", "linalg", "logaddexp", "ndarray"} <= set(
        names)
    assert names["float32"] is np.float32 and names["ndarray"] is cp.ndarray
    made = [cp.empty((2, 3), dtype=cp.uint8), cp.zeros(3), cp.ones((2,), cp.int64),
            cp.full(2, np.float64(0.5)), cp.arange(1, 7, 2), cp.linalg.norm(cp.ones(4)),
            cp.linalg.vector_norm(cp.ones(4))]
    assert all(isinstance(m, cp.ndarray) for m in made)
    assert made[0].dtype == np.uint8 and made[0].shape == (2, 3)
    np.testing.assert_array_equal(host(cp, made[4]), [1, 3, 5])
    assert float(made[5]) == float(made[6]) == 2.0
    out = cp.zeros(2)
    assert cp.add(cp.ones(2), 1.0, out=out) is out
    cp.copyto(out, cp.full(2, 9.0))
    np.testing.assert_array_equal(host(cp, out), [9.0, 9.0])
    assert cp.get_array_module(out) is cp and cp.get_array_module(np.ones(1)) is np
    assert cp.counters() == counts(scalar_reads=2)


# ------------------------------------------------------------------------------- counts file


def test_counters_are_written_at_exit(tmp_path):
    script = textwrap.dedent("""
        import numpy as np
        import cupy

        a = cupy.asarray(np.arange(4.0))
        cupy.asnumpy(a * 2)
        float(a.sum())
    """)
    prefix = tmp_path / "counts"
    _run_with_standin(script, tmp_path, MPICOMP_STANDIN_COUNTS=str(prefix), PMI_RANK="3")
    written = json.loads((tmp_path / "counts.3.json").read_text())
    assert written == counts(h2d=1, h2d_bytes=32, d2h=1, d2h_bytes=32, sync=1, scalar_reads=1)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["counts.3.json"]


# ---------------------------------------------------------------------- cupyx.scipy.sparse


@pytest.fixture
def sparse(cp):
    """``cupyx.scipy.sparse`` of the stand-in and a SciPy CSR matrix to put on the device."""
    import scipy.sparse as sp
    from cupyx.scipy import sparse

    H = sp.random(5, 4, density=0.5, format="csr", random_state=1, dtype=np.float64)
    return sparse, H


def test_sparse_copies_and_products(cp, sparse):
    sparse, H = sparse
    A = sparse.csr_matrix(H)
    part_bytes = H.data.nbytes + H.indices.nbytes + H.indptr.nbytes
    assert cp.counters() == counts(h2d=1, h2d_bytes=part_bytes)
    assert type(A).__module__.startswith("cupyx.scipy.sparse")
    assert (A.shape, A.dtype, A.nnz, A.ndim) == (H.shape, H.dtype, H.nnz, 2)
    H.data[:] = 0.0  # A holds a copy
    H = A.get()
    assert cp.counters() == counts(h2d=1, h2d_bytes=part_bytes, d2h=1, d2h_bytes=part_bytes,
                                   sync=1)
    cp.reset_counters()
    x, y = cp.arange(4.0), cp.ones(5)
    xh, yh = np.arange(4.0), np.ones(5)
    dense = {
        "A @ x": (A @ x, H @ xh), "A.T @ y": (A.T @ y, H.T @ yh), "y @ A": (y @ A, yh @ H),
        "A.dot(x)": (A.dot(x), H @ xh), "sum(axis=0)": (A.sum(axis=0), H.sum(axis=0)),
        "sum()": (A.sum(), H.sum()), "mean(axis=1)": (A.mean(axis=1), H.mean(axis=1)),
        "toarray": (A.toarray(), H.toarray()), "A[1, 2]": (A[1, 2], H[1, 2]),
    }
    matrices = {
        "multiply": (A.multiply(A), H.multiply(H)), "power": (A.power(2), H.power(2)),
        "multiply dense": (A.multiply(cp.full((5, 4), 2.0)), H.multiply(np.full((5, 4), 2.0))),
        "T": (A.T, H.T), "tocsr": (A.T.tocsr(), H.T.tocsr()), "2 * A": (2.0 * A, 2.0 * H),
        "rows": (A[cp.arange(0, 4, 2)], H[np.arange(0, 4, 2)]), "A + A": (A + A, H + H),
        "astype": (A.astype(np.float32), H.astype(np.float32)),
    }
    assert cp.counters() == counts()  # arange inside the index: made on the device
    for name, (got, want) in dense.items():
        assert isinstance(got, cp.ndarray), name
        np.testing.assert_allclose(host(cp, got), np.asarray(want), err_msg=name)
    for name, (got, want) in matrices.items():
        assert isinstance(got, sparse.spmatrix) and got.dtype == want.dtype, name
        np.testing.assert_allclose(got._m.toarray(), want.toarray(), err_msg=name)
    assert isinstance(A.T, sparse.csc_matrix) and isinstance(A.tocoo(), sparse.coo_matrix)
    np.testing.assert_array_equal(host(cp, A.tocoo().row), H.tocoo().row)
    A.data[...] *= 2.0  # the data array is the matrix's own
    np.testing.assert_allclose(host(cp, A @ x), 2.0 * (H @ xh))
    assert cp.counters() == counts()


def test_sparse_refuses_host_operands(cp, sparse):
    sparse, H = sparse
    A = sparse.csr_matrix(H)
    cp.reset_counters()
    cases = {"A @ host": lambda: A @ np.ones(4), "host @ A": lambda: np.ones(5) @ A,
             "A + scipy": lambda: A + H, "multiply host": lambda: A.multiply(np.ones((5, 4))),
             "from host dense": lambda: sparse.csr_matrix(np.ones((2, 2)))}
    for name, case in cases.items():
        with pytest.raises(TypeError, match="host→device"):
            case()
            pytest.fail(f"{name} was not refused")
    for case in (lambda: np.asarray(A), lambda: H @ A, lambda: pickle.dumps(A)):
        with pytest.raises(TypeError, match="device→host"):
            case()
    assert cp.counters() == counts()
