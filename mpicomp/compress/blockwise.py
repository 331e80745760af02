"""Shared pieces of the per-block operators: block layout, transmitted norms, per-element views."""

from __future__ import annotations

import numpy as np

from . import kernels
from .base import DecodeError, n_blocks, raise_non_finite


def effective_block(d: int, block: int) -> int:
    """Block length used for a vector of dimension ``d`` (``block`` ≤ 0 means the whole vector)."""
    return max(1, d if block <= 0 else block)


def per_element(values: np.ndarray, block: int, d: int) -> np.ndarray:
    """Expand one value per block to one value per coordinate."""
    return np.repeat(values, block)[:d]


def norms(x: np.ndarray, block: int, p: float) -> np.ndarray:
    """‖x_B‖_p per block in float64 (p ∈ {1, 2, inf}).

    Computed by `kernels.shared`: compiled whenever Numba is installed (also under
    ``kernels.forced("numpy")``), so both kernel paths quantise with the very same norms; the
    summation order differs from NumPy's only in the last bits.
    """
    return kernels.shared().norms(x, block, p)


def finite_norms(x: np.ndarray, block: int, p: float) -> np.ndarray:
    """`norms`, raising the non-finite-entry error if a norm is NaN/Inf (NaN/Inf propagate)."""
    nu = norms(x, block, p)
    if not np.isfinite(nu).all():
        raise_non_finite(x)
        raise ValueError(f"the ℓ{p:g} norm of a block overflows {x.dtype}: rescale the vector")
    return nu


def round_up(values: np.ndarray, dtype) -> np.ndarray:
    """Cast float64 ``values`` (block norms) to ``dtype`` rounding up, so ``|x_j| ≤ ν`` survives
    the cast; ValueError if one exceeds the dtype's largest finite value (it could not be sent:
    decoders reject a non-finite norm)."""
    dtype = np.dtype(dtype)
    largest = float(np.finfo(dtype).max)
    if (values > largest).any():
        b = int(np.argmax(values > largest))
        raise ValueError(
            f"the norm {values[b]:g} of block {b} exceeds the {dtype} range (±{largest:g}): "
            "rescale the vector"
        )
    cast = values.astype(dtype)
    low = cast < values
    if low.any():
        cast[low] = np.nextafter(cast[low], dtype.type(np.inf))
    return cast


def read_scalars(body: np.ndarray, count: int, dtype, what: str) -> np.ndarray:
    """Read ``count`` transmitted scalars (norms, scales) from the start of ``body``; validate
    them."""
    size = count * dtype.itemsize
    if body.size < size:
        raise DecodeError(f"buffer truncated inside the {what}: {body.size} bytes, need {size}")
    vals = body[:size].view(dtype.newbyteorder("<")).astype(dtype)
    if count and (not np.isfinite(vals).all() or (vals < 0).any()):
        raise DecodeError(f"corrupted buffer: {what} must be finite and ≥ 0, got {vals[:4]}…")
    return vals


def split_block_scalars(body: np.ndarray, d: int, block: int, dtype,
                        what: str) -> tuple[int, np.ndarray, np.ndarray]:
    """(block length, the scalars sent first — one per block, as float64 —, the rest of the body)
    for an operator with block parameter ``block`` on a vector of dimension ``d``."""
    nb = n_blocks(d, block)
    scalars = read_scalars(body, nb, dtype, what).astype(np.float64)
    return effective_block(d, block), scalars, body[nb * dtype.itemsize :]


def scalar_bytes(values: np.ndarray) -> np.ndarray:
    """Little-endian bytes of transmitted scalars."""
    return values.astype(values.dtype.newbyteorder("<")).view(np.uint8)


def write_scalars(values: np.ndarray, out: np.ndarray) -> int:
    """Write the little-endian bytes of transmitted scalars at the start of the bytes ``out``;
    return how many."""
    size = values.size * values.itemsize
    out[:size].view(values.dtype.newbyteorder("<"))[:] = values
    return size
