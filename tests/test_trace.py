"""HDF5 trace writer and reader (mpicomp.trace): contract layout, errors, resume, killed writers,
clean attribute text, self-describing datasets, netCDF/xarray view, reading while writing."""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

import mpicomp
from mpicomp.trace import (
    DATASET_INFO,
    INT_COLUMNS,
    STANDARD_COLUMNS,
    STATUSES,
    Trace,
    TraceError,
    TraceWriter,
    clean_attr_text,
    read_trace,
)

REPO = Path(__file__).resolve().parents[1]
ATTRS = {"algorithm": "diana", "compressor": "qsgd:s=4", "topology": "server",
         "config": {"lr": 0.5, "iters": 10, "compressor": {"s": 4}}, "mpi_library": "MPICH 4.2"}
COLUMNS = list(STANDARD_COLUMNS) + ["test_accuracy"]
RANK_COLUMNS = ["grad_norm_sq", "bits_up"]
WORLD = 3


def make_row(i: int) -> dict:
    """Row i with distinct, exactly representable values per column."""
    row = {c: float(i) + 0.25 * k for k, c in enumerate(COLUMNS)}
    row.update(step=10 * i, bits_up=2**40 + i, bits_down=7 * i, wire_bytes=(2**53 + 1) * (i + 1))
    row["dist_to_opt_sq"] = float("nan")
    return row


def make_ranks(i: int) -> dict:
    return {"grad_norm_sq": [i + 0.5, i + 1.5, i + 2.5], "bits_up": [i, 2 * i, 3 * i]}


def write(path, n: int, **kw) -> TraceWriter:
    w = TraceWriter(path, dict(ATTRS), COLUMNS, RANK_COLUMNS, WORLD, **kw)
    for i in range(n):
        w.append(make_row(i), make_ranks(i))
    return w


def assert_rows(trace: Trace, rows: range) -> None:
    for c in COLUMNS:
        expect = np.array([make_row(i)[c] for i in rows])
        np.testing.assert_array_equal(trace[c], expect, err_msg=c)
        assert trace[c].dtype == (np.int64 if c in INT_COLUMNS else np.float64), c
    for c in RANK_COLUMNS:
        expect = np.array([make_ranks(i)[c] for i in rows]).reshape(len(rows), WORLD)
        np.testing.assert_array_equal(trace.ranks[c], expect, err_msg=c)


def test_round_trip_values_and_dtypes(tmp_path):
    path = tmp_path / "new" / "dir" / "t.h5"  # parent directories are created
    w = write(path, 4)
    assert w.rows == 4
    w.set_attrs(checkpoint_step=30)
    w.finish("finished", final_x=np.array([1.5, -2.0, 3.25]))
    w.close()  # harmless after finish
    t = read_trace(path)
    assert t.path == str(path) and t.n_rows == 4 and t.status == "finished"
    assert t.algorithm == "diana" and t.world_size == WORLD and t.config == ATTRS["config"]
    assert t.attrs["checkpoint_step"] == 30 and type(t.attrs["checkpoint_step"]) is int
    assert t.attrs["mpicomp_version"] == mpicomp.__version__
    assert list(t.columns)[:len(STANDARD_COLUMNS)] == list(STANDARD_COLUMNS)
    assert set(t.columns) == set(COLUMNS) and set(t.ranks) == set(RANK_COLUMNS)
    assert_rows(t, range(4))
    assert t["wire_bytes"][3] == (2**53 + 1) * 4  # int64 is exact beyond float64's 2**53
    np.testing.assert_array_equal(t.final_x, [1.5, -2.0, 3.25])
    with pytest.raises(KeyError, match="consensus_error"):
        t["consensus_error"]


def test_plain_h5py_reads_the_contract_layout(tmp_path):
    path = tmp_path / "t.h5"
    write(path, 2).finish("diverged", final_x=[0.0, 1.0])
    with h5py.File(path, "r") as f:
        attrs = dict(f.attrs)
        for name in ("mpicomp_version", "algorithm", "compressor", "topology", "mpi_library",
                     "status", "config"):
            assert isinstance(attrs[name], str), name
        assert attrs["status"] == "diverged" and attrs["topology"] == "server"
        assert int(attrs["world_size"]) == WORLD
        assert attrs["config"] == json.dumps(ATTRS["config"], sort_keys=True)
        assert json.loads(attrs["config"]) == ATTRS["config"]
        assert set(f["trace"]) == set(COLUMNS) and set(f["ranks"]) == set(RANK_COLUMNS)
        assert f["trace/step"].dtype == np.int64 and f["trace/loss"].dtype == np.float64
        assert f["trace/test_accuracy"].shape == (2,) and f["ranks/bits_up"].shape == (2, WORLD)
        assert f["ranks/bits_up"].dtype == np.int64
        assert f["ranks/grad_norm_sq"].dtype == np.float64
        np.testing.assert_array_equal(f["ranks/bits_up"][1], [1, 2, 3])
        assert f["final/x"].dtype == np.float64 and list(f["final/x"][()]) == [0.0, 1.0]
        assert f.id.get_create_plist().get_version()[0] == 0  # default superblock, no SWMR flag


def test_config_as_json_string_and_version_override(tmp_path):
    attrs = dict(ATTRS, config='{"z": 1, "a": [1, 2]}', mpicomp_version="9.9", seed=7)
    TraceWriter(tmp_path / "t.h5", attrs, STANDARD_COLUMNS, [], 1).finish("finished")
    t = read_trace(tmp_path / "t.h5")
    assert t.config == {"z": 1, "a": [1, 2]} and t.attrs["mpicomp_version"] == "9.9"
    assert t.attrs["seed"] == 7 and t.ranks == {} and t.final_x is None and t.n_rows == 0
    with pytest.raises(TraceError, match="config"):
        TraceWriter(tmp_path / "u.h5", dict(ATTRS, config="{not json"), STANDARD_COLUMNS, [], 1)


def test_numpy_values_in_config_are_stored_as_json(tmp_path):
    attrs = dict(ATTRS, config={"lr": np.float32(0.5), "n": np.int64(3), "v": np.arange(2)})
    TraceWriter(tmp_path / "t.h5", attrs, STANDARD_COLUMNS, [], 1).finish("finished")
    assert read_trace(tmp_path / "t.h5").config == {"lr": 0.5, "n": 3, "v": [0, 1]}


def test_writer_rejects_bad_arguments(tmp_path):
    p = tmp_path / "t.h5"
    with pytest.raises(TraceError, match="wall_time"):
        TraceWriter(p, dict(ATTRS), [c for c in COLUMNS if c != "wall_time"], [], 2)
    attrs = dict(ATTRS)
    del attrs["mpi_library"], attrs["topology"]
    with pytest.raises(TraceError, match="'topology'.*'mpi_library'"):
        TraceWriter(p, attrs, COLUMNS, [], 2)
    with pytest.raises(TraceError, match="world_size"):
        TraceWriter(p, dict(ATTRS, world_size=4), COLUMNS, [], 2)
    with pytest.raises(TraceError, match="status"):
        TraceWriter(p, dict(ATTRS, status="finished"), COLUMNS, [], 2)
    with pytest.raises(TraceError, match="duplicate"):
        TraceWriter(p, dict(ATTRS), COLUMNS + ["loss"], [], 2)
    with pytest.raises(TraceError, match="'note'"):
        TraceWriter(p, dict(ATTRS, note=None), COLUMNS, [], 2)
    assert not p.exists()  # nothing was created for invalid arguments


def test_append_rejects_missing_unknown_and_bad_values(tmp_path):
    w = write(tmp_path / "t.h5", 1)
    row = make_row(1)
    del row["net_time"]
    with pytest.raises(TraceError, match=r"missing: \['net_time'\]"):
        w.append(row)
    with pytest.raises(TraceError, match=r"unknown: \['lossy'\]"):
        w.append(dict(make_row(1), lossy=1.0))
    with pytest.raises(TraceError, match="'bits_up' needs an integer"):
        w.append(dict(make_row(1), bits_up=2.5))
    with pytest.raises(TraceError, match="'step' needs an integer"):
        w.append(dict(make_row(1), step=float("nan")))
    with pytest.raises(TraceError, match="'loss' needs a number"):
        w.append(dict(make_row(1), loss="0.3"))
    with pytest.raises(TraceError, match=r"missing: \['bits_up'\]"):
        w.append(make_row(1), {"grad_norm_sq": [1.0, 2.0, 3.0]})
    with pytest.raises(TraceError, match=r"ranks\['bits_up'\] has shape \(2,\)"):
        w.append(make_row(1), {"grad_norm_sq": [1.0, 2.0, 3.0], "bits_up": [1, 2]})
    assert w.rows == 1  # failed appends wrote nothing
    row = make_row(1)  # numpy scalars and an integral float in an int column are fine
    row.update(bits_down=np.int64(row["bits_down"]), wall_time=np.float32(row["wall_time"]),
               step=float(row["step"]))
    w.append(row, make_ranks(1))
    w.finish("finished")
    t = read_trace(tmp_path / "t.h5")
    assert_rows(t, range(2))


def test_ranks_none_fills_nan_and_minus_one(tmp_path):
    w = write(tmp_path / "t.h5", 1)
    w.append(make_row(1))
    w.finish("finished")
    t = read_trace(tmp_path / "t.h5")
    np.testing.assert_array_equal(t.ranks["bits_up"][1], [-1, -1, -1])
    assert np.isnan(t.ranks["grad_norm_sq"][1]).all()
    np.testing.assert_array_equal(t.ranks["bits_up"][0], [0, 0, 0])


def test_status_validation_and_closed_writer(tmp_path):
    w = write(tmp_path / "t.h5", 1)
    with pytest.raises(TraceError, match="'done' is not one of running, finished"):
        w.finish("done")
    with pytest.raises(TraceError, match="status"):
        w.set_attrs(status="ok")
    w.finish("failed", error="boom on rank 2")
    with pytest.raises(TraceError, match="closed"):
        w.append(make_row(1))
    t = read_trace(tmp_path / "t.h5")
    assert t.status == "failed" and t.attrs["error"] == "boom on rank 2"
    assert set(STATUSES) == {"running", "finished", "diverged", "failed"}


def test_context_manager_records_failure_and_reraises(tmp_path):
    with pytest.raises(RuntimeError, match="loss is NaN"):
        with write(tmp_path / "t.h5", 2):
            raise RuntimeError("loss is NaN")
    t = read_trace(tmp_path / "t.h5")
    assert t.status == "failed" and t.attrs["error"] == "loss is NaN" and t.n_rows == 2
    with write(tmp_path / "u.h5", 1) as w:  # no exception: closed, status left as it was
        pass
    assert read_trace(tmp_path / "u.h5").status == "running"
    with pytest.raises(TraceError, match="closed"):
        w.append(make_row(1))


def test_reopen_truncates_and_continues(tmp_path):
    path = tmp_path / "t.h5"
    w = write(path, 5)
    w.finish("failed", final_x=[9.0, 9.0], error="killed")
    w = TraceWriter.reopen(path, rows=2)
    assert w.rows == 2 and w.world_size == WORLD
    assert set(w.columns) == set(COLUMNS) and set(w.rank_columns) == set(RANK_COLUMNS)
    with h5py.File(path, "r") as f:  # the same process: shares the writer's open file
        assert f.attrs["status"] == "running" and "error" not in f.attrs and "final" not in f
        assert f["trace/loss"].shape == (2,) and f["ranks/bits_up"].shape == (2, WORLD)
    for i in range(2, 6):
        w.append(make_row(i), make_ranks(i))
    w.finish("finished", final_x=[1.0, 2.0, 3.0])
    t = read_trace(path)
    assert t.status == "finished" and "error" not in t.attrs and t.n_rows == 6
    assert_rows(t, range(6))
    np.testing.assert_array_equal(t.final_x, [1.0, 2.0, 3.0])
    TraceWriter.reopen(path, rows=6).close()  # all rows kept
    assert read_trace(path).n_rows == 6 and read_trace(path).final_x is None


def test_reopen_errors(tmp_path):
    path = tmp_path / "t.h5"
    write(path, 3).close()
    with pytest.raises(TraceError, match="cannot keep 4 rows, the trace has 3"):
        TraceWriter.reopen(path, rows=4)
    TraceWriter.reopen(path, rows=3).close()  # the failed reopen left the file closed and whole
    with pytest.raises(TraceError, match="no such trace file"):
        TraceWriter.reopen(tmp_path / "missing.h5", rows=0)
    with h5py.File(tmp_path / "other.h5", "w") as f:
        f["x"] = 1
    with pytest.raises(TraceError, match="missing root attributes"):
        TraceWriter.reopen(tmp_path / "other.h5", rows=0)


def test_unwritable_directory(tmp_path):
    blocker = tmp_path / "plain_file"
    blocker.write_text("not a directory")
    for path in (blocker / "t.h5", blocker / "sub" / "t.h5"):
        with pytest.raises(TraceError, match="cannot create trace file") as info:
            TraceWriter(path, dict(ATTRS), COLUMNS, [], 1)
        assert str(path) in str(info.value)
        assert "directory" in str(info.value).lower() or "exists" in str(info.value).lower()


def test_read_errors_missing_and_not_hdf5(tmp_path):
    with pytest.raises(TraceError, match="no such trace file") as info:
        read_trace(tmp_path / "nope.h5")
    assert str(tmp_path / "nope.h5") in str(info.value)
    junk = tmp_path / "junk.h5"
    junk.write_bytes(b"step,loss\n0,1.0\n" * 100)
    with pytest.raises(TraceError, match="not a readable HDF5 file") as info:
        read_trace(junk)
    assert str(junk) in str(info.value)


def test_read_error_truncated_file(tmp_path):
    path = tmp_path / "t.h5"
    write(path, 50).finish("finished", final_x=np.zeros(1000))
    data = path.read_bytes()
    cut = tmp_path / "cut.h5"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(TraceError) as info:
        read_trace(cut)
    assert str(cut) in str(info.value)


def test_read_error_lists_missing_attributes(tmp_path):
    path = tmp_path / "t.h5"
    with h5py.File(path, "w") as f:
        f.attrs["algorithm"] = "diana"
        f.attrs["world_size"] = 2
    with pytest.raises(TraceError) as info:
        read_trace(path)
    msg = str(info.value)
    assert str(path) in msg
    for name in ("mpicomp_version", "compressor", "topology", "config", "mpi_library", "status"):
        assert name in msg
    assert "algorithm" not in msg.split("missing root attributes:")[1]


def corrupt(path, edit) -> str:
    with h5py.File(path, "a") as f:
        edit(f)
    with pytest.raises(TraceError) as info:
        read_trace(path)
    assert str(path) in str(info.value)
    return str(info.value)


def test_read_errors_layout(tmp_path):
    p = tmp_path / "t.h5"
    write(p, 3).close()
    msg = corrupt(p, lambda f: (f["trace/loss"].resize((2,)), f["trace/bits_up"].resize((5,))))
    assert "equal length" in msg and "'loss': (2,)" in msg and "'bits_up': (5,)" in msg
    write(p, 3).close()
    assert "ranks/bits_up" in corrupt(p, lambda f: f["ranks/bits_up"].resize(1, axis=0))
    write(p, 3).close()

    def drop(f):
        del f["trace/wire_bytes"], f["trace/net_time"]
    msg = corrupt(p, drop)
    assert "lacks standard columns: wire_bytes, net_time" in msg
    write(p, 3).close()
    assert "'trace/'" in corrupt(p, lambda f: f.__delitem__("trace"))
    write(p, 3).close()
    msg = corrupt(p, lambda f: f.attrs.__setitem__("status", "stopped"))
    assert "'stopped' is not one of" in msg
    write(p, 3).close()
    assert "config" in corrupt(p, lambda f: f.attrs.__setitem__("config", "{oops"))


def test_read_falls_back_when_locking_is_unsupported(tmp_path, monkeypatch):
    path = tmp_path / "t.h5"
    write(path, 2).finish("finished")
    real_file, calls = h5py.File, []

    def old_h5py_file(name, mode="r", **kw):
        calls.append(dict(kw))
        if "locking" in kw:
            raise TypeError("__init__() got an unexpected keyword argument 'locking'")
        return real_file(name, mode, **kw)

    monkeypatch.setattr(h5py, "File", old_h5py_file)
    assert read_trace(path).n_rows == 2
    assert calls == [{"locking": False}, {}]


def test_read_while_this_process_writes(tmp_path):
    w = write(tmp_path / "t.h5", 2)
    t = read_trace(tmp_path / "t.h5")  # same process holds the file open with locking
    assert t.n_rows == 2 and t.status == "running"
    w.append(make_row(2), make_ranks(2))
    assert read_trace(tmp_path / "t.h5").n_rows == 3
    w.finish("finished")


CHILD = textwrap.dedent("""
    import sys, time
    sys.path.insert(0, {tests!r})
    from test_trace import write
    w = write({path!r}, 3)
    print("ready", flush=True)
    time.sleep(600)
""")


def start_child(code: str, **popen) -> subprocess.Popen:
    """A Python process running ``code`` with this checkout importable (``popen``: more
    `subprocess.Popen` arguments)."""
    pythonpath = [str(REPO), os.environ.get("PYTHONPATH", "")]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(pythonpath))
    return subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, **popen)


def wait_for_line(proc: subprocess.Popen, expected: str, seconds: float = 120) -> None:
    """Read ``proc``'s stdout until the line ``expected``; fail on timeout or early exit."""
    deadline, line = time.monotonic() + seconds, ""
    while line.strip() != expected:
        timeout = max(0.0, deadline - time.monotonic())
        ready, _, _ = select.select([proc.stdout], [], [], timeout)
        assert ready, f"the writer process did not report {expected!r} within {seconds} s"
        line = proc.stdout.readline()
        assert line, f"the writer process exited early: {proc.wait()} {proc.stderr.read()}"


@pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL and select on pipes are POSIX")
def test_killed_writer_leaves_readable_file(tmp_path):
    path = tmp_path / "killed.h5"
    proc = start_child(CHILD.format(tests=str(REPO / "tests"), path=str(path)))
    try:
        wait_for_line(proc, "ready")
        during = read_trace(path)  # readable while the writer still holds it open
        assert during.n_rows == 3 and during.status == "running"
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(timeout=60) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    t = read_trace(path)
    assert t.n_rows == 3 and t.status == "running" and t.final_x is None
    assert_rows(t, range(3))
    with h5py.File(path, "r") as f:  # plain h5py, with locking: no lock or flag was left behind
        assert f["trace/step"].shape == (3,)
    w = TraceWriter.reopen(path, rows=2)  # and a resumed run can write to it
    w.append(make_row(2), make_ranks(2))
    w.finish("finished")
    assert_rows(read_trace(path), range(3))


# -- attribute text ----------------------------------------------------------------------------
OPEN_MPI_VERSION = "Open MPI v4.1.4, package: Debian OpenMPI\x00\x00"


@pytest.mark.parametrize("raw, clean", [
    (OPEN_MPI_VERSION, "Open MPI v4.1.4, package: Debian OpenMPI"),
    ("a\x00b\x07c\x1b[0m\x7f\x85d", "abc[0md"),  # C0, DEL and C1 controls dropped
    ("line 1\r\nline 2\rline 3\n\tindented  \n\x00 ", "line 1\nline 2\nline 3\n\tindented"),
    ("  leading kept, trailing not \t\n", "  leading kept, trailing not"),
    ("run-\udcff.h5", "run-\ufffd.h5"),  # lone surrogate from an undecodable file name
    ("ünïcödé ∇f ‖x‖²", "ünïcödé ∇f ‖x‖²"),
    ("\x00\x00", ""),
])
def test_clean_attr_text(raw, clean):
    assert clean_attr_text(raw) == clean
    assert clean_attr_text(clean) == clean  # idempotent


def test_attribute_text_with_nuls_is_stored_clean(tmp_path):
    path = tmp_path / "t.h5"
    attrs = dict(ATTRS, mpi_library=OPEN_MPI_VERSION, compressor="qsgd:s=4\x00",
                 checkpoint="run\r\n.ckpt.h5 ")
    w = TraceWriter(path, attrs, COLUMNS, RANK_COLUMNS, WORLD)
    w.append(make_row(0), make_ranks(0))
    w.set_attrs(note="set\x00 later\x07", hyperparameters='{"lr": 0.5}\x00')
    w.finish("failed", error="rank 1: ValueError: bad\x00 value\x00\n  in step 3\x00\n")
    t = read_trace(path)
    expected = {"mpi_library": "Open MPI v4.1.4, package: Debian OpenMPI",
                "compressor": "qsgd:s=4", "checkpoint": "run\n.ckpt.h5", "note": "set later",
                "hyperparameters": '{"lr": 0.5}', "status": "failed",
                "error": "rank 1: ValueError: bad value\n  in step 3"}
    assert {k: t.attrs[k] for k in expected} == expected
    assert t.attrs["mpi_library"] == clean_attr_text(OPEN_MPI_VERSION)
    with h5py.File(path, "r") as f:  # plain h5py reads them as str, without NUL
        for name in expected:
            assert isinstance(f.attrs[name], str) and "\x00" not in f.attrs[name], name


def test_config_json_survives_cleaning(tmp_path):
    config = {"mpi": OPEN_MPI_VERSION, "note": "two\nlines\r\n", "path": "a\tb"}
    TraceWriter(tmp_path / "t.h5", dict(ATTRS, config=config), STANDARD_COLUMNS, [],
                1).finish("finished")
    assert read_trace(tmp_path / "t.h5").config == config  # JSON escapes control characters
    pretty = json.dumps(config, indent=2).replace("\n", "\r\n") + "\x00\n"
    TraceWriter(tmp_path / "u.h5", dict(ATTRS, config=pretty), STANDARD_COLUMNS, [],
                1).finish("finished")
    assert read_trace(tmp_path / "u.h5").config == config
    with h5py.File(tmp_path / "u.h5", "r") as f:
        assert f.attrs["config"] == json.dumps(config, indent=2)


def test_context_manager_records_an_error_message_with_nuls(tmp_path):
    with pytest.raises(RuntimeError):
        with write(tmp_path / "t.h5", 1):
            raise RuntimeError(f"MPI failed ({OPEN_MPI_VERSION})")
    t = read_trace(tmp_path / "t.h5")
    assert t.status == "failed"
    assert t.attrs["error"] == "MPI failed (Open MPI v4.1.4, package: Debian OpenMPI)"
    with pytest.raises(ValueError):
        with write(tmp_path / "u.h5", 1):
            raise ValueError("\x00")  # nothing left after cleaning: the exception's type
    t = read_trace(tmp_path / "u.h5")
    assert t.status == "failed" and t.attrs["error"] == "ValueError"


# -- self-describing datasets, netCDF / xarray view -------------------------------------------
def datasets(f: h5py.File) -> dict:
    """Every dataset of ``f`` by path."""
    found = {}

    def add(name, obj):  # returns None: visititems stops at the first other value
        if isinstance(obj, h5py.Dataset):
            found[name] = obj
    f.visititems(add)
    return found


def test_every_dataset_has_description_and_units(tmp_path):
    path = tmp_path / "t.h5"
    w = TraceWriter(path, dict(ATTRS), COLUMNS + ["my_metric"], RANK_COLUMNS + ["my_count"],
                    WORLD)
    w.append(dict(make_row(0), my_metric=1.5))
    w.finish("finished", final_x=[1.0, 2.0])
    with h5py.File(path, "r") as f:
        found = datasets(f)
        assert set(found) == ({f"trace/{c}" for c in COLUMNS + ["my_metric"]} | {"final/x"}
                              | {f"ranks/{c}" for c in RANK_COLUMNS + ["my_count"]})
        for name, ds in found.items():
            description, units = ds.attrs["description"], ds.attrs["units"]
            assert isinstance(description, str) and description.strip(), name
            assert isinstance(units, str) and units.strip(), name
            if name in DATASET_INFO:
                assert (description, units) == DATASET_INFO[name], name
        units = {name: ds.attrs["units"] for name, ds in found.items()}
        assert units["trace/step"] == units["trace/loss"] == units["trace/my_metric"] == "1"
        assert units["trace/bits_up"] == units["trace/bits_down"] == "bit"
        assert units["ranks/bits_up"] == "bit" and units["trace/wire_bytes"] == "byte"
        assert units["trace/wall_time"] == units["trace/net_time"] == "s"
        assert "regulariser" in found["trace/loss"].attrs["description"]
        assert "my_metric" in found["trace/my_metric"].attrs["description"]
        assert "my_count" in found["ranks/my_count"].attrs["description"]
        assert units["ranks/my_count"] == "1"
    for column in ("test_loss", "consensus_error", "sparsity", "dist_to_opt_sq"):
        assert f"trace/{column}" in DATASET_INFO  # the driver's and gossip's columns


def assert_step_scale(path, rows: int) -> None:
    """trace/step is the dimension scale of every other trace/ column, attached exactly once."""
    with h5py.File(path, "r", locking=False) as f:
        step = f["trace/step"]
        assert step.is_scale and step.attrs["NAME"] == b"step"
        others = [ds for name, ds in f["trace"].items() if name != "step"]
        assert len(step.attrs["REFERENCE_LIST"]) == len(others)
        for ds in others:
            assert len(ds.dims[0]) == 1 and ds.dims[0][0] == step, ds.name
            assert ds.shape == step.shape == (rows,), ds.name
        for ds in f["ranks"].values():  # ranks/: no scales (netCDF dims: same or parent group)
            assert "DIMENSION_LIST" not in ds.attrs and len(ds.dims[0]) == 0


def test_step_is_the_dimension_scale_of_trace(tmp_path):
    write(tmp_path / "t.h5", 3).finish("finished")
    assert_step_scale(tmp_path / "t.h5", 3)
    assert read_trace(tmp_path / "t.h5").n_rows == 3  # the scale's attributes do not upset it


def xarray_or_skip():
    """xarray (>= 2024.1: ``driver_kwds`` reach h5py) with h5netcdf, or skip the test."""
    pytest.importorskip("h5netcdf")
    return pytest.importorskip("xarray", minversion="2024.1")


def open_trace_group(path, **kw):
    return xarray_or_skip().open_dataset(path, group="trace", engine="h5netcdf", **kw)


def assert_xarray_view(path, rows: range) -> None:
    """xarray sees trace/ with coordinate step and exactly the written values and dtypes."""
    with open_trace_group(path, driver_kwds={"locking": False}) as ds:
        assert list(ds.coords) == ["step"] and dict(ds.sizes) == {"step": len(rows)}
        assert set(ds.data_vars) == set(COLUMNS) - {"step"}
        for c in COLUMNS:
            expect = np.array([make_row(i)[c] for i in rows],
                              dtype=np.int64 if c in INT_COLUMNS else np.float64)
            np.testing.assert_array_equal(ds[c].values, expect, err_msg=c)
            assert ds[c].dtype == expect.dtype and ds[c].dims == ("step",), c
            assert ds[c].attrs["units"] == DATASET_INFO[f"trace/{c}"][1], c
            assert ds[c].attrs["description"] == DATASET_INFO[f"trace/{c}"][0], c


def test_xarray_opens_trace_with_step_coordinate(tmp_path):
    path = tmp_path / "t.h5"
    write(path, 4).finish("finished", final_x=[1.0, 2.0])
    assert_xarray_view(path, range(4))
    with open_trace_group(path) as ds:  # plain call, once the writer has closed the file
        np.testing.assert_array_equal(ds["step"].values, [0, 10, 20, 30])
        assert ds["wall_time"].dtype == np.float64  # units "s" are not decoded as timedeltas
    with xarray_or_skip().open_dataset(path, group="ranks", engine="h5netcdf",
                                       phony_dims="sort") as ranks:
        np.testing.assert_array_equal(ranks["bits_up"].values,
                                      [make_ranks(i)["bits_up"] for i in range(4)])


def test_step_scale_survives_reopen_and_many_rows(tmp_path):
    path = tmp_path / "t.h5"
    write(path, 5).finish("failed", final_x=[1.0], error="killed")
    w = TraceWriter.reopen(path, rows=2)
    for i in range(2, 150):  # every append resizes the scale and the columns attached to it
        w.append(make_row(i), make_ranks(i))
    w.finish("finished", final_x=[1.0, 2.0])
    assert_step_scale(path, 150)
    assert_xarray_view(path, range(150))
    assert_rows(read_trace(path), range(150))


def test_reopen_annotates_a_trace_written_without_scale_and_descriptions(tmp_path):
    path = tmp_path / "old.h5"
    write(path, 3).finish("finished")
    with h5py.File(path, "a") as f:  # the layout of traces written before these attributes
        step = f["trace/step"]
        for name, ds in datasets(f).items():
            if name.startswith("trace/") and name != "trace/step":
                ds.dims[0].detach_scale(step)
            del ds.attrs["description"], ds.attrs["units"]
        del step.attrs["CLASS"], step.attrs["NAME"]
        assert not step.is_scale
    w = TraceWriter.reopen(path, rows=3)
    w.append(make_row(3), make_ranks(3))
    w.finish("finished")
    assert_step_scale(path, 4)
    assert_xarray_view(path, range(4))
    with h5py.File(path, "r") as f:
        assert all("units" in ds.attrs for ds in datasets(f).values())


# -- reading while another process writes ------------------------------------------------------
WRITER = textwrap.dedent("""
    import sys
    sys.path.insert(0, {tests!r})
    from test_trace import make_ranks, make_row, write
    w = write({path!r}, 3)
    print("ready", flush=True)
    sys.stdin.readline()
    for i in range(3, 6):
        w.append(make_row(i), make_ranks(i))
    print("appended", flush=True)
    sys.stdin.readline()
    w.finish("finished")
""")


@pytest.mark.skipif(sys.platform == "win32", reason="select on pipes is POSIX")
def test_read_while_another_process_writes(tmp_path):
    path = tmp_path / "live.h5"
    proc = start_child(WRITER.format(tests=str(REPO / "tests"), path=str(path)),
                       stdin=subprocess.PIPE)
    try:
        wait_for_line(proc, "ready")  # the writer holds the file open (and locked) from here
        t = read_trace(path)
        assert t.n_rows == 3 and t.status == "running"
        assert_rows(t, range(3))
        with h5py.File(path, "r", locking=False) as f:
            assert f["trace/step"].shape == (3,) and f.attrs["status"] == "running"
        assert_xarray_view(path, range(3))
        proc.stdin.write("append\n")
        proc.stdin.flush()
        wait_for_line(proc, "appended")
        assert_rows(read_trace(path), range(6))  # no stale view of the earlier open
        assert_xarray_view(path, range(6))
        proc.stdin.write("finish\n")
        proc.stdin.flush()
        assert proc.wait(timeout=60) == 0, proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert read_trace(path).status == "finished"
    assert_xarray_view(path, range(6))


def test_a_trace_resized_to_claim_more_than_it_stores_is_refused_before_loading(tmp_path):
    """Every dataset resized to 2^24 rows (a few KB on disk, GBs once read): refused at once,
    naming the dataset, by read_trace (and so by mpicomp.analyze) and by reopen."""
    path = tmp_path / "t.h5"
    write(path, 30).finish("finished", final_x=np.zeros(8))
    assert read_trace(path).n_rows == 30  # an honest trace passes the check
    with h5py.File(path, "r+") as f:
        for ds in [*f["trace"].values(), *f["ranks"].values()]:
            ds.resize(2**24, axis=0)
    for reader in (read_trace, lambda p: TraceWriter.reopen(p, rows=2**24)):
        with pytest.raises(TraceError, match=r"claims \(16777216,?.*\) \(\d+ bytes\) but the file "
                                             r"stores \d+ bytes of it: a damaged or forged trace"):
            reader(path)


def test_a_compression_bomb_is_refused(tmp_path):
    path = tmp_path / "t.h5"
    write(path, 3).finish("finished")
    with h5py.File(path, "r+") as f:
        f.create_dataset("final/x", shape=(2**27,), dtype="f8", compression="gzip", chunks=(2**20,),
                         data=None, fillvalue=0.0)
        f["final/x"][:2**20] = 0.0  # one chunk written: a few KB holding 1 GiB of zeros
    with pytest.raises(TraceError, match="final/x claims"):
        read_trace(path)
