"""Compression operators (SPEC §1): bit-packed wire formats, exact bit counts, ω and δ.

>>> from mpicomp.compress import get
>>> op = get("qsgd:s=4,block=512")
"""

from .base import Compressor, DecodeError, Payload
from .registry import OPERATORS, get, parameters

__all__ = ["Compressor", "DecodeError", "Payload", "OPERATORS", "get", "parameters"]
