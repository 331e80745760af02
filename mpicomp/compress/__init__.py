"""Compression operators (SPEC §1): bit-packed wire formats, exact bit counts, ω and δ.

>>> from mpicomp.compress import make_compressor
>>> op = make_compressor("qsgd:s=4,block=512")
"""

from .base import Compressor, DecodeError, Payload
from .layered import PerLayer, per_layer
from .registry import OPERATORS, make_compressor, parameters

__all__ = ["Compressor", "DecodeError", "Payload", "OPERATORS", "make_compressor", "parameters",
           "PerLayer", "per_layer"]
