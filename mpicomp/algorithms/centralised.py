"""The centralised family: methods whose ranks meet in one aggregate every step (a server, an
allgather, a two-phase exchange or a majority vote), with the theory step sizes of compressed
gradient methods."""

from __future__ import annotations

import math
from typing import ClassVar

from .base import Algorithm


class CentralisedAlgorithm(Algorithm):
    """A method over an aggregator (``self.aggregator``): every rank receives the same
    aggregate, so every rank holds the same model.

    Subclasses set `step_factor` (for `theory_lr`) and `default_downlink`, and their `build`
    starts from `aggregator_for`.
    """

    topologies: ClassVar[tuple[str, ...]] = ("server", "allgather", "two-phase")
    #: downlink compressor when ``--downlink none`` (None: the aggregator's own default)
    default_downlink: ClassVar[str | None] = None
    #: ``c`` of the theory step ``1/(L(1 + c·ω/n))`` of compressed-gradient methods
    step_factor: ClassVar[float]

    @classmethod
    def aggregator_for(cls, cfg, objective, comm):
        """The aggregator of ``cfg.topology`` with ``cfg.compressor`` (per layer with
        ``--per-layer``) and the downlink, their parameters checked against the lengths they
        will compress (no communication)."""
        from ..comm.aggregate import make_aggregator
        from .base import uplink_operator

        downlink = cfg.downlink if cfg.downlink not in ("", "none") else None
        if downlink is None and cfg.topology != "allgather":
            downlink = cls.default_downlink
        return make_aggregator(cfg.topology, comm, uplink_operator(cfg, objective),
                               downlink=downlink, dim=objective.dim)

    def compressor_spec(self) -> str:
        """The ``compressor`` attribute of traces: the uplink operator as the registry names it."""
        return self.aggregator.compressor.spec()

    # -- theory step -----------------------------------------------------------------------
    @classmethod
    def theory_lr(cls, op, dim: int, n: int, smoothness, problem: str, down=None) -> float:
        """``1/(L(1 + ω_M)(1 + c·ω/n))`` with ``c = step_factor``, ``ω`` the uplink operator's
        and ``ω_M`` the downlink's (0 without one), or a ValueError saying which number to give
        instead (no smoothness constant, or a biased operator).

        The ``(1 + ω_M)`` factor is the bidirectional bound of Horváth et al. (natural
        compression, Thm. 3); ``ω_M(d)`` also bounds a two-phase downlink's ω on chunks of
        ``d/n`` coordinates, which is no larger for every operator here.
        """
        L = require_smoothness(smoothness, "lr", problem)
        omega_down = 0.0 if down is None else omega_of(down, dim, "lr")
        return 1.0 / (L * (1.0 + omega_down)
                      * (1.0 + cls.step_factor * omega_of(op, dim, "lr") / n))

    @classmethod
    def resolved_lr(cls, cfg, aggregator, dim: int, n: int, smoothness) -> float:
        """``cfg.lr``, or `theory_lr` for the aggregator's operators when it is ``"theory"``."""
        if cfg.lr != "theory":
            return cfg.lr
        return cls.theory_lr(aggregator.compressor, dim, n, smoothness, cfg.problem,
                             getattr(aggregator, "down", None))


def require_smoothness(smoothness: float | None, setting: str, problem_name: str) -> float:
    """``L`` for a ``theory`` default, or a ValueError telling the user to give ``setting``."""
    if smoothness is None or not math.isfinite(smoothness) or smoothness <= 0:
        raise ValueError(
            f"{setting}=theory needs a smoothness constant L, and the {problem_name} problem has "
            f"none (it is non-convex); give a number, e.g. --{setting.replace('_', '-')} 0.05")
    return float(smoothness)


def omega_of(op, d: int, setting: str) -> float:
    """``ω(d)`` of an unbiased operator, or a ValueError telling the user to give ``setting``."""
    omega = op.omega(d) if op.unbiased else None
    if omega is None:
        raise ValueError(
            f"{setting}=theory needs an unbiased compressor with a known ω; {op.spec()} is "
            f"biased: give {setting} a number (--{setting.replace('_', '-')} VALUE)")
    return float(omega)


def require_exact_downlink(aggregator, method: str, reason: str) -> None:
    """A ValueError unless every rank receives the exact aggregate (no lossy downlink)."""
    down = getattr(aggregator, "down", None)
    if down is not None and down.name != "identity":
        raise ValueError(f"{method} needs the exact mean on every rank ({reason}); a lossy "
                         f"downlink ({down.spec()}) breaks that: use --downlink identity (the "
                         f"default for {method})")

