"""The model zoo of mpicomp.nn.models: shapes, parameter counts, determinism, build_model errors."""

import importlib
import sys
import textwrap

import pytest

torch = pytest.importorskip("torch")

from mpicomp.nn.models import (  # noqa: E402
    MODELS,
    build_model,
    check_model,
    parameter_layout,
)

torch.set_num_threads(1)

SHAPES = [(1, 8, 8), (1, 28, 28), (3, 32, 32)]


def n_params(model):
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("name", sorted(MODELS))
def test_output_shape(name, shape):
    torch.manual_seed(0)
    model = build_model(name, shape, 7)
    x = torch.randn(3, *shape)
    assert model(x).shape == (3, 7)          # training mode
    model.eval()
    with torch.no_grad():
        out = model(x)
    assert out.shape == (3, 7) and out.dtype == torch.float32
    assert torch.isfinite(out).all()


def _resnet20_count(c, k):
    # stem conv 3×3 (no bias) + BN; a basic block is two 3×3 convs + two BNs; option-A
    # shortcuts carry no parameters; global pool → Linear(64, k)
    def block(i, o):
        return 9 * i * o + 9 * o * o + 2 * 2 * o

    n = 9 * c * 16 + 2 * 16
    n += 3 * block(16, 16)
    n += block(16, 32) + 2 * block(32, 32)
    n += block(32, 64) + 2 * block(64, 64)
    return n + 64 * k + k


def test_resnet20_parameter_count():
    assert _resnet20_count(3, 10) == 269_722    # the paper's "0.27M"
    assert n_params(MODELS["resnet20"]((3, 32, 32), 10)) == _resnet20_count(3, 10)
    assert n_params(MODELS["resnet20"]((1, 8, 8), 4)) == _resnet20_count(1, 4)


def test_resnet20_shortcuts_are_parameter_free():
    model = MODELS["resnet20"]((3, 32, 32), 10)
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == 1 + 3 * 3 * 2 and all(m.kernel_size == (3, 3) for m in convs)


def test_resnet18_parameter_count():
    def block(i, o, down):
        n = 9 * i * o + 9 * o * o + 4 * o
        return n + (i * o + 2 * o if down else 0)   # option B: 1×1 conv + BN

    expected = 9 * 3 * 64 + 2 * 64 + 2 * block(64, 64, False)
    for i, o in [(64, 128), (128, 256), (256, 512)]:
        expected += block(i, o, True) + block(o, o, False)
    expected += 512 * 10 + 10
    n = n_params(MODELS["resnet18"]((3, 32, 32), 10))
    assert n == expected
    assert abs(n - 11.17e6) < 0.01e6


def test_lenet_layout():
    classic = MODELS["lenet"]((1, 28, 28), 10)
    assert classic.classic
    assert [m.kernel_size for m in classic.modules() if isinstance(m, torch.nn.Conv2d)] == [
        (5, 5), (5, 5)]
    # LeNet-5: conv 6@5×5, conv 16@5×5 → 16·5·5, FC 120, 84, 10
    assert n_params(classic) == (
        6 * 25 + 6 + 16 * 6 * 25 + 16 + 400 * 120 + 120 + 120 * 84 + 84 + 84 * 10 + 10)
    small = MODELS["lenet"]((1, 8, 8), 10)
    assert not small.classic
    assert [m.kernel_size for m in small.modules() if isinstance(m, torch.nn.Conv2d)] == [
        (3, 3), (3, 3)]
    assert small.classifier[0].in_features == 16 * 2 * 2
    assert MODELS["lenet"]((2, 9, 13), 3)(torch.randn(2, 2, 9, 13)).shape == (2, 3)
    with pytest.raises(ValueError, match="at least 4×4"):
        MODELS["lenet"]((1, 3, 8), 10)


def test_mlp_hidden_width():
    model = MODELS["mlp"]((1, 8, 8), 10, hidden=32)
    assert parameter_layout(model) == [
        ("1.weight", (32, 64)), ("1.bias", (32,)), ("3.weight", (10, 32)), ("3.bias", (10,))]
    assert n_params(MODELS["mlp"]((1, 8, 8), 10)) == 64 * 128 + 128 + 128 * 10 + 10


@pytest.mark.parametrize("name", sorted(MODELS))
def test_deterministic_under_manual_seed(name):
    def draw(seed):
        torch.manual_seed(seed)
        return [p.detach().clone() for p in build_model(name, (3, 32, 32), 10).parameters()]

    a, b, c = draw(3), draw(3), draw(4)
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not all(torch.equal(x, z) for x, z in zip(a, c))


def test_parameter_layout_order():
    model = MODELS["resnet20"]((3, 32, 32), 10)
    layout = parameter_layout(model)
    assert layout == [(n, tuple(p.shape)) for n, p in model.named_parameters()]
    assert layout[0] == ("conv1.weight", (16, 3, 3, 3))
    assert layout[-1] == ("fc.bias", (10,))
    assert all(isinstance(s, tuple) for _, s in layout)


def test_check_model_leaves_the_model_alone():
    model = MODELS["resnet20"]((1, 8, 8), 10)
    model.stages[0].eval()                      # mixed modes survive the check
    modes = [m.training for m in model.modules()]
    stats = [b.clone() for b in model.buffers()]
    state = torch.random.get_rng_state()
    check_model(model, (1, 8, 8), 10)
    assert [m.training for m in model.modules()] == modes
    assert all(torch.equal(a, b) for a, b in zip(stats, model.buffers()))
    assert torch.equal(torch.random.get_rng_state(), state)


def test_check_model_float64():
    model = MODELS["mlp"]((1, 8, 8), 10).double()
    check_model(model, (1, 8, 8), 10)


USER_MODULE = """
import torch
from torch import nn


def small(image_shape, n_classes):
    c, h, w = image_shape
    return nn.Sequential(nn.Flatten(), nn.Linear(c * h * w, n_classes))


class Holder:
    @staticmethod
    def nested(image_shape, n_classes):
        return small(image_shape, n_classes)


not_callable = 42


def returns_int(image_shape, n_classes):
    return 3


def no_params(image_shape, n_classes):
    return nn.Flatten()


class IntParam(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(4, 2)
        self.count = nn.Parameter(torch.zeros(3, dtype=torch.int64), requires_grad=False)

    def forward(self, x):
        return x


def int_param(image_shape, n_classes):
    return IntParam()


def wrong_shape(image_shape, n_classes):
    c, h, w = image_shape
    return nn.Sequential(nn.Flatten(), nn.Linear(c * h * w, n_classes + 1))


def not_flat(image_shape, n_classes):
    return nn.Conv2d(image_shape[0], n_classes, 1)


def forward_fails(image_shape, n_classes):
    return nn.Linear(5, n_classes)


class TupleOut(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(1, 1)

    def forward(self, x):
        return (x,)


def tuple_out(image_shape, n_classes):
    return TupleOut()
"""


@pytest.fixture
def user_module(tmp_path, monkeypatch):
    name = "mpicomp_test_user_models"
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(USER_MODULE))
    (tmp_path / "mpicomp_test_broken_models.py").write_text(
        "import mpicomp_test_no_such_dependency\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    importlib.invalidate_caches()
    for mod in (name, "mpicomp_test_broken_models"):
        monkeypatch.delitem(sys.modules, mod, raising=False)
    yield name
    for mod in (name, "mpicomp_test_broken_models"):
        sys.modules.pop(mod, None)


def test_build_model_import_path(user_module):
    torch.manual_seed(0)
    model = build_model(f"{user_module}:small", (1, 8, 8), 10)
    assert parameter_layout(model) == [("1.weight", (10, 64)), ("1.bias", (10,))]
    assert model(torch.randn(5, 1, 8, 8)).shape == (5, 10)
    assert isinstance(build_model(f"{user_module}:Holder.nested", (1, 8, 8), 3), torch.nn.Module)


@pytest.mark.parametrize(
    ("attr", "messages"),
    [
        ("missing", ["has no attribute 'missing'", "mpicomp_test_user_models"]),
        ("not_callable", ["'not_callable' is not callable", "type int"]),
        ("returns_int", ["returned an object of type int", "not a torch.nn.Module"]),
        ("no_params", ["has no parameters"]),
        ("int_param", ["parameter 'count'", "torch.int64", "floating point"]),
        ("wrong_shape", ["gave shape (2, 11)", "expected (2, 10)"]),
        ("not_flat", ["gave shape (2, 10, 8, 8)"]),
        ("forward_fails", ["forward on a batch of shape (2, 1, 8, 8) failed", "RuntimeError"]),
        ("tuple_out", ["type tuple", "not a tensor"]),
    ],
)
def test_build_model_user_errors(user_module, attr, messages):
    with pytest.raises(ValueError) as info:
        build_model(f"{user_module}:{attr}", (1, 8, 8), 10)
    for text in messages:
        assert text in str(info.value)


def test_build_model_unknown_name():
    with pytest.raises(ValueError) as info:
        build_model("resnet50", (3, 32, 32), 10)
    msg = str(info.value)
    assert "'resnet50'" in msg and "pkg.module:function" in msg
    assert all(name in msg for name in MODELS)


def test_build_model_module_does_not_import(user_module):
    with pytest.raises(ValueError, match="cannot import module 'mpicomp_test_nowhere'") as info:
        build_model("mpicomp_test_nowhere:f", (1, 8, 8), 10)
    assert "No module named 'mpicomp_test_nowhere'" in str(info.value)
    with pytest.raises(ValueError) as info:
        build_model("mpicomp_test_broken_models:f", (1, 8, 8), 10)
    msg = str(info.value)
    assert "'mpicomp_test_broken_models'" in msg
    assert "No module named 'mpicomp_test_no_such_dependency'" in msg


@pytest.mark.parametrize("spec", [":small", "mpicomp_test_user_models:"])
def test_build_model_malformed_import_path(spec):
    with pytest.raises(ValueError, match="package.module:function"):
        build_model(spec, (1, 8, 8), 10)


@pytest.mark.parametrize(
    ("shape", "k", "match"),
    [((8, 8), 10, "image_shape"), ((1, 0, 8), 10, "image_shape"), ((1, 8.0, 8), 10, "image_shape"),
     ((1, 8, 8), 0, "n_classes"), ((1, 8, 8), 2.5, "n_classes")],
)
def test_build_model_bad_arguments(shape, k, match):
    with pytest.raises(ValueError, match=match):
        build_model("mlp", shape, k)


def test_check_model_rejects_non_module():
    with pytest.raises(ValueError, match="not a torch.nn.Module"):
        check_model(object(), (1, 8, 8), 10)
