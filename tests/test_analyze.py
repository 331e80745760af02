"""mpicomp.analyze on traces of real short runs: summaries equal the trace's numbers and the
formulas for bits, CSV round-trips exactly, figures are real PNG/PDF files, and bad traces or
options give a clear error (exit status 2) that names the file or the choices."""

from __future__ import annotations

import csv
import io
import json
import math

import apps.dcgd
import apps.diana
import h5py
import numpy as np
import pytest

from mpicomp import analyze
from mpicomp.checkpoint import write_checkpoint
from mpicomp.trace import STANDARD_COLUMNS, TraceError, TraceWriter, read_trace

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
    assert (exact["run"] == "fp64"
            and exact["bits_per_coord_up"] == exact["bits_per_coord_down"] == 64.0)


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
    """Each panel has one line per run; a bits axis is logarithmic and leaves out step 0 (no
    bits sent yet), the step and time axes are linear and keep every row."""
    runs = list(traces.values())
    panels = ("step", "bits", "bits_up", "net_time")
    fig = analyze.figure(runs, y="excess", x=panels, labels=["DIANA", "fp64"])
    try:
        assert len(fig.axes) == 4
        for ax, axis in zip(fig.axes, panels):
            log_x = axis in ("bits", "bits_up")
            assert ax.get_yscale() == "log" and ax.get_xlabel() == analyze.X_AXES[axis][1]
            assert ax.get_xscale() == ("log" if log_x else "linear")
            lines = ax.get_lines()
            assert len(lines) == 2
            for line, t in zip(lines, runs):
                xs, ys = analyze.curve(t, "excess", axis)
                keep = xs > 0 if log_x else np.ones(len(xs), bool)
                assert keep.sum() == (t.n_rows - 1 if log_x else t.n_rows)  # log: all but step 0
                np.testing.assert_array_equal(line.get_xdata(), xs[keep])
                np.testing.assert_array_equal(line.get_ydata(), np.where(ys > 0, ys, np.nan)[keep])
        (legend,) = fig.legends
        assert [t.get_text() for t in legend.get_texts()] == ["DIANA", "fp64"]
    finally:
        close(fig)


def close(fig) -> None:
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
    rc = analyze.main([*paths, "--label", "DIANA", "--label", "fp64",
                       "--csv", str(tmp_path / "s.csv"), "--rows-csv", str(tmp_path / "r.csv"),
                       "--plot", str(tmp_path / "f.png"),
                       "--plot", str(tmp_path / "f.pdf"), "--x", "step,bits"])
    assert rc == 0
    table = parse_markdown(capsys.readouterr().out.strip())
    assert [r["run"] for r in table] == ["DIANA", "fp64"]
    assert len((tmp_path / "s.csv").read_text().splitlines()) == 1 + 2
    assert len((tmp_path / "r.csv").read_text().splitlines()) == 1 + 2 * 5  # rows at 0, 5, …, 20
    assert all((tmp_path / f).stat().st_size > 5000 for f in ("f.png", "f.pdf"))
    assert analyze.main([paths[0], "--format", "json"]) == 0
    (summary,) = json.loads(capsys.readouterr().out)
    assert (summary["bits_up"] == traces["diana"]["bits_up"][-1]
            and summary["final_test_loss"] is None)


def killed_trace(path, rows: int, f_star: float = 0.5, bits: int | None = None):
    """A trace whose writer stopped without finishing (as a killed run leaves it); row ``i``
    has step ``10 i`` and ``1 + i`` in the other columns (``bits`` in the bits columns if given)."""
    w = TraceWriter(path, {"algorithm": "dcgd", "compressor": "qsgd:s=4", "topology": "server",
                           "config": {}, "mpi_library": "test", "dim": 4, "f_star": f_star},
                    STANDARD_COLUMNS, [], world_size=2)
    for i in range(rows):
        row = {c: 10 * i if c == "step" else (1.0 + i) for c in STANDARD_COLUMNS}
        if bits is not None:
            row.update(bits_up=bits, bits_down=bits)
        w.append(row)
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
    assert (empty["steps"] == 0 and math.isnan(empty["loss"])
            and math.isnan(empty["bits_per_coord_up"]))


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
    return [(checkpoint, "an mpicomp checkpoint, not a trace"), (truncated, "truncated"),
            (text, "not a readable HDF5 file"), (foreign, "missing root attributes"),
            (unequal, "equal length"),
            (tmp / "missing.h5", "no such trace file")]


def test_malformed_traces_give_a_clear_error(traces, tmp_path, capsys):
    for path, words in bad_traces(tmp_path, traces["diana"].path):
        with pytest.raises(TraceError, match=words):
            analyze.load([path])
        assert analyze.main([traces["diana"].path, str(path),
                             "--plot", str(tmp_path / "x.png")]) == 2
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


@pytest.fixture(scope="module")
def twins(tmp_path_factory):
    """Two DIANA runs both named diana.h5, in folders a/ (theory step, seed 1) and b/ (lr 0.05,
    seed 2), and a DCGD run with blockwise QSGD; on one rank."""
    from mpi4py import MPI

    tmp = tmp_path_factory.mktemp("twins")
    common = ["--data", DATA, "--iters", "10", "--log-every", "5", "--progress", "off"]
    paths = {"a": tmp / "a" / "diana.h5", "b": tmp / "b" / "diana.h5", "qsgd": tmp / "qsgd.h5"}
    assert apps.diana.main([*common, "--seed", "1", "--trace", str(paths["a"])], MPI.COMM_SELF) == 0
    assert apps.diana.main([*common, "--seed", "2", "--lr", "0.05", "--trace", str(paths["b"])],
                           MPI.COMM_SELF) == 0
    assert apps.dcgd.main([*common, "--compressor", "qsgd:s=4,block=8",
                           "--trace", str(paths["qsgd"])], MPI.COMM_SELF) == 0
    return {k: read_trace(p) for k, p in paths.items()}


def resolved_lr(trace) -> float:
    return json.loads(trace.attrs["hyperparameters"])["lr"]


def test_same_file_name_in_two_folders_gives_two_rows_with_their_paths(twins, tmp_path, capsys):
    a, b = twins["a"], twins["b"]
    assert analyze.run_name(a) == analyze.run_name(b) == "diana"
    assert analyze.run_names([a, b, twins["qsgd"]]) == ["a/diana", "b/diana", "qsgd"]
    assert analyze.run_names([a, a]) == ["diana", "diana"]  # one file twice: nothing to tell apart
    assert analyze.main([a.path, b.path, "--csv", str(tmp_path / "s.csv")]) == 0
    table = parse_markdown(capsys.readouterr().out.strip())
    assert [r["run"] for r in table] == ["a/diana", "b/diana"]
    with open(tmp_path / "s.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [(r["run"], r["path"]) for r in rows] == [("a/diana", a.path), ("b/diana", b.path)]
    assert [(r["seed"], float(r["lr"])) for r in rows] == [("1", resolved_lr(a)), ("2", 0.05)]
    out = io.StringIO()
    analyze.write_rows_csv([a, b], out)
    assert {r["run"] for r in csv.DictReader(io.StringIO(out.getvalue()))} == {"a/diana", "b/diana"}


def test_hyperparameter_columns_come_from_the_config_with_the_resolved_lr(twins, capsys):
    t = twins["qsgd"]
    assert t.config["lr"] == "theory" and 0 < resolved_lr(t) < math.inf
    s = analyze.summarize(t)
    assert s["path"] == t.path and s["data"] == DATA == t.config["data"]
    assert s["lr"] == resolved_lr(t) and s["seed"] == 0 and s["batch"] == 0
    assert s["compressor"] == "qsgd:s=4,block=8"
    assert s["compressor_s"] == 4 and s["compressor_block"] == 8
    assert list(s)[:len(analyze.SUMMARY_FIELDS)] == list(analyze.SUMMARY_FIELDS)  # the order kept
    assert analyze.main([t.path, twins["a"].path, "--format", "csv"]) == 0
    header, *rows = list(csv.reader(io.StringIO(capsys.readouterr().out)))
    assert header[:len(analyze.SUMMARY_FIELDS)] == list(analyze.SUMMARY_FIELDS)
    assert header[len(analyze.SUMMARY_FIELDS):] == [
        "compressor_s", "compressor_block", "compressor_p", "final_test_loss"]
    qsgd, diana = (dict(zip(header, r)) for r in rows)
    assert (qsgd["compressor_block"], qsgd["compressor_p"]) == ("8", "")  # a run lacks: empty
    assert (diana["compressor_s"], diana["compressor_p"], diana["seed"]) == ("1", "inf", "1")
    assert analyze.main([t.path, "--format", "json"]) == 0
    (summary,) = json.loads(capsys.readouterr().out)
    assert summary["lr"] == resolved_lr(t) and summary["compressor_block"] == 8
    table = parse_markdown(analyze.summary_table([s]))[0]  # the table stays short
    assert table["lr"] == f"{resolved_lr(t):.6g}" and table["seed"] == "0"
    assert not {"path", "data", "compressor_s", "compressor_block"} & set(table)


def test_hyperparameters_of_a_trace_without_resolved_values(tmp_path):
    """No ``hyperparameters`` attribute (a run that failed before building its method): the
    config's values, None where the config has none; a composition's parameters split."""
    path = tmp_path / "failed.h5"
    attrs = {"algorithm": "dcgd", "compressor": "topk:k=0.01+natural", "topology": "server",
             "config": {"data": "synthetic", "lr": "theory", "seed": 7}, "mpi_library": "test"}
    TraceWriter(path, attrs, STANDARD_COLUMNS, [], world_size=1).close()
    s = analyze.summarize(read_trace(path))
    assert (s["data"], s["lr"], s["seed"], s["batch"]) == ("synthetic", "theory", 7, None)
    assert s["compressor_k"] == 0.01 and s["compressor"] == "topk:k=0.01+natural"
    row = next(csv.DictReader(io.StringIO(csv_text([s]))))
    assert row["batch"] == "" and row["lr"] == "theory" and row["path"] == str(path)


def csv_text(summaries) -> str:
    out = io.StringIO()
    analyze.write_summary_csv(summaries, out)
    return out.getvalue()


@pytest.mark.parametrize("spec,fields", [
    ("natural", {}),
    ("qsgd:s=4,block=512", {"compressor_s": 4, "compressor_block": 512}),
    ("dither:p=inf,s=1", {"compressor_p": "inf", "compressor_s": 1}),
    ("randk:k=0.1,shared=1+dither:p=2,s=8", {"compressor_k": 0.1, "compressor_shared": 1,
                                             "compressor_p": 2, "compressor_s": 8}),
    ("topk:k=5+other:k=2", {"compressor_k": 5, "compressor_other_k": 2}),  # a key in both parts
    ("qsgd:s=2,block=256|layers=6", {"compressor_s": 2, "compressor_block": 256,
                                     "compressor_layers": 6}),  # --per-layer
])
def test_compressor_parameters(spec, fields):
    assert analyze.compressor_parameters(spec) == fields


def test_default_figure_has_a_bits_up_panel_and_log_bits_axes(traces):
    fig = analyze.figure(list(traces.values()))
    try:
        assert analyze.DEFAULT_X == ("step", "bits", "bits_up", "net_time")
        assert ([ax.get_xlabel() for ax in fig.axes]
                == [analyze.X_AXES[a][1] for a in analyze.DEFAULT_X])
        assert [ax.get_xscale() for ax in fig.axes] == ["linear", "log", "log", "linear"]
    finally:
        close(fig)
    fig = analyze.figure(list(traces.values()), x=("bits", "bits_up"), log_x=False, log_y=False)
    try:
        assert [(ax.get_xscale(), ax.get_yscale()) for ax in fig.axes] == [("linear", "linear")] * 2
        xs, _ = analyze.curve(traces["diana"], "excess", "bits")
        np.testing.assert_array_equal(fig.axes[0].get_lines()[0].get_xdata(), xs)  # step 0 kept
    finally:
        close(fig)


def test_cli_draws_log_bits_axes_unless_linear_x(traces, tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(analyze, "plot", lambda *args, **kw: calls.append(kw))
    path = traces["diana"].path
    assert analyze.main([path, "--plot", str(tmp_path / "f.png")]) == 0
    assert analyze.main([path, "--plot", str(tmp_path / "f.png"), "--linear-x", "--linear"]) == 0
    assert [(c["x"], c["log_x"], c["log_y"]) for c in calls] == [
        (["step", "bits", "bits_up", "net_time"], True, True),
        (["step", "bits", "bits_up", "net_time"], False, False)]


def test_runs_that_sent_no_bits_draw_and_save(traces, tmp_path):
    """Bits all 0 (a run killed at step 0, say): beside a run that sent bits, no points on the
    log bits axis; alone, its bits panel stays linear with the zeros. An F − F* never above 0
    keeps a linear y axis likewise. Every such figure saves."""
    t = read_trace(killed_trace(tmp_path / "silent.h5", 3, bits=0))
    assert t["bits_up"].tolist() == [0, 0, 0]
    fig = analyze.figure([t, traces["diana"]], x=("step", "bits_up"))
    try:
        silent, diana = fig.axes[1].get_lines()
        assert fig.axes[1].get_xscale() == "log" and len(silent.get_xdata()) == 0
        assert len(diana.get_xdata()) == traces["diana"].n_rows - 1
        assert len(fig.axes[0].get_lines()[0].get_xdata()) == 3
    finally:
        close(fig)
    fig = analyze.figure([t], x=("step", "bits_up"))
    try:
        assert fig.axes[1].get_xscale() == "linear"
        assert fig.axes[1].get_lines()[0].get_xdata().tolist() == [0, 0, 0]
    finally:
        close(fig)
    at_optimum = read_trace(killed_trace(tmp_path / "optimum.h5", 3, f_star=3.0, bits=0))
    fig = analyze.figure([at_optimum], y="excess")
    try:
        assert {ax.get_yscale() for ax in fig.axes} == {"linear"}
        assert fig.axes[0].get_lines()[0].get_ydata().tolist() == [-2.0, -1.0, 0.0]
    finally:
        close(fig)
    for runs, name in (([t], "alone.png"), ([t, traces["diana"]], "beside.png"),
                       ([at_optimum], "optimum.png")):
        assert analyze.plot(runs, tmp_path / name).stat().st_size > 5000


def line_styles(ax) -> list[tuple]:
    from matplotlib.colors import to_rgba

    return [(to_rgba(line.get_color()), line.get_linestyle()) for line in ax.get_lines()]


def test_twelve_runs_have_twelve_distinct_styles(traces):
    runs = [traces["diana"]] * 12
    fig = analyze.figure(runs, labels=[f"run {i}" for i in range(12)])
    try:
        for ax in fig.axes:
            styles = line_styles(ax)
            assert len(styles) == len(set(styles)) == 12
            assert styles == line_styles(fig.axes[0])  # a run looks the same in every panel
    finally:
        close(fig)


@pytest.mark.parametrize("n", [1, 2, 10, 11, 12, 40, 41, 97, 1000])
def test_run_styles_are_distinct_for_any_number_of_runs(n):
    styles = [(s["color"], s["linestyle"]) for s in analyze.run_styles(n)]
    assert len(styles) == len(set(styles)) == n
    if n <= 10:  # the usual case looks as before: matplotlib's first colours, solid lines
        import matplotlib

        assert styles == [(matplotlib.colors.to_rgba(c), "-")
                          for c in matplotlib.colormaps["tab10"].colors[:n]]


def test_the_legend_sits_outside_every_panel(traces):
    runs = [traces["diana"], traces["identity"]] * 4
    fig = analyze.figure(runs, labels=[f"a long run name number {i}" for i in range(8)])
    try:
        assert all(ax.get_legend() is None for ax in fig.axes)
        (legend,) = fig.legends
        renderer = fig.canvas.get_renderer()
        fig.draw(renderer)
        box = legend.get_window_extent(renderer)
        for ax in fig.axes:
            assert not box.overlaps(ax.get_window_extent(renderer))
        assert box.x0 >= max(ax.get_window_extent(renderer).x1 for ax in fig.axes)  # at the right
        assert fig.bbox.contains(box.x0, box.y0) and fig.bbox.contains(box.x1, box.y1)
    finally:
        close(fig)


@pytest.mark.mpi
def test_summary_of_a_run_on_several_ranks(comm, mpi_shared_tmp):
    path = str(mpi_shared_tmp / "diana.h5")
    assert apps.diana.main(["--data", DATA, "--iters", "12", "--log-every", "4",
                            "--progress", "off", "--trace", path], comm) == 0
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
    assert s["path"] == path and s["lr"] == resolved_lr(t) and s["seed"] == 0
