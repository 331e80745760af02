"""Image data sets: MNIST idx files, CIFAR-10 python batches, ``image_shape``, the digits."""

from __future__ import annotations

import gzip
import os
import pickle
import shlex
import struct

import numpy as np
import pytest

from mpicomp.problems.data import (
    Dataset,
    load,
    load_images,
    load_split,
    shard,
    standardize,
    train_test_split,
)
from mpicomp.problems.images import CifarUnpickler, read_cifar10_batch, read_idx

MNIST_NAMES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
               "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
CIFAR_NAMES = ("data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5",
               "test_batch")


# ------------------------------------------------------------------------------------------
# Writers of the file formats
# ------------------------------------------------------------------------------------------
def idx_bytes(magic: int, dims, payload: bytes) -> bytes:
    """An idx file: big-endian magic, big-endian uint32 dimensions, then the bytes."""
    return struct.pack(">I", magic) + b"".join(struct.pack(">I", d) for d in dims) + payload


def write_file(path, data: bytes, gz: bool = False):
    if gz:
        path = path.with_name(path.name + ".gz")
        with gzip.open(path, "wb") as f:
            f.write(data)
    else:
        path.write_bytes(data)
    return path


def make_mnist(directory, n_train=20, n_test=7, gz=False, dotted=False, seed=0):
    """The four MNIST files with random pixels and labels; returns their arrays."""
    rng = np.random.default_rng(seed)
    directory.mkdir(parents=True, exist_ok=True)
    arrays = {}
    for part, prefix, n in (("train", "train", n_train), ("test", "t10k", n_test)):
        images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        images[0, 0, 0], images[0, 0, 1] = 0, 255           # both ends of the range
        labels = rng.integers(0, 10, size=n, dtype=np.uint8)
        sep = "." if dotted else "-"
        write_file(directory / f"{prefix}-images{sep}idx3-ubyte",
                   idx_bytes(0x803, (n, 28, 28), images.tobytes()), gz)
        write_file(directory / f"{prefix}-labels{sep}idx1-ubyte",
                   idx_bytes(0x801, (n,), labels.tobytes()), gz)
        arrays[part] = images, labels
    return arrays


def mnist_expected(images: np.ndarray) -> np.ndarray:
    """The normalisation written out independently: float64 ``(x/255 − 0.1307)/0.3081``."""
    return (images.reshape(len(images), -1).astype(np.float64) / 255.0 - 0.1307) / 0.3081


def cifar_batch(n, seed):
    rng = np.random.default_rng(seed)
    data = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
    labels = [int(v) for v in rng.integers(0, 10, size=n)]
    return data, labels


def write_batch(path, data, labels, **extra):
    batch = {b"batch_label": b"a batch", b"data": data, b"labels": labels,
             b"filenames": [b"x.png"] * len(labels), **extra}
    path.write_bytes(pickle.dumps(batch, protocol=4))   # BINBYTES keys, _reconstruct arrays
    return path


def make_cifar(directory, per_batch=2, n_test=4):
    """Five training batches of ``per_batch`` images and a test batch; returns the arrays."""
    directory.mkdir(parents=True, exist_ok=True)
    train = [cifar_batch(per_batch, seed) for seed in range(5)]
    for i, (data, labels) in enumerate(train):
        write_batch(directory / f"data_batch_{i + 1}", data, labels)
    test = cifar_batch(n_test, 99)
    write_batch(directory / "test_batch", *test)
    data = np.concatenate([d for d, _ in train])
    labels = np.concatenate([lab for _, lab in train])
    return (data, labels), (test[0], np.asarray(test[1]))


def cifar_expected(data: np.ndarray) -> np.ndarray:
    mean = np.repeat([0.4914, 0.4822, 0.4465], 1024)
    std = np.repeat([0.2470, 0.2435, 0.2616], 1024)
    return (data.astype(np.float64) / 255.0 - mean) / std


def py2_batch_bytes(data: np.ndarray, labels) -> bytes:
    """A batch as Python 2's cPickle (protocol 2) wrote the distributed CIFAR-10 files: byte
    strings as SHORT_BINSTRING / BINSTRING and the array through
    ``numpy.core.multiarray._reconstruct``. Built opcode by opcode."""
    def string(b: bytes) -> bytes:
        return (b"U" + bytes([len(b)]) + b if len(b) < 256
                else b"T" + struct.pack("<I", len(b)) + b)

    def int_(v: int) -> bytes:
        return b"K" + bytes([v]) if 0 <= v < 256 else (
            b"M" + struct.pack("<H", v) if 0 <= v < 65536 else b"J" + struct.pack("<i", v))

    dtype = (b"cnumpy\ndtype\n" + string(b"u1") + int_(0) + int_(1) + b"\x87R"
             + b"(" + int_(3) + string(b"|") + b"NNN" + int_(-1) + int_(-1) + int_(0) + b"tb")
    array = (b"cnumpy.core.multiarray\n_reconstruct\n" + b"cnumpy\nndarray\n"
             + int_(0) + b"\x85" + string(b"b") + b"\x87R"
             + b"(" + int_(1) + int_(data.shape[0]) + int_(data.shape[1]) + b"\x86" + dtype
             + b"\x89" + string(data.tobytes()) + b"tb")
    label_list = b"](" + b"".join(int_(v) for v in labels) + b"e"
    return (b"\x80\x02}(" + string(b"batch_label") + string(b"training batch 1 of 5")
            + string(b"data") + array + string(b"labels") + label_list + b"u.")


# ------------------------------------------------------------------------------------------
# MNIST
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("gz, dotted", [(False, False), (True, False), (False, True),
                                        (True, True)])
def test_mnist_values_shape_labels(tmp_path, gz, dotted):
    arrays = make_mnist(tmp_path / "mnist", gz=gz, dotted=dotted)
    images, labels = arrays["train"]
    ds = load(f"mnist:{tmp_path / 'mnist'}")
    assert ds.name == "mnist" and ds.task == "multiclass" and ds.n_classes == 10
    assert ds.A.dtype == np.float32 and ds.A.shape == (20, 784)
    assert ds.image_shape == (1, 28, 28)
    assert ds.y.dtype == np.int64
    np.testing.assert_array_equal(ds.y, labels)
    np.testing.assert_allclose(ds.A, mnist_expected(images), rtol=1e-6, atol=1e-6)
    # Pixel 0 and 255 by hand; each row is its image flattened row-major.
    assert ds.A[0, 0] == pytest.approx(-0.1307 / 0.3081, rel=1e-6)
    assert ds.A[0, 1] == pytest.approx((1 - 0.1307) / 0.3081, rel=1e-6)
    np.testing.assert_allclose(ds.A[3].reshape(ds.image_shape)[0],
                               (images[3] / 255.0 - 0.1307) / 0.3081, rtol=1e-6, atol=1e-6)
    assert not ds.meta.get("standardized")


def test_mnist_n_and_official_split(tmp_path):
    arrays = make_mnist(tmp_path)
    first = load(f"mnist:{tmp_path},n=5")
    assert first.n_samples == 5
    np.testing.assert_array_equal(first.y, arrays["train"][1][:5])
    np.testing.assert_allclose(first.A, mnist_expected(arrays["train"][0][:5]), rtol=1e-6,
                               atol=1e-6)
    assert load(f"mnist:{tmp_path} , n = 5 ,").n_samples == 5      # blanks and empty items
    assert load(f"mnist:dir={tmp_path},n=5").n_samples == 5         # the directory as an item
    train, test = load_split(f"mnist:{tmp_path},n=5", 0.5, split_seed=3)
    assert (train.name, test.name) == ("mnist[train]", "mnist[test]")
    np.testing.assert_array_equal(train.A, first.A)
    np.testing.assert_array_equal(train.y, first.y)
    assert test.n_samples == 7 and test.image_shape == (1, 28, 28)  # the whole t10k set
    np.testing.assert_array_equal(test.y, arrays["test"][1])
    np.testing.assert_allclose(test.A, mnist_expected(arrays["test"][0]), rtol=1e-6, atol=1e-6)
    # The fraction only switches the evaluation on: any value in (0, 1) gives the same split.
    other_train, other_test = load_split(f"mnist:{tmp_path}", 0.01)
    assert other_train.n_samples == 20 and other_test.n_samples == 7
    with pytest.raises(ValueError, match="test_fraction"):
        load_split(f"mnist:{tmp_path}", 0.0)


def test_mnist_directory_with_comma_and_colon(tmp_path):
    directory = tmp_path / "data,v1:x"
    make_mnist(directory)
    assert load(f"mnist:{directory}").n_samples == 20
    assert load(f"mnist:{directory},n=3").n_samples == 3


def test_mnist_plain_file_preferred_and_load_skips_test_files(tmp_path):
    arrays = make_mnist(tmp_path)
    # A gzipped copy beside the plain file is ignored; load() does not need the test files.
    write_file(tmp_path / "train-images-idx3-ubyte", b"junk", gz=True)
    for name in MNIST_NAMES[2:]:
        (tmp_path / name).unlink()
    np.testing.assert_array_equal(load(f"mnist:{tmp_path}").y, arrays["train"][1])


def test_mnist_missing_directory(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(ValueError) as err:
        load(f"mnist:{missing}")
    message = str(err.value)
    assert str(missing) in message and "does not exist" in message
    assert all(name in message for name in MNIST_NAMES)
    (tmp_path / "plain").write_text("x")
    with pytest.raises(ValueError, match="is not a directory"):
        load(f"mnist:{tmp_path / 'plain'}")
    # A directory that swallowed a misspelt key says how the directory is cut off.
    with pytest.raises(ValueError, match="up to the first ',KEY='"):
        load(f"mnist:{tmp_path},m=3")


@pytest.mark.parametrize("missing", MNIST_NAMES)
def test_mnist_missing_file_lists_expected_names(tmp_path, missing):
    make_mnist(tmp_path)
    (tmp_path / missing).unlink()
    with pytest.raises(ValueError) as err:
        load_split(f"mnist:{tmp_path}", 0.2)
    message = str(err.value)
    assert f"no {missing} in {tmp_path}" in message
    assert all(name in message for name in MNIST_NAMES)
    assert f"{missing}.gz" in message                           # the alternatives it tried


def _replace(directory, name, data: bytes):
    (directory / name).write_bytes(data)
    return directory / name


@pytest.mark.parametrize("name, data, fragment", [
    ("train-images-idx3-ubyte", idx_bytes(0x801, (20,), bytes(20)),
     r"not an MNIST images file: magic number 0x00000801, expected 0x00000803"),
    ("train-labels-idx1-ubyte", idx_bytes(0x803, (20, 28, 28), bytes(20 * 784)),
     r"not an MNIST labels file: magic number 0x00000803, expected 0x00000801"),
    ("train-images-idx3-ubyte", b"\x00\x00\x08", r"not an idx file: it has only 3 bytes"),
    ("train-images-idx3-ubyte", idx_bytes(0x803, (20, 28), b""), r"truncated idx header"),
    ("train-images-idx3-ubyte", idx_bytes(0x803, (20, 28, 28), bytes(20 * 784 - 1)),
     r"truncated: the header announces 20 images of 28×28 pixels \(15680 bytes\) but only "
     r"15679 bytes follow"),
    ("train-labels-idx1-ubyte", idx_bytes(0x801, (20,), bytes(12)),
     r"truncated: the header announces 20 labels \(20 bytes\) but only 12"),
    ("train-labels-idx1-ubyte", idx_bytes(0x801, (20,), bytes(21)), r"1 bytes of trailing data"),
    ("train-images-idx3-ubyte", idx_bytes(0x803, (20, 27, 28), bytes(20 * 27 * 28)),
     r"images are 27×28, expected 28×28"),
    ("train-labels-idx1-ubyte", idx_bytes(0x801, (20,), bytes(5) + b"\x0a" + bytes(14)),
     r"label 10 of sample 5 is out of range 0\.\.9"),
])
def test_mnist_malformed_files(tmp_path, name, data, fragment):
    make_mnist(tmp_path)
    path = _replace(tmp_path, name, data)
    with pytest.raises(ValueError, match=fragment) as err:
        load(f"mnist:{tmp_path}")
    assert str(err.value).startswith(str(path))


def test_mnist_count_mismatch_and_bad_gzip(tmp_path):
    make_mnist(tmp_path)
    _replace(tmp_path, "t10k-labels-idx1-ubyte", idx_bytes(0x801, (6,), bytes(6)))
    with pytest.raises(ValueError, match=r"t10k-images-idx3-ubyte has 7 images but .*"
                                         r"t10k-labels-idx1-ubyte has 6 labels"):
        load_split(f"mnist:{tmp_path}", 0.1)
    (tmp_path / "train-labels-idx1-ubyte").unlink()
    (tmp_path / "train-labels-idx1-ubyte.gz").write_bytes(b"\x1f\x8b not really gzip")
    with pytest.raises(ValueError, match=r"train-labels-idx1-ubyte\.gz: cannot be read"):
        load(f"mnist:{tmp_path}")


@pytest.mark.parametrize("spec, fragment", [
    ("mnist:{d},n=21", r"n=21 is more than the 20 samples of the train set"),
    ("mnist:{d},n=0", r"n must be an integer >= 1, got 0"),
    ("mnist:{d},n=2.5", r"n must be an integer >= 1, got 2\.5"),
    ("mnist:{d},n=3,n=4", r"'n' is given twice"),
    ("mnist:{d},n=3,seed=4", r"unknown key 'seed'; valid keys: n"),
    ("mnist:{d},n=3,x", r"expected key=value, got 'x'"),
    ("mnist:", r"mnist:DIR needs a dir"),
    ("mnist: ,n=3", r"mnist:DIR needs a directory"),
])
def test_mnist_spec_errors(tmp_path, spec, fragment):
    make_mnist(tmp_path)
    with pytest.raises(ValueError, match=fragment):
        load(spec.format(d=tmp_path))


def test_read_idx_directly(tmp_path):
    path = write_file(tmp_path / "labels", idx_bytes(0x801, (3,), b"\x01\x02\x09"), gz=True)
    np.testing.assert_array_equal(read_idx(path, "labels"), [1, 2, 9])
    with pytest.raises(ValueError, match="kind must be"):
        read_idx(path, "pixels")


def test_load_images_refuses_unknown_name(tmp_path):
    with pytest.raises(ValueError, match="choose one of mnist, cifar10"):
        load_images("svhn", tmp_path)


# ------------------------------------------------------------------------------------------
# CIFAR-10
# ------------------------------------------------------------------------------------------
def test_cifar10_values_shape_labels(tmp_path):
    (data, labels), (test_data, test_labels) = make_cifar(tmp_path)
    ds = load(f"cifar10:{tmp_path}")
    assert ds.name == "cifar10" and ds.task == "multiclass" and ds.n_classes == 10
    assert ds.A.dtype == np.float32 and ds.A.shape == (10, 3072)
    assert ds.image_shape == (3, 32, 32)
    assert ds.y.dtype == np.int64
    np.testing.assert_array_equal(ds.y, labels)
    np.testing.assert_allclose(ds.A, cifar_expected(data), rtol=1e-6, atol=1e-6)
    # Channel c of image i is rows 1024·c ... of the C-major row.
    image = ds.A[4].reshape(ds.image_shape)
    np.testing.assert_allclose(image[2], (data[4, 2048:].reshape(32, 32) / 255.0 - 0.4465)
                               / 0.2616, rtol=1e-6, atol=1e-6)
    train, test = load_split(f"cifar10:{tmp_path}", 0.3)
    assert (train.name, test.name) == ("cifar10[train]", "cifar10[test]")
    assert train.n_samples == 10 and test.n_samples == 4 and test.image_shape == (3, 32, 32)
    np.testing.assert_array_equal(test.y, test_labels)
    np.testing.assert_allclose(test.A, cifar_expected(test_data), rtol=1e-6, atol=1e-6)


def test_cifar10_parent_directory_and_n(tmp_path):
    (data, labels), _ = make_cifar(tmp_path / "cifar-10-batches-py")
    # n=3 needs the first two batches only: a broken third batch is not read.
    (tmp_path / "cifar-10-batches-py" / "data_batch_3").write_bytes(b"broken")
    ds = load(f"cifar10:{tmp_path},n=3")
    assert ds.n_samples == 3
    np.testing.assert_array_equal(ds.y, labels[:3])
    np.testing.assert_allclose(ds.A, cifar_expected(data[:3]), rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError, match=r"data_batch_3: not a CIFAR-10 batch"):
        load(f"cifar10:{tmp_path}")
    with pytest.raises(ValueError, match=r"n=11 is more than the 10 samples of the train set"):
        make_cifar(tmp_path / "other")
        load(f"cifar10:{tmp_path / 'other'},n=11")


@pytest.mark.parametrize("module", ["numpy.core.multiarray", "numpy._core.multiarray"])
def test_cifar10_python2_pickles(tmp_path, module):
    # The distributed files are Python 2 pickles; NumPy 2 writes numpy._core instead.
    data, labels = cifar_batch(3, 7)
    raw = py2_batch_bytes(data, labels).replace(b"numpy.core.multiarray",
                                                module.encode())
    (tmp_path / "test_batch").write_bytes(raw)
    got_data, got_labels = read_cifar10_batch(tmp_path / "test_batch")
    np.testing.assert_array_equal(got_data, data)
    np.testing.assert_array_equal(got_labels, labels)


class _RunsCommand:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {shlex.quote(str(self.marker))}",)


class _CallsGlobal:
    def __init__(self, function, *args):
        self.function, self.args = function, args

    def __reduce__(self):
        return self.function, self.args


def test_cifar10_refuses_os_system_without_running_it(tmp_path):
    marker = tmp_path / "marker"
    data, labels = cifar_batch(2, 0)
    evil = {b"data": data, b"labels": labels, b"x": _RunsCommand(marker)}
    path = tmp_path / "data_batch_1"
    path.write_bytes(pickle.dumps(evil, protocol=4))
    with pytest.raises(ValueError) as err:
        read_cifar10_batch(path)
    message = str(err.value)
    assert message.startswith(str(path))
    assert f"not a CIFAR-10 batch: it asks to load {os.system.__module__}.system" in message
    assert not marker.exists()
    # Plain pickle.load would have run it (the check above is not vacuous).
    pickle.loads(path.read_bytes())
    assert marker.exists()


@pytest.mark.parametrize("function, args, name", [
    (eval, ("1+1",), "builtins.eval"),
    (np.frombuffer, (b"\x00", np.uint8), "numpy.frombuffer"),
    (getattr, (np.ndarray, "tofile"), "builtins.getattr"),
])
def test_cifar10_refuses_other_globals(tmp_path, function, args, name):
    path = tmp_path / "test_batch"
    path.write_bytes(pickle.dumps({b"data": _CallsGlobal(function, *args)}, protocol=4))
    with pytest.raises(ValueError, match=rf"test_batch: not a CIFAR-10 batch: it asks to load "
                                         rf"{name}"):
        read_cifar10_batch(path)


def test_cifar_unpickler_allows_only_array_globals():
    assert CifarUnpickler.ALLOWED == (
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"), ("numpy", "dtype"))


@pytest.mark.parametrize("batch, fragment", [
    ({b"data": np.zeros((2, 3072), np.float64), b"labels": [0, 1]},
     r"b'data' must be a uint8 array of shape N × 3072, found a float64 array of shape "
     r"\(2, 3072\)"),
    ({b"data": np.zeros((2, 3000), np.uint8), b"labels": [0, 1]},
     r"found a uint8 array of shape \(2, 3000\)"),
    ({b"data": np.zeros(3072, np.uint8), b"labels": [0]}, r"found a uint8 array of shape"),
    ({b"data": [[0] * 3072], b"labels": [0]}, r"found a list"),
    ({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 1, 2]},
     r"2 images but 3 labels"),
    ({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 10]},
     r"label 10 of sample 1 is out of range 0\.\.9"),
    ({b"data": np.zeros((2, 3072), np.uint8), b"labels": [-1, 0]},
     r"label -1 of sample 0 is out of range"),
    ({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0.5, 1.0]},
     r"b'labels' must be a list of N integers"),
    ({b"data": np.zeros((2, 3072), np.uint8)}, r"no b'labels' entry"),
    ({b"labels": [0]}, r"no b'data' entry"),
    ([1, 2, 3], r"it holds a list, not a dict"),
])
def test_cifar10_malformed_batches(tmp_path, batch, fragment):
    make_cifar(tmp_path)
    path = tmp_path / "data_batch_2"
    path.write_bytes(pickle.dumps(batch, protocol=4))
    with pytest.raises(ValueError, match=fragment) as err:
        load(f"cifar10:{tmp_path}")
    assert str(err.value).startswith(str(path))


def test_cifar10_not_a_pickle(tmp_path):
    make_cifar(tmp_path)
    (tmp_path / "test_batch").write_bytes(b"\x80\x04 this is no pickle")
    with pytest.raises(ValueError, match=r"test_batch: not a CIFAR-10 batch: not a readable"):
        load_split(f"cifar10:{tmp_path}", 0.5)


@pytest.mark.parametrize("missing", CIFAR_NAMES)
def test_cifar10_missing_file_lists_expected_names(tmp_path, missing):
    make_cifar(tmp_path)
    (tmp_path / missing).unlink()
    with pytest.raises(ValueError) as err:
        load_split(f"cifar10:{tmp_path}", 0.5)
    message = str(err.value)
    assert f"no {missing} in {tmp_path}" in message
    assert all(name in message for name in CIFAR_NAMES)


def test_cifar10_missing_directory(tmp_path):
    with pytest.raises(ValueError) as err:
        load(f"cifar10:{tmp_path / 'nowhere'}")
    message = str(err.value)
    assert str(tmp_path / "nowhere") in message and "does not exist" in message
    assert all(name in message for name in CIFAR_NAMES)
    with pytest.raises(ValueError, match=r"no data_batch_1 in .*cifar-10-python\.tar\.gz"):
        load(f"cifar10:{tmp_path}")                 # an empty directory


# ------------------------------------------------------------------------------------------
# image_shape on the Dataset, the bundled digits, the help text
# ------------------------------------------------------------------------------------------
def test_image_shape_survives_take_shard_split_standardize(tmp_path):
    make_mnist(tmp_path)
    ds = load(f"mnist:{tmp_path}")
    assert ds.take([1, 2]).image_shape == (1, 28, 28)
    assert shard(ds, 1, 3).image_shape == (1, 28, 28)
    train, test = train_test_split(ds, 0.25)
    assert train.image_shape == test.image_shape == (1, 28, 28)
    assert all(s.image_shape == (1, 28, 28) for s in standardize(train, test))
    assert load(f"mnist:{tmp_path}", standardize_features=True).image_shape == (1, 28, 28)
    assert load("synthetic").image_shape is None


@pytest.mark.parametrize("shape, fragment", [
    ((1, 2, 2), r"image_shape \(1, 2, 2\) holds 4 values but A has 6 columns"),
    ((6, 1), r"image_shape must be 3 integers"),
    ((3, 2, 1.0), r"image_shape must be 3 integers"),
    ((6, 1, 0), r"image_shape must be 3 integers"),
    (6, r"image_shape must be 3 integers"),
])
def test_image_shape_checked(shape, fragment):
    with pytest.raises(ValueError, match=fragment):
        Dataset(np.zeros((2, 6)), np.zeros(2), "x", "regression", image_shape=shape)
    ok = Dataset(np.zeros((2, 6)), np.zeros(2), "x", "regression", image_shape=[np.int64(3), 2, 1])
    assert ok.image_shape == (3, 2, 1) and all(type(v) is int for v in ok.image_shape)


def test_digits_image_shape_and_unchanged_values():
    skd = pytest.importorskip("sklearn.datasets")
    X, t = skd.load_digits(return_X_y=True)
    X = np.asarray(X, dtype=np.float64)
    std = X.std(axis=0)
    std[std == 0] = 1.0
    expected = (X - X.mean(axis=0)) / std
    ds = load("digits")
    assert ds.image_shape == (1, 8, 8) and ds.A.dtype == np.float64
    np.testing.assert_array_equal(ds.A, expected)
    np.testing.assert_array_equal(ds.y, t)
    binary = load("digits:binary")
    assert binary.image_shape == (1, 8, 8)
    np.testing.assert_array_equal(binary.A, expected)
    train, test = load_split("digits", 0.25)
    assert train.image_shape == test.image_shape == (1, 8, 8)
    assert load("breast_cancer").image_shape is None


def test_help_text_names_the_image_specs():
    with pytest.raises(ValueError) as err:
        load("svhn:/data")
    message = str(err.value)
    assert "mnist" in message and "cifar10" in message
    assert "'mnist:DIR[,n=N]'" in message and "'cifar10:DIR[,n=N]'" in message


def test_libsvm_options_refused_for_images(tmp_path):
    make_mnist(tmp_path)
    with pytest.raises(TypeError, match="libsvm:PATH only"):
        load(f"mnist:{tmp_path}", dense=True)


class _ForgedArray:
    """Pickles as ``numpy.ndarray(shape, uint8)``: memory the file does not hold."""

    def __init__(self, shape):
        self.shape = shape

    def __reduce__(self):
        return (np.ndarray, (self.shape, np.dtype(np.uint8)))


@pytest.mark.parametrize("forged", ["ndarray", "reconstruct"])
def test_a_cifar_pickle_cannot_allocate_what_it_does_not_hold(tmp_path, forged):
    import pickle

    if forged == "ndarray":
        data = _ForgedArray((50000, 3072))
    else:  # _reconstruct asked for a large array directly, before its BUILD step
        data = type("Big", (), {"__reduce__": lambda self: (
            np._core.multiarray._reconstruct, (np.ndarray, (50000, 3072), b"B"))})()
    path = tmp_path / "data_batch_1"
    path.write_bytes(pickle.dumps({b"data": data, b"labels": [0] * 50000}, protocol=4))
    with pytest.raises(ValueError, match="not a CIFAR-10 batch") as err:
        read_cifar10_batch(path)
    assert "50000" in str(err.value)


def test_a_gzip_bomb_is_read_no_further_than_its_header_allows(tmp_path):
    import gzip

    header = (0x00000801).to_bytes(4, "big") + (3).to_bytes(4, "big")
    path = tmp_path / "train-labels-idx1-ubyte.gz"
    with gzip.open(path, "wb") as f:  # 3 labels announced, 64 MiB of zeros after them
        f.write(header + bytes(3))
        for _ in range(64):
            f.write(bytes(1 << 20))
    assert path.stat().st_size < 1 << 20
    with pytest.raises(ValueError, match="trailing data"):
        read_idx(path, "labels")
