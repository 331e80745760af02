"""Data sets: LIBSVM files, bundled real data, synthetic generators; sharding and test splits.

Nothing here downloads anything. Four sources, all reached through `load` (the ``--data`` flag):

``libsvm:PATH``
    A LIBSVM / svmlight file the user points to (see `mpicomp.problems.libsvm` for the format
    and errors). Everything after the first ``:`` is the path, so it may contain ``:`` or ``,``.
``breast_cancer``, ``digits``, ``digits:binary``
    The real data sets shipped inside scikit-learn (``pip install scikit-learn``; imported only
    when one of them is asked for). Features are standardised (see `standardize`). The digits
    are 8×8 images: ``image_shape=(1, 8, 8)``.
``mnist:DIR[,n=N]``, ``cifar10:DIR[,n=N]``
    Image files the user has downloaded into the directory ``DIR`` (see `mpicomp.problems.images`
    for the files, formats and errors): MNIST's four idx files (plain or gzipped), CIFAR-10's
    python-version batches. Pixels become float32 ``(x/255 − mean)/std`` per channel with the
    usual constants (not `standardize`); ``image_shape`` is ``(1, 28, 28)`` / ``(3, 32, 32)``;
    labels ``0..9`` (multiclass). ``n=N`` keeps the first ``N`` training samples (quick runs).
    The directory is everything after the ``:`` up to the first ``,n=`` (blanks allowed around
    ``n``), so it may contain ``:`` and ``,`` but not ``,n=``; ``dir=DIR`` may also be written.
    `load` gives the official training set; `load_split` gives the official ``(train, test)``
    pair (the test files, not a share of the training set).
``synthetic[:KIND][,key=value...]``
    Generated from a planted model; ``KIND`` is ``logistic`` (default), ``least_squares`` or
    ``multiclass``. See `make_synthetic` for the keys and for what the heterogeneity knob ``h``
    does.

Every rank loads the whole data set and then takes its part with `shard`, a pure function of
``(dataset, rank, size, how, seed)``, so no communication is needed and all ranks agree.

Density rule (LIBSVM files): the matrix stays CSR when its density ``nnz / (m·d)`` is below
`DENSE_THRESHOLD` = 0.25 and becomes a dense array otherwise. CSR costs 12 bytes per stored
entry (8 value + 4 index) against 8 bytes per entry dense, and a CSR mat-vec does several times
less arithmetic per byte than a dense one; below a quarter full, CSR is both smaller and faster.
``dense=True`` / ``dense=False`` forces either.
"""

from __future__ import annotations

import dataclasses
import numbers
import os
import re
from typing import Any

import numpy as np

from ..backend import is_sparse
from ..spec_strings import Form, check_keys, parse_spec, parse_value, spec_items
from . import images

TASKS = ("binary", "multiclass", "regression")
SHARDINGS = ("contiguous", "shuffled", "label")
SYNTHETIC_KINDS = ("logistic", "least_squares", "multiclass")
BUNDLED = ("breast_cancer", "digits", "digits:binary")
IMAGE_SETS = ("mnist", "cifar10")
IMAGE_KEYS = ("n",)
DENSE_THRESHOLD = 0.25

_SPEC_HELP = (
    "valid data specs: 'synthetic[:logistic|least_squares|multiclass][,key=value...]' "
    "(keys: n, d, h, seed, groups, density, noise, classes), 'breast_cancer', 'digits', "
    "'digits:binary', 'libsvm:PATH', 'mnist:DIR[,n=N]', 'cifar10:DIR[,n=N]'"
)


# --------------------------------------------------------------------------------------------
# The data set container
# --------------------------------------------------------------------------------------------
@dataclasses.dataclass
class Dataset:
    """A data matrix with its labels.

    Attributes
    ----------
    A : numpy.ndarray (2-D) or scipy.sparse.csr_matrix
        One sample per row; float64, except float32 for the image sets ``mnist`` and
        ``cifar10``.
    y : numpy.ndarray
        ``task="binary"``: float64 in ``{-1, +1}``; ``"multiclass"``: int64 in ``0..C−1``;
        ``"regression"``: float64.
    name : str
        Where it came from (the spec, plus ``[train]``, ``[shard r/size ...]`` ...).
    task : str
        One of `TASKS`.
    meta : dict
        Extras: ``x_true`` (planted model of synthetic data), ``classes`` (original label value of
        each class of a LIBSVM file), ``indices`` (rows of the parent set a shard or split took).
    image_shape : tuple of 3 ints, optional
        ``(channels, height, width)`` when each row is an image flattened C-major (row-major of
        that shape, so ``A[i].reshape(image_shape)`` is image ``i``); their product is the number
        of columns. None for data that are no images.
    """

    A: Any
    y: np.ndarray
    name: str
    task: str
    meta: dict = dataclasses.field(default_factory=dict)
    image_shape: tuple[int, int, int] | None = None

    def __post_init__(self) -> None:
        if is_sparse(self.A):
            self.A = self.A.tocsr()
        else:
            self.A = np.asarray(self.A)
        if self.A.ndim != 2:
            raise ValueError(f"Dataset {self.name!r}: A must be 2-D, got shape {self.A.shape}")
        self.y = np.asarray(self.y).reshape(-1)
        if self.y.shape[0] != self.A.shape[0]:
            raise ValueError(
                f"Dataset {self.name!r}: y has {self.y.shape[0]} entries but A has "
                f"{self.A.shape[0]} rows"
            )
        if self.task not in TASKS:
            raise ValueError(
                f"Dataset {self.name!r}: task must be one of {TASKS}, got {self.task!r}")
        if self.task == "binary" and self.y.size and not np.isin(self.y, (-1.0, 1.0)).all():
            raise ValueError(f"Dataset {self.name!r}: binary labels must be -1 or +1, found "
                             f"{np.unique(self.y)[:10].tolist()}")
        if self.task == "multiclass" and self.y.size and (
                self.y.dtype.kind not in "iu" or self.y.min() < 0):
            raise ValueError(f"Dataset {self.name!r}: multiclass labels must be integers 0..C-1")
        if self.image_shape is not None:
            self.image_shape = self._checked_image_shape(self.image_shape)

    def _checked_image_shape(self, shape) -> tuple[int, int, int]:
        try:
            dims = tuple(shape)
        except TypeError:
            dims = ()
        if len(dims) != 3 or not all(
                isinstance(v, numbers.Integral) and not isinstance(v, bool) and v >= 1
                for v in dims):
            raise ValueError(f"Dataset {self.name!r}: image_shape must be 3 integers >= 1 "
                             f"(channels, height, width), got {shape!r}")
        dims = tuple(int(v) for v in dims)
        if dims[0] * dims[1] * dims[2] != self.A.shape[1]:
            raise ValueError(f"Dataset {self.name!r}: image_shape {dims} holds "
                             f"{dims[0] * dims[1] * dims[2]} values but A has {self.A.shape[1]} "
                             "columns")
        return dims

    @property
    def n_samples(self) -> int:
        return int(self.A.shape[0])

    @property
    def n_features(self) -> int:
        return int(self.A.shape[1])

    @property
    def n_classes(self) -> int | None:
        """``C`` for multiclass (``max label + 1``), 2 for binary, None for regression."""
        if self.task == "binary":
            return 2
        if self.task == "multiclass":
            return int(self.meta.get("n_classes", int(self.y.max()) + 1))
        return None

    @property
    def sparse(self) -> bool:
        return is_sparse(self.A)

    def take(self, rows, name: str | None = None) -> Dataset:
        """The rows ``rows`` (an index array) as a new Dataset; ``meta['indices']`` records them."""
        rows = np.asarray(rows, dtype=np.int64)
        meta = dict(self.meta)
        parent = meta.get("indices")
        meta["indices"] = rows if parent is None else np.asarray(parent)[rows]
        return Dataset(self.A[rows], self.y[rows], name or self.name, self.task, meta,
                       self.image_shape)


# --------------------------------------------------------------------------------------------
# Sharding and splitting
# --------------------------------------------------------------------------------------------
def _check_int(value, name: str, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    return int(value)


def block_bounds(n: int, parts: int, index: int) -> tuple[int, int]:
    """``[start, stop)`` of block ``index`` when ``n`` items are cut into ``parts`` contiguous
    blocks whose sizes differ by at most one (the first ``n % parts`` blocks get the extra one)."""
    q, r = divmod(n, parts)
    start = index * q + min(index, r)
    return start, start + q + (1 if index < r else 0)


def shard_indices(n: int, rank: int, size: int, how: str = "contiguous", seed: int = 0,
                  y: np.ndarray | None = None) -> np.ndarray:
    """The rows of an ``n``-sample data set that rank ``rank`` of ``size`` holds (sorted).

    ``contiguous``: block ``rank`` of the rows in order. ``shuffled``: block ``rank`` of
    ``default_rng(seed).permutation(n)``, sorted. ``label``: block ``rank`` of the rows sorted
    (stably) by label ``y``, so each label sits on as few consecutive ranks as the block sizes
    allow — the usual non-i.i.d. split; kept in label order. Every row goes to exactly one rank;
    block sizes differ by at most one.
    """
    n = _check_int(n, "n", 1)
    size = _check_int(size, "size", 1)
    rank = _check_int(rank, "rank", 0)
    if rank >= size:
        raise ValueError(f"rank must be in 0..{size - 1}, got {rank}")
    if size > n:
        raise ValueError(
            f"cannot shard {n} samples over {size} ranks: every rank needs at least one sample "
            f"(use at most {n} ranks or more data)"
        )
    start, stop = block_bounds(n, size, rank)
    if how == "contiguous":
        return np.arange(start, stop, dtype=np.int64)
    if how == "shuffled":
        perm = np.random.default_rng(seed).permutation(n)
        return np.sort(perm[start:stop])
    if how == "label":
        if y is None:
            raise ValueError("label sharding needs the labels y")
        order = np.argsort(np.asarray(y), kind="stable")
        return order[start:stop].astype(np.int64)
    raise ValueError(f"unknown sharding {how!r}: choose one of {', '.join(SHARDINGS)}")


def shard(dataset: Dataset, rank: int, size: int, how: str = "contiguous",
          seed: int = 0) -> Dataset:
    """This rank's part of ``dataset`` (see `shard_indices` for ``how``)."""
    rows = shard_indices(dataset.n_samples, rank, size, how, seed, y=dataset.y)
    return dataset.take(rows, f"{dataset.name}[shard {rank}/{size} {how}]")


def _check_fraction(test_fraction) -> None:
    if isinstance(test_fraction, bool) or not isinstance(test_fraction, numbers.Real) or not (
            0.0 < test_fraction < 1.0):
        raise ValueError(f"test_fraction must be a number in (0, 1), got {test_fraction!r}")


def split_rows(n: int, test_fraction: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``(train rows, test rows)`` of an ``n``-sample set, both sorted: ``round(test_fraction·n)``
    rows drawn with ``default_rng(seed)`` go to test."""
    _check_fraction(test_fraction)
    n_test = int(round(test_fraction * n))
    if not 1 <= n_test <= n - 1:
        raise ValueError(
            f"test_fraction={test_fraction} of {n} samples leaves {n_test} for test and "
            f"{n - n_test} for training; both need at least one"
        )
    perm = np.random.default_rng(seed).permutation(n)
    return np.sort(perm[n_test:]), np.sort(perm[:n_test])


def train_test_split(dataset: Dataset, test_fraction: float,
                     seed: int = 0) -> tuple[Dataset, Dataset]:
    """Split into ``(train, test)`` (`split_rows`); both keep the original row order."""
    train_rows, test_rows = split_rows(dataset.n_samples, test_fraction, seed)
    return (dataset.take(train_rows, f"{dataset.name}[train]"),
            dataset.take(test_rows, f"{dataset.name}[test]"))


# --------------------------------------------------------------------------------------------
# Standardisation
# --------------------------------------------------------------------------------------------
def standardize(train: Dataset, *others: Dataset) -> tuple[Dataset, ...]:
    """Centre and scale each column to mean 0, standard deviation 1 (population, ``ddof=0``)
    using statistics of ``train`` only, applied to ``train`` and to ``others``.

    Columns constant on ``train`` are centred only (divided by 1). Dense data only: centring
    would fill in a sparse matrix.
    """
    if train.sparse:
        raise TypeError(f"standardize needs dense data; {train.name!r} is sparse (centring "
                        "would make it dense: convert with dense=True first if that is wanted)")
    mean = train.A.mean(axis=0)
    std = train.A.std(axis=0)
    std[std == 0] = 1.0
    out = []
    for ds in (train, *others):
        A = (np.asarray(ds.A.toarray() if ds.sparse else ds.A, dtype=np.float64) - mean) / std
        out.append(dataclasses.replace(ds, A=A, meta={**ds.meta, "standardized": True}))
    return tuple(out)


# --------------------------------------------------------------------------------------------
# LIBSVM files
# --------------------------------------------------------------------------------------------
def _apply_density_rule(A, dense: bool | None):
    if dense is None:
        m, d = A.shape
        dense = A.nnz >= DENSE_THRESHOLD * m * d
    return A.toarray() if dense else A


def _labels_for_task(y: np.ndarray, task: str | None, where: str):
    """``(labels, task, classes)``; see `load_libsvm`."""
    values = np.unique(y)
    if task is None:
        if values.size <= 2 and np.isin(values, (-1.0, 1.0)).all():
            return y.astype(np.float64), "binary", None
        if values.size >= 2 and (values == np.round(values)).all() and values[0] == 0 and (
                values[-1] == values.size - 1):
            return y.astype(np.int64), "multiclass", None
        return y.astype(np.float64), "regression", None
    if task == "regression":
        return y.astype(np.float64), task, None
    if task == "binary":
        if values.size != 2:
            raise ValueError(f"{where}: task='binary' needs exactly 2 distinct labels, found "
                             f"{values.size}: {values[:10].tolist()}")
        return np.where(y == values[1], 1.0, -1.0), task, values
    if task == "multiclass":
        if not (values == np.round(values)).all():
            raise ValueError(f"{where}: task='multiclass' needs integer labels, found "
                             f"{values[:10].tolist()}")
        return np.searchsorted(values, y).astype(np.int64), task, values
    raise ValueError(f"unknown task {task!r}: choose one of {', '.join(TASKS)} or None")


def load_libsvm(path: str | os.PathLike[str], *, n_features: int | None = None,
                zero_based: bool = False, task: str | None = None,
                dense: bool | None = None) -> Dataset:
    """A LIBSVM / svmlight file as a `Dataset`.

    Parameters
    ----------
    path, n_features, zero_based
        As in `mpicomp.problems.libsvm.read_libsvm`.
    task : {None, "binary", "multiclass", "regression"}
        None (default) keeps the labels as written and infers the task: labels in ``{−1, +1}``
        → ``"binary"``; integers exactly ``0..C−1`` (C ≥ 2) → ``"multiclass"``; anything
        else → ``"regression"``. ``"binary"`` maps the two distinct labels, whatever they are
        (``{0, 1}``, ``{1, 2}``, ``{−1, 1}``), to ``−1`` (smaller) and ``+1`` (larger);
        ``"multiclass"`` maps the sorted distinct integer labels to ``0..C−1`` (so 1..C files
        work). The original label values are kept in ``meta['classes']``.
    dense : bool, optional
        None: the density rule of this module (dense when ≥ 25 % non-zero); True / False: force
        a dense array / CSR.
    """
    from .libsvm import read_libsvm  # here: SciPy's sparse matrices only for LIBSVM files

    A, y = read_libsvm(path, n_features=n_features, zero_based=zero_based)
    labels, task, classes = _labels_for_task(y, task, os.fspath(path))
    meta: dict = {"density": A.nnz / (A.shape[0] * A.shape[1])}
    if classes is not None:
        meta["classes"] = classes
    return Dataset(_apply_density_rule(A, dense), labels, f"libsvm:{os.fspath(path)}", task, meta)


# --------------------------------------------------------------------------------------------
# Bundled real data (scikit-learn)
# --------------------------------------------------------------------------------------------
def _sklearn_datasets():
    try:
        import sklearn.datasets as skd
    except ImportError:
        raise ImportError(
            "the bundled data sets 'breast_cancer' and 'digits' come from scikit-learn, which "
            "is not installed: pip install scikit-learn (or use --data synthetic or "
            "libsvm:PATH)"
        ) from None
    return skd


DIGITS_SHAPE = (1, 8, 8)


def load_bundled(name: str) -> Dataset:
    """A real data set bundled with scikit-learn, **not** standardised (`load` does that).

    ``breast_cancer``: 569 × 30, binary, ``+1`` = benign, ``−1`` = malignant.
    ``digits``: 1797 × 64 (8×8 pixel intensities 0..16, ``image_shape=(1, 8, 8)``), multiclass
    ``0..9``.
    ``digits:binary``: the same images, ``+1`` = even digit, ``−1`` = odd.
    """
    if name not in BUNDLED:
        raise ValueError(f"unknown bundled data set {name!r}: choose one of {', '.join(BUNDLED)}")
    skd = _sklearn_datasets()
    if name == "breast_cancer":
        X, t = skd.load_breast_cancer(return_X_y=True)
        return Dataset(np.asarray(X, dtype=np.float64), np.where(t == 1, 1.0, -1.0), name, "binary")
    X, t = skd.load_digits(return_X_y=True)
    X = np.asarray(X, dtype=np.float64)
    if name == "digits":
        return Dataset(X, np.asarray(t, dtype=np.int64), name, "multiclass", {"n_classes": 10},
                       image_shape=DIGITS_SHAPE)
    return Dataset(X, np.where(t % 2 == 0, 1.0, -1.0), name, "binary",
                   image_shape=DIGITS_SHAPE)


# --------------------------------------------------------------------------------------------
# Image files (MNIST, CIFAR-10)
# --------------------------------------------------------------------------------------------
_IMAGE_READERS = {
    "mnist": (images.read_mnist, images.MNIST_SHAPE, images.MNIST_MEAN, images.MNIST_STD),
    "cifar10": (images.read_cifar10, images.CIFAR10_SHAPE, images.CIFAR10_MEAN,
                images.CIFAR10_STD),
}


def load_images(name: str, directory: str | os.PathLike[str], part: str = "train",
                n: int | None = None) -> Dataset:
    """An image data set from the files in ``directory`` (`mpicomp.problems.images`).

    Parameters
    ----------
    name : {"mnist", "cifar10"}
    directory : path-like
        MNIST: the four idx files; CIFAR-10: the python-version batches (or their parent).
    part : {"train", "test"}
        The official training or test set of the files.
    n : int, optional
        Keep the first ``n`` samples.

    Returns
    -------
    Dataset
        ``A`` float32 ``N × (C·H·W)``, normalised per channel as ``(x/255 − mean)/std``;
        ``y`` int64 ``0..9``; task ``"multiclass"``; ``image_shape`` ``(1, 28, 28)`` (MNIST) or
        ``(3, 32, 32)`` (CIFAR-10); name ``name``; ``meta`` records ``n_classes`` (10), the
        ``directory``, the ``part``, the normalisation ``mean`` and ``std`` and ``n`` (when
        given).
    """
    if name not in _IMAGE_READERS:
        raise ValueError(f"unknown image data set {name!r}: choose one of {', '.join(IMAGE_SETS)}")
    reader, shape, mean, std = _IMAGE_READERS[name]
    X, y = reader(directory, part, n)
    meta: dict = {"n_classes": images.N_CLASSES, "directory": os.fspath(directory),
                  "part": part, "mean": mean, "std": std}
    if n is not None:
        meta["n"] = int(n)
    return Dataset(X, y, name, "multiclass", meta, image_shape=shape)


_IMAGE_KEY_START = re.compile(r",\s*(?:" + "|".join(map(re.escape, IMAGE_KEYS)) + r")\s*=")


def _parse_image_spec(name: str, text: str, spec: str) -> tuple[str, dict]:
    """``(directory, keywords)`` of the text after ``mnist:`` / ``cifar10:``: the directory is
    everything up to the first ``,KEY=`` of a key in `IMAGE_KEYS`; the items after it are
    ``key=value`` pairs of those keys."""
    match = _IMAGE_KEY_START.search(text)
    directory, rest = (text, "") if match is None else (text[:match.start()], text[match.start():])
    directory = directory.strip()
    if not directory:
        raise ValueError(f"{name}:DIR needs a directory after '{name}:', got {spec!r}; "
                         f"{_SPEC_HELP}")
    keywords: dict = {}
    for key, value in spec_items(f"data set {name}", rest):
        check_keys("data set", name, [key], IMAGE_KEYS, noun="key", hint=_SPEC_HELP)
        if key in keywords:
            raise ValueError(f"data spec {spec!r}: key {key!r} is given twice")
        keywords[key] = parse_value(value)
    if "n" in keywords:
        keywords["n"] = _check_int(keywords["n"], "n", 1)
    return directory, keywords


# --------------------------------------------------------------------------------------------
# Synthetic data
# --------------------------------------------------------------------------------------------
_SYNTHETIC_TASKS = {"logistic": "binary", "least_squares": "regression",
                    "multiclass": "multiclass"}


def _checked_synthetic_arguments(kind, n_samples, n_features, groups, classes, seed,
                                 heterogeneity, density, noise) -> tuple:
    """``(m, d, G, C, seed, h)`` of `make_synthetic`'s arguments, checked in this order;
    ValueError naming the first bad one."""
    if kind not in SYNTHETIC_KINDS:
        raise ValueError(
            f"unknown synthetic kind {kind!r}: choose one of {', '.join(SYNTHETIC_KINDS)}")
    m = _check_int(n_samples, "n_samples (n)", 1)
    d = _check_int(n_features, "n_features (d)", 1)
    G = _check_int(groups, "groups", 1)
    C = _check_int(classes, "classes", 2)
    seed = _check_int(seed, "seed", 0)
    if G > m:
        raise ValueError(f"groups={G} is more than n_samples={m}")
    h = float(heterogeneity) if isinstance(heterogeneity, numbers.Real) else float("nan")
    if not (np.isfinite(h) and h >= 0):
        raise ValueError(f"heterogeneity (h) must be a finite number >= 0, got {heterogeneity!r}")
    if not isinstance(density, numbers.Real) or not (0.0 < float(density) <= 1.0):
        raise ValueError(f"density must be in (0, 1], got {density!r}")
    if not isinstance(noise, numbers.Real) or not (np.isfinite(noise) and noise >= 0):
        raise ValueError(f"noise must be a finite number >= 0, got {noise!r}")
    return m, d, G, C, seed, h


def _planted_model(rng: np.random.Generator, kind: str, d: int, C: int,
                   density) -> tuple[np.ndarray, np.ndarray]:
    """``(x_true, support)``: the planted model (``d``, or ``d × C`` for multiclass) with
    N(0, 1) entries on ``support`` (all rows, or ``max(1, round(density·d))`` random ones when
    ``density < 1``; not for multiclass), scaled to Frobenius norm 4."""
    shape = (d, C) if kind == "multiclass" else (d,)
    support = np.arange(d)
    if kind != "multiclass" and density < 1.0:
        k = max(1, int(round(density * d)))
        support = np.sort(rng.choice(d, size=k, replace=False))
    x_true = np.zeros(shape)
    x_true[support] = rng.standard_normal((support.size,) + shape[1:])
    x_true *= 4.0 / np.linalg.norm(x_true)
    return x_true, support


def _label_draws(rng: np.random.Generator, kind: str, m: int, C: int) -> np.ndarray:
    """The randomness of the labels, drawn after the features ``z ~ N(0, I_d)`` of all ``m``
    samples: uniforms (logistic), standard normals (least squares) or ``m × C`` Gumbel draws
    (multiclass). Independent of ``G`` and ``h``."""
    if kind == "logistic":
        return rng.random(m)
    if kind == "least_squares":
        return rng.standard_normal(m)
    return rng.gumbel(size=(m, C))


#: feature values drawn at a time when the features are skipped over or made group by group
_DRAW_CHUNK = 1 << 20


def _draws_after_features(rng: np.random.Generator, kind: str, m: int, d: int,
                          C: int) -> np.ndarray:
    """`_label_draws` of a generator that has not drawn the ``m × d`` features: they are drawn
    and dropped (`_skip_features`)."""
    _skip_features(rng, m, d)
    return _label_draws(rng, kind, m, C)


def _skip_features(rng: np.random.Generator, m: int, d: int) -> None:
    """Draw and drop ``m × d`` standard normals a few rows at a time: the generator then stands
    where one ``(m, d)`` draw leaves it."""
    rows = max(1, _DRAW_CHUNK // d)
    for start in range(0, m, rows):
        rng.standard_normal((min(rows, m - start), d))


def _group_shift_and_model(rng: np.random.Generator, x_true: np.ndarray, support: np.ndarray,
                           h: float) -> tuple[np.ndarray, np.ndarray]:
    """``(h · u_g, x_g)`` of one group: its feature mean and its local model (see
    `make_synthetic`), drawn in this order."""
    d = x_true.shape[0]
    u = rng.standard_normal(d) / np.sqrt(d)
    v = np.zeros(x_true.shape)
    classes = x_true.shape[1] if x_true.ndim == 2 else 1
    v[support] = rng.standard_normal((support.size,) + x_true.shape[1:]) / np.sqrt(
        support.size * classes)
    x_g = x_true + h * np.linalg.norm(x_true) * v
    return h * u, x_g


def _labels(kind: str, z: np.ndarray, draws: np.ndarray, noise) -> np.ndarray:
    """Labels of samples with scores ``z = a·x_g`` and label randomness ``draws``: ±1 with
    ``P(+1) = σ(z)`` (logistic), ``z + noise·ε`` (least squares), or the class
    ``argmax(z + Gumbel)``, drawn from ``softmax(z)`` (multiclass)."""
    if kind == "logistic":
        return np.where(draws < 1.0 / (1.0 + np.exp(-z)), 1.0, -1.0)
    if kind == "least_squares":
        return z + noise * draws
    return np.argmax(z + draws, axis=1)


def _grouped_samples(rng: np.random.Generator, kind: str, Z: np.ndarray, label_draws: np.ndarray,
                     x_true: np.ndarray, support: np.ndarray, h: float, G: int,
                     noise) -> tuple[np.ndarray, np.ndarray, list]:
    """``(A, y, group_models)``: group ``g`` (rows `block_bounds` ``(m, G, g)``) shifts its
    features ``Z`` (in place) by its mean and labels them with its local model."""
    m = Z.shape[0]
    A = Z
    y = np.empty(m, dtype=np.int64 if kind == "multiclass" else np.float64)
    group_models = []
    for g in range(G):
        shift, x_g = _group_shift_and_model(rng, x_true, support, h)
        group_models.append(x_g)
        lo, hi = block_bounds(m, G, g)
        A[lo:hi] += shift
        y[lo:hi] = _labels(kind, A[lo:hi] @ x_g, label_draws[lo:hi], noise)
    return A, y, group_models


#: samples of a synthetic data set whose spec does not say (``n``)
SYNTHETIC_SAMPLES = 1000


def make_synthetic(kind: str = "logistic", *, n_samples: int = SYNTHETIC_SAMPLES,
                   n_features: int = 50,
                   heterogeneity: float = 0.0, groups: int = 1, seed: int = 0,
                   density: float = 1.0, noise: float = 0.1, classes: int = 3) -> Dataset:
    """Data from a planted model, with a knob for how much the workers' data differ.

    Parameters
    ----------
    kind : {"logistic", "least_squares", "multiclass"}
    n_samples, n_features : int
        ``m`` and ``d``.
    heterogeneity : float ≥ 0
        ``h``; see Notes.
    groups : int
        ``G``: the rows are cut into ``G`` contiguous blocks (sizes as `block_bounds`), one per
        worker; `shard` with ``how="contiguous"`` and ``size=G`` gives rank ``g`` block ``g``.
    seed : int
        Everything comes from ``np.random.SeedSequence(seed)``; no global RNG.
    density : float in (0, 1]
        Fraction of non-zero coordinates of the planted model (``max(1, round(density·d))`` of
        them, at random places): sparse ``x_true`` for ℓ1 experiments. Not for multiclass.
    noise : float ≥ 0
        Standard deviation of the Gaussian noise added to least-squares targets.
    classes : int ≥ 2
        ``C`` for multiclass.

    Notes
    -----
    Planted model: ``x_true`` (``d``, or ``d × C`` for multiclass) with i.i.d. N(0, 1) entries on
    its support, scaled to Frobenius norm 4. Group ``g`` has

    - a feature mean ``μ_g = h · u_g`` with ``u_g ~ N(0, I_d / d)`` (so ``‖μ_g‖ ≈ h``), and
    - a local model ``x_g = x_true + h · ‖x_true‖ · v_g`` with ``v_g ~ N(0, I / s)`` on the
      support of ``x_true`` (``s`` its size; so ``‖x_g − x_true‖ ≈ h‖x_true‖``).

    A sample of group ``g`` is ``a = z + μ_g`` with ``z ~ N(0, I_d)``, and its label is
    ``+1`` with probability ``σ(aᵀx_g)`` else ``−1`` (logistic), ``aᵀx_g + noise·ε``
    (least squares), or class ``c`` with probability ``softmax(aᵀx_g)_c`` (multiclass).

    So ``h = 0`` gives i.i.d. samples (the data do not depend on ``G`` at all), and as ``h`` grows
    the workers' feature distributions and their local optima move apart. ``meta['x_true']`` is
    the shared planted model, ``meta['group_models']`` the ``x_g``.
    """
    m, d, G, C, seed, h = _checked_synthetic_arguments(
        kind, n_samples, n_features, groups, classes, seed, heterogeneity, density, noise)
    model_ss, data_ss, het_ss = np.random.SeedSequence(seed).spawn(3)
    x_true, support = _planted_model(np.random.default_rng(model_ss), kind, d, C, density)
    # Shared draws first (independent of G and h), so h = 0 data are the same for every G.
    data_rng = np.random.default_rng(data_ss)
    Z = data_rng.standard_normal((m, d))
    label_draws = _label_draws(data_rng, kind, m, C)
    A, y, group_models = _grouped_samples(np.random.default_rng(het_ss), kind, Z, label_draws,
                                          x_true, support, h, G, noise)
    meta = {"x_true": x_true, "group_models": np.stack(group_models), "groups": G,
            "heterogeneity": h}
    if kind == "multiclass":
        meta["n_classes"] = C
    name = f"synthetic:{kind},n={m},d={d},h={h:g},groups={G},seed={seed}"
    return Dataset(A, y, name, _SYNTHETIC_TASKS[kind], meta)


def synthetic_samples(kind: str, keywords: dict) -> int:
    """``n`` of ``make_synthetic(kind, **keywords)``, after checking every argument as it
    does (ValueError naming the first bad one)."""
    import inspect

    bound = inspect.signature(make_synthetic).bind(kind, **keywords)
    bound.apply_defaults()
    a = bound.arguments
    return _checked_synthetic_arguments(
        kind, a["n_samples"], a["n_features"], a["groups"], a["classes"], a["seed"],
        a["heterogeneity"], a["density"], a["noise"])[0]


def synthetic_part(kind: str = "logistic", rows=None, *, n_samples: int = SYNTHETIC_SAMPLES,
                   n_features: int = 50, heterogeneity: float = 0.0, groups: int = 1,
                   seed: int = 0, density: float = 1.0, noise: float = 0.1,
                   classes: int = 3) -> tuple[np.ndarray | None, np.ndarray, np.ndarray]:
    """Rows of `make_synthetic`'s data set without making the whole of it.

    Returns ``(A[rows], y[rows], x_true)``: the rows ``rows`` (an index array, in its order)
    and their labels, or for ``rows=None`` no rows and every sample's label, and the planted
    model, bit for bit those of `make_synthetic` with the same arguments. The features are made
    one group block at a time (the block's labels are one product with its local model, as
    there), and the blocks without a row asked for are drawn and dropped a few rows at a time;
    so the memory is the rows kept (a group's block whose rows are all kept, in order, is made
    in place), one other group's block and one label draw a sample. The time is about twice
    that of `make_synthetic` (the features are drawn once more to reach the labels' draws).
    """
    m, d, G, C, seed, h = _checked_synthetic_arguments(
        kind, n_samples, n_features, groups, classes, seed, heterogeneity, density, noise)
    model_ss, data_ss, het_ss = np.random.SeedSequence(seed).spawn(3)
    x_true, support = _planted_model(np.random.default_rng(model_ss), kind, d, C, density)
    label_draws = _draws_after_features(np.random.default_rng(data_ss), kind, m, d, C)
    feature_rng, het_rng = np.random.default_rng(data_ss), np.random.default_rng(het_ss)
    rows = None if rows is None else np.asarray(rows, dtype=np.int64)
    order = None if rows is None else np.argsort(rows, kind="stable")
    out = None if rows is None else np.empty((rows.size, d))
    y = np.empty(m if rows is None else rows.size,
                 dtype=np.int64 if kind == "multiclass" else np.float64)
    for g in range(G):
        shift, x_g = _group_shift_and_model(het_rng, x_true, support, h)
        lo, hi = block_bounds(m, G, g)
        mine = None  # where the block's rows go in ``out`` and ``y``
        if rows is not None:
            first, last = np.searchsorted(rows[order], (lo, hi))
            mine = order[first:last]
            if not mine.size:
                _skip_features(feature_rng, hi - lo, d)
                continue
        whole = None if mine is None else _whole_block_at(mine, rows, lo, hi)
        block = out[whole:whole + hi - lo] if whole is not None else np.empty((hi - lo, d))
        feature_rng.standard_normal(out=block)  # the block made where it is kept, if it is
        block += shift
        labels = _labels(kind, block @ x_g, label_draws[lo:hi], noise)
        if mine is None:
            y[lo:hi] = labels
            continue
        y[mine] = labels[rows[mine] - lo]
        if whole is None:
            out[mine] = block[rows[mine] - lo]
    return out, y, x_true


def _whole_block_at(positions: np.ndarray, rows: np.ndarray | None, lo: int,
                    hi: int) -> int | None:
    """The position in the output where the rows ``lo … hi−1`` lie in order, when ``positions``
    (of the rows asked for within them) are all of them, consecutive; else None."""
    if positions.size != hi - lo or not positions.size:
        return None
    start = int(positions[0])
    if positions[-1] - start != hi - lo - 1 or not np.array_equal(
            rows[start:start + hi - lo], np.arange(lo, hi)):
        return None
    return start


_SYNTH_KEYS = {
    "n": "n_samples", "n_samples": "n_samples", "d": "n_features", "n_features": "n_features",
    "h": "heterogeneity", "heterogeneity": "heterogeneity", "seed": "seed", "groups": "groups",
    "density": "density", "noise": "noise", "classes": "classes",
}


DATA_FORMS: dict[str, Form] = {
    "synthetic": Form(keys=tuple(_SYNTH_KEYS), head="kind", head_choices=SYNTHETIC_KINDS),
    "breast_cancer": Form(),
    "digits": Form(head="variant", head_choices=("binary",)),
    "libsvm": Form(rest="path", required=("path",)),
    "mnist": Form(rest="dir", required=("dir",)),
    "cifar10": Form(rest="dir", required=("dir",)),
}
"""The data spec grammar (`mpicomp.spec_strings`): ``synthetic[:KIND][,key=value...]`` (the
kind is a bare first item), ``breast_cancer``, ``digits[:binary]``, ``libsvm:PATH``,
``mnist:DIR[,n=N]``, ``cifar10:DIR[,n=N]`` (the ``rest`` after the ``:`` is split into the
directory and its keys by `_parse_image_spec`)."""


def _parse_synthetic(params: dict) -> tuple[str, dict]:
    """``(kind, make_synthetic keywords)`` from the parameters of a ``synthetic`` spec."""
    params = dict(params)
    kind = params.pop("kind", "logistic")
    keywords: dict = {}
    given: dict = {}
    for key, value in params.items():
        full = _SYNTH_KEYS[key]
        if full in keywords:
            raise ValueError(f"synthetic spec gives {full} twice: as {given[full]!r} and {key!r}")
        keywords[full], given[full] = value, key
    return kind, keywords


# --------------------------------------------------------------------------------------------
# The spec front door
# --------------------------------------------------------------------------------------------
def parse_data_spec(spec) -> tuple[str, str, dict]:
    """``(spec stripped, source name, its parameters)`` of a ``--data`` spec (`DATA_FORMS`);
    ValueError naming the valid specs."""
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"data spec must be a non-empty string, got {spec!r}; {_SPEC_HELP}")
    spec = spec.strip()
    name, params = parse_spec(spec, DATA_FORMS, "data set", noun="key", hint=_SPEC_HELP)
    return spec, name, params


def synthetic_request(spec: str, params: dict, seed: int | None,
                      groups: int | None) -> tuple[str, dict, str]:
    """``(kind, make_synthetic keywords, data set name)`` of a parsed ``synthetic`` spec, with
    ``seed`` and ``groups`` as defaults of the keys of the same name."""
    kind, keywords = _parse_synthetic(params)
    if seed is not None:
        keywords.setdefault("seed", seed)
    if groups is not None:
        keywords.setdefault("groups", groups)
    return kind, keywords, spec if params else f"synthetic:{kind}"


def _load_raw(spec: str, seed: int | None, groups: int | None, libsvm_options: dict,
              official_test: bool = False) -> tuple[Dataset, bool, Dataset | None]:
    """``(data set, standardised by default?, official test set)`` named by ``spec``.

    The data set is the whole set, or the official training set of a source that has an
    official split (the image sets). Its test set is read only when ``official_test`` is true;
    it is None otherwise and for sources without one.
    """
    spec, name, params = parse_data_spec(spec)
    if libsvm_options and name != "libsvm":
        raise TypeError(f"options {sorted(libsvm_options)} apply to libsvm:PATH only, not {spec!r}")
    if name == "libsvm":
        return load_libsvm(params["path"], **libsvm_options), False, None
    if name in IMAGE_SETS:
        directory, keywords = _parse_image_spec(name, params["dir"], spec)
        train = load_images(name, directory, "train", keywords.get("n"))
        test = load_images(name, directory, "test") if official_test else None
        return train, False, test
    if name == "synthetic":
        kind, keywords, ds_name = synthetic_request(spec, params, seed, groups)
        ds = make_synthetic(kind, **keywords)
        ds.name = ds_name
        return ds, False, None
    return load_bundled(f"{name}:{params['variant']}" if params else name), True, None


def load(spec: str, *, seed: int | None = None, groups: int | None = None,
         standardize_features: bool | None = None, **libsvm_options) -> Dataset:
    """The data set named by ``spec`` (the ``--data`` flag), whole.

    Parameters
    ----------
    spec : str
        ``"synthetic"``, ``"synthetic:KIND,key=value,..."`` (keys ``n``, ``d``, ``h``, ``seed``,
        ``groups``, ``density``, ``noise``, ``classes``; see `make_synthetic`),
        ``"breast_cancer"``, ``"digits"``, ``"digits:binary"``, ``"libsvm:PATH"``,
        ``"mnist:DIR[,n=N]"``, ``"cifar10:DIR[,n=N]"`` (the official training set; see
        `load_images`).
    seed, groups : int, optional
        Defaults for the synthetic keys of the same name (what the spec says wins); the driver
        passes its ``--seed`` and the world size. Ignored by the other sources.
    standardize_features : bool, optional
        Standardise columns (`standardize`). Default: yes for the bundled sets, no otherwise
        (the image sets come normalised per channel).
    **libsvm_options
        ``n_features``, ``zero_based``, ``task``, ``dense`` for `load_libsvm`.
    """
    ds, default_std, _ = _load_raw(spec, seed, groups, libsvm_options)
    if default_std if standardize_features is None else standardize_features:
        (ds,) = standardize(ds)
    return ds


def load_split(spec: str, test_fraction: float, *, split_seed: int = 0,
               seed: int | None = None, groups: int | None = None,
               standardize_features: bool | None = None,
               **libsvm_options) -> tuple[Dataset, Dataset]:
    """``(train, test)`` for ``spec``: `train_test_split` with ``split_seed``, then (where
    standardised) statistics from the training part applied to both.

    The image sets (``mnist:DIR``, ``cifar10:DIR``) have an official split: they return the
    training set of their files (its first ``n`` samples with ``n=N``) and their whole test
    set, named ``NAME[train]`` and ``NAME[test]``. ``test_fraction`` (still checked to be in
    (0, 1)) then only switches the held-out evaluation on, and ``split_seed`` is unused.
    """
    ds, default_std, official = _load_raw(spec, seed, groups, libsvm_options,
                                          official_test=True)
    if official is None:
        train, test = train_test_split(ds, test_fraction, split_seed)
    else:
        _check_fraction(test_fraction)
        train = dataclasses.replace(ds, name=f"{ds.name}[train]")
        test = dataclasses.replace(official, name=f"{official.name}[test]")
    if default_std if standardize_features is None else standardize_features:
        train, test = standardize(train, test)
    return train, test


__all__ = [
    "Dataset", "TASKS", "SHARDINGS", "DENSE_THRESHOLD", "IMAGE_SETS", "load", "load_split",
    "load_libsvm", "load_bundled", "load_images", "make_synthetic", "shard", "shard_indices",
    "block_bounds", "train_test_split", "standardize",
]
