"""`read_part`: each rank's shard (and rank 0's held-out set) is, bit for bit, what loading the
whole set and sharding it gives, while the rank makes or reads only its own rows."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from mpicomp.problems.data import load, load_split, make_synthetic, shard
from mpicomp.problems.libsvm import read_libsvm, read_libsvm_rows, scan_libsvm, write_libsvm
from mpicomp.problems.shards import DataSummary, read_part, scattered


def whole_reference(spec, rank, size, how, seed, test_fraction, **options):
    """(summary, shard, test) the way the driver built them before: whole set, then shard."""
    if test_fraction > 0:
        train, test = load_split(spec, test_fraction, split_seed=seed, seed=seed, groups=size,
                                 **options)
    else:
        train, test = load(spec, seed=seed, groups=size, **options), None
    return DataSummary.of(train), shard(train, rank, size, how=how, seed=seed), test


def same_dataset(got, want):
    assert got.name == want.name and got.task == want.task
    assert got.image_shape == want.image_shape
    assert sp.issparse(got.A) == sp.issparse(want.A)
    if sp.issparse(want.A):
        assert got.A.shape == want.A.shape
        for field in ("data", "indices", "indptr"):
            np.testing.assert_array_equal(getattr(got.A, field), getattr(want.A, field))
        assert got.A.indices.dtype == want.A.indices.dtype
    else:
        assert got.A.dtype == want.A.dtype
        np.testing.assert_array_equal(got.A, want.A)
    assert got.y.dtype == want.y.dtype
    np.testing.assert_array_equal(got.y, want.y)
    np.testing.assert_array_equal(got.meta["indices"], want.meta["indices"])
    assert got.n_classes == want.n_classes


def check_all_ranks(spec, size, how, test_fraction, seed=3, **options):
    for rank in range(size):
        part = read_part(spec, rank, size, how=how, seed=seed, test_fraction=test_fraction,
                         **options)
        summary, mine, test = whole_reference(spec, rank, size, how, seed, test_fraction,
                                              **options)
        assert part.summary == summary
        same_dataset(part.mine, mine)
        if rank == 0 and test is not None:
            same_dataset(part.test, test)
        else:
            assert part.test is None


@pytest.mark.parametrize("kind", ["logistic", "least_squares", "multiclass"])
@pytest.mark.parametrize("how", ["contiguous", "shuffled", "label"])
@pytest.mark.parametrize("test_fraction", [0.0, 0.2])
def test_synthetic_parts_equal_the_whole_set_sharded(kind, how, test_fraction):
    spec = f"synthetic:{kind},n=203,d=17,h=0.7"
    check_all_ranks(spec, 3, how, test_fraction)


def test_synthetic_groups_other_than_ranks():
    check_all_ranks("synthetic:logistic,n=150,d=9,h=1.5,groups=4", 3, "contiguous", 0.0)
    check_all_ranks("synthetic:least_squares,n=150,d=9,h=1,groups=1,density=0.3", 5,
                    "shuffled", 0.1)


def test_synthetic_part_holds_only_its_rows():
    """The memory a rank needs is its rows: the shard is its own array, not a view of more."""
    part = read_part("synthetic:logistic,n=4000,d=8", 1, 4)
    assert part.mine.A.shape == (1000, 8)
    assert part.mine.A.base is None or part.mine.A.base.shape[0] == 1000


def write_file(tmp_path, rng, n=157, d=23, density=0.1, labels=None, gap=False):
    A = sp.random(n, d, density=density, random_state=np.random.RandomState(1), format="csr")
    if gap:  # the last column empty, so the width comes from n_features or the data
        A = A[:, :-1]
    y = labels if labels is not None else rng.choice([-1.0, 1.0], n)
    path = tmp_path / "data.svm"
    write_libsvm(path, A, y)
    with open(path, "a", encoding="utf-8") as fh:  # comments and blank lines count as lines
        fh.write("# trailing comment\n\n")
    return path


@pytest.mark.parametrize("how", ["contiguous", "shuffled", "label"])
@pytest.mark.parametrize("test_fraction", [0.0, 0.25])
def test_libsvm_parts_equal_the_whole_file_sharded(tmp_path, how, test_fraction):
    rng = np.random.default_rng(0)
    path = write_file(tmp_path, rng)
    check_all_ranks(f"libsvm:{path}", 4, how, test_fraction, task="binary")


@pytest.mark.parametrize("options", [{"task": "multiclass"}, {"task": "regression"},
                                     {"task": "multiclass", "dense": True},
                                     {"task": "multiclass", "n_features": 30}])
def test_libsvm_tasks_and_density(tmp_path, options):
    rng = np.random.default_rng(1)
    path = write_file(tmp_path, rng, density=0.4, labels=rng.integers(1, 5, 157).astype(float),
                      gap=True)
    check_all_ranks(f"libsvm:{path}", 3, "contiguous", 0.2, **options)


def test_libsvm_blocks_read_like_one_pass(tmp_path, monkeypatch):
    """Blocks of a few lines give the very matrix, labels and width of one block."""
    from mpicomp.problems import libsvm

    rng = np.random.default_rng(2)
    path = write_file(tmp_path, rng, n=61)
    A, y = read_libsvm(path)
    monkeypatch.setattr(libsvm, "BLOCK_SAMPLES", 5)
    A5, y5 = read_libsvm(path)
    assert (A5 != A).nnz == 0 and A5.indices.dtype == A.indices.dtype
    np.testing.assert_array_equal(y5, y)
    scan = scan_libsvm(path)
    assert scan.n_features == A.shape[1] and scan.nnz == A.nnz
    np.testing.assert_array_equal(scan.labels, y)
    rows = np.array([60, 0, 7, 5, 6, 33])  # any order, across blocks
    got = read_libsvm_rows(path, rows, A.shape[1])
    np.testing.assert_array_equal(got.toarray(), A[rows].toarray())


def test_libsvm_first_error_in_file_order(tmp_path):
    """A bad index order on line 2 is reported before a malformed token on line 4, in whatever
    block each falls."""
    path = tmp_path / "bad.svm"
    path.write_text("1 1:1 2:2\n-1 3:1 2:2\n1 1:1\n1 1:x\n")
    with pytest.raises(ValueError, match=r"bad.svm:2: decreasing feature index 2"):
        read_libsvm(path)
    with pytest.raises(ValueError, match=r"bad.svm:2: decreasing"):
        scan_libsvm(path)


def test_rows_beyond_the_file_are_an_error(tmp_path):
    path = write_file(tmp_path, np.random.default_rng(0), n=10)
    with pytest.raises(ValueError, match="rows up to 12 asked for, but the file has 10 samples"):
        read_libsvm_rows(path, [1, 12], 23)


def test_scattered_sources_give_every_part_on_rank_0():
    pytest.importorskip("sklearn")
    assert scattered("digits") and scattered("breast_cancer") and not scattered("synthetic")
    parts = read_part("digits", 0, 3, how="label", seed=1, test_fraction=0.25)
    assert read_part("digits", 2, 3) is None
    for rank, part in enumerate(parts):
        summary, mine, test = whole_reference("digits", rank, 3, "label", 1, 0.25)
        assert part.summary == summary
        same_dataset(part.mine, mine)
        if rank == 0:
            same_dataset(part.test, test)


def test_summary_of_a_synthetic_set():
    part = read_part("synthetic:multiclass,n=90,d=5,classes=4", 0, 2)
    whole = make_synthetic("multiclass", n_samples=90, n_features=5, classes=4, groups=2, seed=0)
    assert part.summary == DataSummary("synthetic:multiclass,n=90,d=5,classes=4", 90, 5,
                                       "multiclass", 4)
    np.testing.assert_array_equal(part.mine.meta["x_true"], whole.meta["x_true"])
