"""The image classifiers selected by name (``--model``), and the checks on a user's own model.

>>> from mpicomp.nn.models import build_model, parameter_layout
>>> torch.manual_seed(0)                                          # doctest: +SKIP
>>> net = build_model("resnet20", (3, 32, 32), 10)                # doctest: +SKIP
>>> net = build_model("mypkg.nets:small_cnn", (1, 28, 28), 10)    # doctest: +SKIP

Every builder takes ``(image_shape, n_classes)``, ``image_shape = (C, H, W)``, and returns a
`torch.nn.Module` mapping a float batch ``(N, C, H, W)`` to logits ``(N, n_classes)``. Weights
keep PyTorch's default initialisation, drawn from torch's global generator: seed it with
`torch.manual_seed` before building for a reproducible model.

References
----------
.. [1] Y. LeCun, L. Bottou, Y. Bengio, P. Haffner, "Gradient-based learning applied to
   document recognition", Proc. IEEE 86(11), 1998.
.. [2] K. He, X. Zhang, S. Ren, J. Sun, "Deep residual learning for image recognition",
   CVPR 2016.
"""

from __future__ import annotations

import importlib
import operator
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

ImageShape = tuple[int, int, int]


def mlp(image_shape: ImageShape, n_classes: int, *, hidden: int = 128) -> nn.Module:
    """One-hidden-layer perceptron: flatten → Linear(C·H·W, hidden) → ReLU → Linear(hidden, K)."""
    c, h, w = image_shape
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(c * h * w, hidden),
        nn.ReLU(),
        nn.Linear(hidden, n_classes),
    )


class LeNet(nn.Module):
    """LeNet-5 style CNN [1]_: two conv–ReLU–maxpool stages, then FC 120 → 84 → ``n_classes``.

    Parameters
    ----------
    image_shape : tuple of int
        ``(C, H, W)``; any ``H, W >= 8`` (down to 4 works too).
    n_classes : int
        Number of logits.

    Notes
    -----
    When ``min(H, W) >= 16`` the layers are the classic ones: conv(C→6, 5×5, padding 2), ReLU,
    maxpool 2 → conv(6→16, 5×5), ReLU, maxpool 2 (28×28 gives 16×5×5, 32×32 gives 16×6×6).
    Smaller images (the 8×8 digits) would shrink below 1×1 that way, so both convs are 3×3 with
    padding 1 instead: only the pools shrink the image, ``H → ⌊⌊H/2⌋/2⌋`` (8×8 gives 16×2×2).
    The flattened size is found by a forward pass of zeros at build time (no random draws).
    """

    def __init__(self, image_shape: ImageShape, n_classes: int):
        super().__init__()
        c, h, w = image_shape
        if min(h, w) < 4:
            raise ValueError(f"lenet needs images of at least 4×4, got {h}×{w}")
        self.classic = min(h, w) >= 16
        k1, p1, k2, p2 = (5, 2, 5, 0) if self.classic else (3, 1, 3, 1)
        self.features = nn.Sequential(
            nn.Conv2d(c, 6, k1, padding=p1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(6, 16, k2, padding=p2), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(),
        )
        with torch.no_grad():
            n_flat = self.features(torch.zeros(1, c, h, w)).shape[1]
        self.classifier = nn.Sequential(
            nn.Linear(n_flat, 120), nn.ReLU(),
            nn.Linear(120, 84), nn.ReLU(),
            nn.Linear(84, n_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


def lenet(image_shape: ImageShape, n_classes: int) -> nn.Module:
    """LeNet-5 style CNN [1]_; see `LeNet` for the layout on small images."""
    return LeNet(image_shape, n_classes)


class _ZeroPadShortcut(nn.Module):
    """Option-A shortcut of [2]_: subsample by ``stride``, zero-pad new channels (no weights)."""

    def __init__(self, in_planes: int, planes: int, stride: int):
        super().__init__()
        self.stride = stride
        self.pad_lo = (planes - in_planes) // 2
        self.pad_hi = planes - in_planes - self.pad_lo

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x[:, :, :: self.stride, :: self.stride]
        return F.pad(x, (0, 0, 0, 0, self.pad_lo, self.pad_hi))


class BasicBlock(nn.Module):
    """Residual basic block [2]_: two 3×3 conv + BN, ReLU after the sum with the shortcut.

    ``shortcut`` is ``"A"`` (parameter-free subsample + zero channels) or ``"B"`` (1×1 conv +
    BN) where the shape changes; an identity elsewhere.
    """

    def __init__(self, in_planes: int, planes: int, stride: int = 1, shortcut: str = "A"):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        if stride == 1 and in_planes == planes:
            self.shortcut: nn.Module = nn.Identity()
        elif shortcut == "A":
            self.shortcut = _ZeroPadShortcut(in_planes, planes, stride)
        elif shortcut == "B":
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False),
                nn.BatchNorm2d(planes),
            )
        else:
            raise ValueError(f"shortcut must be 'A' or 'B', got {shortcut!r}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResNet(nn.Module):
    """CIFAR-style ResNet [2]_: 3×3 conv stem + BN + ReLU (no max-pool), stages of `BasicBlock`,
    global average pooling, one linear layer.

    Parameters
    ----------
    image_shape : tuple of int
        ``(C, H, W)``; any size (each stage after the first halves ``H, W``, rounding up, and
        the pooling is adaptive, so 8×8 inputs end at 2×2 or 1×1).
    n_classes : int
        Number of logits.
    widths : sequence of int
        Channels per stage; the first stage has stride 1, the others stride 2.
    blocks : int
        Basic blocks per stage.
    shortcut : {"A", "B"}
        Shortcut where a block changes shape (see `BasicBlock`).
    """

    def __init__(self, image_shape: ImageShape, n_classes: int, widths, blocks: int,
                 shortcut: str):
        super().__init__()
        c = image_shape[0]
        self.conv1 = nn.Conv2d(c, widths[0], 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        stages = []
        in_planes = widths[0]
        for i, planes in enumerate(widths):
            layers = []
            for j in range(blocks):
                stride = 2 if i > 0 and j == 0 else 1
                layers.append(BasicBlock(in_planes, planes, stride, shortcut))
                in_planes = planes
            stages.append(nn.Sequential(*layers))
        self.stages = nn.Sequential(*stages)
        self.fc = nn.Linear(in_planes, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.stages(out)
        out = torch.flatten(F.adaptive_avg_pool2d(out, 1), 1)
        return self.fc(out)


def resnet20(image_shape: ImageShape, n_classes: int) -> nn.Module:
    """ResNet-20 for CIFAR [2]_ (§4.2): 3 stages × 3 basic blocks, 16/32/64 channels,
    option-A (zero-padding, parameter-free) shortcuts as in the paper; 269,722 parameters
    for 3 input channels and 10 classes."""
    return ResNet(image_shape, n_classes, (16, 32, 64), 3, shortcut="A")


def resnet18(image_shape: ImageShape, n_classes: int) -> nn.Module:
    """ResNet-18 [2]_, CIFAR variant: 3×3 stem, no max-pool, 4 stages × 2 basic blocks,
    64/128/256/512 channels, option-B (1×1 conv + BN) shortcuts; 11,173,962 parameters for
    3 input channels and 10 classes."""
    return ResNet(image_shape, n_classes, (64, 128, 256, 512), 2, shortcut="B")


MODELS: dict[str, Callable[..., nn.Module]] = {
    "mlp": mlp,
    "lenet": lenet,
    "resnet20": resnet20,
    "resnet18": resnet18,
}


def _check_args(image_shape, n_classes) -> tuple[ImageShape, int]:
    try:
        shape = tuple(operator.index(s) for s in image_shape)
    except TypeError:
        shape = ()
    if len(shape) != 3 or min(shape) < 1:
        raise ValueError(f"image_shape must be three positive ints (C, H, W), got {image_shape!r}")
    try:
        k = operator.index(n_classes)
    except TypeError:
        k = 0
    if k < 1:
        raise ValueError(f"n_classes must be a positive int, got {n_classes!r}")
    return shape, k  # type: ignore[return-value]


def _load_builder(spec: str) -> Callable[..., object]:
    module_name, _, attr_path = spec.partition(":")
    if not module_name or not attr_path:
        raise ValueError(f"model {spec!r}: an import path must read 'package.module:function'")
    try:
        obj: object = importlib.import_module(module_name)
    except ImportError as exc:
        raise ValueError(f"model {spec!r}: cannot import module {module_name!r}: {exc}") from exc
    for part in attr_path.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ValueError(
                f"model {spec!r}: module {module_name!r} has no attribute {attr_path!r}"
            ) from None
    if not callable(obj):
        raise ValueError(
            f"model {spec!r}: {attr_path!r} is not callable (type {type(obj).__name__})"
        )
    return obj


def build_model(spec: str, image_shape: ImageShape, n_classes: int) -> nn.Module:
    """Build the model named ``spec`` and check it with `check_model`.

    Parameters
    ----------
    spec : str
        A name from `MODELS`, or an import path ``"package.module:function"`` to a function
        called as ``function(image_shape, n_classes)`` that returns a `torch.nn.Module`.
    image_shape : tuple of int
        ``(C, H, W)`` of one input image.
    n_classes : int
        Number of logits.

    Returns
    -------
    torch.nn.Module
        Initialised from torch's global generator (seed it first with `torch.manual_seed`).

    Raises
    ------
    ValueError
        Unknown name, a module that does not import, a missing or non-callable attribute, or a
        result that fails `check_model`.
    """
    shape, n_classes = _check_args(image_shape, n_classes)
    if spec in MODELS:
        builder: Callable[..., object] = MODELS[spec]
    elif ":" in spec:
        builder = _load_builder(spec)
    else:
        raise ValueError(
            f"unknown model {spec!r}: choose one of {', '.join(MODELS)}, "
            "or give an import path 'pkg.module:function' to your own model builder"
        )
    model = builder(shape, n_classes)
    if not isinstance(model, nn.Module):
        raise ValueError(
            f"model {spec!r}: the builder returned an object of type {type(model).__name__}, "
            "not a torch.nn.Module"
        )
    check_model(model, shape, n_classes, name=spec)
    return model


def check_model(model: nn.Module, image_shape: ImageShape, n_classes: int, *,
                name: str | None = None) -> None:
    """Check that ``model`` can be trained here: float parameters, logits of the right shape.

    Runs one forward pass on a batch of 2 zero images ``(2, C, H, W)`` (in the dtype and on the
    device of the first parameter), in eval mode and without gradients; the training flags of
    all submodules are restored afterwards and no random numbers are drawn.

    Parameters
    ----------
    model : torch.nn.Module
    image_shape : tuple of int
        ``(C, H, W)``.
    n_classes : int
    name : str, optional
        How the model is called in the messages.

    Raises
    ------
    ValueError
        Not an `nn.Module`, no parameters, a parameter that is not floating point (named, with
        its dtype), a failing forward pass, or an output that is not a tensor of shape
        ``(2, n_classes)`` (the shape it gave is in the message).
    """
    what = f"model {name!r}" if name is not None else "model"
    if not isinstance(model, nn.Module):
        raise ValueError(f"{what} has type {type(model).__name__}, not a torch.nn.Module")
    params = list(model.named_parameters())
    if not params:
        raise ValueError(f"{what} has no parameters: nothing to train")
    for pname, p in params:
        if not p.is_floating_point():
            raise ValueError(
                f"{what}: parameter {pname!r} has dtype {p.dtype}; all parameters must be "
                "floating point"
            )
    first = params[0][1]
    batch = torch.zeros((2, *image_shape), dtype=first.dtype, device=first.device)
    modes = [(m, m.training) for m in model.modules()]
    try:
        model.eval()
        with torch.no_grad():
            out = model(batch)
    except Exception as exc:
        raise ValueError(
            f"{what}: forward on a batch of shape {tuple(batch.shape)} failed: "
            f"{type(exc).__name__}: {exc}"
        ) from exc
    finally:
        for m, training in modes:
            m.training = training
    if not isinstance(out, torch.Tensor):
        raise ValueError(
            f"{what}: forward on a batch of shape {tuple(batch.shape)} returned an object of "
            f"type {type(out).__name__}, not a tensor of shape (2, {n_classes})"
        )
    if tuple(out.shape) != (2, n_classes):
        raise ValueError(
            f"{what}: forward on a batch of shape {tuple(batch.shape)} gave shape "
            f"{tuple(out.shape)}, expected (2, {n_classes}) (batch, n_classes)"
        )


def parameter_layout(model: nn.Module) -> list[tuple[str, tuple[int, ...]]]:
    """The ``(name, shape)`` of each parameter, in `model.named_parameters` order."""
    return [(name, tuple(p.shape)) for name, p in model.named_parameters()]


__all__ = [
    "MODELS", "build_model", "check_model", "parameter_layout", "mlp", "lenet", "resnet20",
    "resnet18", "LeNet", "ResNet", "BasicBlock",
]
