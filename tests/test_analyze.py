"""mpicomp.analyze on traces of real short runs: summaries equal the trace's numbers and the
formulas for bits, CSV round-trips exactly, figures are real PNG/PDF files, and bad traces or
options give a clear error (exit status 2) that names the file or the choices."""

from __future__ import annotations

import csv
import io
import json
import math

import h5py
import numpy as np
import pytest

import apps.dcgd
import apps.diana
from mpicomp import analyze
from mpicomp.checkpoint import write_checkpoint
from mpicomp.trace import TraceError, TraceWriter, read_trace

DATA = "synthetic:logistic,n=203,d=16,h=1"
D = 16


def diana_bits_up_per_coord(d: int) -> float:
    """DIANA's default ``dither:p=inf,s=1``: a 64-bit norm and 2 bits a coordinate per message."""
    return (64 + 2 * d) / d


@pytest.fixture(scope="module")
def traces(tmp_path_factory):
    """A DIANA run and an uncompressed DCGD run of 20 steps on one rank (COMM_SELF)."""
    from mpi4py import MPI

    tmp = tmp_path_factory.mktemp("analyze")
    paths = {"diana": tmp / "diana.h5", "identity": tmp / "identity.h5"}
    common = ["--data", DATA, "--iters", "20", "--log-every", "5", "--progress", "off"]
    assert apps.diana.main([*common, "--trace", str(paths["diana"])], MPI.COMM_SELF) == 0
    assert apps.dcgd.main([*common, "--compressor", "identity", "--trace", str(paths["identity"])],
                          MPI.COMM_SELF) == 0
    return {k: read_trace(p) for k, p in paths.items()}


def test_summary_is_the_last_row_and_the_bit_formulas(traces):
    t = traces["diana"]
    s = analyze.summarize(t)
    assert s["run"] == "diana" and s["algorithm"] == "diana" and s["status"] == "finished"
    assert s["compressor"] == "dither:p=inf,s=1" and s["world_size"] == 1 and s["dim"] == D
    assert s["steps"] == 20 and s["loss"] == t["loss"][-1]
    assert s["excess_loss"] == t["loss"][-1] - t.attrs["f_star"] and s["excess_loss"] > 0
    assert s["dist_to_opt_sq"] == t["dist_to_opt_sq"][-1]
    assert s["bits_up"] == t["bits_up"][-1] == 20 * (64 + 2 * D)
    assert s["bits_down"] == t["bits_down"][-1] == 20 * 64 * D
    assert s["bits_per_coord_up"] == diana_bits_up_per_coord(D)
    assert s["bits_per_coord_down"] == 64.0  # the exact float64 mean
    assert s["wall_time"] == t["wall_time"][-1] and s["net_time"] == t["net_time"][-1]
    assert math.isnan(s["final_test_loss"])  # an extra column: no test split in this run
    exact = analyze.summarize(traces["identity"], name="fp64")
    assert exact["run"] == "fp64" and exact["bits_per_coord_up"] == exact["bits_per_coord_down"] == 64.0


def parse_markdown(text: str) -> list[dict]:
    header, rule, *rows = text.splitlines()
    names = [c.strip() for c in header.strip("|").split("|")]
    assert rule == "|" + "---|" * len(names)
    return [dict(zip(names, (c.strip() for c in row.strip("|").split("|")))) for row in rows]


def test_table_and_csv_carry_the_trace_numbers(traces, tmp_path):
    runs = list(traces.values())
    summaries = [analyze.summarize(t) for t in runs]
    table = parse_markdown(analyze.summary_table(summaries))
    for row, t in zip(table, runs):
        assert row["run"] == analyze.run_name(t) and row["status"] == "finished"
        assert int(row["bits_up"]) == t["bits_up"][-1] and int(row["steps"]) == t["step"][-1]
        for name, value in (("loss", t["loss"][-1]), ("dist_to_opt_sq", t["dist_to_opt_sq"][-1]),
                            ("net_time", t["net_time"][-1])):
            assert float(row[name]) == pytest.approx(value, rel=5e-6)  # 6 significant digits

    analyze.write_summary_csv(summaries, tmp_path / "sub" / "summary.csv")
    with open(tmp_path / "sub" / "summary.csv", newline="") as f:
        read = list(csv.DictReader(f))
    assert [r["run"] for r in read] == ["diana", "identity"]
    for r, s in zip(read, summaries):  # full precision: floats come back bit for bit
        assert float(r["loss"]) == s["loss"] and float(r["wall_time"]) == s["wall_time"]
        assert int(r["bits_down"]) == s["bits_down"] and r["compressor"] == s["compressor"]

    out = io.StringIO()
    analyze.write_rows_csv(runs, out)
    rows = list(csv.DictReader(io.StringIO(out.getvalue())))
    assert len(rows) == sum(t.n_rows for t in runs)
    diana = [r for r in rows if r["run"] == "diana"]
    assert [int(r["step"]) for r in diana] == traces["diana"]["step"].tolist()
    assert [float(r["loss"]) for r in diana] == traces["diana"]["loss"].tolist()


@pytest.mark.parametrize("suffix,magic", [(".png", b"\x89PNG\r\n\x1a\n"), (".pdf", b"%PDF-")])
def test_plot_writes_a_real_figure_file(traces, tmp_path, suffix, magic):
    path = analyze.plot(list(traces.values()), tmp_path / f"fig{suffix}", labels=["DIANA", "fp64"])
    data = path.read_bytes()
    assert data.startswith(magic) and len(data) > 5000


def test_figure_draws_each_run_on_each_panel(traces):
    runs = list(traces.values())
    fig = analyze.figure(runs, y="excess", x=("step", "bits", "net_time"), labels=["DIANA", "fp64"])
    try:
        assert len(fig.axes) == 3
        for ax, axis in zip(fig.axes, ("step", "bits", "net_time")):
            assert ax.get_yscale() == "log" and ax.get_xlabel() == analyze.X_AXES[axis][1]
            lines = ax.get_lines()
            assert len(lines) == 2
            for line, t in zip(lines, runs):
                xs, ys = analyze.curve(t, "excess", axis)
                np.testing.assert_array_equal(line.get_xdata(), xs)
                np.testing.assert_array_equal(line.get_ydata(), np.where(ys > 0, ys, np.nan))
        assert [t.get_text() for t in fig.axes[0].get_legend().get_texts()] == ["DIANA", "fp64"]
    finally:
        import matplotlib.pyplot as plt

        plt.close(fig)


def test_curve_axes_follow_the_columns(traces):
    t = traces["diana"]
    xs, ys = analyze.curve(t, "excess", "bits")
    np.testing.assert_array_equal(xs, t["bits_up"] + t["bits_down"])
    np.testing.assert_array_equal(ys, t["loss"] - t.attrs["f_star"])
    xs, ys = analyze.curve(t, "dist_to_opt_sq", "net_time")
    np.testing.assert_array_equal(xs, t["net_time"])
    np.testing.assert_array_equal(ys, t["dist_to_opt_sq"])
    assert analyze.default_y([t]) == "excess"
    with pytest.raises(ValueError, match="unknown x axis 'time'; choose from step, bits"):
        analyze.curve(t, "loss", "time")
    with pytest.raises(ValueError, match="unknown y 'accuracy'; choose from excess, step, loss"):
        analyze.curve(t, "accuracy", "step")


def test_cli_prints_the_table_and_writes_files(traces, tmp_path, capsys):
    paths = [t.path for t in traces.values()]
    rc = analyze.main([*paths, "--label", "DIANA", "--label", "fp64", "--csv", str(tmp_path / "s.csv"),
                       "--rows-csv", str(tmp_path / "r.csv"), "--plot", str(tmp_path / "f.png"),
                       "--plot", str(tmp_path / "f.pdf"), "--x", "step,bits"])
    assert rc == 0
    table = parse_markdown(capsys.readouterr().out.strip())
    assert [r["run"] for r in table] == ["DIANA", "fp64"]
    assert len((tmp_path / "s.csv").read_text().splitlines()) == 1 + 2
    assert len((tmp_path / "r.csv").read_text().splitlines()) == 1 + 2 * 5  # rows at 0, 5, …, 20
    assert all((tmp_path / f).stat().st_size > 5000 for f in ("f.png", "f.pdf"))
    assert analyze.main([paths[0], "--format", "json"]) == 0
    (summary,) = json.loads(capsys.readouterr().out)
    assert summary["bits_up"] == traces["diana"]["bits_up"][-1] and summary["final_test_loss"] is None


def killed_trace(path, rows: int, f_star: float = 0.5):
    """A trace whose writer stopped without finishing (as a killed run leaves it)."""
    from mpicomp.trace import STANDARD_COLUMNS

    w = TraceWriter(path, {"algorithm": "dcgd", "compressor": "qsgd:s=4", "topology": "server",
                           "config": {}, "mpi_library": "test", "dim": 4, "f_star": f_star},
                    STANDARD_COLUMNS, [], world_size=2)
    for i in range(rows):
        w.append({c: 10 * i if c == "step" else (1.0 + i) for c in STANDARD_COLUMNS})
    w.close()
    return path


def test_unknown_optimum_and_mixed_columns(traces, tmp_path, capsys):
    """A run without F* (NaN f_star): y defaults to the loss, 'excess' says why it cannot be
    drawn, the summary's excess is NaN (null in JSON); the rows CSV leaves a column a run lacks
    empty."""
    killed = killed_trace(tmp_path / "nostar.h5", 2, f_star=float("nan"))
    t = read_trace(killed)
    assert analyze.default_y([traces["diana"], t]) == "loss"
    with pytest.raises(ValueError, match="needs the trace's f_star"):
        analyze.curve(t, "excess", "step")
    assert math.isnan(analyze.summarize(t)["excess_loss"])
    assert analyze.main([str(killed), "--format", "json", "--plot", str(tmp_path / "f.svg")]) == 0
    (summary,) = json.loads(capsys.readouterr().out)
    assert summary["excess_loss"] is None and summary["status"] == "running"
    assert (tmp_path / "f.svg").read_text().lstrip().startswith("<?xml")
    assert analyze.main([str(killed), traces["diana"].path, "--format", "csv"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert [r["run"] for r in rows] == ["nostar", "diana"] and rows[0]["final_test_loss"] == ""
    out = io.StringIO()
    analyze.write_rows_csv([t, traces["diana"]], out)
    rows = list(csv.DictReader(io.StringIO(out.getvalue())))
    assert [r["test_loss"] for r in rows[:2]] == ["", ""] and rows[2]["test_loss"] == "nan"


def test_a_killed_run_is_summarised_as_running(tmp_path):
    s = analyze.summarize(read_trace(killed_trace(tmp_path / "killed.h5", 3)))
    assert s["status"] == "running" and s["steps"] == 20 and s["loss"] == 3.0
    assert s["bits_per_coord_up"] == 3.0 / (2 * 4 * 20)
    empty = analyze.summarize(read_trace(killed_trace(tmp_path / "empty.h5", 0)))
    assert empty["steps"] == 0 and math.isnan(empty["loss"]) and math.isnan(empty["bits_per_coord_up"])


def bad_traces(tmp, good):
    """(path, words the error must contain) for files that are not usable traces."""
    truncated = tmp / "truncated.h5"
    truncated.write_bytes(open(good, "rb").read()[:4000])
    text = tmp / "notes.h5"
    text.write_text("not HDF5\n")
    foreign = tmp / "foreign.h5"
    with h5py.File(foreign, "w") as f:
        f["data"] = np.arange(3)
    unequal = tmp / "unequal.h5"
    with open(good, "rb") as src, open(unequal, "wb") as dst:
        dst.write(src.read())
    with h5py.File(unequal, "r+") as f:
        f["trace/loss"].resize((1,))
    checkpoint = tmp / "run.ckpt.h5"
    write_checkpoint(checkpoint, {"world_size": 1, "step": 5}, [{}], [{}])
    return [(checkpoint, "an mpicomp checkpoint, not a trace"), (truncated, "truncated"), (text, "not a readable HDF5 file"),
            (foreign, "missing root attributes"), (unequal, "equal length"),
            (tmp / "missing.h5", "no such trace file")]


def test_malformed_traces_give_a_clear_error(traces, tmp_path, capsys):
    for path, words in bad_traces(tmp_path, traces["diana"].path):
        with pytest.raises(TraceError, match=words):
            analyze.load([path])
        assert analyze.main([traces["diana"].path, str(path), "--plot", str(tmp_path / "x.png")]) == 2
        err = capsys.readouterr().err
        assert f"error: {path}" in err and words in err
        assert not (tmp_path / "x.png").exists()  # nothing half-written


@pytest.mark.parametrize("args,words", [
    (["--plot", "fig.jpg"], "suffix '.jpg' is not one of .png, .pdf, .svg"),
    (["--plot", "fig.png", "--x", "step,time"], "unknown x axis 'time'"),
    (["--plot", "fig.png", "--y", "accuracy"], "unknown y 'accuracy'"),
    (["--label", "a", "--label", "b"], "2 --label for 1 traces"),
    (["--plot", "fig.png", "--x", ", "], "--x names no axis; choose from step, bits"),
])
def test_bad_options_give_a_clear_error(traces, tmp_path, capsys, monkeypatch, args, words):
    monkeypatch.chdir(tmp_path)
    assert analyze.main([traces["diana"].path, *args]) == 2
    assert words in capsys.readouterr().err
    assert not list(tmp_path.glob("fig.*"))


@pytest.mark.mpi
def test_summary_of_a_run_on_several_ranks(comm, mpi_shared_tmp):
    path = str(mpi_shared_tmp / "diana.h5")
    assert apps.diana.main(["--data", DATA, "--iters", "12", "--log-every", "4", "--progress", "off",
                            "--trace", path], comm) == 0
    comm.Barrier()
    if comm.rank != 0:
        return
    t = read_trace(path)
    s = analyze.summarize(t)
    n = comm.size
    assert s["world_size"] == n and s["steps"] == 12
    assert s["bits_up"] == t.ranks["bits_up"][-1].sum() == 12 * n * (64 + 2 * D)
    assert s["bits_per_coord_up"] == diana_bits_up_per_coord(D) and s["bits_per_coord_down"] == 64.0
    assert s["net_time"] == t["net_time"][-1] and (s["net_time"] > 0) == (n > 1)
