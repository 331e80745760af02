"""``cupy.fft`` of the stand-in: NumPy's ``fft`` functions on stand-in arrays."""

from __future__ import annotations

import numpy as _np

from . import _core

__all__ = _core.public_names(_np.fft)


_cache: dict = {}


def __getattr__(name: str):
    # cached apart from globals(): names such as ``any`` and ``sum`` must not shadow builtins
    if name not in _cache:
        _cache[name] = _core.namespace_attr(_np.fft, name, __name__)
    return _cache[name]


def __dir__() -> list[str]:
    return list(__all__)
