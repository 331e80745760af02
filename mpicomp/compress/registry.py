"""Build operators from spec strings: ``"qsgd:s=4,block=512"``, ``"topk:k=0.01+natural"``.

Grammar: ``spec := part ("+" part)?``, ``part := name [":" key "=" value ("," key "=" value)*]``.
Values are read as int, then float, then left as text (``p=inf``, ``coder=elias``).
"""

from __future__ import annotations

import inspect

from .base import Compressor
from .cast import BF16, FP16, Identity
from .compose import Composition
from .dithering import QSGD, Dither, NaturalDither, TernGrad
from .natural import Natural
from .sign import ScaledSign, Sign
from ..spec_strings import parse_value
from .sparse import RandK, TopK
from .uniform import Uniform

OPERATORS: dict[str, type[Compressor]] = {
    cls.name: cls
    for cls in (Identity, FP16, BF16, Sign, ScaledSign, Dither, QSGD, TernGrad, Natural, NaturalDither, TopK, RandK, Uniform)
}


def parameters(name: str) -> list[str]:
    """The keyword parameters that operator ``name`` accepts."""
    return list(inspect.signature(OPERATORS[name]).parameters)


def _part(text: str) -> Compressor:
    name, _, args = text.strip().partition(":")
    name = name.strip()
    if name not in OPERATORS:
        raise ValueError(f"unknown compressor {name!r}: choose one of {', '.join(sorted(OPERATORS))}")
    valid = parameters(name)
    kwargs = {}
    for item in filter(None, (a.strip() for a in args.split(","))):
        key, eq, val = item.partition("=")
        key = key.strip()
        if not eq or not val.strip():
            raise ValueError(f"{name}: parameter {item!r} is not of the form key=value")
        if key not in valid:
            choices = ", ".join(valid) if valid else "none"
            raise ValueError(f"{name}: unknown parameter {key!r}; valid parameters: {choices}")
        kwargs[key] = parse_value(val.strip())
    try:
        return OPERATORS[name](**kwargs)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{text.strip()!r}: {exc}") from exc


def get(spec: str | Compressor) -> Compressor:
    """The operator described by ``spec`` (an operator is returned as it is)."""
    if isinstance(spec, Compressor):
        return spec
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"compressor spec must be a non-empty string, got {spec!r}")
    parts = spec.split("+")
    if len(parts) > 2:
        raise ValueError(f"{spec!r}: a composition has two parts, 'A+B' (e.g. topk:k=0.01+natural)")
    ops = [_part(p) for p in parts]
    return ops[0] if len(ops) == 1 else Composition(ops[0], ops[1])
