"""Problems (SPEC §4).

Gradients, minibatches, smoothness bounds, prox, reference optimum, errors.
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.optimize as so
import scipy.sparse as sp

from mpicomp.problems import (
    MLP,
    LeastSquares,
    LogisticRegression,
    SoftmaxRegression,
    make_problem,
    reference_optimum,
    solve_reference,
)
from mpicomp.problems.spectral import lambda_max_gram

M, D, C, H = 40, 7, 3, 4


def _data(kind: str, sparse: bool, seed: int = 0):
    rng = np.random.default_rng(seed)
    A = rng.standard_normal((M, D))
    if sparse:
        A = sp.csr_matrix(A * (rng.random((M, D)) < 0.4))
    if kind == "logistic":
        b = np.where(rng.random(M) < 0.5, -1.0, 1.0)
    elif kind == "least_squares":
        b = rng.standard_normal(M)
    else:
        b = rng.integers(0, C, M)
    return A, b


def _build(kind: str, sparse: bool = False, l1: float = 0.0, l2: float = 0.0, seed: int = 0):
    A, b = _data(kind, sparse, seed)
    extra = {"n_classes": C} if kind in ("softmax", "mlp") else {}
    if kind == "mlp":
        extra["hidden"] = H
    return make_problem(kind, A, b, l1=l1, l2=l2, **extra)


KINDS = ["logistic", "least_squares", "softmax", "mlp"]
CONVEX = ["logistic", "least_squares", "softmax"]


def _fd_grad(f, x, h=1e-6):
    g = np.empty_like(x)
    for i in range(x.size):
        e = np.zeros_like(x)
        e[i] = h
        g[i] = (f(x + e) - f(x - e)) / (2 * h)
    return g


def _rel(a, b):
    return np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-12)


# -- gradients ------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("sparse", [False, True])
@pytest.mark.parametrize("l2", [0.0, 0.3])
def test_gradient_matches_central_differences(kind, sparse, l2):
    p = _build(kind, sparse, l2=l2)
    rng = np.random.default_rng(1)
    for _ in range(3):
        x = rng.standard_normal(p.dim)
        assert _rel(p.grad(x), _fd_grad(p.loss, x)) < 1e-6
    batch = rng.integers(0, M, 9)
    assert _rel(p.grad(x, batch), _fd_grad(lambda z: p.loss(z, batch), x)) < 1e-6


@pytest.mark.parametrize("kind", KINDS)
def test_sparse_and_dense_data_give_the_same_values(kind):
    ps, pd = _build(kind, sparse=True, l2=0.1), None
    pd = make_problem(kind, ps.A.toarray(), ps.b, **ps.hyperparameters())
    x = np.random.default_rng(2).standard_normal(ps.dim)
    assert ps.loss(x) == pytest.approx(pd.loss(x), rel=1e-13)
    np.testing.assert_allclose(ps.grad(x), pd.grad(x), rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("kind", KINDS)
def test_l2_term_is_in_loss_and_grad(kind):
    p0, p2 = _build(kind, l2=0.0), _build(kind, l2=0.7)
    x = np.random.default_rng(3).standard_normal(p0.dim)
    assert p2.loss(x) - p0.loss(x) == pytest.approx(0.35 * x @ x, rel=1e-12)
    np.testing.assert_allclose(p2.grad(x) - p0.grad(x), 0.7 * x, rtol=1e-10, atol=1e-13)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("sparse", [False, True])
def test_minibatch_gradients_average_to_the_full_gradient(kind, sparse):
    p = _build(kind, sparse, l2=0.2)
    rng = np.random.default_rng(4)
    x = rng.standard_normal(p.dim)
    full = p.grad(x)
    np.testing.assert_allclose(p.grad(x, np.arange(M)), full, rtol=1e-12, atol=1e-14)
    parts = np.split(rng.permutation(M), 5)  # 5 equal batches of 8
    mean = sum(p.grad(x, part) for part in parts) / len(parts)
    np.testing.assert_allclose(mean, full, rtol=1e-11, atol=1e-13)
    # a one-sample batch is that sample's gradient: the mean of all of them is the full one
    singles = sum(p.grad(x, np.array([j])) for j in range(M)) / M
    np.testing.assert_allclose(singles, full, rtol=1e-11, atol=1e-13)


def test_bad_batches_are_rejected():
    p = _build("logistic")
    x = np.zeros(p.dim)
    with pytest.raises(IndexError, match="0..39"):
        p.grad(x, np.array([0, M]))
    with pytest.raises(IndexError):
        p.grad(x, np.array([-1]))
    with pytest.raises(ValueError, match="non-empty"):
        p.grad(x, np.array([], dtype=int))
    with pytest.raises(TypeError, match="integer"):
        p.grad(x, np.array([0.5]))


# -- smoothness -----------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", CONVEX)
@pytest.mark.parametrize("sparse", [False, True])
def test_smoothness_bound_holds_on_random_pairs(kind, sparse):
    p = _build(kind, sparse, l2=0.05)
    L = p.smoothness()
    rng = np.random.default_rng(5)
    worst = 0.0
    for _ in range(50):
        x, y = rng.standard_normal((2, p.dim)) * rng.choice([0.1, 1.0, 5.0])
        ratio = np.linalg.norm(p.grad(x) - p.grad(y)) / np.linalg.norm(x - y)
        worst = max(worst, ratio)
    assert worst <= L * (1 + 1e-12)
    assert worst >= 0.05 * L  # not absurdly loose


def _top_eigvec(A):
    A = A.toarray() if sp.issparse(A) else A
    w, V = np.linalg.eigh(A.T @ A)
    return w[-1], V[:, -1]


@pytest.mark.parametrize("sparse", [False, True])
def test_least_squares_smoothness_is_attained_on_the_top_eigenvector(sparse):
    p = _build("least_squares", sparse, l2=0.25)
    lam, u = _top_eigvec(p.A)
    assert p.smoothness() == pytest.approx(lam / M + 0.25, rel=1e-12)
    x = np.random.default_rng(6).standard_normal(D)
    ratio = np.linalg.norm(p.grad(x + 3 * u) - p.grad(x)) / 3
    assert ratio == pytest.approx(p.smoothness(), rel=1e-10)


def test_logistic_smoothness_is_the_curvature_at_zero_margin():
    p = _build("logistic", l2=0.0)
    lam, u = _top_eigvec(p.A)
    assert p.smoothness() == pytest.approx(lam / (4 * M), rel=1e-12)
    t = 1e-4  # σ'(0) = 1/4: at x = 0 the curvature along u is λ_max/(4m) up to O(t²)
    ratio = np.linalg.norm(p.grad(t * u) - p.grad(-t * u)) / (2 * t)
    assert ratio <= p.smoothness()
    assert ratio == pytest.approx(p.smoothness(), rel=1e-6)


def test_softmax_smoothness_is_attained_for_two_classes():
    A, _ = _data("softmax", False)
    b = np.random.default_rng(7).integers(0, 2, M)
    p = SoftmaxRegression(A, b, n_classes=2)
    lam, u = _top_eigvec(A)
    assert p.smoothness() == pytest.approx(lam / (2 * M), rel=1e-12)
    v = np.outer(u, [1.0, -1.0]).ravel() / np.sqrt(2)  # W = u ⊗ (1, −1)/√2
    t = 1e-4
    ratio = np.linalg.norm(p.grad(t * v) - p.grad(-t * v)) / (2 * t)
    assert ratio <= p.smoothness()
    assert ratio == pytest.approx(p.smoothness(), rel=1e-6)


def test_lanczos_bound_matches_the_exact_eigenvalue():
    A = sp.random(300, 120, density=0.05, random_state=3, format="csr")
    exact = lambda_max_gram(A)
    assert exact == pytest.approx(np.linalg.eigvalsh((A.T @ A).toarray())[-1], rel=1e-12)
    approx = lambda_max_gram(A, exact_max_dim=0)  # force the iterative path
    assert exact <= approx <= exact * (1 + 1e-7)
    dense = lambda_max_gram(A.toarray(), exact_max_dim=0)
    assert exact <= dense <= exact * (1 + 1e-7)


def test_mlp_has_no_global_smoothness_but_a_local_estimate():
    p = _build("mlp")
    assert p.smoothness() is None
    x = p.initial_point()
    est = p.local_smoothness(x)
    assert np.isfinite(est) and est > 0
    np.testing.assert_array_equal(x, p.initial_point())  # same default on every rank


# -- numerics -------------------------------------------------------------------------------------
@np.errstate(over="raise", invalid="raise", divide="raise")  # no overflow on the way either
def test_logistic_stays_finite_for_huge_margins():
    A, b = _data("logistic", False)
    p = LogisticRegression(A, b)
    x = np.random.default_rng(8).standard_normal(D)
    x *= 1e4 / np.abs(A @ x).min()  # every |a·x| >= 1e4
    t = b * (A @ x)
    expected = np.maximum(-t, 0).mean()  # log(1 + e^{-t}) = max(-t, 0) to round-off here
    assert np.isfinite(p.loss(x))
    assert p.loss(x) == pytest.approx(expected, rel=1e-12)
    g = p.grad(x)
    assert np.all(np.isfinite(g))
    np.testing.assert_allclose(g, -(A.T @ (b * (t < 0))) / M, rtol=1e-12, atol=1e-300)
    assert p.loss(-x) == pytest.approx(np.maximum(t, 0).mean(), rel=1e-12)


@np.errstate(over="raise", invalid="raise", divide="raise")
def test_softmax_and_mlp_stay_finite_for_huge_logits():
    p = _build("softmax")
    x = 1e5 * np.random.default_rng(9).standard_normal(p.dim)
    assert np.isfinite(p.loss(x)) and np.all(np.isfinite(p.grad(x)))
    q = _build("mlp")
    z = 1e5 * np.random.default_rng(9).standard_normal(q.dim)
    assert np.isfinite(q.loss(z)) and np.all(np.isfinite(q.grad(z)))


def test_prox_is_the_soft_threshold_with_exact_zeros():
    p = _build("least_squares", l1=0.5)
    rng = np.random.default_rng(10)
    z = rng.standard_normal(1000)
    step = 0.8
    out = p.prox(z, step)
    np.testing.assert_array_equal(out, np.sign(z) * np.maximum(np.abs(z) - 0.4, 0))
    small = np.abs(z) <= 0.4
    assert small.any() and np.all(out[small] == 0.0)
    np.testing.assert_allclose(out[~small], z[~small] - 0.4 * np.sign(z[~small]), rtol=0, atol=0)
    np.testing.assert_array_equal(p.prox(z, 0.0), z)
    assert p.regulariser(z) == pytest.approx(0.5 * np.abs(z).sum(), rel=1e-14)
    assert p.objective(out[:D]) == pytest.approx(p.loss(out[:D]) + p.regulariser(out[:D]))
    np.testing.assert_array_equal(_build("least_squares").prox(z, 3.0), z)  # λ1 = 0
    with pytest.raises(ValueError, match="step"):
        p.prox(z, -1.0)


# -- reference optimum ----------------------------------------------------------------------------
@pytest.mark.parametrize("sparse", [False, True])
def test_reference_optimum_of_logistic_regression_has_zero_gradient(sparse):
    p = _build("logistic", sparse, l2=1e-3)
    x_star, f_star = reference_optimum(p)
    assert np.linalg.norm(p.grad(x_star)) < 1e-8
    assert f_star == pytest.approx(p.loss(x_star), rel=1e-14)
    rng = np.random.default_rng(11)
    assert all(p.loss(x_star + 1e-3 * rng.standard_normal(D)) > f_star for _ in range(10))


def test_reference_optimum_of_softmax_has_zero_gradient():
    p = _build("softmax", l2=1e-2)
    x_star, _ = reference_optimum(p)
    assert np.linalg.norm(p.grad(x_star)) < 1e-8


def _lasso_optimality(p, x, tol=1e-8):
    g = p.grad(x)
    zero = x == 0
    assert np.all(np.abs(g[zero]) <= p.l1 + tol)
    np.testing.assert_allclose(g[~zero], -p.l1 * np.sign(x[~zero]), rtol=0, atol=tol)


def _coordinate_descent_lasso(A, b, l1, l2, sweeps=5000):
    """Independent solver: cyclic exact coordinate minimisation of (1/2m)‖Ax−b‖² + ... ."""
    m = A.shape[0]
    x = np.zeros(A.shape[1])
    r = b - A @ x
    col_sq = (A * A).sum(axis=0) / m
    for _ in range(sweeps):
        x_old = x.copy()
        for j in range(A.shape[1]):
            rho = A[:, j] @ r / m + col_sq[j] * x[j]
            new = np.sign(rho) * max(abs(rho) - l1, 0.0) / (col_sq[j] + l2)
            r += A[:, j] * (x[j] - new)
            x[j] = new
        if np.max(np.abs(x - x_old)) < 1e-15:
            break
    return x


@pytest.mark.parametrize("sparse", [False, True])
def test_lasso_reference_satisfies_optimality_and_matches_coordinate_descent(sparse):
    rng = np.random.default_rng(12)
    A = rng.standard_normal((60, 15))
    if sparse:
        A = A * (rng.random(A.shape) < 0.5)
    x_true = rng.standard_normal(15) * (rng.random(15) < 0.3)
    b = A @ x_true + 0.1 * rng.standard_normal(60)
    p = LeastSquares(sp.csr_matrix(A) if sparse else A, b, l1=0.15, l2=0.01)
    res = solve_reference(p)
    assert res.converged and res.residual <= 1e-12
    x = res.x
    assert 0 < np.count_nonzero(x == 0) < 15  # exact zeros, and not all of them
    _lasso_optimality(p, x)
    cd = _coordinate_descent_lasso(A, b, 0.15, 0.01)
    np.testing.assert_allclose(x, cd, rtol=0, atol=1e-9)
    np.testing.assert_array_equal(x == 0, cd == 0)
    assert res.f == pytest.approx(p.objective(cd), rel=1e-12)


def test_l1_logistic_reference_matches_a_smooth_split_solve():
    p = _build("logistic", l1=0.05, l2=1e-3)
    x, f = reference_optimum(p)
    _lasso_optimality(p, x)
    assert np.count_nonzero(x == 0) > 0
    # independent: x = u − v with u, v >= 0 and the smooth objective f(u − v) + λ1·Σ(u + v)

    def split(w):
        u, v = w[:D], w[D:]
        g = p.grad(u - v)
        return p.loss(u - v) + p.l1 * w.sum(), np.concatenate([g + p.l1, -g + p.l1])

    out = so.minimize(split, np.zeros(2 * D), jac=True, method="L-BFGS-B",
                      bounds=[(0, None)] * (2 * D), options={"gtol": 1e-14, "ftol": 0})
    np.testing.assert_allclose(x, out.x[:D] - out.x[D:], rtol=0, atol=1e-6)
    assert f <= out.fun + 1e-13


def test_no_reference_for_the_mlp():
    with pytest.raises(ValueError, match="non-convex"):
        reference_optimum(_build("mlp"))


def test_with_data_keeps_the_hyperparameters():
    p = _build("mlp", l1=0.1, l2=0.2)
    A, b = _data("mlp", True, seed=5)
    q = p.with_data(A, b)
    assert (type(q), q.l1, q.l2, q.hidden, q.n_classes, q.dim) == (
        MLP, 0.1, 0.2, H, C, p.dim)


# -- bad input ------------------------------------------------------------------------------------
@pytest.mark.parametrize("labels, shown", [
    ([0, 1], r"\[0\.0, 1\.0\]"), ([-1, 0, 1], r"\[-1\.0, 0\.0, 1\.0\]"),
    ([1, 2, 3], r"\[1\.0, 2\.0, 3\.0\]"),
])
def test_logistic_rejects_labels_that_are_not_plus_minus_one(labels, shown):
    A = np.ones((len(labels), 2))
    with pytest.raises(ValueError, match=r"labels in \{-1, \+1\}; found labels " + shown):
        LogisticRegression(A, np.array(labels, dtype=float))


def test_logistic_accepts_a_shard_with_one_class_only():
    assert LogisticRegression(np.ones((3, 2)), np.ones(3)).n_samples == 3


def test_mismatched_shapes_are_rejected():
    A, b = _data("logistic", False)
    with pytest.raises(ValueError, match="length 40"):
        LogisticRegression(A, b[:-1])
    with pytest.raises(ValueError, match="2-D"):
        LeastSquares(np.ones(5), np.ones(5))
    p = LogisticRegression(A, b)
    with pytest.raises(ValueError, match=r"shape \(7,\)"):
        p.grad(np.zeros(D + 1))
    with pytest.raises(ValueError, match=r"shape \(7,\)"):
        p.loss(np.zeros((D, 1)))


@pytest.mark.parametrize("kw", [{"l1": -0.1}, {"l2": -1e-9}, {"l2": float("nan")},
                                {"l1": float("inf")}])
def test_negative_or_non_finite_regularisation_is_rejected(kw):
    A, b = _data("least_squares", False)
    with pytest.raises(ValueError, match="l1|l2"):
        LeastSquares(A, b, **kw)


def test_nan_in_data_is_rejected():
    A, b = _data("least_squares", False)
    A_bad = A.copy()
    A_bad[3, 2] = np.nan
    with pytest.raises(ValueError, match=r"NaN or Inf \(first at row, column \(3, 2\)\)"):
        LeastSquares(A_bad, b)
    with pytest.raises(ValueError, match=r"NaN or Inf .*\(3, 2\)"):
        LeastSquares(sp.csr_matrix(A_bad), b)
    b_bad = b.copy()
    b_bad[5] = np.inf
    with pytest.raises(ValueError, match="index 5"):
        LeastSquares(A, b_bad)


def test_class_labels_are_checked():
    A, b = _data("softmax", False)
    with pytest.raises(ValueError, match=r"0\.\.1.*out of range: \[2\]"):
        SoftmaxRegression(A, b, n_classes=2)
    with pytest.raises(ValueError, match="non-integer"):
        SoftmaxRegression(A, b + 0.5)
    with pytest.raises(ValueError, match="out of range"):
        MLP(A, b - 1)
    with pytest.raises(ValueError, match="hidden"):
        MLP(A, b, hidden=0)
    with pytest.raises(ValueError, match="unknown problem 'svm'"):
        make_problem("svm", A, b)
