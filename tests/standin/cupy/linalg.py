"""``cupy.linalg`` of the stand-in: NumPy's ``linalg`` functions on stand-in arrays."""

from __future__ import annotations

import numpy as _np

from . import _core

__all__ = _core.public_names(_np.linalg)


_cache: dict = {}


def __getattr__(name: str):
    # cached apart from globals(): names such as ``any`` and ``sum`` must not shadow builtins
    if name not in _cache:
        _cache[name] = _core.namespace_attr(_np.linalg, name, __name__)
    return _cache[name]


def __dir__() -> list[str]:
    return list(__all__)
