"""Distributed optimisation algorithms, one module per family, each with an explicit State.

>>> from mpicomp.algorithms import ALGORITHMS
>>> sorted(ALGORITHMS)
['dcgd', 'diana']
"""

from __future__ import annotations

from .base import Algorithm, DivergenceError, LocalObjective, StepInfo, rank_generators
from .dcgd import DCGD, DCGDState
from .diana import DIANA, DIANAState

ALGORITHMS: dict[str, type[Algorithm]] = {cls.name: cls for cls in (DCGD, DIANA)}

__all__ = ["Algorithm", "ALGORITHMS", "DCGD", "DCGDState", "DIANA", "DIANAState",
           "DivergenceError", "LocalObjective", "StepInfo", "rank_generators"]
