"""Run configuration: typed settings, command-line flags, TOML files and ``--set`` overrides.

A run is described by a flat set of named settings: the common ones every app shares
(`COMMON_SETTINGS`: data, problem, compressor, iterations, step size, trace, ...) and those of its
algorithm (``Algorithm.settings``: DIANA's ``alpha``, ``momentum`` ...). Each `Setting` knows its
type, default, valid range and help text, and becomes one flag (``log_every`` is
``--log-every``).

Values are applied in this order, later ones winning:

1. the setting's built-in default, then the app's own defaults (``apps.qsgd`` sets a compressor);
2. ``--config FILE.toml``: a flat TOML table of settings (``lr = 0.5``,
   ``compressor = "qsgd:s=4"``);
3. flags on the command line;
4. ``--set key=value`` (repeatable), the same names as the TOML keys.

Every value is checked; an unknown flag or key, or a bad value, raises `ConfigError` with the
name, the offending value and the valid choices (for a TOML file, its path and the line).

The result is a `Config`: a frozen dataclass with one typed field per setting of any algorithm,
``None`` for the settings the run's algorithm does not use.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import json
import math
import numbers
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Literal

from .limits import CONFIG_MAX_BYTES, check_regular_file
from .progress import MODES as PROGRESS_MODES

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib


class ConfigError(ValueError):
    """A setting, flag, key or file that cannot be used; the message says what would be right."""


# --------------------------------------------------------------------------------------------
# Value types: each takes a string (flags, --set) or a TOML value and returns the checked value
# --------------------------------------------------------------------------------------------
def _text(value: Any) -> str:
    if isinstance(value, str):
        return value.strip()
    raise TypeError(f"expected text, got {value!r}")


def _boolean(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("1", "true", "yes", "on"):
        return True
    if isinstance(value, str) and value.strip().lower() in ("0", "false", "no", "off"):
        return False
    raise TypeError(f"expected true or false, got {value!r}")


def _integer(value: Any) -> int:
    if isinstance(value, bool):
        raise TypeError(f"expected an integer, got {value!r}")
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            pass
    raise TypeError(f"expected an integer, got {value!r}")


def _real(value: Any) -> float:
    if isinstance(value, bool):
        raise TypeError(f"expected a number, got {value!r}")
    if isinstance(value, numbers.Real):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value.strip())
        except ValueError:
            pass
    raise TypeError(f"expected a number, got {value!r}")


def _real_or_theory(value: Any) -> float | str:
    if isinstance(value, str) and value.strip().lower() == "theory":
        return "theory"
    try:
        return _real(value)
    except TypeError:
        raise TypeError(f"expected a number or 'theory', got {value!r}") from None


TYPES: dict[str, Callable[[Any], Any]] = {
    "text": _text, "bool": _boolean, "int": _integer, "float": _real, "theory": _real_or_theory,
}


@dataclasses.dataclass(frozen=True)
class Setting:
    """One named setting of a run.

    Parameters
    ----------
    name : str
        Key in TOML and ``--set``; the flag is ``--`` + name with ``_`` as ``-``.
    type : {"text", "bool", "int", "float", "theory"}
        ``theory`` is a number or the word ``theory`` (a value from the method's analysis).
    default : Any
    help : str
    choices : tuple, optional
        The only valid values.
    low, high : float, optional
        Bounds for numbers (``theory`` passes); ``low_open``/``high_open`` make them strict.
    check : callable, optional
        Extra validation ``check(value)`` that raises ValueError with the reason (e.g. a
        compressor spec that the registry rejects).
    """

    name: str
    type: str
    default: Any
    help: str
    choices: tuple | None = None
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    check: Callable[[Any], Any] | None = None

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def negated_flag(self) -> str:
        """``--no-NAME`` (bool settings only)."""
        return "--no-" + self.name.replace("_", "-")

    def convert(self, value: Any, source: str) -> Any:
        """The checked value, or ConfigError naming the setting, the value and ``source``."""
        where = f"{self.name} (from {source})"
        try:
            out = TYPES[self.type](value)
        except TypeError as exc:
            raise ConfigError(f"{where}: {exc}") from None
        if self.choices is not None and out not in self.choices:
            raise ConfigError(
                f"{where}: {out!r} is not valid; choose one of {', '.join(map(str, self.choices))}")
        if isinstance(out, float) and not math.isfinite(out):
            raise ConfigError(f"{where}: must be finite, got {out}")
        if isinstance(out, (int, float)) and not isinstance(out, bool):
            self._check_range(out, where)
        if self.check is not None and out is not None:
            try:
                self.check(out)
            except Exception as exc:  # e.g. OverflowError from "s=1e999"
                raise ConfigError(f"{where}: {exc}") from None
        return out

    def _check_range(self, value: float, where: str) -> None:
        too_low = self.low is not None and (value <= self.low if self.low_open
                                            else value < self.low)
        too_high = self.high is not None and (value >= self.high if self.high_open
                                              else value > self.high)
        if too_low or too_high:
            lo = "(" if self.low_open else "["
            hi = ")" if self.high_open else "]"
            span = f"{lo}{'-inf' if self.low is None else f'{self.low:g}'}, " \
                   f"{'inf' if self.high is None else f'{self.high:g}'}{hi}"
            raise ConfigError(f"{where}: {value!r} is out of range; valid values lie in {span}")


def _valid_compressor(spec: str) -> None:
    from .compress import make_compressor

    make_compressor(spec)


def _valid_network(spec: str) -> None:
    from .comm.netmodel import make_network_model

    if spec != "none":
        make_network_model(spec)


def _valid_downlink(spec: str) -> None:
    if spec not in ("", "none"):
        _valid_compressor(spec)


#: settings every app has (the algorithm adds its own, see ``Algorithm.settings``)
COMMON_SETTINGS: tuple[Setting, ...] = (
    Setting("problem", "text", "logistic", "loss over the local shard",
            choices=("least_squares", "lasso", "logistic", "mlp", "softmax", "nn")),
    Setting("data", "text", "synthetic",
            "data set: synthetic[:KIND][,key=value...] (keys n, d, h, seed, groups, density, "
            "noise, classes), breast_cancer, digits, digits:binary, libsvm:PATH"),
    Setting("features", "int", 0,
            "libsvm:PATH: number of features (0: the largest index in the file)", low=0),
    Setting("zero_based", "bool", False, "libsvm:PATH: feature indices start at 0"),
    Setting("shard", "text", "contiguous", "how samples are split over ranks",
            choices=("contiguous", "shuffled", "label")),
    Setting("test_fraction", "float", 0.0, "share of samples held out for test accuracy (0: none)",
            low=0.0, high=1.0, high_open=True),
    Setting("compressor", "text", "identity", "compression operator spec (e.g. qsgd:s=4,block=512)",
            check=_valid_compressor),
    Setting("topology", "text", "server", "how the compressed mean is formed",
            choices=("server", "allgather", "two-phase")),
    Setting("downlink", "text", "none",
            "re-compress the mean on the way back (server: default none = exact; two-phase: "
            "default none = the uplink operator, exact for DIANA)", check=_valid_downlink),
    Setting("iters", "int", 200, "number of steps", low=0),
    Setting("lr", "theory", "theory", "step size γ: a number, or 'theory' (the method's safe step)",
            low=0.0, low_open=True),
    Setting("batch", "int", 0, "minibatch size per rank (0: full local gradient)", low=0),
    Setting("l1", "float", 0.0, "ℓ1 weight λ1 (applied by the prox)", low=0.0),
    Setting("l2", "float", 1e-3, "ℓ2 weight λ2", low=0.0),
    Setting("hidden", "int", 32, "hidden units (problem=mlp)", low=1),
    Setting("model", "text", "lenet", "problem=nn: the PyTorch model, mlp, lenet, resnet20, "
            "resnet18, or package.module:function (called with image_shape, n_classes)"),
    Setting("augment", "bool", False, "problem=nn: random crops and flips of training images"),
    Setting("per_layer", "bool", False, "problem=nn: compress each parameter tensor on its own "
            "(the operator's blocks are the model's layers)"),
    Setting("seed", "int", 0, "seed of data, sampling and compression", low=0),
    Setting("dtype", "text", "float64", "precision of the model and messages",
            choices=("float64", "float32")),
    Setting("threads", "int", 1, "kernel threads a rank, for the operators with a threaded "
            "encode (natural, dithering: QSGD, TernGrad, natural dithering); 1: ranks share "
            "the cores", low=1),
    Setting("trace", "text", "",
            "HDF5 trace path (default: ALGORITHM.h5 in the working directory)"),
    Setting("log_every", "int", 10, "steps between trace rows", low=1),
    Setting("device", "text", "cpu", "where the shard and the gradients live",
            choices=("cpu", "gpu")),
    Setting("gpu_aware", "bool", False,
            "require a CUDA-aware MPI (checked at start; payloads are staged either way)"),
    Setting("network", "text", "10gbe",
            "network model for net_time: 1gbe, 10gbe, 100gib, custom:alpha=S,beta=B/S, none",
            check=_valid_network),
    Setting("checkpoint_every", "int", 0, "steps between checkpoints (0: only on SIGTERM/SIGUSR2)",
            low=0),
    Setting("resume", "bool", False, "continue from the checkpoint beside --trace"),
    Setting("reference", "bool", True, "solve for x* so the trace has dist_to_opt_sq"),
    Setting("progress", "text", "auto", "progress on rank 0: a bar, or a plain line every tenth "
            "of the steps (auto: the bar on a terminal, lines in logs and under mpiexec)",
            choices=PROGRESS_MODES),
    Setting("overwrite", "bool", False, "replace an existing trace at --trace (without it a run "
            "refuses to start on an existing file)"),
    Setting("quiet", "bool", False, "close with one line instead of the summary (job arrays)"),
)

#: settings that may change when a run is resumed (everything else must match the checkpoint);
#: a checkpoint holds host arrays, so a run may go on on the other device
RESUMABLE = frozenset({"iters", "resume", "checkpoint_every", "progress", "trace", "overwrite",
                       "quiet", "device", "gpu_aware"})


#: a ``theory`` setting's value: a number, or the word ``theory``
Theory = float | Literal["theory"]


@dataclasses.dataclass(frozen=True, kw_only=True, repr=False)
class Config:
    """Checked values of a run's settings: one typed field per setting of any algorithm.

    The fields are `COMMON_SETTINGS` followed by every ``Algorithm.settings`` (a name two
    algorithms share, such as ``schedule``, is one field; ``topology``'s choices differ per
    algorithm). A field without a default is a setting every algorithm uses. A setting this
    run does not use (DIANA's ``alpha`` in a DCGD run, ``compressor`` in a signSGD or D-PSGD
    run) is ``None``; no checked value is ``None``, so `names`, `as_dict`, `to_json`, ``==``
    and the hash cover exactly the settings the run uses. Build one with `parse_config` or
    `from_dict`; it is frozen (`replace` makes a changed copy) and pickles.
    """

    # COMMON_SETTINGS, in their order; Optional where an algorithm has no use for the setting
    problem: str
    data: str
    features: int
    zero_based: bool
    shard: str
    test_fraction: float
    compressor: str | None = None  # not signSGD, D-PSGD
    topology: str  # the aggregation; the graph for gossip methods; the vote for signSGD
    downlink: str | None = None  # not signSGD, qadam, gossip methods
    iters: int
    lr: Theory
    batch: int
    l1: float
    l2: float
    hidden: int
    model: str
    augment: bool
    per_layer: bool | None = None  # not signSGD, D-PSGD
    seed: int
    dtype: str
    threads: int
    trace: str
    log_every: int
    device: str
    gpu_aware: bool
    network: str
    checkpoint_every: int
    resume: bool
    reference: bool
    progress: str
    overwrite: bool
    quiet: bool
    # algorithms' own settings, in an order every algorithm's settings follow
    mixing: str | None = None  # gossip methods
    schedule: str | None = None  # gossip methods, qadam
    order: str | None = None  # D-PSGD
    gamma: float | None = None  # CHOCO, MALCOM
    tau: Theory | None = None  # CHOCO, MALCOM
    beta1: float | None = None  # qadam
    beta2: float | None = None  # qadam
    eps: float | None = None  # qadam
    error_feedback: bool | None = None  # qadam
    weight_quant: str | None = None  # qadam
    alpha: Theory | None = None  # DIANA
    momentum: float | None = None  # DIANA, signSGD
    shift_init: str | None = None  # DIANA
    weight_decay: float | None = None  # signSGD
    byzantine: int | None = None  # signSGD
    attack: str | None = None  # signSGD

    def __post_init__(self) -> None:
        unset = [f.name for f in _FIELDS
                 if f.default is dataclasses.MISSING and getattr(self, f.name) is None]
        if unset:
            raise ConfigError(f"Config: every algorithm uses {', '.join(unset)}; None is not valid")

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> Config:
        """The Config of ``values`` (setting name -> checked value), e.g. ``json.loads(to_json())``.

        Raises
        ------
        ConfigError
            For a name that is no field, or a missing setting that every algorithm uses.
        """
        for name in values:
            if name not in _FIELD_NAMES:
                raise _unknown(name, _FIELD_NAMES, "setting", "Config (declare a field for it)")
        missing = [f.name for f in _FIELDS
                   if f.default is dataclasses.MISSING and f.name not in values]
        if missing:
            raise ConfigError(f"Config: missing {', '.join(missing)} (every algorithm uses them)")
        return cls(**values)

    @property
    def names(self) -> tuple[str, ...]:
        """The settings this run uses (the fields that are not ``None``), in field order."""
        return tuple(f.name for f in _FIELDS if getattr(self, f.name) is not None)

    def replace(self, **changes: Any) -> Config:
        """A copy with ``changes``; a value for an unused setting adds it, ``None`` drops one."""
        for name in changes:
            if name not in _FIELD_NAMES:
                raise _unknown(name, _FIELD_NAMES, "setting", "Config.replace")
        return dataclasses.replace(self, **changes)

    def as_dict(self) -> dict:
        """``{name: value}`` of the settings this run uses (`names`)."""
        return {name: getattr(self, name) for name in self.names}

    def to_json(self) -> str:
        """`as_dict` as JSON with sorted keys (the ``config`` of traces and checkpoints)."""
        return json.dumps(self.as_dict(), sort_keys=True)

    def __repr__(self) -> str:
        return "Config(" + ", ".join(f"{k}={v!r}" for k, v in self.as_dict().items()) + ")"


_FIELDS = dataclasses.fields(Config)
_FIELD_NAMES = tuple(f.name for f in _FIELDS)


def _unknown(name: str, valid: Iterable[str], what: str, source: str) -> ConfigError:
    valid = sorted(valid)
    close = difflib.get_close_matches(name, valid, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return ConfigError(f"unknown {what} {name!r} in {source}{hint}; valid: {', '.join(valid)}")


class _Parser(argparse.ArgumentParser):
    """argparse that raises ConfigError (listing the valid flags) instead of exiting."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise ConfigError(f"{self.prog}: {message}")


def build_parser(prog: str, description: str, settings: Sequence[Setting],
                 defaults: Mapping[str, Any]) -> argparse.ArgumentParser:
    """The argparse parser of an app: one flag per setting, ``--config`` and ``--set``."""
    parser = _Parser(prog=prog, description=description, allow_abbrev=False)
    parser.add_argument("--config", metavar="FILE.toml", help="TOML file of settings")
    parser.add_argument("--set", metavar="KEY=VALUE", action="append", default=[],
                        help="override one setting (repeatable); keys as in the TOML file")
    for s in settings:
        default = defaults.get(s.name, s.default)
        shown = "''" if default == "" else default
        kwargs: dict = {"dest": s.name, "default": None, "help": f"{s.help} (default: {shown})"}
        if s.type == "bool":
            kwargs.update(nargs="?", const="true", metavar="BOOL")
        else:
            kwargs["metavar"] = (s.name.upper() if s.choices is None
                                 else "{" + ",".join(s.choices) + "}")
        parser.add_argument(s.flag, **kwargs)
        if s.type == "bool":  # --no-error-feedback is --error-feedback false
            parser.add_argument(s.negated_flag, dest=s.name, action="store_const", const="false",
                                help=f"same as {s.flag} false")
    return parser


def read_toml(path: str, valid: Iterable[str]) -> dict:
    """The settings in a TOML file (a flat table); errors name the file and line."""
    try:
        check_regular_file(path, "config file", CONFIG_MAX_BYTES)
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from None
    except ValueError as exc:  # not a regular file, or too large
        raise ConfigError(str(exc)) from None
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror or exc}") from None
    valid = set(valid)
    for key, value in data.items():
        if key not in valid:
            raise _unknown(key, valid, "setting", f"{path} (line {_line_of(path, key)})")
        if isinstance(value, dict):
            raise ConfigError(f"{path}: {key} is a table; settings are flat (key = value)")
    return data


def _line_of(path: str, key: str) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            for number, line in enumerate(fh, 1):
                if line.split("=", 1)[0].strip().strip('"') == key:
                    return str(number)
    except OSError:  # pragma: no cover - it was readable a moment ago
        pass
    return "?"


def parse_config(argv: Sequence[str] | None, settings: Sequence[Setting], *,
                 prog: str = "mpicomp", description: str = "",
                 defaults: Mapping[str, Any] | None = None) -> Config:
    """Flags, ``--config`` and ``--set`` over the defaults, all checked (see the module docs)."""
    defaults = dict(defaults or {})
    by_name = {s.name: s for s in settings}
    for key in defaults:
        if key not in by_name:
            raise _unknown(key, by_name, "setting", "the app's defaults")
    parser = build_parser(prog, description, settings, defaults)
    args, extra = parser.parse_known_args(list(argv or []))
    if extra:
        flags = sorted([s.flag for s in settings]
                       + [s.negated_flag for s in settings if s.type == "bool"])
        flags += ["--config", "--set", "--help"]
        raise _unknown(extra[0], flags, "flag", "the command line")
    given = {s.name: getattr(args, s.name) for s in settings}

    values: dict[str, tuple[Any, str]] = {
        s.name: (defaults.get(s.name, s.default), "the default") for s in settings}
    if args.config:
        for key, value in read_toml(args.config, by_name).items():
            values[key] = (value, args.config)
    for name, value in given.items():
        if value is not None:
            values[name] = (value, by_name[name].flag)
    for item in args.set:
        key, eq, value = item.partition("=")
        key = key.strip().replace("-", "_")
        if not eq:
            raise ConfigError(f"--set {item!r}: write --set key=value")
        if key not in by_name:
            raise _unknown(key, by_name, "setting", "--set")
        values[key] = (value, "--set")
    return Config.from_dict({name: by_name[name].convert(value, source)
                             for name, (value, source) in values.items()})


__all__ = ["ConfigError", "Setting", "Config", "Theory", "COMMON_SETTINGS", "RESUMABLE",
           "parse_config", "build_parser", "read_toml"]


def broadcast_config(mpi_comm, parse: Callable[[], Config], prog: str) -> Config | None:
    """``parse()`` on rank 0 and its `Config` on every rank (collective; ``mpi_comm`` an mpi4py
    communicator). None on every rank when the command line is not valid, after rank 0 printed
    why: an exception in ``parse`` never leaves the other ranks waiting in the broadcast."""
    parsed = None
    if mpi_comm.Get_rank() == 0:
        try:
            parsed = (parse(), None)
        except ConfigError as exc:
            parsed = (None, str(exc))
        except Exception as exc:
            parsed = (None, f"{type(exc).__name__}: {exc}")
    cfg, error = mpi_comm.bcast(parsed, root=0)
    if error and mpi_comm.Get_rank() == 0:
        print(f"{prog}: error: {error}", file=sys.stderr, flush=True)
    return cfg
