"""Checkpoints: every rank's algorithm State and driver counters in one HDF5 file beside the trace.

Layout of ``RUN.ckpt.h5`` (written by rank 0 from states gathered over MPI)::

    /                 attrs: format, version, step, trace_rows, world_size, algorithm, config
    /rank_00003/      one group per rank: a dataset per array field of its State; attributes for
                      integer/float fields; random generators as JSON of their bit-generator
                      state (``generator:NAME``); the driver's counters (``counter:NAME``)

A checkpoint is written to ``RUN.ckpt.h5.tmp`` and renamed over the old one, so a run killed
while saving, or one whose disk is full, leaves the previous checkpoint intact. Reading checks
everything against this run's own State before anything is allocated from the file (a damaged
or forged checkpoint is refused with one message).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .backend import is_device_array, to_host, to_like
from .diskspace import abandon, check_free_space, failure_text

if TYPE_CHECKING:  # h5py is imported where a file is opened: ranks that write none skip it
    import h5py

FORMAT = "mpicomp-checkpoint"
VERSION = 1

#: The bit generators a saved random generator may name (NumPy's own; nothing else is called).
BIT_GENERATORS = {name: getattr(np.random, name)
                  for name in ("PCG64", "PCG64DXSM", "MT19937", "Philox", "SFC64")}


class CheckpointError(ValueError):
    """A checkpoint that is missing, unreadable or does not fit this run."""


def checkpoint_path(trace_path: str | os.PathLike[str]) -> Path:
    """``run.h5`` → ``run.ckpt.h5`` (beside the trace)."""
    p = Path(trace_path)
    return p.with_suffix(".ckpt.h5") if p.suffix == ".h5" else p.with_name(p.name + ".ckpt.h5")


def state_record(state: Any, extra: dict | None = None) -> dict:
    """A State dataclass as ``{name: (kind, value)}`` with kind array, generator or scalar,
    plus the host arrays ``extra`` (the problem's own state, e.g. batch-norm statistics)."""
    record = {name: ("array", np.asarray(value)) for name, value in (extra or {}).items()}
    for field in dataclasses.fields(state):
        value = getattr(state, field.name)
        if isinstance(value, np.random.Generator):
            record[field.name] = ("generator", json.dumps(value.bit_generator.state))
        elif isinstance(value, np.ndarray):
            record[field.name] = ("array", value)
        elif is_device_array(value):  # saved from the host: explicitly copied there
            record[field.name] = ("array", to_host(value))
        elif (isinstance(value, (int, float, np.integer, np.floating))
              and not isinstance(value, bool)):
            record[field.name] = ("scalar", value.item() if hasattr(value, "item") else value)
        else:
            raise TypeError(f"cannot checkpoint field {field.name!r} of type "
                            f"{type(value).__name__}")
    return record


def state_spec(state: Any, extra: dict | None = None) -> dict:
    """What a checkpoint must hold for ``state`` (and ``extra``, see `state_record`):
    ``{name: (kind, detail)}`` with detail the array's ``(shape, dtype)``, the generator's bit
    generator, or None for a scalar."""
    spec = {}
    for name, (kind, value) in state_record(state, extra).items():
        if kind == "array":
            spec[name] = (kind, (tuple(value.shape), value.dtype.str))
        elif kind == "generator":
            spec[name] = (kind, json.loads(value)["bit_generator"])
        else:
            spec[name] = (kind, None)
    return spec


def restore_state(state_type: type, record: dict, fresh: Any = None) -> Any:
    """Inverse of `state_record` (for a record that `read_checkpoint` has checked); arrays go
    to the device of the same field of ``fresh`` (a newly initialised State), so a checkpoint
    resumes on the GPU or on the CPU, whichever the resumed run uses."""
    values = {}
    for field in dataclasses.fields(state_type):
        if field.name not in record:
            raise CheckpointError(f"checkpoint has no field {field.name!r} of "
                                  f"{state_type.__name__}")
        kind, value = record[field.name]
        if kind == "generator":
            saved = json.loads(value)
            gen = np.random.Generator(BIT_GENERATORS[saved["bit_generator"]]())
            try:
                gen.bit_generator.state = saved
            except (TypeError, ValueError, KeyError) as exc:
                raise CheckpointError(f"generator {field.name!r}: invalid state: {exc}") from None
            value = gen
        elif kind == "array" and fresh is not None:
            value = to_like(value, getattr(fresh, field.name))
        values[field.name] = value
    return state_type(**values)


def write_checkpoint(path: str | os.PathLike[str], meta: dict, records: list[dict],
                     counters: list[dict]) -> None:
    """Write one checkpoint (rank 0): ``meta`` root attributes, one record and counter dict per
    rank. The free space is checked first, and a failed write leaves the previous checkpoint as
    it was (CheckpointError)."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    arrays = sum(value.nbytes for record in records for kind, value in record.values()
                 if kind == "array")
    try:
        check_free_space(path, 2 * arrays + (64 << 10) * len(records) + (1 << 20),
                         f"writing checkpoint {path}")
        import h5py

        f = h5py.File(tmp, "w")
    except OSError as exc:
        raise CheckpointError(f"cannot write checkpoint {path}: {exc}; the previous checkpoint "
                              "is kept") from None
    try:
        f.attrs.update({"format": FORMAT, "version": VERSION, **meta})
        for rank, (record, counts) in enumerate(zip(records, counters)):
            group = f.create_group(f"rank_{rank:05d}")
            for name, (kind, value) in record.items():
                if kind == "array":
                    group.create_dataset(name, data=value)
                else:
                    group.attrs[f"{kind}:{name}"] = value
            for name, value in counts.items():
                group.attrs[f"counter:{name}"] = value
        f.flush()
        f.close()
    except (OSError, RuntimeError) as exc:
        abandon(f)
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise CheckpointError(f"cannot write checkpoint {path}: {failure_text(exc)}; the "
                              "previous checkpoint is kept") from None
    os.replace(tmp, path)


def _meta(path: Path, f: h5py.File) -> dict:
    """The root attributes, checked: format, version, world size, step, trace rows."""
    meta = {k: (v.item() if hasattr(v, "item") else v) for k, v in f.attrs.items()}
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not an mpicomp checkpoint")
    if meta.get("version") != VERSION:
        raise CheckpointError(f"{path}: checkpoint version {meta.get('version')!r}, this "
                              f"mpicomp reads version {VERSION}")
    for key in ("world_size", "step", "trace_rows"):
        value = meta.get(key)
        if isinstance(value, bool) or not isinstance(value, int) or value < (key == "world_size"):
            raise CheckpointError(
                f"{path}: attribute {key!r} = {value!r} is not a "
                f"{'positive' if key == 'world_size' else 'non-negative'} integer")
    for key in ("algorithm", "config"):
        if not isinstance(meta.get(key), str):
            raise CheckpointError(f"{path}: attribute {key!r} is missing or not text")
    return meta


def read_checkpoint_meta(path: str | os.PathLike[str]) -> dict:
    """The checked root attributes of a checkpoint (nothing else is read)."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"no checkpoint to resume from: {path} does not exist (a run "
                              "writes one with --checkpoint-every N or on SIGTERM/SIGUSR2)")
    import h5py

    try:
        with h5py.File(path, "r") as f:
            return _meta(path, f)
    except OSError as exc:
        raise CheckpointError(f"cannot read checkpoint {path}: {exc}") from None


def _rank_group(path: Path, group: h5py.Group, spec: dict, counter_names: Sequence[str],
                step: int) -> tuple[dict, dict]:
    """One rank's record and counters, each member checked against ``spec`` before it is read."""
    where = f"{path}: {group.name.lstrip('/')}"
    arrays = {n for n, (kind, _) in spec.items() if kind == "array"}
    expected_attrs = {f"{kind}:{n}" for n, (kind, _) in spec.items() if kind != "array"}
    expected_attrs |= {f"counter:{n}" for n in counter_names}
    unknown = sorted((set(group) - arrays) | (set(group.attrs) - expected_attrs))
    missing = sorted((arrays - set(group)) | (expected_attrs - set(group.attrs)))
    if unknown or missing:
        raise CheckpointError(f"{where} does not hold this run's state: missing {missing}, "
                              f"unknown {unknown}")
    import h5py

    record = {}
    for name, (kind, detail) in spec.items():
        if kind == "array":
            ds = group[name]
            shape, dtype = detail
            if not isinstance(ds, h5py.Dataset) or ds.shape != shape or ds.dtype.str != dtype:
                raise CheckpointError(f"{where}/{name} has shape {getattr(ds, 'shape', None)} and "
                                      f"dtype {getattr(ds, 'dtype', None)}; this run's state "
                                      f"needs {shape} and {np.dtype(dtype)}")
            record[name] = (kind, ds[()])
            continue
        value = group.attrs[f"{kind}:{name}"]
        value = value.item() if hasattr(value, "item") else value
        if kind == "generator":
            try:
                saved = json.loads(value)
                bit_generator = saved["bit_generator"]
            except (TypeError, ValueError, KeyError):
                raise CheckpointError(f"{where}: generator {name!r} is not a saved generator "
                                      "state") from None
            if bit_generator != detail or bit_generator not in BIT_GENERATORS:
                raise CheckpointError(f"{where}: generator {name!r} is a {bit_generator!r}; this "
                                      f"run's is a {detail}")
        elif isinstance(value, bool) or not isinstance(value, (int, float)):
            raise CheckpointError(f"{where}: {name} = {value!r} is not a number")
        elif name == "step" and value != step:
            raise CheckpointError(f"{where}: step {value} differs from the checkpoint's step "
                                  f"{step}")
        record[name] = (kind, value)
    counters = {}
    for name in counter_names:
        value = group.attrs[f"counter:{name}"]
        counters[name] = value.item() if hasattr(value, "item") else value
    return record, counters


def read_checkpoint(path: str | os.PathLike[str], specs: Sequence[dict],
                    counter_names: Sequence[str]) -> tuple[dict, list[dict], list[dict]]:
    """``(meta, records, counters)`` as written by `write_checkpoint`, validated before anything
    is allocated from it: one group per rank of ``specs`` (each rank's `state_spec`) and nothing
    else, every array of the shape and dtype its spec says, generators of NumPy's bit generators,
    every rank at the checkpoint's step, and exactly the driver's ``counter_names``."""
    path = Path(path)
    meta = read_checkpoint_meta(path)
    import h5py

    try:
        with h5py.File(path, "r") as f:
            names = [f"rank_{rank:05d}" for rank in range(len(specs))]
            if meta["world_size"] != len(specs) or sorted(f) != names:
                raise CheckpointError(f"{path}: groups {sorted(f)[:8]} do not match the "
                                      f"{len(specs)} ranks of this run")
            records, counters = [], []
            for name, spec in zip(names, specs):
                record, counts = _rank_group(path, f[name], spec, counter_names, meta["step"])
                records.append(record)
                counters.append(counts)
    except (OSError, KeyError) as exc:
        raise CheckpointError(f"cannot read checkpoint {path}: {exc}") from None
    return meta, records, counters


# --------------------------------------------------------------------------------------------
# A run's checkpoints: whether one fits, and the collective save and restore
# --------------------------------------------------------------------------------------------
def check_resumable(meta: dict, cfg, algorithm: str, size: int) -> str:
    """What differs between a checkpoint's root attributes and this run ('' when it may
    resume): the algorithm, the world size, any setting but the `RESUMABLE` ones, the step."""
    from .config import RESUMABLE

    if meta.get("algorithm") != algorithm:
        return f"it is a {meta.get('algorithm')} checkpoint, not {algorithm}"
    if int(meta["world_size"]) != size:
        return f"it was written by {meta['world_size']} ranks, this run has {size}"
    saved = json.loads(meta["config"])
    now = cfg.as_dict()
    differ = sorted(k for k in set(saved) | set(now)
                    if k not in RESUMABLE and saved.get(k) != now.get(k))
    if differ:
        return "settings differ: " + ", ".join(f"{k} was {saved.get(k)!r}, now {now.get(k)!r}"
                                               for k in differ)
    if int(meta["step"]) > cfg.iters:
        return f"it is at step {meta['step']}, beyond --iters {cfg.iters}"
    rows = int(meta["step"]) // cfg.log_every + 1  # rows 0, log_every, ... up to its step
    if int(meta["trace_rows"]) > rows:
        return (f"it keeps {meta['trace_rows']} trace rows, more than the {rows} a run logging "
                f"every {cfg.log_every} steps has at step {meta['step']}")
    return ""


def read_resume_meta(path, cfg, algorithm: str, size: int) -> dict:
    """The root attributes of the checkpoint at ``path``, checked to fit this run
    (`check_resumable`; CheckpointError otherwise)."""
    meta = read_checkpoint_meta(path)
    problems = check_resumable(meta, cfg, algorithm, size)
    if problems:
        raise CheckpointError(f"{path} does not fit this run: {problems}")
    return meta


def save_gathered(comm, agree, path, state, counters: dict, meta,
                  extra: dict | None = None) -> None:
    """Gather every rank's State, ``extra`` arrays (`state_record`) and counters; rank 0 writes
    them with the root attributes ``meta()`` (collective; the write is agreed, so a full disk
    fails every rank)."""
    gathered = comm.gather((state_record(state, extra), counters), root=0)

    def write():
        if comm.Get_rank() == 0:
            write_checkpoint(path, meta(), [g[0] for g in gathered], [g[1] for g in gathered])

    agree(write)


def load_scattered(comm, agree, path, fresh, counter_names: Sequence[str],
                   extra: dict | None = None) -> tuple[dict, dict]:
    """``(this rank's state record, its counters)`` from the checkpoint (collective): rank 0
    reads every rank's State, checked against the shapes, dtypes and generators of ``fresh`` —
    each rank's newly initialised State — and of its ``extra`` arrays before anything is
    allocated from the file."""
    specs = comm.gather(state_spec(fresh, extra), root=0)

    def read():
        if comm.Get_rank() == 0:
            _, records, counters = read_checkpoint(path, specs, counter_names)
            return list(zip(records, counters))

    return comm.scatter(agree(read), root=0)
