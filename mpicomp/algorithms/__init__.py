"""Distributed optimisation algorithms, one module per family, each with an explicit State.

>>> from mpicomp.algorithms import ALGORITHMS
>>> sorted(ALGORITHMS)
['choco', 'dcgd', 'diana', 'dpsgd', 'efsgd', 'malcom', 'qadam', 'signsgd']
"""

from __future__ import annotations

from .base import Algorithm, DivergenceError, LocalObjective, StepInfo, rank_generators
from .dcgd import DCGD, DCGDState
from .diana import DIANA, DIANAState
from .efsgd import EFSGD, EFSGDState
from .gossip import DPSGD, ChocoSGD, ChocoState, DPSGDState, MalcomPSGD
from .qadam import QAdam, QAdamState
from .signsgd import Signum, SignumState

ALGORITHMS: dict[str, type[Algorithm]] = {cls.name: cls for cls in (DCGD, DIANA, EFSGD, QAdam, Signum, DPSGD, ChocoSGD, MalcomPSGD)}

__all__ = ["Algorithm", "ALGORITHMS", "DCGD", "DCGDState", "DIANA", "DIANAState", "EFSGD",
           "EFSGDState", "DPSGD", "DPSGDState", "ChocoSGD", "ChocoState", "MalcomPSGD", "QAdam", "QAdamState", "Signum", "SignumState", "DivergenceError",
           "LocalObjective", "StepInfo", "rank_generators"]
