"""Scratch arrays that encoders reuse from call to call, one set per thread.

An encoder that needs a temporary of O(d) values (the packed level fields a variable-length
coder reads, for instance) takes it from `scratch` instead of allocating it on every call: a
fresh array of that size is page-faulted in on first touch, which costs about a tenth of a
copy. A scratch array never becomes part of a payload or a decoded vector.
"""

from __future__ import annotations

import threading

import numpy as np

_local = threading.local()


def scratch(name: str, n: int, dtype=np.uint8) -> np.ndarray:
    """``n`` values of ``dtype`` for this thread's temporary ``name``; their contents are left
    from the last use, and the array is valid until the next `scratch` call with that name on
    this thread."""
    dtype = np.dtype(dtype)
    arrays = _local.__dict__.setdefault("arrays", {})
    nbytes = n * dtype.itemsize
    raw = arrays.get(name)
    if raw is None or raw.size < nbytes:
        raw = arrays[name] = np.empty(nbytes, dtype=np.uint8)
    return raw[:nbytes].view(dtype)
