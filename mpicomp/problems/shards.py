"""One rank's part of a data set, read without holding the whole set (what the driver loads).

`read_part` gives rank ``r`` of ``size`` the same shard (and rank 0 the same held-out set) as
`data.load` / `data.load_split` followed by `data.shard`, bit for bit (rows, labels, names,
indices; a synthetic shard's ``meta`` keeps ``x_true`` but not the groups' models), while a
rank holds only its own rows:

- ``synthetic``: the rows are made where they are needed (`data.synthetic_part`: one group's
  block at a time, so with fewer groups than ranks a rank briefly holds a group's block, the
  whole set for ``groups=1``).
- ``libsvm:PATH``: every rank checks the whole file a block of lines at a time
  (`libsvm.scan_libsvm`: labels, width, entries), then keeps only its rows
  (`libsvm.read_libsvm_rows`).
- the bundled sets and the image sets: rank 0 loads them once and hands each rank its part
  (`scatter_parts`, a collective that follows the agreed read).

What every rank knows of the whole training set is its `DataSummary`.
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np

from .data import (
    _SYNTHETIC_TASKS,
    DENSE_THRESHOLD,
    Dataset,
    _labels_for_task,
    load,
    load_split,
    parse_data_spec,
    shard,
    shard_indices,
    split_rows,
    synthetic_part,
    synthetic_request,
    synthetic_samples,
)

#: the sources read on rank 0 alone and handed out (small bundled sets, image files)
SCATTERED_SOURCES = ("breast_cancer", "digits", "mnist", "cifar10")


@dataclasses.dataclass(frozen=True)
class DataSummary:
    """What every rank knows of the whole training set (no rows)."""

    name: str
    n_samples: int
    n_features: int
    task: str
    n_classes: int | None
    image_shape: tuple[int, int, int] | None = None

    @classmethod
    def of(cls, data: Dataset) -> DataSummary:
        return cls(data.name, data.n_samples, data.n_features, data.task, data.n_classes,
                   data.image_shape)


@dataclasses.dataclass
class Part:
    """A rank's part of a data set.

    Attributes
    ----------
    summary : DataSummary
        The whole training set.
    mine : Dataset
        This rank's shard; ``meta['indices']`` are its rows in the whole data set.
    test : Dataset or None
        The held-out set on rank 0 (None on the other ranks and without a split).
    """

    summary: DataSummary
    mine: Dataset
    test: Dataset | None = None


def scattered(spec: str) -> bool:
    """Whether ``spec`` names a source that rank 0 reads and hands out (`SCATTERED_SOURCES`)."""
    return parse_data_spec(spec)[1] in SCATTERED_SOURCES


def read_part(spec: str, rank: int, size: int, *, how: str = "contiguous", seed: int = 0,
              test_fraction: float = 0.0, **libsvm_options) -> Part | list[Part] | None:
    """Rank ``rank``'s `Part` of the data set ``spec`` (local: no communication).

    For a `scattered` source rank 0 gets every rank's part (a list, for `scatter_parts`) and
    the other ranks None. ``test_fraction > 0`` splits off a held-out set (seeded with
    ``seed``, as the driver does); ``seed`` also seeds synthetic data and shuffled shards, and
    ``size`` is the synthetic ``groups`` default.
    """
    spec, name, params = parse_data_spec(spec)
    if name in SCATTERED_SOURCES:
        return _whole_on_root(spec, rank, size, how, seed, test_fraction, libsvm_options)
    if name == "synthetic":
        kind, keywords, ds_name = synthetic_request(spec, params, seed, size)
        if libsvm_options:
            raise TypeError(f"options {sorted(libsvm_options)} apply to libsvm:PATH only, not "
                            f"{spec!r}")
        return _synthetic(kind, keywords, ds_name, rank, size, how, seed, test_fraction)
    return _libsvm(params["path"], rank, size, how, seed, test_fraction, **libsvm_options)


def scatter_parts(mpi_comm, loaded) -> Part:
    """This rank's `Part` of what `read_part` gave rank 0 for a `scattered` source
    (collective)."""
    return mpi_comm.scatter(loaded, root=0)


def _whole_on_root(spec, rank, size, how, seed, test_fraction, options) -> list[Part] | None:
    if rank != 0:
        return None
    if test_fraction > 0:
        train, test = load_split(spec, test_fraction, split_seed=seed, seed=seed, groups=size,
                                 **options)
    else:
        train, test = load(spec, seed=seed, groups=size, **options), None
    summary = DataSummary.of(train)
    return [Part(summary, shard(train, r, size, how=how, seed=seed), test if r == 0 else None)
            for r in range(size)]


def _rows(n: int, rank: int, size: int, how: str, seed: int, test_fraction: float,
          labels_of=None) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
    """``(this rank's rows, the held-out rows (rank 0) or None, the training rows)`` of an
    ``n``-sample set: the split of `split_rows`, then `shard_indices` of the training rows
    (``labels_of()`` gives every sample's label, for label sharding)."""
    train_rows, test_rows = (np.arange(n, dtype=np.int64), None) if test_fraction <= 0 else (
        split_rows(n, test_fraction, seed))
    labels = labels_of()[train_rows] if how == "label" else None
    local = shard_indices(train_rows.size, rank, size, how, seed, y=labels)
    return train_rows[local], (test_rows if rank == 0 else None), train_rows


def _names(name: str, rank: int, size: int, how: str, split: bool) -> tuple[str, str, str]:
    """The names `load_split` / `shard` give: (training set, shard, held-out set)."""
    train = f"{name}[train]" if split else name
    return train, f"{train}[shard {rank}/{size} {how}]", f"{name}[test]"


def _synthetic(kind, keywords, name, rank, size, how, seed, test_fraction) -> Part:
    n = synthetic_samples(kind, keywords)  # its arguments checked first, as make_synthetic does
    rows, test_rows, train_rows = _rows(  # label sharding makes every label first
        n, rank, size, how, seed, test_fraction, lambda: synthetic_part(kind, None, **keywords)[1])
    wanted = rows if test_rows is None else np.concatenate([rows, test_rows])
    A, y, x_true = synthetic_part(kind, wanted, **keywords)  # y: the labels of ``wanted``
    task = _SYNTHETIC_TASKS[kind]
    meta = {"x_true": x_true, "groups": keywords.get("groups", 1),
            "heterogeneity": float(keywords.get("heterogeneity", 0.0))}
    n_classes = None
    if kind == "multiclass":
        n_classes = meta["n_classes"] = keywords.get("classes", 3)
    elif task == "binary":
        n_classes = 2
    train_name, shard_name, test_name = _names(name, rank, size, how, test_fraction > 0)
    summary = DataSummary(train_name, train_rows.size, A.shape[1], task, n_classes)
    mine = Dataset(A[:rows.size], y[:rows.size], shard_name, task, {**meta, "indices": rows})
    test = None if test_rows is None else Dataset(
        A[rows.size:], y[rows.size:], test_name, task, {**meta, "indices": test_rows})
    return Part(summary, mine, test)


def _libsvm(path, rank, size, how, seed, test_fraction, *, n_features=None, zero_based=False,
            task=None, dense=None) -> Part:
    from .libsvm import read_libsvm_rows, scan_libsvm  # SciPy's sparse matrices, for files only

    scan = scan_libsvm(path, n_features, zero_based)
    labels, task, classes = _labels_for_task(scan.labels, task, os.fspath(path))
    n, width = labels.size, scan.n_features
    if dense is None:
        dense = scan.nnz >= DENSE_THRESHOLD * n * width
    meta: dict = {"density": scan.nnz / (n * width)}
    if classes is not None:
        meta["classes"] = classes
    rows, test_rows, train_rows = _rows(n, rank, size, how, seed, test_fraction,
                                        lambda: labels)

    def dataset(which, name):
        A = read_libsvm_rows(path, which, width, zero_based)
        return Dataset(A.toarray() if dense else A, labels[which], name, task,
                       {**meta, "indices": which})

    train_name, shard_name, test_name = _names(f"libsvm:{os.fspath(path)}", rank, size, how,
                                               test_fraction > 0)
    train_classes = {"binary": 2, "multiclass": int(labels[train_rows].max()) + 1}.get(task)
    summary = DataSummary(train_name, train_rows.size, width, task, train_classes)
    test = None if test_rows is None else dataset(test_rows, test_name)
    return Part(summary, dataset(rows, shard_name), test)


__all__ = ["DataSummary", "Part", "read_part", "scatter_parts", "scattered",
           "SCATTERED_SOURCES"]
