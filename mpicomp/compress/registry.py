"""Build operators from spec strings: ``"qsgd:s=4,block=512"``, ``"topk:k=0.01+natural"``, and
check an operator's parameters against the lengths of the vectors it will compress.

Grammar: ``spec := part ["+" part]``, each part a spec of `mpicomp.spec_strings` whose keys are
the operator's parameters. Values are read as int, then float, then left as text (``p=inf``,
``coder=elias``).
"""

from __future__ import annotations

import inspect
from collections.abc import Iterable

from ..spec_strings import parse_spec
from .base import Compressor
from .cast import BF16, FP16, Identity
from .compose import Composition
from .dithering import QSGD, Dither, NaturalDither, TernGrad
from .natural import Natural
from .sign import ScaledSign, Sign
from .sparse import RandK, TopK
from .uniform import Uniform

OPERATORS: dict[str, type[Compressor]] = {
    cls.name: cls
    for cls in (Identity, FP16, BF16, Sign, ScaledSign, Dither, QSGD, TernGrad, Natural,
                NaturalDither, TopK, RandK, Uniform)
}


def parameters(name: str) -> list[str]:
    """The keyword parameters that operator ``name`` accepts."""
    return list(inspect.signature(OPERATORS[name]).parameters)


def _part(text: str) -> Compressor:
    forms = {name: parameters(name) for name in sorted(OPERATORS)}
    name, kwargs = parse_spec(text, forms, "compressor")
    try:
        return OPERATORS[name](**kwargs)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{text.strip()!r}: {exc}") from exc


def make_compressor(spec: str | Compressor) -> Compressor:
    """The operator described by ``spec`` (an operator is returned as it is).

    Parameters
    ----------
    spec : str or Compressor
        ``"name"``, ``"name:key=value,..."`` or a composition ``"A+B"``
        (``"topk:k=0.01+natural"``).

    Raises
    ------
    ValueError
        An unknown operator or parameter, a malformed item, more than two parts, or parameters
        the operator rejects; the message names what was wrong and the valid choices.
    """
    if isinstance(spec, Compressor):
        return spec
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"compressor spec must be a non-empty string, got {spec!r}")
    parts = spec.split("+")
    if len(parts) > 2:
        raise ValueError(f"{spec!r}: a composition has two parts, 'A+B' (e.g. topk:k=0.01+natural)")
    ops = [_part(p) for p in parts]
    return ops[0] if len(ops) == 1 else Composition(ops[0], ops[1])




def check_lengths(op: Compressor, lengths: Iterable[int], where: str = "the model",
                  setting: str = "") -> None:
    """Raise a ValueError unless ``op`` can compress a vector of every length in ``lengths``.

    Aggregators and gossip call it at set-up with the lengths they will hand the operator (the
    model's ``d``, or the chunks of the two-phase aggregator), so a parameter that does not fit
    fails there, on every rank alike, instead of inside the first aggregation.

    Parameters
    ----------
    op : Compressor
        The operator; its `Compressor.min_length` is the bound (a `Composition` has its
        sparsifier's: its dense second operator sees only what that keeps).
    lengths : iterable of int
        The lengths of the vectors ``op`` will encode.
    where : str
        What the shortest of them is, for the message: ``"the model"``, ``"the smallest
        two-phase chunk (d = 30 over 4 ranks)"``.
    setting : str
        The setting ``op`` comes from when it is not the uplink compressor (``"downlink"``,
        ``"weight_quant"``); it starts the message.

    Raises
    ------
    ValueError
        A sparsifier (alone or as ``A`` of ``A+B``) keeps a count ``k`` of coordinates larger
        than the shortest length, e.g. "topk:k=40 keeps more coordinates than the 30 of the
        model; use k ≤ 30 or a fraction k < 1".

    Notes
    -----
    Only a sparsifier's count is bounded by the length: a fraction ``0 < k < 1`` keeps
    ``max(1, round(k·d))`` ≤ d coordinates of any non-empty vector. A ``block`` larger than the
    vector is not an error: the operators quantise it as one block (as ``block=0`` does), and
    their ω is that of the vector's length.
    """
    lengths = [int(m) for m in lengths]
    if not lengths:
        return
    shortest = min(lengths)
    if op.min_length() > shortest:
        use = f"k ≤ {shortest} or a fraction k < 1" if shortest else "a fraction k < 1"
        name = f"{setting} {op.spec()}" if setting else op.spec()
        raise ValueError(f"{name} keeps more coordinates than the {shortest} of {where}; use {use}")
