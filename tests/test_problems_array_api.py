"""Problems on any array API namespace (SPEC §4).

Every problem runs on ``array_api_strict`` arrays on a non-default device (which refuse any
implicit conversion to NumPy) and gives the same values as on NumPy: bitwise where the
operations are the same (all of them here), else to a relative 1e-12.
"""

from __future__ import annotations

import numpy as np
import pytest

from mpicomp.backend import to_host
from mpicomp.problems import LogisticRegression, make_problem

xps = pytest.importorskip("array_api_strict")

DEV = xps.Device("device1")
CPU = xps.Device("CPU_DEVICE")
M, D, C, H = 30, 6, 3, 5
KINDS = ["logistic", "least_squares", "softmax", "mlp"]


def _host(r):
    """A NumPy copy of a result (a strict array read back explicitly, or a host value)."""
    if hasattr(r, "to_device"):
        return np.from_dlpack(r.to_device(CPU))
    return np.asarray(r)


def _dev(a):
    return xps.asarray(a, device=DEV)


def _data(kind, dtype, seed=0):
    rng = np.random.default_rng(seed)
    A = rng.standard_normal((M, D)).astype(dtype)
    if kind == "logistic":
        b = np.where(rng.random(M) < 0.5, -1.0, 1.0).astype(dtype)
    elif kind == "least_squares":
        b = rng.standard_normal(M).astype(dtype)
    else:
        b = rng.integers(0, C, M)
    return A, b


def _pair(kind, dtype, l1=0.05, l2=0.1):
    A, b = _data(kind, dtype)
    extra = {"n_classes": C} if kind in ("softmax", "mlp") else {}
    if kind == "mlp":
        extra["hidden"] = H
    host = make_problem(kind, A, b, l1=l1, l2=l2, **extra)
    strict = make_problem(kind, _dev(A), _dev(b), l1=l1, l2=l2, **extra)
    return host, strict


def _same(got, want):
    """Bitwise equal: the strict namespace runs the same NumPy operations underneath."""
    got, want = _host(got), np.asarray(want)
    assert got.dtype == want.dtype and got.shape == want.shape
    np.testing.assert_array_equal(got, want, strict=True)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("kind", KINDS)
def test_strict_device_matches_numpy(kind, dtype):
    host, strict = _pair(kind, dtype)
    assert isinstance(strict.A, type(_dev(np.zeros(1))))  # the data stayed strict
    x0 = host.initial_point(np.random.default_rng(3), dtype=dtype)
    s0 = strict.initial_point(np.random.default_rng(3), dtype=dtype)
    assert s0.device == DEV
    _same(s0, x0)
    rng = np.random.default_rng(1)
    x = (x0 + 0.3 * rng.standard_normal(host.dim)).astype(dtype)
    xs = _dev(x)
    batch = np.array([0, 3, 3, M - 1, 7, 2], dtype=np.int64)
    bs = _dev(batch)

    _same(strict.loss(xs), host.loss(x))
    _same(strict.loss(xs, bs), host.loss(x, batch))
    for got, want in [(strict.grad(xs), host.grad(x)), (strict.grad(xs, bs), host.grad(x, batch))]:
        assert got.device == DEV
        _same(got, want)
    _same(strict.regulariser(xs), host.regulariser(x))
    _same(strict.objective(xs), host.objective(x))
    prox = strict.prox(xs, 0.7)
    assert prox.device == DEV
    _same(prox, host.prox(x, 0.7))
    if hasattr(host, "predict"):
        _same(strict.predict(xs), host.predict(x))
    assert strict.smoothness() == host.smoothness()


def test_mlp_local_smoothness_matches_numpy():
    host, strict = _pair("mlp", np.float64, l1=0.0)
    x = host.initial_point()
    got = strict.local_smoothness(_dev(x), iters=3)
    np.testing.assert_allclose(got, host.local_smoothness(x, iters=3), rtol=1e-9)


def test_integer_and_column_inputs_on_device():
    A, b = _data("least_squares", np.float64)
    Ai = np.rint(3 * A).astype(np.int64)
    host = make_problem("least_squares", Ai, b[:, None])
    strict = make_problem("least_squares", _dev(Ai), _dev(b[:, None]))
    assert strict.A.dtype == xps.float64 and strict.b.shape == (M,)
    x = np.linspace(-1, 1, D)
    _same(strict.grad(_dev(x)), host.grad(x))


def test_errors_on_device_name_the_first_bad_entry():
    A, b = _data("least_squares", np.float64)
    A[4, 2] = np.nan
    with pytest.raises(ValueError, match=r"\(4, 2\)"):
        make_problem("least_squares", _dev(A), _dev(b))
    A[4, 2] = 0.0
    b[5] = np.inf
    with pytest.raises(ValueError, match="first at index 5"):
        make_problem("least_squares", _dev(A), _dev(b))
    b[5] = 0.0
    p = make_problem("least_squares", _dev(A), _dev(b))
    x = _dev(np.zeros(D))
    with pytest.raises(IndexError, match="0..29"):
        p.grad(x, _dev(np.array([0, M])))
    with pytest.raises(TypeError, match="integer"):
        p.grad(x, _dev(np.array([0.0, 1.0])))
    with pytest.raises(ValueError, match="labels in"):
        make_problem("logistic", _dev(A), _dev(np.arange(M) % 2))
    with pytest.raises(TypeError, match="real numbers"):
        make_problem("least_squares", _dev(A.astype(np.complex128)), _dev(b))


def test_a_planted_host_round_trip_is_caught(monkeypatch):
    """A problem that converts to NumPy implicitly fails on the strict device: the tests above
    would catch such a bug."""
    host, strict = _pair("logistic", np.float64)
    x = np.zeros(host.dim)
    original = LogisticRegression._data_grad

    def leaky(self, x, rows):
        np.asarray(x)  # the planted bug: an implicit host copy
        return original(self, x, rows)

    monkeypatch.setattr(LogisticRegression, "_data_grad", leaky)
    host.grad(x)  # harmless on the host ...
    with pytest.raises((RuntimeError, TypeError, ValueError)):
        strict.grad(_dev(x))  # ... refused on the device
    assert to_host(_dev(x)).shape == (host.dim,)  # the explicit copy is allowed
