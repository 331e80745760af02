"""A PyTorch model as an mpicomp problem: ``x`` is the model's parameters as one flat vector.

`NeuralNetwork` turns a ``torch.nn.Module`` (built by name or import path, `build_model`), the
cross-entropy loss and this rank's shard of images into a `mpicomp.problems.Problem`. The
module's parameters are views into one contiguous vector, and their gradients views into a
second one, so nothing is copied between the frameworks in a step:

- `grad(x)` binds the parameters to ``x`` itself when ``x`` has the model's dtype and device
  (``torch.from_numpy`` on the host, DLPack for CuPy: the parameters' storage *is* the state's
  vector, and the algorithm's in-place updates are what the next forward pass reads), runs the
  forward and backward passes, and returns the flat gradient buffer as an array of ``x``'s
  namespace (a view of the same memory, valid until the next call);
- any other ``x`` (a float64 copy for a trace row, say) is copied into the model's own flat
  vector first.

``f(x) = (1/m) Σ_j CE(model_x(a_j), b_j) + (λ2/2)‖x‖²``; the ℓ2 term (weight decay) covers every
parameter. Minibatch gradients run the module in training mode (batch-norm layers use the
batch's statistics and update their running averages); `loss`, `predict` and the full-shard
gradient of a trace row run under `evaluation`, which leaves the running averages as they were.
The buffers (batch-norm statistics) are part of what a checkpoint saves (`checkpoint_arrays`).

Data augmentation (``augment=True``: random crops of a 4-pixel zero-padded image and horizontal
flips, as for CIFAR-10) draws from the ``rng`` the caller passes with the batch — the rank's
sampling generator — so augmented runs stay reproducible and resumable.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Sequence

import numpy as np
import torch

from ..backend import is_device_array, namespace
from ..problems.base import Problem, check_integer_labels
from .models import build_model, check_model, parameter_layout

#: samples per forward pass when a whole shard is evaluated (bounds the activations' memory)
EVAL_CHUNK = 1024
TORCH_DTYPES = {np.dtype(np.float32): torch.float32, np.dtype(np.float64): torch.float64}


def as_tensor(array) -> torch.Tensor:
    """A tensor sharing ``array``'s memory: ``torch.from_numpy`` for NumPy, DLPack otherwise."""
    if isinstance(array, np.ndarray):
        return torch.from_numpy(array)
    return torch.from_dlpack(array)


def cuda_device_of(array) -> torch.device:
    """The CUDA device of a device array (CuPy's ``device.id``; the current one otherwise),
    made PyTorch's current device too, so both libraries work on the rank's own GPU."""
    index = getattr(getattr(array, "device", None), "id", None)
    index = torch.cuda.current_device() if index is None else int(index)
    torch.cuda.set_device(index)
    return torch.device("cuda", index)


def check_image_shape(image_shape, n_features: int) -> tuple[int, int, int]:
    """``(C, H, W)`` of the images whose flattened rows have ``n_features`` values."""
    shape = tuple(int(v) for v in image_shape) if image_shape is not None else None
    if shape is None or len(shape) != 3 or min(shape) < 1:
        raise ValueError(f"image_shape must be (channels, height, width), got {image_shape!r}")
    if math.prod(shape) != n_features:
        raise ValueError(f"image_shape {shape} has {math.prod(shape)} values per image, but the "
                         f"data has {n_features} features")
    return shape  # type: ignore[return-value]


class NeuralNetwork(Problem):
    """Cross-entropy of a PyTorch classifier over the rank's images, ``x`` its flat parameters.

    Parameters
    ----------
    A : array (m, C·H·W)
        The shard's images, flattened C-major (NumPy, or CuPy for ``--device gpu``: the model
        then runs on the current CUDA device).
    b : array (m,)
        Class labels ``0..C−1``.
    l1, l2 : float
        ``λ1`` (prox) and ``λ2`` (weight decay inside `loss` and `grad`).
    model : str or torch.nn.Module
        A name of `mpicomp.nn.models.MODELS` or ``package.module:function`` (`build_model`,
        seeded by ``seed``), or a module of your own (moved to the data's device and dtype; its
        parameters become views of one flat vector). `with_data` shares the module.
    n_classes : int, optional
        ``C`` (default ``max(b) + 1``; pass it in distributed runs).
    image_shape : (int, int, int)
        ``(channels, height, width)`` of one image.
    augment : bool
        Random crop (4-pixel padding) and horizontal flip of minibatch images.
    seed : int
        Seed of the initial weights (`torch.manual_seed`), the same on every rank.
    """

    name = "nn"
    convex = False

    def __init__(self, A, b, l1: float = 0.0, l2: float = 0.0, model="lenet",
                 n_classes: int | None = None, image_shape: Sequence[int] | None = None,
                 augment: bool = False, seed: int = 0) -> None:
        super().__init__(A, b, l1=l1, l2=l2)
        self.b, self.n_classes = check_integer_labels(self.b, n_classes, "a neural network")
        self.image_shape = check_image_shape(image_shape, self.n_features)
        self.augment, self.seed = bool(augment), int(seed)
        dtype = np.dtype(self.A.dtype)
        if dtype not in TORCH_DTYPES:
            raise TypeError(f"a neural network trains in float32 or float64, got {dtype}")
        if isinstance(model, torch.nn.Module) and hasattr(model, "mpicomp_flat"):
            # another problem's network (`with_data`): shared, the data go to its device
            self.module, self.model_spec = model, model.mpicomp_spec
            self.device = model.mpicomp_flat.device
        else:
            self.device = (cuda_device_of(self.A) if is_device_array(self.A)
                           else torch.device("cpu"))
            if isinstance(model, torch.nn.Module):  # the caller's own module, as it is
                check_model(model, self.image_shape, self.n_classes)
                self.module, self.model_spec = model, type(model).__name__
            else:
                with torch.random.fork_rng(devices=[]):
                    torch.manual_seed(self.seed)
                    self.module = build_model(model, self.image_shape, self.n_classes)
                self.model_spec = str(model)
            self.module.mpicomp_spec = self.model_spec
            self.module.to(device=self.device, dtype=TORCH_DTYPES[dtype])
            flatten_parameters(self.module)
            # the initial weights, kept: the parameters become the state's vector in `grad`
            self.module.mpicomp_initial = self.module.mpicomp_own.detach().cpu().numpy().copy()
        self.layout = parameter_layout(self.module)
        self._images = as_tensor(_contiguous(self.A))
        self._labels = as_tensor(self.b)

    # -- the Problem contract ----------------------------------------------------------------
    def hyperparameters(self):
        return {**super().hyperparameters(), "model": self.model_spec,
                "n_classes": self.n_classes, "image_shape": self.image_shape,
                "augment": self.augment, "seed": self.seed}

    def with_data(self, A, b) -> NeuralNetwork:
        """The same network — the very module, so batch-norm statistics are shared — over other
        data (the held-out set, moved to the module's device chunk by chunk)."""
        options = {**self.hyperparameters(), "model": self.module}
        return type(self)(A, b, **options)

    @property
    def dim(self) -> int:
        return int(self.module.mpicomp_flat.numel())

    def initial_point(self, rng: np.random.Generator | None = None, dtype=np.float64):
        """The module's initial weights (seeded by ``seed``, so every rank starts alike), as a
        host vector of ``dtype``."""
        return self.module.mpicomp_initial.astype(dtype)

    def grad(self, x, batch=None, rng: np.random.Generator | None = None):
        """``∇f(x)`` over the shard or the sample indices ``batch``; ``rng`` draws the
        augmentation (minibatches only). Returns the flat gradient buffer (valid until the
        next call) in ``x``'s namespace when ``x`` has the model's dtype."""
        x = self._check_x(x)
        rows = self._check_batch(batch)
        self._bind(x)
        grad = self.module.mpicomp_flat_grad
        grad.zero_()
        self.module.train()
        if rows is None:
            for chunk, weight in self._chunks():
                self._cross_entropy(chunk, weight).backward()
        else:
            index = as_tensor(rows).to(self.device, torch.int64)  # any integer dtype
            images = self._images.index_select(0, index)
            if self.augment and rng is not None:
                images = augment(images, self.image_shape, rng)
            self._cross_entropy((images, self._labels.index_select(0, index)), 1.0).backward()
        if self.l2:
            grad.add_(self.module.mpicomp_flat, alpha=self.l2)
        return _like(grad, x)

    def _data_grad(self, x, rows):  # pragma: no cover - `grad` is overridden
        return self.grad(x, rows)

    def _data_loss(self, x, rows) -> float:
        self._bind(x)
        with self.evaluation(), torch.no_grad():
            if rows is None:
                return float(sum(float(self._cross_entropy(chunk, weight))
                                 for chunk, weight in self._chunks()))
            index = as_tensor(rows).to(self.device, torch.int64)
            batch = (self._images.index_select(0, index), self._labels.index_select(0, index))
            return float(self._cross_entropy(batch, 1.0))

    def _data_smoothness(self) -> None:
        return None

    def predict(self, x, A=None):
        """Predicted classes for the shard (or for images ``A``), in evaluation mode."""
        self._bind(x)
        images = self._images if A is None else as_tensor(_contiguous(A))
        with self.evaluation(), torch.no_grad():
            labels = [self._logits(images[i:i + EVAL_CHUNK]).argmax(1)
                      for i in range(0, images.shape[0], EVAL_CHUNK)]
        return _like(torch.cat(labels), self.b)

    # -- batch-norm statistics and other buffers ------------------------------------------------
    @contextlib.contextmanager
    def evaluation(self):
        """Evaluation mode, the running statistics and PyTorch's random generators left as they
        were at the end (a trace row's full-shard gradient, which runs in training mode, runs
        inside it: dropout's draws there do not change the training run)."""
        saved = [t.clone() for t in self.module.buffers()]
        was_training = self.module.training
        self.module.eval()
        devices = [self.device] if self.device.type == "cuda" else []
        try:
            with torch.random.fork_rng(devices=devices):
                yield
        finally:
            for t, old in zip(self.module.buffers(), saved):
                t.copy_(old)
            self.module.train(was_training)

    def has_batch_norm(self) -> bool:
        """Whether the module normalises over the batch (then a batch needs two samples)."""
        return any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm)
                   for m in self.module.modules())

    def checkpoint_arrays(self) -> dict:
        """``{name: host array}`` of the module's buffers (batch-norm statistics), for
        checkpoints; empty for a module without buffers."""
        return {f"buffer:{name}": t.detach().cpu().numpy().copy()
                for name, t in self.module.named_buffers()}

    def restore_arrays(self, arrays: dict) -> None:
        """Set the buffers from `checkpoint_arrays`' output (checked by the checkpoint reader)."""
        for name, t in self.module.named_buffers():
            t.copy_(torch.from_numpy(np.asarray(arrays[f"buffer:{name}"])))

    # -- helpers -------------------------------------------------------------------------------
    def _bind(self, x) -> None:
        """Point the parameters at ``x`` (same dtype and device: no copy) or copy ``x`` into the
        module's own flat vector."""
        flat = self.module.mpicomp_flat
        if isinstance(x, np.ndarray) and x.strides[0] < 0:  # torch.from_numpy refuses these
            x = np.ascontiguousarray(x)
        tensor = as_tensor(x)
        if tensor.dtype != flat.dtype or tensor.device != flat.device \
                or not tensor.is_contiguous():
            own = self.module.mpicomp_own
            own.copy_(tensor.to(device=own.device, dtype=own.dtype))
            tensor = own
        if tensor.data_ptr() != flat.data_ptr():
            bind_parameters(self.module, tensor)

    def _chunks(self):
        """``((images, labels), weight)`` over the shard in chunks of `EVAL_CHUNK` (the last one
        up to one sample longer, so no chunk holds a single sample)."""
        m = self.n_samples
        starts = list(range(0, m, EVAL_CHUNK))
        if len(starts) > 1 and m - starts[-1] == 1:  # batch norm needs two samples a batch
            starts.pop()
        for i, j in zip(starts, [*starts[1:], m]):
            yield (self._images[i:j], self._labels[i:j]), (j - i) / m

    def _logits(self, images):
        images = images.to(device=self.device, dtype=self.module.mpicomp_own.dtype)
        return self.module(images.reshape(images.shape[0], *self.image_shape))

    def _cross_entropy(self, batch, weight: float):
        images, labels = batch
        return weight * torch.nn.functional.cross_entropy(self._logits(images),
                                                          labels.to(self.device))


def flatten_parameters(module: torch.nn.Module) -> None:
    """Make the parameters of ``module`` views into one flat vector (``mpicomp_flat``, the
    module's own storage ``mpicomp_own``) and their gradients views into ``mpicomp_flat_grad``
    (in `parameter_layout` order)."""
    params = list(module.parameters())
    for name, p in module.named_parameters():
        if not p.is_floating_point():
            raise TypeError(f"parameter {name} is {p.dtype}; a model's parameters must be "
                            "floating point")
    own = torch.cat([p.detach().reshape(-1) for p in params]).to(params[0].device)
    module.mpicomp_own = own
    module.mpicomp_flat_grad = torch.zeros_like(own)
    module.mpicomp_layout = [(p, p.numel(), p.shape) for p in params]
    bind_parameters(module, own)
    offset = 0
    for p, n, _ in module.mpicomp_layout:
        p.grad = module.mpicomp_flat_grad[offset:offset + n].view_as(p)
        offset += n


def bind_parameters(module: torch.nn.Module, flat: torch.Tensor) -> None:
    """Point every parameter at its slice of ``flat``'s memory (no copy; ``set_`` on the
    storage, four times cheaper than assigning ``.data`` views on a ResNet-20)."""
    storage, offset = flat.untyped_storage(), flat.storage_offset()
    with torch.no_grad():
        for p, n, shape in module.mpicomp_layout:
            p.set_(storage, offset, shape)
            offset += n
    module.__dict__["mpicomp_flat"] = flat  # a plain attribute, past nn.Module's __setattr__


def augment(images: torch.Tensor, image_shape, rng: np.random.Generator) -> torch.Tensor:
    """Random 4-pixel-padded crops and horizontal flips of a batch (CIFAR-10's usual
    augmentation), the offsets and flips drawn from ``rng`` (host generator)."""
    n = images.shape[0]
    C, H, W = image_shape
    shifts = rng.integers(0, 9, size=(n, 2))
    flips = rng.random(n) < 0.5
    padded = torch.nn.functional.pad(images.reshape(n, C, H, W), (4, 4, 4, 4))
    out = torch.empty((n, C, H, W), dtype=images.dtype, device=images.device)
    for i, ((dy, dx), flip) in enumerate(zip(shifts.tolist(), flips.tolist())):
        crop = padded[i, :, dy:dy + H, dx:dx + W]
        out[i] = crop.flip(-1) if flip else crop
    return out.reshape(n, -1)


def _contiguous(A):
    xp = namespace(A)
    return np.ascontiguousarray(A) if xp is np else xp.asarray(A, copy=None)


def _like(tensor: torch.Tensor, x):
    """``tensor`` as an array of ``x``'s namespace, sharing memory."""
    if isinstance(x, np.ndarray):  # a device tensor (predictions for host labels) is copied
        return tensor.detach().cpu().numpy()
    return namespace(x).from_dlpack(tensor.detach())
