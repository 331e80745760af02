"""Data sets: the LIBSVM reader, bundled and synthetic data, sharding, test splits."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.sparse as sp

from mpicomp.problems.data import (
    DENSE_THRESHOLD,
    Dataset,
    block_bounds,
    load,
    load_libsvm,
    load_split,
    make_synthetic,
    shard,
    shard_indices,
    standardize,
    train_test_split,
)
from mpicomp.problems.libsvm import read_libsvm

# ------------------------------------------------------------------------------------------
# LIBSVM reader
# ------------------------------------------------------------------------------------------
HAND_WRITTEN = """\
# a header comment
+1 1:0.5 3:-2 6:1e-3
-1 2:4   # trailing comment

-1 qid:7 1:1.25 6:3
+1
"""
HAND_DENSE = np.array([
    [0.5, 0.0, -2.0, 0.0, 0.0, 1e-3],
    [0.0, 4.0, 0.0, 0.0, 0.0, 0.0],
    [1.25, 0.0, 0.0, 0.0, 0.0, 3.0],
    [0.0, 0.0, 0.0, 0.0, 0.0, 0.0],
])
HAND_LABELS = np.array([1.0, -1.0, -1.0, 1.0])


def write(tmp_path, text, name="file.txt"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_hand_written_file_parses_exactly(tmp_path):
    A, y = read_libsvm(write(tmp_path, HAND_WRITTEN))
    assert sp.isspmatrix_csr(A) and A.dtype == np.float64 and A.has_sorted_indices
    assert A.shape == (4, 6)
    np.testing.assert_array_equal(A.toarray(), HAND_DENSE)
    np.testing.assert_array_equal(A.indptr, [0, 3, 4, 6, 6])   # stored entries, no padding
    np.testing.assert_array_equal(y, HAND_LABELS)


def test_zero_based_and_n_features(tmp_path):
    text = "1 0:1 2:3\n0 1:-1\n"
    A, y = read_libsvm(write(tmp_path, text), zero_based=True)
    np.testing.assert_array_equal(A.toarray(), [[1, 0, 3], [0, -1, 0]])
    np.testing.assert_array_equal(y, [1.0, 0.0])
    A, _ = read_libsvm(write(tmp_path, text), zero_based=True, n_features=5)
    assert A.shape == (2, 5)
    # The same text read 1-based: index 0 is an error that suggests zero_based=True.
    with pytest.raises(ValueError, match=r"file\.txt:1:.*'0:1'.*zero_based=True"):
        read_libsvm(write(tmp_path, text))


@pytest.mark.parametrize("text, line, fragment", [
    ("1 1:2\n1 1:2 3\n", 2, "malformed token '3'"),
    ("1 1:2\n\n1 1:2 :3\n", 3, "malformed token ':3'"),
    ("1 1:2\n1 2:\n", 2, "malformed token '2:'"),
    ("1 1:2\n1 1:2:3\n", 2, "'1:2:3'"),
    ("1 1:x\n", 1, "value 'x' in token '1:x' is not a finite number"),
    ("1 1:nan\n", 1, "value 'nan'"),
    ("# c\nabc 1:2\n", 2, "label 'abc' is not a finite number"),
    ("1 a:2\n", 1, "feature index 'a' in token 'a:2' is not an integer"),
    ("1 1:2\n1 2:1 5:1 5:2\n", 2, "duplicate feature index 5 in token '5:2'"),
    ("1 1:2\n1 1:1\n-1 4:1 2:1\n", 3, "decreasing feature index 2 in token '2:1'"),
    ("1 -3:1\n", 1, "feature index -3 in token '-3:1' is below 1"),
    ("1 qid:x 1:1\n", 1, "malformed qid token 'qid:x'"),
])
def test_malformed_lines_name_file_and_line(tmp_path, text, line, fragment):
    with pytest.raises(ValueError) as info:
        read_libsvm(write(tmp_path, text))
    message = str(info.value)
    assert f"file.txt:{line}:" in message, message
    assert fragment in message, message


def test_index_out_of_range_names_file_and_line(tmp_path):
    path = write(tmp_path, "1 1:1 4:2\n-1 3:1 5:1\n")
    A, _ = read_libsvm(path)               # width inferred: fine
    assert A.shape == (2, 5)
    with pytest.raises(ValueError) as info:
        read_libsvm(path, n_features=4)
    message = str(info.value)
    assert "file.txt:2:" in message and "'5:1'" in message and "n_features=4" in message
    with pytest.raises(ValueError, match=r"file\.txt:1:.*'4:2'"):
        read_libsvm(path, n_features=3)


@pytest.mark.parametrize("text, fragment", [("", "empty"), ("# only\n\n   \n", "all 3 lines")])
def test_empty_file_is_an_error(tmp_path, text, fragment):
    with pytest.raises(ValueError, match=rf"file\.txt: no samples.*{fragment}"):
        read_libsvm(write(tmp_path, text))


def test_density_rule_and_forcing(tmp_path):
    # 4 x 4 with 3 entries (density 3/16 < 0.25) stays CSR; with 4 entries (0.25) densifies.
    sparse_path = write(tmp_path, "1 1:1\n1 2:1\n1 3:1\n1\n", "sparse.txt")
    dense_path = write(tmp_path, "1 1:1\n1 2:1\n1 3:1\n1 4:1\n", "dense.txt")
    assert 3 / 16 < DENSE_THRESHOLD <= 4 / 16
    assert sp.issparse(load_libsvm(sparse_path, n_features=4).A)
    dense = load_libsvm(dense_path).A
    assert isinstance(dense, np.ndarray) and dense.dtype == np.float64
    np.testing.assert_array_equal(dense, np.eye(4))
    assert isinstance(load_libsvm(sparse_path, n_features=4, dense=True).A, np.ndarray)
    assert sp.issparse(load_libsvm(dense_path, dense=False).A)


def test_label_mapping_only_when_asked(tmp_path):
    path = write(tmp_path, "2 1:1\n1 2:1\n2 3:1\n")
    kept = load_libsvm(path)
    assert kept.task == "regression"
    np.testing.assert_array_equal(kept.y, [2.0, 1.0, 2.0])
    binary = load_libsvm(path, task="binary")
    np.testing.assert_array_equal(binary.y, [1.0, -1.0, 1.0])
    np.testing.assert_array_equal(binary.meta["classes"], [1.0, 2.0])
    multi = load_libsvm(path, task="multiclass")
    np.testing.assert_array_equal(multi.y, [1, 0, 1])
    assert multi.y.dtype == np.int64
    assert load_libsvm(write(tmp_path, "-1 1:1\n1 1:2\n", "pm.txt")).task == "binary"
    with pytest.raises(ValueError, match="exactly 2 distinct labels"):
        load_libsvm(write(tmp_path, "0 1:1\n1 1:1\n2 1:1\n", "three.txt"), task="binary")


@pytest.mark.parametrize("zero_based", [False, True])
def test_round_trip_random_sparse_matrix(tmp_path, zero_based):
    rng = np.random.default_rng(5)
    M = sp.random(300, 40, density=0.1, format="csr", random_state=7)
    M.data = rng.standard_normal(M.nnz) * 10.0 ** rng.integers(-8, 8, M.nnz)
    y = rng.standard_normal(300)
    base = 0 if zero_based else 1
    lines = []
    for r in range(M.shape[0]):
        lo, hi = M.indptr[r], M.indptr[r + 1]
        pairs = " ".join(f"{c + base}:{float(v)!r}"
                         for c, v in zip(M.indices[lo:hi], M.data[lo:hi]))
        lines.append(f"{float(y[r])!r} {pairs}")
    path = write(tmp_path, "\n".join(lines) + "\n")
    A, yy = read_libsvm(path, n_features=40, zero_based=zero_based)
    assert A.shape == M.shape
    np.testing.assert_array_equal(A.indptr, M.indptr)
    np.testing.assert_array_equal(A.indices, M.indices)
    np.testing.assert_array_equal(A.data, M.data)     # exact: repr round-trips float64
    np.testing.assert_array_equal(yy, y)


def test_libsvm_spec_path_may_contain_colon_and_comma(tmp_path):
    folder = tmp_path / "a:b,c=1"
    folder.mkdir()
    path = folder / "x.svm"
    path.write_text("1 1:1 2:2\n-1 2:3\n")
    ds = load(f"libsvm:{path}")
    np.testing.assert_array_equal(ds.A.toarray() if ds.sparse else ds.A, [[1, 2], [0, 3]])
    assert ds.task == "binary" and ds.name == f"libsvm:{path}"


# ------------------------------------------------------------------------------------------
# Spec strings
# ------------------------------------------------------------------------------------------
def test_spec_parsing_and_errors():
    ds = load("synthetic:least_squares,n=120,d=7,h=0.5,seed=3,groups=4")
    assert (ds.n_samples, ds.n_features, ds.task) == (120, 7, "regression")
    assert ds.meta["groups"] == 4 and ds.meta["heterogeneity"] == 0.5
    assert load("synthetic").task == "binary"
    # The spec wins over the keyword default; the keyword fills in what the spec leaves out.
    a = load("synthetic:logistic,n=50,d=3,seed=1", seed=9)
    b = load("synthetic:logistic,n=50,d=3", seed=1)
    np.testing.assert_array_equal(a.A, b.A)
    with pytest.raises(ValueError, match="breast_cancer.*digits.*libsvm:PATH"):
        load("mnist")
    with pytest.raises(ValueError, match="unknown synthetic kind 'ridge'.*least_squares"):
        load("synthetic:ridge")
    with pytest.raises(ValueError, match="synthetic: unknown key 'm'; valid keys"):
        load("synthetic:logistic,m=5")
    with pytest.raises(ValueError, match="needs a path"):
        load("libsvm:")
    with pytest.raises(FileNotFoundError):
        load("libsvm:/nonexistent/file.txt")


# ------------------------------------------------------------------------------------------
# Sharding and splitting
# ------------------------------------------------------------------------------------------
def small_dataset(n=23, sparse=False):
    rng = np.random.default_rng(0)
    A = np.arange(n * 3, dtype=np.float64).reshape(n, 3)
    y = rng.integers(0, 4, n).astype(np.int64)
    return Dataset(sp.csr_matrix(A) if sparse else A, y, "small", "multiclass")


@pytest.mark.parametrize("size", [1, 3, 4, 7, 23])
@pytest.mark.parametrize("sparse", [False, True])
def test_contiguous_shards_concatenate_to_the_data(size, sparse):
    ds = small_dataset(sparse=sparse)
    parts = [shard(ds, r, size, "contiguous") for r in range(size)]
    stack = sp.vstack if sparse else np.vstack
    A = stack([p.A for p in parts])
    np.testing.assert_array_equal(A.toarray() if sparse else A, ds.A.toarray() if sparse else ds.A)
    np.testing.assert_array_equal(np.concatenate([p.y for p in parts]), ds.y)
    sizes = [p.n_samples for p in parts]
    assert max(sizes) - min(sizes) <= 1 and sum(sizes) == ds.n_samples


@pytest.mark.parametrize("size", [2, 5, 23])
def test_shuffled_shards_are_a_partition(size):
    ds = small_dataset()
    rows = [shard_indices(ds.n_samples, r, size, "shuffled", seed=4) for r in range(size)]
    allrows = np.concatenate(rows)
    np.testing.assert_array_equal(np.sort(allrows), np.arange(ds.n_samples))
    assert not np.array_equal(allrows, np.arange(ds.n_samples))       # actually shuffled
    sizes = [len(r) for r in rows]
    assert max(sizes) - min(sizes) <= 1
    # A pure function of its arguments: the same on every call (every rank), seed matters.
    again = [shard_indices(ds.n_samples, r, size, "shuffled", seed=4) for r in range(size)]
    assert all(np.array_equal(a, b) for a, b in zip(rows, again))
    other = np.concatenate([shard_indices(ds.n_samples, r, size, "shuffled", seed=5)
                            for r in range(size)])
    assert not np.array_equal(other, allrows)
    part = shard(ds, 1, size, "shuffled", seed=4)
    np.testing.assert_array_equal(part.A, ds.A[rows[1]])
    np.testing.assert_array_equal(part.meta["indices"], rows[1])


@pytest.mark.parametrize("size", [2, 4, 8])
def test_label_shards_are_non_iid(size):
    ds = make_synthetic("multiclass", n_samples=400, n_features=5, classes=4, seed=2)
    parts = [shard(ds, r, size, "label") for r in range(size)]
    np.testing.assert_array_equal(np.sort(np.concatenate([p.meta["indices"] for p in parts])),
                                  np.arange(400))
    shard_size = min(p.n_samples for p in parts)
    for label in range(4):
        holders = [r for r, p in enumerate(parts) if (p.y == label).any()]
        count = int((ds.y == label).sum())
        # Consecutive ranks, and no more of them than a contiguous run of count rows can touch.
        assert holders == list(range(holders[0], holders[-1] + 1))
        assert len(holders) <= math.ceil(count / shard_size) + 1
    # Each rank's labels are sorted and ranks' label ranges do not interleave.
    for p, q in zip(parts, parts[1:]):
        assert np.all(np.diff(p.y) >= 0) and p.y.max() <= q.y.min()


def test_sharding_errors():
    ds = small_dataset(n=5)
    with pytest.raises(ValueError, match="cannot shard 5 samples over 6 ranks"):
        shard(ds, 0, 6)
    with pytest.raises(ValueError, match="rank must be in 0..2"):
        shard(ds, 3, 3)
    with pytest.raises(ValueError, match="unknown sharding 'random'.*contiguous, shuffled, label"):
        shard(ds, 0, 2, "random")


def test_train_test_split_is_deterministic_partition():
    ds = small_dataset(n=50)
    train, test = train_test_split(ds, 0.2, seed=1)
    assert (train.n_samples, test.n_samples) == (40, 10)
    both = np.concatenate([train.meta["indices"], test.meta["indices"]])
    np.testing.assert_array_equal(np.sort(both), np.arange(50))
    np.testing.assert_array_equal(test.A, ds.A[test.meta["indices"]])
    again, _ = train_test_split(ds, 0.2, seed=1)
    np.testing.assert_array_equal(again.meta["indices"], train.meta["indices"])
    other, _ = train_test_split(ds, 0.2, seed=2)
    assert not np.array_equal(other.meta["indices"], train.meta["indices"])
    # Shards of a split record rows of the original data set.
    part = shard(train, 1, 4)
    np.testing.assert_array_equal(part.A, ds.A[part.meta["indices"]])
    for bad in (0.0, 1.0, 0.001):
        with pytest.raises(ValueError, match="test_fraction"):
            train_test_split(ds, bad)


def test_block_bounds_matches_array_split():
    for n, parts in [(10, 3), (7, 7), (100, 8), (5, 1)]:
        expected = np.array_split(np.arange(n), parts)
        for k in range(parts):
            lo, hi = block_bounds(n, parts, k)
            np.testing.assert_array_equal(np.arange(lo, hi), expected[k])


# ------------------------------------------------------------------------------------------
# Synthetic data
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["logistic", "least_squares", "multiclass"])
def test_synthetic_deterministic_per_seed(kind):
    a = make_synthetic(kind, n_samples=200, n_features=6, heterogeneity=1.0, groups=3, seed=11)
    b = make_synthetic(kind, n_samples=200, n_features=6, heterogeneity=1.0, groups=3, seed=11)
    c = make_synthetic(kind, n_samples=200, n_features=6, heterogeneity=1.0, groups=3, seed=12)
    np.testing.assert_array_equal(a.A, b.A)
    np.testing.assert_array_equal(a.y, b.y)
    assert not np.array_equal(a.A, c.A)
    # h = 0: the data do not depend on the number of groups (one i.i.d. sample).
    g1 = make_synthetic(kind, n_samples=200, n_features=6, groups=1, seed=11)
    g4 = make_synthetic(kind, n_samples=200, n_features=6, groups=4, seed=11)
    np.testing.assert_array_equal(g1.A, g4.A)
    np.testing.assert_array_equal(g1.y, g4.y)
    if kind == "logistic":
        assert set(np.unique(a.y)) == {-1.0, 1.0}
    if kind == "multiclass":
        assert a.y.dtype == np.int64 and set(np.unique(a.y)) <= {0, 1, 2}


def test_sparse_planted_model():
    ds = make_synthetic("logistic", n_samples=50, n_features=40, density=0.1, seed=0)
    x = ds.meta["x_true"]
    assert np.count_nonzero(x) == 4 and math.isclose(np.linalg.norm(x), 4.0)


def _shard_stats(ds, size):
    """Largest distance of a shard's feature mean to the global one, and the spread (max − min)
    of per-shard label means."""
    parts = [shard(ds, r, size) for r in range(size)]
    mu = ds.A.mean(axis=0)
    feat = max(np.linalg.norm(p.A.mean(axis=0) - mu) for p in parts)
    lab = [p.y.mean() for p in parts]
    return feat, max(lab) - min(lab)


def test_heterogeneity_knob_moves_shards_apart():
    # 4 shards of 1000 samples in d = 20. Under h = 0 a shard's feature mean is off the global
    # one by about sqrt(d / 1000) ≈ 0.14 and per-shard means of ±1 labels by about 0.03 each;
    # with h = 3 each shard's mean moves by ≈ h = 3 and its planted model by ≈ 3‖x_true‖.
    common = dict(n_samples=4000, n_features=20, groups=4, seed=3)
    iid = make_synthetic("logistic", heterogeneity=0.0, **common)
    het = make_synthetic("logistic", heterogeneity=3.0, **common)
    feat0, lab0 = _shard_stats(iid, 4)
    feat3, lab3 = _shard_stats(het, 4)
    assert feat0 < 0.35 and lab0 < 0.15
    assert feat3 > 1.5 and lab3 > 0.3
    # Local optima: least-squares fits on each shard agree under h = 0 and disagree under h = 3.
    def spread(h):
        ds = make_synthetic("least_squares", heterogeneity=h, noise=0.1, **common)
        fits = [np.linalg.lstsq(p.A, p.y, rcond=None)[0]
                for p in (shard(ds, r, 4) for r in range(4))]
        x_true = ds.meta["x_true"]
        return max(np.linalg.norm(f - x_true) for f in fits) / np.linalg.norm(x_true)
    assert spread(0.0) < 0.02
    assert spread(3.0) > 1.0


def test_synthetic_parameter_errors():
    with pytest.raises(ValueError, match="heterogeneity"):
        make_synthetic(heterogeneity=-1)
    with pytest.raises(ValueError, match="density"):
        make_synthetic(density=0)
    with pytest.raises(ValueError, match="n_samples"):
        load("synthetic:logistic,n=abc")


# ------------------------------------------------------------------------------------------
# Bundled real data
# ------------------------------------------------------------------------------------------
def _assert_standardised(A, constant=None):
    mean, std = A.mean(axis=0), A.std(axis=0)
    varying = std > 0 if constant is None else ~constant
    np.testing.assert_allclose(mean, 0.0, atol=1e-9)
    np.testing.assert_allclose(std[varying], 1.0, atol=1e-9)


def test_breast_cancer():
    pytest.importorskip("sklearn")
    ds = load("breast_cancer")
    assert ds.A.shape == (569, 30) and ds.task == "binary" and isinstance(ds.A, np.ndarray)
    assert set(np.unique(ds.y)) == {-1.0, 1.0}
    assert int((ds.y == 1).sum()) == 357                   # benign
    _assert_standardised(ds.A)
    assert np.all(ds.A.std(axis=0) > 0.5)                   # no column left unscaled


def test_digits_and_split_standardised_on_training_part():
    pytest.importorskip("sklearn")
    ds = load("digits")
    assert ds.A.shape == (1797, 64) and ds.task == "multiclass" and ds.n_classes == 10
    np.testing.assert_array_equal(np.unique(ds.y), np.arange(10))
    _assert_standardised(ds.A)
    binary = load("digits:binary")
    assert set(np.unique(binary.y)) == {-1.0, 1.0}
    np.testing.assert_array_equal(binary.y == 1, ds.y % 2 == 0)
    train, test = load_split("breast_cancer", 0.25, split_seed=0)
    assert (train.n_samples, test.n_samples) == (427, 142)
    _assert_standardised(train.A)
    # The test part uses the training statistics, so it is not itself exactly standardised.
    assert np.abs(test.A.mean(axis=0)).max() > 1e-3


def test_standardize_refuses_sparse():
    ds = Dataset(sp.csr_matrix(np.eye(3)), np.zeros(3), "s", "regression")
    with pytest.raises(TypeError, match="sparse"):
        standardize(ds)


def test_missing_sklearn_message(monkeypatch):
    import builtins
    real_import = builtins.__import__

    def fake_import(name, *args, **kwargs):
        if name.startswith("sklearn"):
            raise ImportError("no sklearn")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", fake_import)
    with pytest.raises(ImportError, match="pip install scikit-learn"):
        load("digits")
