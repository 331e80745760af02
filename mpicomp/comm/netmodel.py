"""Network cost model (SPEC §5): simulated seconds of each collective.

A link costs ``α + m/β`` seconds for ``m`` bytes. Per collective with ``n`` ranks and ``m``
bytes a rank: ring allreduce ``2(n−1)α + 2(n−1)m/(nβ)``; allgather ``(n−1)(α + m/β)``; gather
to one root ``(n−1)(α + m/β)`` through the root's link; binomial broadcast
``⌈log₂n⌉(α + m/β)``; neighbour exchange ``deg·(α + m/β)`` on one NIC. Variable-size
collectives use the largest message of any rank for ``m`` (the slowest link sets the pace).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..spec_strings import Form, parse_spec

#: name → (α seconds, β bytes per second)
PROFILES = {
    "1gbe": (50e-6, 125e6),
    "10gbe": (20e-6, 1.25e9),
    "100gib": (2e-6, 12.5e9),
}


@dataclass(frozen=True)
class NetworkModel:
    """Latency ``alpha`` (s) and bandwidth ``beta`` (bytes/s) of one link."""

    alpha: float
    beta: float
    name: str = "custom"

    def __post_init__(self):
        if not (self.alpha >= 0 and self.beta > 0):
            raise ValueError(f"network model needs α ≥ 0 and β > 0, "
                             f"got α={self.alpha}, β={self.beta}")

    def link(self, m: float) -> float:
        """Seconds to move ``m`` bytes over one link."""
        return self.alpha + m / self.beta

    def allreduce(self, n: int, m: float) -> float:
        return 0.0 if n <= 1 else 2 * (n - 1) * self.alpha + 2 * (n - 1) * m / (n * self.beta)

    def allgather(self, n: int, m: float) -> float:
        return (n - 1) * self.link(m)

    def gather(self, n: int, m: float) -> float:
        return (n - 1) * self.link(m)

    def bcast(self, n: int, m: float) -> float:
        return math.ceil(math.log2(n)) * self.link(m) if n > 1 else 0.0

    def alltoall(self, n: int, m: float) -> float:
        """Personalised exchange of ``m`` bytes with each other rank through one NIC."""
        return (n - 1) * self.link(m)

    def neighbor(self, degree: int, m: float) -> float:
        return degree * self.link(m) if degree else 0.0


_CUSTOM_HINT = "write custom:alpha=SECONDS,beta=BYTES_PER_S"


def make_network_model(spec: str | NetworkModel | None) -> NetworkModel | None:
    """The network model named by ``spec``.

    Parameters
    ----------
    spec : str, NetworkModel or None
        A profile of `PROFILES` (``"10gbe"``), ``"custom:alpha=SECONDS,beta=BYTES_PER_S"``
        (a spec of `mpicomp.spec_strings`), a model (returned as it is) or None (no model).

    Raises
    ------
    ValueError
        An unknown profile, a key other than ``alpha`` and ``beta`` (or either missing), a
        malformed item, or values that are not numbers with α ≥ 0 and β > 0.
    """
    if spec is None or isinstance(spec, NetworkModel):
        return spec
    forms = {**{name: Form() for name in PROFILES},
             "custom": Form(keys=("alpha", "beta"), required=("alpha", "beta"))}
    name, params = parse_spec(spec, forms, "network profile", noun="key", hint=_CUSTOM_HINT)
    if name in PROFILES:
        return NetworkModel(*PROFILES[name], name=name)
    try:
        alpha, beta = float(params["alpha"]), float(params["beta"])
    except ValueError:
        raise ValueError(f"network profile spec {spec!r}: alpha and beta must be numbers; "
                         f"{_CUSTOM_HINT}") from None
    return NetworkModel(alpha, beta)
