"""Distributed optimisation algorithms, one module per family, each with an explicit State.

>>> from mpicomp.algorithms import ALGORITHMS
>>> sorted(ALGORITHMS)
['choco', 'dcgd', 'diana', 'dpsgd', 'efsgd', 'malcom', 'qadam', 'signsgd']
"""

from __future__ import annotations

from .base import Algorithm, DivergenceError, LocalObjective, StepInfo, rank_generators
from .centralised import CentralisedAlgorithm
from .dcgd import DCGD, DCGDState
from .diana import DIANA, DIANAState
from .efsgd import EFSGD, EFSGDState
from .gossip import DPSGD, ChocoSGD, ChocoState, DPSGDState, MalcomPSGD
from .qadam import QAdam, QAdamState
from .signsgd import Signum, SignumState

ALGORITHMS: dict[str, type[Algorithm]] = {
    cls.name: cls for cls in (DCGD, DIANA, EFSGD, QAdam, Signum, DPSGD, ChocoSGD, MalcomPSGD)}



def settings_of(algorithm: str) -> tuple:
    """The common settings the algorithm uses (its own version where it redefines one, e.g. the
    vote modes of ``topology`` for signSGD), then its own."""
    from ..config import COMMON_SETTINGS

    cls = ALGORITHMS[algorithm]
    own = {s.name: s for s in cls.settings}
    common = [own.pop(s.name, s) for s in COMMON_SETTINGS if s.name not in cls.unused_settings]
    return tuple(common) + tuple(own.values())


__all__ = ["Algorithm", "ALGORITHMS", "CentralisedAlgorithm", "DCGD", "DCGDState", "DIANA",
           "DIANAState", "EFSGD", "EFSGDState", "DPSGD", "DPSGDState", "ChocoSGD", "ChocoState",
           "MalcomPSGD", "QAdam", "QAdamState", "Signum", "SignumState", "DivergenceError",
           "LocalObjective", "StepInfo", "rank_generators", "settings_of"]
