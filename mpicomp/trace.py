"""HDF5 trace of a run (DESIGN.md, "Trace (HDF5)"): writer for rank 0, reader for analysis.

Root attributes ``ROOT_ATTRS``; ``trace/``: 1-D columns (``INT_COLUMNS`` int64, others float64);
``ranks/``: (rows, world_size) datasets; ``final/x``. HDF5's default format (no libver="latest",
no SWMR) and a flush after every row: a killed writer leaves a file plain h5py reads.

Attributes
    Every str attribute the writer stores passes through :func:`clean_attr_text`: NUL and the
    other control characters but newline and tab are dropped (HDF5 variable-length strings
    cannot hold NUL; Open MPI's ``MPI.Get_library_version()`` ends in NUL bytes), line breaks
    become ``\\n`` and trailing whitespace goes. Every dataset has a ``description`` and a
    ``units`` attribute (UDUNITS symbols, ``"1"`` for dimensionless) from ``DATASET_INFO``.

netCDF / xarray
    ``trace/step`` is an HDF5 dimension scale named ``step`` attached to dimension 0 of every
    other ``trace/`` column, so ``xarray.open_dataset(path, group="trace", engine="h5netcdf")``
    gives a Dataset with coordinate ``step`` and the other columns as data variables along it.
    ``ranks/`` and ``final/`` carry no dimension scales (netCDF sees only dimensions of the
    same group or its parents, and ``trace/`` is a sibling); open them with
    ``phony_dims="sort"`` (dimensions ``phony_dim_N``).

Reading while a run writes
    The writer flushes after every row, so every flushed row is complete in every column.
    Without SWMR, HDF5 does not guard a reader against an append in progress: a read that
    overlaps one may fail or see columns of unequal length (``read_trace`` raises TraceError
    then); read again. Open afresh for each look, after closing every handle on the file
    (HDF5 shares one open file per process, and it keeps the rows it had when opened). The
    writer holds an HDF5 file lock, so readers open without locking: :func:`read_trace`
    does; h5py (>= 3.5): ``h5py.File(path, "r", locking=False)``; xarray (>= 2024.1, the
    keywords reach h5py): ``xarray.open_dataset(path, group="trace", engine="h5netcdf",
    driver_kwds={"locking": False})`` (xarray's ``lock=False`` is an in-process thread lock
    and does not help); any HDF5 program: ``HDF5_USE_FILE_LOCKING=FALSE`` in its environment.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
from collections.abc import Mapping, Sequence
from typing import Any

import h5py
import numpy as np

from . import __version__
from .backend import to_host
from .checkpoint import FORMAT as CHECKPOINT_FORMAT
from .diskspace import abandon, check_free_space, failure_text

STATUSES = ("running", "finished", "diverged", "failed")
STANDARD_COLUMNS = ("step", "loss", "grad_norm_sq", "dist_to_opt_sq", "bits_up", "bits_down",
                    "wire_bytes", "wall_time", "net_time")
INT_COLUMNS = frozenset({"step", "bits_up", "bits_down", "wire_bytes"})
ROOT_ATTRS = ("mpicomp_version", "algorithm", "compressor", "topology", "world_size", "config",
              "mpi_library", "status")
STEP_SCALE = "step"  # name of the dimension scale trace/step (netCDF dimension of trace/)

#: ``(description, units)`` of the datasets, by path in the file; units are UDUNITS symbols
#: (``"1"``: dimensionless). Datasets not listed get `_GENERIC_INFO`. Cumulative counters count
#: from step 0 of the run (a resumed run continues them).
DATASET_INFO: dict[str, tuple[str, str]] = {
    "trace/step": ("step index: optimiser steps completed when the row was logged", "1"),
    "trace/loss": ("global objective F(x) incl. regulariser at the reported model", "1"),
    "trace/grad_norm_sq": ("squared norm ||grad f(x)||^2 of the global gradient of the smooth "
                           "part f (without the l1 regulariser) at the reported model", "1"),
    "trace/dist_to_opt_sq": ("squared distance ||x - x*||^2 of the reported model to the "
                             "reference optimum x* (NaN when there is none)", "1"),
    "trace/bits_up": ("cumulative information bits sent towards the aggregate (exact payload "
                      "sizes), all ranks since step 0", "bit"),
    "trace/bits_down": ("cumulative information bits received from the aggregate (exact payload "
                        "sizes), all ranks since step 0", "bit"),
    "trace/wire_bytes": ("cumulative bytes sent by MPI collectives (each message once per "
                         "receiving rank), all ranks since step 0", "byte"),
    "trace/wall_time": ("cumulative wall-clock time inside steps, slowest rank, since step 0",
                        "s"),
    "trace/net_time": ("cumulative network time simulated by the --network model, slowest "
                       "rank, since step 0 (0 without a model)", "s"),
    "trace/test_loss": ("objective incl. regulariser on the held-out test set at the reported "
                        "model (NaN without a test set)", "1"),
    "trace/test_accuracy": ("share of held-out test samples classified correctly by the "
                            "reported model (NaN for problems that do not classify)", "1"),
    "trace/consensus_error": ("consensus error sum_i ||x_i - xbar||^2 of the ranks' models "
                              "around their mean xbar, the reported model", "1"),
    "trace/sparsity": ("share of exact zeros in the reported model", "1"),
    "ranks/bits_up": ("cumulative information bits this rank sent towards the aggregate since "
                      "step 0; column r is rank r", "bit"),
    "ranks/bits_down": ("cumulative information bits this rank received from the aggregate "
                        "since step 0; column r is rank r", "bit"),
    "ranks/wire_bytes": ("cumulative bytes this rank sent by MPI collectives since step 0; "
                         "column r is rank r", "byte"),
    "ranks/wall_time": ("cumulative wall-clock time this rank spent inside steps since step 0; "
                        "column r is rank r", "s"),
    "ranks/net_time": ("cumulative network time simulated for this rank by the --network model "
                       "since step 0; column r is rank r", "s"),
    "final/x": ("model reported at the end of the run", "1"),
}
_GENERIC_INFO = {"trace": "value logged with each row (not described in DATASET_INFO)",
                 "ranks": "per-rank value logged with each row (not described in DATASET_INFO); "
                          "column r is rank r"}
# control characters but tab and newline (C0, DEL, C1) and lone surrogates (not UTF-8 encodable)
_DROPPED_CHARACTERS = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
_LONE_SURROGATES = re.compile(r"[\ud800-\udfff]")


class TraceError(ValueError):
    """A trace file that cannot be written or read, or a row that does not fit it."""


def _dtype(name: str) -> type:
    return np.int64 if name in INT_COLUMNS else np.float64


def _jsonable(obj: Any) -> Any:
    """JSON form of numpy values and paths in a config (anything else: TypeError)."""
    return obj.tolist() if isinstance(obj, (np.generic, np.ndarray)) else os.fspath(obj)


def clean_attr_text(text: str) -> str:
    """``text`` as a trace stores it in a str attribute.

    HDF5 variable-length strings cannot hold NUL (h5py: "VLEN strings do not support embedded
    NULLs"), and Open MPI's library version ends in NUL bytes; other control characters only
    garble what tools print.

    Parameters
    ----------
    text : str

    Returns
    -------
    str
        ``text`` with ``\\r\\n`` and ``\\r`` turned into ``\\n``, the other control characters
        but newline and tab (U+0000-U+001F, U+007F-U+009F) dropped, lone surrogates (from
        undecodable file names) replaced by U+FFFD, and trailing whitespace stripped. Newlines
        are kept: error messages and library versions may have several lines. Idempotent.
    """
    text = str(text).replace("\r\n", "\n").replace("\r", "\n")
    text = _LONE_SURROGATES.sub("\ufffd", _DROPPED_CHARACTERS.sub("", text))
    return text.rstrip()


def _attr_value(path: str, name: str, value: Any) -> Any:
    """``value`` as stored in attribute ``name``: the one conversion of every attribute the
    writer stores. A ``config`` dict becomes sorted JSON; str goes through `clean_attr_text`;
    ``config`` must be JSON and ``status`` one of ``STATUSES``. TraceError otherwise."""
    if name == "config" and isinstance(value, Mapping):
        try:
            value = json.dumps(dict(value), sort_keys=True, default=_jsonable)
        except (TypeError, ValueError) as exc:
            raise TraceError(f"{path}: attribute 'config' must be a dict or JSON str: "
                             f"{exc}") from None
    if isinstance(value, str):
        value = clean_attr_text(value)
    if name == "config":
        try:
            json.loads(value)
        except (TypeError, ValueError) as exc:
            raise TraceError(f"{path}: attribute 'config' must be a dict or JSON str: "
                             f"{exc}") from None
    if name == "status" and value not in STATUSES:
        raise TraceError(f"{path}: status {value!r} is not one of {', '.join(STATUSES)}")
    if isinstance(value, (str, bool, int, float, np.generic)) or (
            isinstance(value, np.ndarray) and value.dtype.kind in "biuf"):
        return value
    raise TraceError(f"{path}: attribute {name!r} = {value!r} has type {type(value).__name__}; "
                     "use str, bool, int, float or a numeric array")


def _attr_values(path: str, attrs: Mapping[str, Any]) -> dict[str, Any]:
    """`_attr_value` of every item: what ``node.attrs.update`` may store (all checked first)."""
    return {name: _attr_value(path, name, value) for name, value in attrs.items()}


def _describe(ds: h5py.Dataset, path: str) -> None:
    """Set the ``description`` and ``units`` attributes of ``ds`` from `DATASET_INFO`."""
    key = ds.name.lstrip("/")
    group, _, name = key.partition("/")
    generic = f"{name}: {_GENERIC_INFO.get(group, 'no description in DATASET_INFO')}"
    description, units = DATASET_INFO.get(key, (generic, "1"))
    ds.attrs.update(_attr_values(path, {"description": description, "units": units}))


def _annotate(f: h5py.File, path: str) -> None:
    """Describe every dataset and make ``trace/step`` the dimension scale of ``trace/``.

    Idempotent (nothing is attached twice), so a resumed trace written before these
    attributes existed gets them too."""
    step = f["trace/step"]
    if not step.is_scale:
        step.make_scale(STEP_SCALE)
    for group in ("trace", "ranks", "final"):
        for name, ds in f.get(group, {}).items():
            _describe(ds, path)
            if group == "trace" and name != "step" and not h5py.h5ds.is_attached(
                    ds.id, step.id, 0):
                ds.dims[0].attach_scale(step)


def _check(f: h5py.File, path: str) -> None:
    """Raise TraceError unless ``f`` has the contract's attributes, columns and shapes."""
    missing = [a for a in ROOT_ATTRS if a not in f.attrs]
    if f.attrs.get("format") == CHECKPOINT_FORMAT:
        raise TraceError(f"{path}: an mpicomp checkpoint, not a trace (the trace beside it has "
                         "the same name without .ckpt)")
    if missing:
        raise TraceError(f"{path}: not an mpicomp trace, missing root attributes: "
                         f"{', '.join(missing)}")
    status = f.attrs["status"]
    if not isinstance(status, str) or status not in STATUSES:
        raise TraceError(f"{path}: status {status!r} is not one of {', '.join(STATUSES)}")
    if not isinstance(f.get("trace"), h5py.Group):
        raise TraceError(f"{path}: not an mpicomp trace, missing group 'trace/'")
    missing = [c for c in STANDARD_COLUMNS if c not in f["trace"]]
    if missing:
        raise TraceError(f"{path}: group trace/ lacks standard columns: {', '.join(missing)}")
    lengths = {name: getattr(ds, "shape", None) for name, ds in f["trace"].items()}
    if len(set(lengths.values())) != 1 or len(lengths["step"] or ()) != 1:
        raise TraceError(f"{path}: trace/ columns must be 1-D and of equal length, got {lengths}")
    shape = (lengths["step"][0], int(f.attrs["world_size"]))
    for name, ds in f.get("ranks", {}).items():
        if getattr(ds, "shape", None) != shape:
            raise TraceError(f"{path}: ranks/{name} has shape {getattr(ds, 'shape', None)}, "
                             f"expected (rows, world_size) = {shape}")
    for group in ("trace", "ranks", "final"):
        for ds in f.get(group, {}).values():
            _check_stored(ds, path)


#: A dataset may claim at most this many times the bytes it stores (plus `STORED_SLACK`): a
#: writer's rows are stored as written, while a dataset resized or compressed to claim far more
#: (a damaged or forged file) would cost that memory and time to read.
STORED_RATIO, STORED_SLACK = 16, 1 << 16


def _check_stored(ds, path: str) -> None:
    """TraceError when ``ds`` claims far more data than the file stores for it."""
    if not isinstance(ds, h5py.Dataset):
        raise TraceError(f"{path}: {ds.name} is not a dataset")
    claimed, stored = ds.size * ds.dtype.itemsize, ds.id.get_storage_size()
    if claimed > STORED_RATIO * stored + STORED_SLACK:
        raise TraceError(f"{path}: {ds.name.lstrip('/')} claims {ds.shape} ({claimed} bytes) but "
                         f"the file stores {stored} bytes of it: a damaged or forged trace")


def _open(path: str, mode: str, unlocked: bool = False) -> h5py.File:
    """Open an existing trace file; ``unlocked`` first tries without HDF5 file locking (to read
    a file a run is writing), then with it (old h5py/HDF5, or this process holds the file)."""
    if not os.path.isfile(path):
        raise TraceError(f"{path}: no such trace file")
    for kw in ({"locking": False}, {}) if unlocked else ({},):
        try:
            return h5py.File(path, mode, **kw)
        except (TypeError, ValueError) as exc:  # this h5py/HDF5 cannot switch locking off
            error = exc
        except OSError as exc:
            error = exc
            if not (kw and "lock" in str(exc)):
                break
    raise TraceError(f"{path}: not a readable HDF5 file (truncated or another format?): {error}")


# -- creating and reopening a trace file: the writer's HDF5 layout ----------------------------
def _rank_chunk(world_size: int) -> tuple:
    """Chunk shape of a ``ranks/`` dataset: up to 512 rows, at most 64 Ki values."""
    return (max(1, min(512, 65536 // world_size)), world_size)


def _row_margin(columns: Sequence[str], rank_columns: Sequence[str], world_size: int) -> int:
    """Free bytes a row needs at most: a new chunk of every dataset, twice, and 1 MiB of
    metadata (the check stops a run while HDF5 still has room to close cleanly)."""
    chunks = 512 * 8 * len(columns) + 8 * int(np.prod(_rank_chunk(world_size))) * len(
        rank_columns)
    return 2 * chunks + (1 << 20)


def _held_datasets(f: h5py.File) -> dict:
    """Every ``trace/`` and ``ranks/`` dataset of ``f`` by ``(group, name)``: a writer holds
    them open, so that no release writes behind a flush."""
    return {(group, name): f[group][name] for group in ("trace", "ranks")
            for name in f.get(group, {})}


def _new_root_attrs(path: str, attrs: Mapping[str, Any], columns: Sequence[str],
                    rank_columns: Sequence[str], world_size: int, given_world_size: Any) -> dict:
    """The root attributes of a new trace (status "running"), as `_attr_values` stores them;
    TraceError listing every problem of the writer's arguments."""
    attrs = {"mpicomp_version": __version__, "world_size": world_size, **attrs}
    problems = [f"duplicate names in {what}: {list(names)}" for what, names in
                (("columns", columns), ("rank_columns", rank_columns))
                if len(set(names)) != len(names)]
    problems += [f"columns lack the standard {c!r}" for c in STANDARD_COLUMNS if c not in columns]
    problems += [f"attrs lack {a!r}" for a in ROOT_ATTRS if a not in attrs and a != "status"]
    if "status" in attrs:
        problems.append("attrs must not set 'status' (the writer does)")
    if world_size < 1 or attrs["world_size"] != world_size:
        problems.append(f"world_size must be a positive int equal to attrs['world_size'], got "
                        f"{given_world_size} and {attrs['world_size']}")
    if problems:
        raise TraceError(f"{path}: " + "; ".join(problems))
    return _attr_values(path, {**attrs, "status": "running"})


def _create_datasets(f: h5py.File, columns: Sequence[str], rank_columns: Sequence[str],
                     world_size: int) -> None:
    """The empty, resizable ``trace/`` columns and ``ranks/`` datasets of a new trace."""
    for name in columns:
        f.create_dataset(f"trace/{name}", shape=(0,), maxshape=(None,), chunks=(512,),
                         dtype=_dtype(name))
    f.require_group("ranks")
    for name in rank_columns:
        f.create_dataset(f"ranks/{name}", shape=(0, world_size), chunks=_rank_chunk(world_size),
                         maxshape=(None, world_size), dtype=_dtype(name))


def _create_trace_file(path: str, values: Mapping[str, Any], columns: Sequence[str],
                       rank_columns: Sequence[str], world_size: int) -> tuple[h5py.File, dict]:
    """Create (overwrite) the trace file ``path`` with root attributes ``values`` and empty
    datasets, flushed; missing parent directories are created.

    Returns
    -------
    f : h5py.File
        The open file.
    held : dict
        `_held_datasets` of ``f``.

    Raises
    ------
    TraceError
        The file cannot be created or written; no damaged file is left behind.
    """
    try:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        check_free_space(path, _row_margin(columns, rank_columns, world_size),
                         f"cannot create trace file {path}")
        f = h5py.File(path, "w")
    except OSError as exc:
        raise TraceError(f"cannot create trace file {path}: {exc}") from None
    held: dict = {}
    try:
        f.attrs.update(values)
        _create_datasets(f, columns, rank_columns, world_size)
        _annotate(f, path)
        held = _held_datasets(f)
        f.flush()
    except (OSError, RuntimeError) as exc:  # no damaged file is left behind
        abandon(f, held)
        with contextlib.suppress(OSError):
            os.remove(path)
        raise TraceError(f"cannot create trace file {path}: {failure_text(exc)}") from None
    return f, held


def _reopen_truncated(path: str, rows: int) -> h5py.File:
    """Open the trace ``path`` to resume it: keep its first ``rows`` rows, drop ``final/`` and
    the ``error`` attribute, set status "running", flush. TraceError if it has fewer rows, is
    no trace, or a write fails (the file then keeps what it had)."""
    try:
        check_free_space(path, 1 << 20, f"{path}: reopening to resume")
    except OSError as exc:
        raise TraceError(str(exc)) from None
    f = _open(path, "r+")
    try:
        _check(f, path)
        if not 0 <= rows <= f["trace/step"].shape[0]:
            raise TraceError(f"{path}: cannot keep {rows} rows, the trace has "
                             f"{f['trace/step'].shape[0]}")
        for ds in [*f["trace"].values(), *f.get("ranks", {}).values()]:
            ds.resize(rows, axis=0)
        if "final" in f:
            del f["final"]
        if "error" in f.attrs:
            del f.attrs["error"]
        f.attrs.update(_attr_values(path, {"status": "running"}))
        _annotate(f, path)
        f.flush()
    except (OSError, RuntimeError) as exc:  # a write failed: keep what the file had
        abandon(f)
        raise TraceError(f"{path}: reopening to resume failed: {failure_text(exc)}") from None
    except BaseException:
        f.close()
        raise
    return f


# -- checking a row against the writer's columns ----------------------------------------------
def _exact_items(path: str, given: Mapping, names: Sequence[str], what: str) -> list:
    """``[(name, given[name]) for name in names]``; TraceError unless ``given`` has exactly the
    keys ``names``."""
    missing = [c for c in names if c not in given]
    unknown = [c for c in given if c not in names]
    if missing or unknown:
        raise TraceError(f"{path}: {what} must have exactly the columns "
                         f"{', '.join(names)}; missing: {missing}, unknown: {unknown}")
    return [(c, given[c]) for c in names]


def _column_scalar(path: str, name: str, value: Any) -> int | float:
    """``value`` as column ``name`` stores it: an int (``INT_COLUMNS``) or a float."""
    integral = name in INT_COLUMNS
    try:
        if isinstance(value, (str, bytes)):
            raise TypeError(value)
        number = float(value)
        if integral and number != int(number):  # int() rejects NaN and inf too
            raise ValueError(value)
        return int(value) if integral else number
    except (TypeError, ValueError, OverflowError):
        kind = "an integer" if integral else "a number"
        raise TraceError(f"{path}: column {name!r} needs {kind}, got {value!r}") from None


def _rank_vectors(path: str, ranks: Mapping[str, Sequence] | None, rank_columns: Sequence[str],
                  world_size: int) -> list:
    """``[(name, vector)]`` of a row's ``ranks/`` values (see `TraceWriter.append`)."""
    if ranks is None:
        vectors = [(c, np.full(world_size, -1 if c in INT_COLUMNS else np.nan, dtype=_dtype(c)))
                   for c in rank_columns]
    else:
        vectors = [(c, np.asarray(to_host(v), dtype=_dtype(c)))
                   for c, v in _exact_items(path, ranks, rank_columns, "ranks")]
    for name, vec in vectors:
        if vec.shape != (world_size,):
            raise TraceError(f"{path}: ranks[{name!r}] has shape {vec.shape}, "
                             f"expected ({world_size},)")
    return vectors


class TraceWriter:
    """Write a trace row by row (rank 0 only); as a context manager, an exception in the block
    records status "failed" and the error.

    Parameters
    ----------
    path : str or os.PathLike
        File to create (overwritten); missing parent directories are created.
    attrs : dict
        ``ROOT_ATTRS`` but ``status`` (the writer's), plus extras; ``mpicomp_version`` and
        ``world_size`` have defaults; ``config`` a dict (stored as sorted JSON) or JSON str.
        Text is stored as `clean_attr_text` returns it, here and in `set_attrs` and `finish`.
    columns, rank_columns : sequence of str
        ``trace/`` columns (``STANDARD_COLUMNS`` and more) and ``ranks/`` dataset names.
    world_size : int
        Number of MPI ranks (second dimension of the ``ranks/`` datasets).
    """

    def __init__(self, path: str | os.PathLike, attrs: Mapping[str, Any], columns: Sequence[str],
                 rank_columns: Sequence[str], world_size: int, *, _file: h5py.File | None = None):
        self.path, self.world_size = os.fspath(path), int(world_size)
        self.columns, self.rank_columns = tuple(columns), tuple(rank_columns)
        self._rows = 0 if _file is None else int(_file["trace/step"].shape[0])
        if _file is not None:  # reopen()
            self._f, self._datasets = _file, _held_datasets(_file)
            return
        values = _new_root_attrs(self.path, attrs, self.columns, self.rank_columns,
                                 self.world_size, world_size)
        # the datasets are held open, so that no release writes behind a flush
        self._f, self._datasets = _create_trace_file(self.path, values, self.columns,
                                                     self.rank_columns, self.world_size)

    # -- writing that a full disk cannot damage (`mpicomp.diskspace`) -------------------------
    def _margin(self) -> int:
        """Free bytes a row needs at most (`_row_margin`)."""
        return _row_margin(self.columns, self.rank_columns, self.world_size)

    def _abandon(self) -> None:
        """Give up the file after a failed write, keeping what its last flush wrote."""
        if self._f is not None:
            f, self._f = self._f, None
            abandon(f, self._datasets)

    def _guarded(self, what: str, write, needed: int | None = None) -> None:
        """``write(f)`` then flush, after checking that ``needed`` bytes (default `_margin`) are
        free; on failure the file is abandoned as last flushed and TraceError says what failed."""
        f = self._file()
        try:
            check_free_space(self.path, self._margin() if needed is None else needed,
                             f"{self.path}: {what}")
        except OSError as exc:
            raise TraceError(f"{exc}; the trace keeps its {self._rows} rows") from None
        try:
            write(f)
            f.flush()
        except (OSError, RuntimeError) as exc:
            self._abandon()
            raise TraceError(f"{self.path}: {what} failed ({failure_text(exc)}); the file keeps "
                             f"what its last flush wrote ({self._rows} rows)") from None

    @property
    def is_open(self) -> bool:
        """Whether rows and attributes can still be written."""
        return self._f is not None

    @classmethod
    def reopen(cls, path: str | os.PathLike, rows: int) -> TraceWriter:
        """Reopen a trace to resume it: keep its first ``rows`` rows, drop ``final/`` and the
        ``error`` attribute, set status "running". TraceError if it has fewer rows."""
        path = os.fspath(path)
        f = _reopen_truncated(path, rows)
        return cls(path, {}, list(f["trace"]), list(f.get("ranks", {})),
                   int(f.attrs["world_size"]), _file=f)

    @property
    def rows(self) -> int:
        """Rows written so far."""
        return self._rows

    def _file(self) -> h5py.File:
        if self._f is None:
            raise TraceError(f"{self.path}: the trace writer is closed")
        return self._f

    def append(self, row: Mapping[str, float | int],
               ranks: Mapping[str, Sequence] | None = None) -> None:
        """Append one row with exactly the trace columns and flush it. ``ranks`` maps every rank
        column to a length-``world_size`` vector; None fills NaN (float) or -1 (int)."""
        self._file()
        values = [(c, _column_scalar(self.path, c, v))
                  for c, v in _exact_items(self.path, row, self.columns, "row")]
        vectors = _rank_vectors(self.path, ranks, self.rank_columns, self.world_size)
        n = self._rows

        def write(_):
            for group, items in (("trace", values), ("ranks", vectors)):
                for name, value in items:
                    ds = self._datasets[group, name]
                    ds.resize(n + 1, axis=0)
                    ds[n] = value

        self._guarded(f"writing row {n}", write)
        self._rows = n + 1

    def set_attrs(self, **attrs: Any) -> None:
        """Set root attributes (e.g. ``checkpoint_step=1000``) and flush."""
        values = _attr_values(self.path, attrs)
        self._guarded("writing attributes", lambda f: f.attrs.update(values))

    def finish(self, status: str, final_x: Any = None, error: str | None = None) -> None:
        """Record the outcome (``status`` in ``STATUSES``), ``final/x`` (replacing one already
        there) and an ``error`` attribute (its text cleaned) when given; then flush and close."""
        self._file()
        outcome = _attr_values(self.path, {"status": status} if error is None else
                               {"status": status, "error": str(error)})
        x = None if final_x is None else np.asarray(to_host(final_x), dtype=np.float64)
        if x is not None and x.ndim != 1:
            raise TraceError(f"{self.path}: final_x must be 1-D, got shape {x.shape}")

        def write(f):
            if x is not None:
                if "final/x" in f:
                    del f["final/x"]
                _describe(f.create_dataset("final/x", data=x), self.path)
            f.attrs.update(outcome)

        # attributes and final/x need far less than a row's new chunks: a run stopped by the
        # row check can still record why
        needed = (64 << 10) + (0 if x is None else 2 * x.nbytes)
        self._guarded(f"recording status {status!r}", write, needed)
        self.close()

    def close(self) -> None:
        """Flush and close the file (the status stays as it is); a no-op when already closed."""
        if self._f is not None:
            try:
                self._f.flush()
            except (OSError, RuntimeError):
                self._abandon()
                return
            f, self._f = self._f, None
            self._datasets.clear()
            f.close()

    def __enter__(self) -> TraceWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc is not None and self._f is not None:
            with contextlib.suppress(Exception):  # never mask the exception of the block
                self.finish("failed", error=clean_attr_text(str(exc)) or exc_type.__name__)
        self.close()


@dataclasses.dataclass
class Trace:
    """A trace loaded by :func:`read_trace`; ``trace["loss"]`` is a column."""

    path: str
    attrs: dict
    columns: dict[str, np.ndarray]
    ranks: dict[str, np.ndarray]
    final_x: np.ndarray | None

    status = property(lambda self: self.attrs["status"], doc="Outcome of the run, or 'running'.")
    algorithm = property(lambda self: self.attrs["algorithm"], doc="Algorithm name.")
    config = property(lambda self: self.attrs["config"], doc="Run configuration (parsed JSON).")
    world_size = property(lambda self: self.attrs["world_size"], doc="Number of ranks.")
    n_rows = property(lambda self: len(self.columns["step"]), doc="Rows logged.")

    def __getitem__(self, name: str) -> np.ndarray:
        if name not in self.columns:
            raise KeyError(f"{self.path}: no trace column {name!r}; have {', '.join(self.columns)}")
        return self.columns[name]


def read_trace(path: str | os.PathLike) -> Trace:
    """Load a trace, also one a run is still writing (opened without file locking).

    TraceError (naming the file) for a missing, non-HDF5 or truncated file, missing attributes
    or standard columns, unequal column lengths, a bad status or non-JSON config."""
    path = os.fspath(path)
    with _open(path, "r", unlocked=True) as f:
        try:
            _check(f, path)
            attrs = {k: v.item() if isinstance(v, np.generic) else v for k, v in f.attrs.items()}
            names = list(STANDARD_COLUMNS) + sorted(set(f["trace"]) - set(STANDARD_COLUMNS))
            columns = {c: f["trace"][c][()] for c in names}
            ranks = {c: ds[()] for c, ds in sorted(f.get("ranks", {}).items())}
            final_x = f["final/x"][()] if "final/x" in f else None
        except (OSError, KeyError, RuntimeError) as exc:
            raise TraceError(f"{path}: damaged trace file: {exc}") from None
    try:
        attrs["config"] = json.loads(attrs["config"])
    except (TypeError, ValueError) as exc:
        raise TraceError(f"{path}: attribute 'config' is not JSON: {exc}") from None
    return Trace(path, attrs, columns, ranks, final_x)
