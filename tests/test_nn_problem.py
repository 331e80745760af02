"""`mpicomp.nn.problem.NeuralNetwork` on one process, against independent PyTorch references.

Determinism: PyTorch runs on one thread here (`torch.set_num_threads(1)`), where its CPU
kernels are deterministic; the references build the same model (``torch.manual_seed(seed)``,
then `build_model`, cast to the data's dtype), load ``x`` with ``vector_to_parameters`` and run
the same forward and backward passes on the same rows, so minibatch gradients agree bit for bit
(the ℓ2 term aside: the problem adds ``λ2·x`` in place with ``add_(alpha=λ2)``, which may round
once less than ``g + λ2*x``; and full-shard gradients sum ``(chunk size / m)``-weighted chunk
means, the reference takes one mean — both differ in float64 round-off only).
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import torch.nn.functional as F  # noqa: E402
from torch.nn.utils import parameters_to_vector, vector_to_parameters  # noqa: E402

import mpicomp.nn.problem as nn_problem  # noqa: E402
from mpicomp.nn.models import build_model  # noqa: E402
from mpicomp.nn.problem import NeuralNetwork, augment  # noqa: E402
from mpicomp.problems.data import load  # noqa: E402

SHAPE = (1, 8, 8)
BN_MODEL = "nn_models:tiny_cnn"  # tests/nn_models.py: conv, batch norm, ReLU, pool, linear


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def digits():
    """The first 64 digits: float64 standardised 8×8 images, labels 0..9."""
    data = load("digits").take(np.arange(64))
    assert data.image_shape == SHAPE
    return np.ascontiguousarray(data.A), np.asarray(data.y)


def network(A, b, model="lenet", **options):
    options.setdefault("image_shape", SHAPE)
    options.setdefault("n_classes", 10)
    return NeuralNetwork(A, b, model=model, **options)


# ------------------------------------------------------------------ independent references
def reference_net(model, seed, dtype=torch.float64, n_classes=10):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = build_model(model, SHAPE, n_classes)
    return net.to(dtype)


def reference_grad(net, x, A, b, rows=None, l2=0.0, train=True):
    """``(∇f(x), f(x))`` of the mean cross-entropy over ``A[rows]`` (+ ℓ2), from scratch."""
    rows = np.arange(len(b)) if rows is None else np.asarray(rows)
    vector_to_parameters(torch.from_numpy(np.array(x)), net.parameters())
    net.train(train)
    net.zero_grad()
    images = torch.from_numpy(np.ascontiguousarray(A[rows])).reshape(len(rows), *SHAPE)
    loss = F.cross_entropy(net(images), torch.from_numpy(b[rows]))
    loss.backward()
    g = parameters_to_vector([p.grad for p in net.parameters()]).detach().numpy().copy()
    x64 = np.asarray(x, dtype=g.dtype)
    return g + l2 * x64, float(loss.detach()) + 0.5 * l2 * float(np.dot(x64, x64))


# ------------------------------------------------------------------ 1. zero copy
def test_parameters_and_gradients_alias_x_and_the_returned_gradient(digits):
    A, b = digits
    p = network(A, b)
    x = p.initial_point()
    assert x.dtype == np.float64 and x.shape == (p.dim,)
    g = p.grad(x, np.arange(8))
    flat_grad = p.module.mpicomp_flat_grad
    assert np.shares_memory(g, flat_grad.numpy())
    assert g.ctypes.data == flat_grad.data_ptr()
    offset = 0
    for param in p.module.parameters():
        n = param.numel()
        assert param.data_ptr() == x.ctypes.data + offset * x.itemsize
        assert param.grad.data_ptr() == g.ctypes.data + offset * g.itemsize
        np.testing.assert_array_equal(param.grad.detach().numpy().ravel(), g[offset:offset + n])
        np.testing.assert_array_equal(param.detach().numpy().ravel(), x[offset:offset + n])
        offset += n
    assert offset == x.size == p.dim
    # the next call writes the same buffer
    g2 = p.grad(x, np.arange(8, 16))
    assert g2.ctypes.data == g.ctypes.data


def test_an_in_place_change_of_x_is_what_the_module_reads(digits):
    A, b = digits
    p = network(A, b, model="mlp", seed=3)
    ref = reference_net("mlp", 3)
    x = p.initial_point()
    rows = np.arange(10)
    p.grad(x, rows)
    x *= 0.5  # the algorithm's in-place update: no rebinding, the module must see it
    x[:5] += 1.0
    images = torch.from_numpy(A[:10]).reshape(10, *SHAPE)
    vector_to_parameters(torch.from_numpy(x.copy()), ref.parameters())
    with torch.no_grad():
        np.testing.assert_array_equal(p.module(images).numpy(), ref(images).numpy())
    expected, _ = reference_grad(ref, x, A, b, rows)
    np.testing.assert_array_equal(p.grad(x, rows), expected)
    x[:] = 0.0  # all weights and biases zero: logits zero
    with torch.no_grad():
        assert not p.module(images).any()


def test_an_x_of_another_dtype_is_copied_into_the_modules_vector(digits):
    A, b = digits
    A32 = A.astype(np.float32)
    p = network(A32, b, model="mlp", seed=1)
    ref = reference_net("mlp", 1, torch.float32)
    own = p.module.mpicomp_own
    x64 = p.initial_point(dtype=np.float64) + 0.01
    rows = np.array([3, 1, 4, 1, 5])
    g = p.grad(x64, rows)
    assert g.dtype == np.float32
    lo, hi = x64.ctypes.data, x64.ctypes.data + x64.nbytes
    for param in p.module.parameters():
        assert not lo <= param.data_ptr() < hi
    assert p.module.mpicomp_flat.data_ptr() == own.data_ptr()
    np.testing.assert_array_equal(own.numpy(), x64.astype(np.float32))
    expected, _ = reference_grad(ref, x64.astype(np.float32), A32, b, rows)
    np.testing.assert_array_equal(g, expected)
    # a float32 x is bound without a copy; a float64 one afterwards goes to the own vector again
    x32 = p.initial_point(dtype=np.float32)
    x32_before = x32.copy()
    p.grad(x32, rows)
    assert p.module.mpicomp_flat.data_ptr() == x32.ctypes.data
    y64 = x64 - 0.02
    g = p.grad(y64, rows)
    assert p.module.mpicomp_flat.data_ptr() == own.data_ptr()
    np.testing.assert_array_equal(g, reference_grad(ref, y64.astype(np.float32), A32, b, rows)[0])
    np.testing.assert_array_equal(x32, x32_before)  # the copy went to the own vector, not x32


def test_a_non_contiguous_x_is_copied(digits):
    A, b = digits
    p = network(A, b, model="mlp", seed=1)
    ref = reference_net("mlp", 1)
    base = np.repeat(p.initial_point(), 2)
    x = base[::2]
    g = p.grad(x, np.arange(6))
    assert p.module.mpicomp_flat.data_ptr() == p.module.mpicomp_own.data_ptr()
    np.testing.assert_array_equal(g, reference_grad(ref, x, A, b, np.arange(6))[0])


def test_a_reversed_x_is_copied(digits):
    A, b = digits
    p = network(A, b, model="mlp", seed=1)
    ref = reference_net("mlp", 1)
    x = p.initial_point()[::-1].copy()[::-1]  # negative stride: torch.from_numpy refuses it
    assert x.strides[0] < 0
    np.testing.assert_array_equal(p.grad(x, np.arange(6)),
                                  reference_grad(ref, x, A, b, np.arange(6))[0])
    np.testing.assert_allclose(p.loss(x), reference_grad(ref, x, A, b, None, train=False)[1],
                               rtol=1e-13)


# ------------------------------------------------------------------ 2. the gradient is right
@pytest.mark.parametrize("model", ["mlp", "lenet"])
def test_minibatch_gradient_and_loss_match_the_reference(digits, model):
    A, b = digits
    l2 = 1e-2
    p = network(A, b, model=model, l2=l2, seed=5)
    ref = reference_net(model, 5)
    x = p.initial_point() + np.random.default_rng(0).normal(0, 0.01, p.dim)
    rows = np.array([7, 7, 0, 63, 12, 7, 30])  # repeats count as often as they appear
    expected, loss = reference_grad(ref, x, A, b, rows, l2=l2)
    np.testing.assert_allclose(p.grad(x, rows), expected, rtol=1e-13, atol=1e-16)
    np.testing.assert_allclose(p.loss(x, rows), loss, rtol=1e-13)
    # without ℓ2 the same operations run in the same order: bit for bit
    p0 = network(A, b, model=model, seed=5)
    g0 = p0.grad(x, rows).copy()
    np.testing.assert_array_equal(g0, reference_grad(ref, x, A, b, rows)[0])
    # any integer index dtype the Problem contract accepts
    for dtype in (np.int32, np.int16, np.uint8, np.uint32, np.uint64):
        np.testing.assert_array_equal(p0.grad(x, rows.astype(dtype)), g0, err_msg=str(dtype))
        assert p0.loss(x, rows.astype(dtype)) == p0.loss(x, rows)
    # the repeats' weights: (3·g_7 + g_0 + g_63 + g_12 + g_30) / 7
    single = {i: p0.grad(x, [i]).copy() for i in (7, 0, 63, 12, 30)}
    combined = (3 * single[7] + single[0] + single[63] + single[12] + single[30]) / 7
    np.testing.assert_allclose(g0, combined, rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("model", ["mlp", "lenet"])
@pytest.mark.parametrize("chunk", [1024, 16])
def test_full_shard_gradient_and_loss_are_the_single_batch_ones(digits, monkeypatch, model,
                                                                chunk):
    A, b = digits
    A, b = A[:40], b[:40]  # 40 = 16 + 16 + 8 with chunks of 16
    monkeypatch.setattr(nn_problem, "EVAL_CHUNK", chunk)
    l2 = 3e-3
    p = network(A, b, model=model, l2=l2, seed=2)
    ref = reference_net(model, 2)
    x = p.initial_point() * 1.5
    expected, loss = reference_grad(ref, x, A, b, None, l2=l2)
    np.testing.assert_allclose(p.grad(x), expected, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(p.loss(x), loss, rtol=1e-13)
    np.testing.assert_allclose(p.objective(x), loss, rtol=1e-13)


def test_finite_differences_agree_with_the_gradient(digits):
    A, b = digits
    p = network(A, b, model="lenet", l2=1e-3, seed=4)
    rng = np.random.default_rng(1)
    x = p.initial_point() + rng.normal(0, 0.02, p.dim)
    rows = np.arange(6)
    eps = 1e-6
    for _ in range(3):
        v = rng.normal(size=p.dim)
        v /= np.linalg.norm(v)
        slope = float(np.dot(p.grad(x, rows), v))
        fd = (p.loss(x + eps * v, rows) - p.loss(x - eps * v, rows)) / (2 * eps)
        assert abs(fd - slope) <= 1e-6 * max(1.0, abs(slope)), (fd, slope)
    # and the whole shard
    v = rng.normal(size=p.dim)
    v /= np.linalg.norm(v)
    slope = float(np.dot(p.grad(x), v))
    fd = (p.loss(x + eps * v) - p.loss(x - eps * v)) / (2 * eps)
    assert abs(fd - slope) <= 1e-6 * max(1.0, abs(slope)), (fd, slope)


# ------------------------------------------------------------------ 4. batch norm
def buffers(p):
    return {k: v.copy() for k, v in p.checkpoint_arrays().items()}


def assert_same(a, c):
    assert a.keys() == c.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], c[k], err_msg=k)


def test_batch_norm_statistics_move_in_minibatch_steps_only(digits):
    A, b = digits
    p = network(A, b, model=BN_MODEL, seed=7)
    x = p.initial_point()
    start = buffers(p)
    assert set(start) == {"buffer:1.running_mean", "buffer:1.running_var",
                          "buffer:1.num_batches_tracked"}
    loss0 = p.loss(x)
    assert_same(buffers(p), start)
    p.grad(x, np.arange(16))
    moved = buffers(p)
    assert int(moved["buffer:1.num_batches_tracked"]) == 1
    assert not np.array_equal(moved["buffer:1.running_mean"], start["buffer:1.running_mean"])
    assert not np.array_equal(moved["buffer:1.running_var"], start["buffer:1.running_var"])
    assert p.module.training
    # evaluations leave them exactly as they were
    loss1 = p.loss(x)
    p.loss(x, np.arange(5))
    p.predict(x)
    p.predict(x, A[:3])
    with p.evaluation():
        p.grad(x)
        p.grad(x, np.arange(16, 32))
    assert p.module.training  # the mode before the block is back
    assert_same(buffers(p), moved)
    assert loss1 != loss0  # the eval-mode loss uses the running statistics
    # restoring the checkpoint gives back the eval-mode loss of that state
    p.restore_arrays(start)
    assert_same(buffers(p), start)
    assert p.loss(x) == loss0
    p.restore_arrays(moved)
    assert p.loss(x) == loss1


def test_loss_runs_in_evaluation_mode_with_the_running_statistics(digits):
    A, b = digits
    p = network(A, b, model=BN_MODEL, seed=7)
    ref = reference_net(BN_MODEL, 7)
    x = p.initial_point()
    rows = np.arange(20)
    g = p.grad(x, rows)
    # the reference's training step: same gradient, same running statistics afterwards
    expected, _ = reference_grad(ref, x, A, b, rows)
    np.testing.assert_array_equal(g, expected)
    for name, t in ref.named_buffers():
        np.testing.assert_array_equal(p.checkpoint_arrays()[f"buffer:{name}"], t.numpy())
    _, eval_loss = reference_grad(ref, x, A, b, None, train=False)
    np.testing.assert_allclose(p.loss(x), eval_loss, rtol=1e-13)
    with torch.no_grad():
        ref.eval()
        labels = ref(torch.from_numpy(A).reshape(-1, *SHAPE)).argmax(1).numpy()
    np.testing.assert_array_equal(p.predict(x), labels)


def test_checkpoint_arrays_are_copies_and_empty_without_buffers(digits):
    A, b = digits
    p = network(A, b, model=BN_MODEL, seed=7)
    saved = p.checkpoint_arrays()
    saved["buffer:1.running_mean"][:] = 42.0  # a copy: the module is untouched
    assert not np.any(p.checkpoint_arrays()["buffer:1.running_mean"] == 42.0)
    p.restore_arrays(saved)
    np.testing.assert_array_equal(p.checkpoint_arrays()["buffer:1.running_mean"], 42.0)
    assert network(A, b, model="lenet").checkpoint_arrays() == {}


# ------------------------------------------------------------------ 5. with_data and training
def test_with_data_shares_the_module(digits):
    A, b = digits
    p = network(A[:40], b[:40], model=BN_MODEL, seed=7, l2=1e-3)
    q = p.with_data(A[40:], b[40:])
    assert q.module is p.module and q.dim == p.dim
    assert q.hyperparameters() == p.hyperparameters()
    assert q.hyperparameters()["model"] == BN_MODEL
    x = p.initial_point()
    p.grad(x, np.arange(10))
    assert_same(q.checkpoint_arrays(), p.checkpoint_arrays())
    ref = reference_net(BN_MODEL, 7)
    reference_grad(ref, x, A, b, np.arange(10))  # the same statistics in the reference
    _, held_out = reference_grad(ref, x, A[40:], b[40:], None, l2=1e-3, train=False)
    np.testing.assert_allclose(q.loss(x), held_out, rtol=1e-13)
    # the held-out problem's evaluations run on the shared parameters and leave the stats
    before = buffers(p)
    q.predict(x)
    assert_same(buffers(p), before)
    p.grad(x, np.arange(12, 20))  # a training step moves the statistics the held-out set uses
    assert_same(q.checkpoint_arrays(), buffers(p))
    assert not np.array_equal(q.checkpoint_arrays()["buffer:1.running_mean"],
                              before["buffer:1.running_mean"])


def test_no_chunk_of_a_full_shard_holds_one_sample(digits, monkeypatch):
    """Batch norm refuses a batch of one in training mode: a shard of 2·chunk + 1 samples is
    cut into chunk and chunk + 1, and its gradient is their weighted mean."""
    A, b = digits
    monkeypatch.setattr(nn_problem, "EVAL_CHUNK", 4)
    p = network(A[:9], b[:9], model=BN_MODEL, seed=3)
    assert [len(c[0][1]) for c in p._chunks()] == [4, 5]
    x = p.initial_point()
    g = p.grad(x).copy()
    ref = reference_net(BN_MODEL, 3)
    want = (4 * reference_grad(ref, x, A, b, np.arange(4))[0]
            + 5 * reference_grad(ref, x, A, b, np.arange(4, 9))[0]) / 9
    np.testing.assert_allclose(g, want, rtol=1e-12, atol=1e-15)


def test_evaluations_leave_pytorchs_random_generator_as_it_was(digits):
    """A trace row's gradient runs in training mode: dropout draws there must not shift the
    training run's draws."""
    A, b = digits
    p = network(A[:16], b[:16], model="nn_models:with_dropout")
    x = p.initial_point()
    before = torch.get_rng_state()
    with p.evaluation():
        p.grad(x)
        p.loss(x)
    assert torch.equal(torch.get_rng_state(), before)
    p.grad(x, np.arange(8))  # training: dropout draws
    assert not torch.equal(torch.get_rng_state(), before)


def test_a_small_network_overfits_64_digits(digits):
    A, b = digits
    p = network(A, b, model="mlp", seed=0)
    held = p.with_data(A[:16], b[:16])
    x = p.initial_point()
    rng = np.random.default_rng(0)
    start = float(np.mean(p.predict(x) == b))
    loss0 = p.loss(x)
    for _ in range(300):
        x -= 0.1 * p.grad(x, rng.integers(0, len(b), 16))
    accuracy = float(np.mean(p.predict(x) == b))
    assert accuracy > 0.9, (start, accuracy)
    assert p.loss(x) < 0.25 * loss0
    np.testing.assert_array_equal(held.predict(x), p.predict(x)[:16])
    np.testing.assert_array_equal(p.predict(x, A[:16]), p.predict(x)[:16])


# ------------------------------------------------------------------ 6. augmentation
def augment_reference(images, shape, rng):
    """Zero-pad 4, crop at the drawn offsets, flip where drawn (offsets first, then flips)."""
    n = images.shape[0]
    C, H, W = shape
    shifts = rng.integers(0, 9, size=(n, 2))
    flips = rng.random(n) < 0.5
    padded = np.zeros((n, C, H + 8, W + 8), dtype=images.dtype)
    padded[:, :, 4:4 + H, 4:4 + W] = images.reshape(n, C, H, W)
    out = np.empty((n, C, H, W), dtype=images.dtype)
    for i in range(n):
        dy, dx = shifts[i]
        crop = padded[i, :, dy:dy + H, dx:dx + W]
        out[i] = crop[:, :, ::-1] if flips[i] else crop
    return out.reshape(n, -1)


def test_augment_matches_a_numpy_implementation():
    shape = (3, 6, 6)
    images = np.random.default_rng(9).normal(size=(12, 108))
    first = augment(torch.from_numpy(images), shape, np.random.default_rng(5)).numpy()
    again = augment(torch.from_numpy(images), shape, np.random.default_rng(5)).numpy()
    np.testing.assert_array_equal(first, again)
    np.testing.assert_array_equal(first, augment_reference(images, shape,
                                                           np.random.default_rng(5)))
    assert first.shape == images.shape
    assert not np.array_equal(first, images)
    other = augment(torch.from_numpy(images), shape, np.random.default_rng(6)).numpy()
    assert not np.array_equal(first, other)


def test_augmented_gradients_draw_from_the_rng(digits):
    A, b = digits
    rows = np.arange(12)
    plain = network(A, b, model="lenet", seed=1)
    aug = network(A, b, model="lenet", seed=1, augment=True)
    ref = reference_net("lenet", 1)
    x = plain.initial_point()

    rng = np.random.default_rng(11)
    state = rng.bit_generator.state
    g = aug.grad(x, rows, rng=rng).copy()
    assert rng.bit_generator.state != state
    images = augment_reference(A[rows], SHAPE, np.random.default_rng(11))
    expected, _ = reference_grad(ref, x, images, b[rows])
    np.testing.assert_array_equal(g, expected)
    assert not np.array_equal(g, plain.grad(x, rows))
    # the next draw continues the stream
    g2 = aug.grad(x, rows, rng=rng)
    assert not np.array_equal(g, g2)

    rng = np.random.default_rng(11)
    state = rng.bit_generator.state
    np.testing.assert_array_equal(plain.grad(x, rows, rng=rng),
                                  reference_grad(ref, x, A, b, rows)[0])
    assert rng.bit_generator.state == state
    aug.grad(x, rng=rng)  # the full shard is never augmented
    assert rng.bit_generator.state == state
    np.testing.assert_array_equal(aug.grad(x, rows), plain.grad(x, rows).copy())


# ------------------------------------------------------------------ 7. the initial point
def test_initial_point_is_the_seeded_model(digits):
    A, b = digits
    torch_state = torch.random.get_rng_state()
    a = network(A, b, seed=3).initial_point()
    assert torch.equal(torch.random.get_rng_state(), torch_state)  # torch's generator untouched
    c = network(A, b, seed=3).initial_point(np.random.default_rng(99))
    np.testing.assert_array_equal(a, c)
    assert not np.array_equal(a, network(A, b, seed=4).initial_point())
    ref = reference_net("lenet", 3)
    np.testing.assert_array_equal(a, parameters_to_vector(ref.parameters()).detach().numpy())
    p = network(A, b, seed=3)
    x32 = p.initial_point(dtype=np.float32)
    assert x32.dtype == np.float32 and x32.shape == (p.dim,)
    np.testing.assert_array_equal(x32, a.astype(np.float32))
    assert not np.shares_memory(x32, p.module.mpicomp_flat.numpy())
    # still the seeded weights after training steps moved the parameters (bound to x)
    x = p.initial_point()
    for _ in range(3):
        x -= 0.1 * p.grad(x, np.arange(8))
    p.grad(x.astype(np.float32), np.arange(8))  # copied into the module's own vector too
    np.testing.assert_array_equal(p.initial_point(), a)
    np.testing.assert_array_equal(p.with_data(A[:4], b[:4]).initial_point(), a)
    q = network(A.astype(np.float32), b, seed=3)
    assert q.module.mpicomp_flat.dtype == torch.float32
    np.testing.assert_array_equal(q.initial_point(), a)  # built in float32, exactly widened


# ------------------------------------------------------------------ 8. errors
def test_bad_x_and_batches_are_refused(digits):
    A, b = digits
    p = network(A, b, model="mlp")
    x = p.initial_point()
    with pytest.raises(ValueError, match="shape"):
        p.grad(x[:-1], np.arange(4))
    with pytest.raises(ValueError, match="shape"):
        p.loss(np.zeros(p.dim + 1))
    with pytest.raises(IndexError, match="0..63"):
        p.grad(x, np.array([0, 64]))
    with pytest.raises(IndexError):
        p.grad(x, np.array([-1]))
    with pytest.raises(TypeError, match="integer"):
        p.grad(x, np.array([0.0, 1.0]))


def test_bad_data_is_refused(digits):
    A, b = digits
    with pytest.raises(ValueError, match="64 features"):
        network(A, b, image_shape=(1, 8, 7))
    with pytest.raises(ValueError, match="image_shape"):
        network(A, b, image_shape=None)
    with pytest.raises(ValueError, match="image_shape"):
        network(A, b, image_shape=(8, 8))
    with pytest.raises(ValueError, match="integer"):
        network(A, b + 0.5)
    with pytest.raises(ValueError, match="0..9"):
        network(A, np.where(b == 0, 10, b))
    with pytest.raises(TypeError, match="float16"):
        network(A.astype(np.float16), b)
