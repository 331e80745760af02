"""Checkpoints: every rank's algorithm State and driver counters in one HDF5 file beside the trace.

Layout of ``RUN.ckpt.h5`` (written by rank 0 from states gathered over MPI)::

    /                 attrs: format, version, step, trace_rows, world_size, algorithm, config
    /rank_00003/      one group per rank: a dataset per array field of its State; attributes for
                      integer/float fields; random generators as JSON of their bit-generator
                      state (``generator:NAME``); the driver's counters (``counter:NAME``)

A checkpoint is written to ``RUN.ckpt.h5.tmp`` and renamed over the old one, so a run killed
while saving leaves the previous checkpoint intact.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

import h5py
import numpy as np

FORMAT = "mpicomp-checkpoint"
VERSION = 1


class CheckpointError(ValueError):
    """A checkpoint that is missing, unreadable or does not fit this run."""


def checkpoint_path(trace_path: "str | os.PathLike[str]") -> Path:
    """``run.h5`` → ``run.ckpt.h5`` (beside the trace)."""
    p = Path(trace_path)
    return p.with_suffix(".ckpt.h5") if p.suffix == ".h5" else p.with_name(p.name + ".ckpt.h5")


def state_record(state: Any) -> dict:
    """A State dataclass as ``{name: (kind, value)}`` with kind array, generator or scalar."""
    record = {}
    for field in dataclasses.fields(state):
        value = getattr(state, field.name)
        if isinstance(value, np.random.Generator):
            record[field.name] = ("generator", json.dumps(value.bit_generator.state))
        elif isinstance(value, np.ndarray):
            record[field.name] = ("array", value)
        elif isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool):
            record[field.name] = ("scalar", value.item() if hasattr(value, "item") else value)
        else:
            raise TypeError(f"cannot checkpoint field {field.name!r} of type {type(value).__name__}")
    return record


def restore_state(state_type: type, record: dict) -> Any:
    """Inverse of `state_record`."""
    values = {}
    for field in dataclasses.fields(state_type):
        if field.name not in record:
            raise CheckpointError(f"checkpoint has no field {field.name!r} of {state_type.__name__}")
        kind, value = record[field.name]
        if kind == "generator":
            saved = json.loads(value)
            gen = np.random.Generator(getattr(np.random, saved["bit_generator"])())
            gen.bit_generator.state = saved
            value = gen
        values[field.name] = value
    return state_type(**values)


def write_checkpoint(path: "str | os.PathLike[str]", meta: dict, records: list[dict],
                     counters: list[dict]) -> None:
    """Write one checkpoint (rank 0): ``meta`` root attributes, one record and counter dict per rank."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with h5py.File(tmp, "w") as f:
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
    os.replace(tmp, path)


def read_checkpoint(path: "str | os.PathLike[str]") -> tuple[dict, list[dict], list[dict]]:
    """``(meta, records, counters)`` as written by `write_checkpoint`."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"no checkpoint to resume from: {path} does not exist (a run "
                              "writes one with --checkpoint-every N or on SIGTERM/SIGUSR2)")
    try:
        with h5py.File(path, "r") as f:
            meta = {k: (v.item() if hasattr(v, "item") else v) for k, v in f.attrs.items()}
            if meta.get("format") != FORMAT:
                raise CheckpointError(f"{path} is not an mpicomp checkpoint")
            records, counters = [], []
            for rank in range(int(meta["world_size"])):
                group = f[f"rank_{rank:05d}"]
                record = {name: ("array", group[name][()]) for name in group}
                counts = {}
                for key, value in group.attrs.items():
                    kind, _, name = key.partition(":")
                    value = value.item() if hasattr(value, "item") else value
                    if kind == "counter":
                        counts[name] = value
                    else:
                        record[name] = (kind, value)
                records.append(record)
                counters.append(counts)
    except (OSError, KeyError) as exc:
        raise CheckpointError(f"cannot read checkpoint {path}: {exc}") from None
    return meta, records, counters
