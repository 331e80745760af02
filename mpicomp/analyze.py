"""Summaries, CSV export and plots of traces: ``python -m mpicomp.analyze TRACE.h5 [...]``.

Everything here reads traces with :func:`mpicomp.trace.read_trace` and is importable for
notebooks::

    from mpicomp import analyze
    runs = analyze.load(["diana.h5", "qsgd.h5"])
    print(analyze.summary_table([analyze.summarize(t) for t in runs]))
    analyze.plot(runs, "loss.png", y="excess", x=("step", "bits", "net_time"))

A summary is the last logged row of a run: the loss and ``F − F*`` (with the trace's ``f_star``),
``‖x − x*‖²``, total bits up and down (all ranks), bits per coordinate per worker and step
(``bits / (world_size · dim · steps)``; 32 or 64 is an uncompressed float32 or float64 vector), wall time and
network-model time (seconds), and the status. Matplotlib draws the figures (``Agg``, no screen);
the file's suffix picks the format (``.png``, ``.pdf``, ``.svg``).
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import io
import json
import math
import os
import sys
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from .trace import STANDARD_COLUMNS, Trace, TraceError, read_trace

#: Fields of a summary, in table order (plus the final value of each extra trace column).
SUMMARY_FIELDS = ("run", "algorithm", "compressor", "topology", "world_size", "dim", "status",
                  "steps", "loss", "excess_loss", "dist_to_opt_sq", "bits_up", "bits_down",
                  "bits_per_coord_up", "bits_per_coord_down", "wall_time", "net_time")

#: Horizontal axes of a plot: trace column (or sum of columns) and its label.
X_AXES = {
    "step": (("step",), "step"),
    "bits": (("bits_up", "bits_down"), "bits sent, up + down, all ranks"),
    "bits_up": (("bits_up",), "bits sent up, all ranks"),
    "net_time": (("net_time",), "network-model time (s)"),
    "wall_time": (("wall_time",), "wall time (s)"),
}

#: Vertical axes with their own meaning; any other trace column may be named too.
Y_AXES = {
    "excess": "F(x) − F*",
    "loss": "F(x)",
    "dist_to_opt_sq": "‖x − x*‖²",
    "grad_norm_sq": "‖∇F(x)‖²",
}

#: Figure formats, by file suffix.
PLOT_FORMATS = (".png", ".pdf", ".svg")


def load(paths: Iterable["str | os.PathLike[str]"]) -> list[Trace]:
    """Read each trace (TraceError, naming the file, for one that is missing or malformed)."""
    return [read_trace(p) for p in paths]


def run_name(trace: Trace) -> str:
    """A run's default label: its file name without ``.h5``."""
    return Path(trace.path).name.removesuffix(".h5")


def _f_star(trace: Trace) -> float:
    """The trace's F* (NaN when the run does not know it)."""
    return float(trace.attrs.get("f_star", math.nan))


def _last(trace: Trace, column: str) -> float:
    values = trace.columns.get(column)
    return float(values[-1]) if values is not None and len(values) else math.nan


def summarize(trace: Trace, name: str | None = None) -> dict:
    """The summary of one run (``SUMMARY_FIELDS`` then ``final_<column>`` for each column beyond
    the standard ones); NaN where a trace has no rows or does not know the value."""
    steps = int(trace["step"][-1]) if trace.n_rows else 0
    dim = int(trace.attrs.get("dim", -1))
    per_coord = trace.world_size * dim * steps if dim > 0 and steps > 0 else 0
    summary = {
        "run": name or run_name(trace),
        "algorithm": trace.algorithm,
        "compressor": trace.attrs["compressor"],
        "topology": trace.attrs["topology"],
        "world_size": int(trace.world_size),
        "dim": dim if dim > 0 else math.nan,
        "status": trace.status,
        "steps": steps,
        "loss": _last(trace, "loss"),
        "excess_loss": _last(trace, "loss") - _f_star(trace),
        "dist_to_opt_sq": _last(trace, "dist_to_opt_sq"),
        "bits_up": int(trace["bits_up"][-1]) if trace.n_rows else 0,
        "bits_down": int(trace["bits_down"][-1]) if trace.n_rows else 0,
        "bits_per_coord_up": _last(trace, "bits_up") / per_coord if per_coord else math.nan,
        "bits_per_coord_down": _last(trace, "bits_down") / per_coord if per_coord else math.nan,
        "wall_time": _last(trace, "wall_time"),
        "net_time": _last(trace, "net_time"),
    }
    for column in trace.columns:
        if column not in STANDARD_COLUMNS:
            summary[f"final_{column}"] = _last(trace, column)
    return summary


def _fields(summaries: Sequence[dict]) -> list[str]:
    """``SUMMARY_FIELDS`` then the extra fields of any summary, in first-seen order."""
    fields = list(SUMMARY_FIELDS)
    for s in summaries:
        fields += [k for k in s if k not in fields]
    return fields


def _format(value) -> str:
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.6g}"
    return str(value)


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """A Markdown table of strings: the header, the rule, one line per row."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


def summary_table(summaries: Sequence[dict], fields: Sequence[str] | None = None) -> str:
    """A Markdown table, one row per summary; floats to 6 significant digits; a field a run
    lacks is empty."""
    fields = list(fields or _fields(summaries))
    return markdown_table(fields, [[_format(s[f]) if f in s else "" for f in fields]
                                   for s in summaries])


def write_summary_csv(summaries: Sequence[dict], path: "str | os.PathLike[str] | io.TextIOBase") -> None:
    """The summaries as CSV with a header (floats in full precision, ``repr``)."""
    fields = _fields(summaries)
    with _text_out(path) as out:
        writer = csv.DictWriter(out, fieldnames=fields, restval="", lineterminator="\n")
        writer.writeheader()
        for s in summaries:
            writer.writerow({k: repr(v) if isinstance(v, float) else v for k, v in s.items()})


def write_rows_csv(traces: Sequence[Trace], path: "str | os.PathLike[str] | io.TextIOBase",
                   names: Sequence[str] | None = None) -> None:
    """Every logged row of every run in one long CSV: ``run`` then the union of the columns
    (empty where a run has no such column)."""
    names = list(names or [run_name(t) for t in traces])
    columns = list(STANDARD_COLUMNS)
    for t in traces:
        columns += [c for c in t.columns if c not in columns]
    with _text_out(path) as out:
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(["run", *columns])
        for name, t in zip(names, traces):
            for i in range(t.n_rows):
                writer.writerow([name, *(_cell(t.columns[c][i]) if c in t.columns else ""
                                         for c in columns)])


def _cell(value) -> str:
    return repr(float(value)) if isinstance(value, (float, np.floating)) else str(value)


def _text_out(target):
    """A context manager giving a text file opened for ``target`` (a path; parent directories
    made), or ``target`` itself when it is already a stream (left open)."""
    if hasattr(target, "write"):
        return contextlib.nullcontext(target)
    path = Path(target)
    path.parent.mkdir(parents=True, exist_ok=True)
    return open(path, "w", newline="", encoding="utf-8")


def curve(trace: Trace, y: str = "excess", x: str = "step") -> tuple[np.ndarray, np.ndarray]:
    """The points ``(x, y)`` of one run: ``x`` a key of `X_AXES`; ``y`` ``excess`` (F − F*, from
    the trace's ``f_star``) or a trace column. ValueError naming the choices otherwise."""
    if x not in X_AXES:
        raise ValueError(f"unknown x axis {x!r}; choose from {', '.join(X_AXES)}")
    xs = sum(trace.columns[c].astype(np.float64) for c in X_AXES[x][0])
    if y == "excess":
        f_star = _f_star(trace)
        if math.isnan(f_star):
            raise ValueError(f"{trace.path}: y = 'excess' needs the trace's f_star, which this run "
                             "does not know; plot y = 'loss' instead")
        return xs, trace["loss"] - f_star
    if y not in trace.columns:
        raise ValueError(f"{trace.path}: unknown y {y!r}; choose from excess, "
                         f"{', '.join(trace.columns)}")
    return xs, trace[y].astype(np.float64)


def default_y(traces: Sequence[Trace]) -> str:
    """``excess`` when every run knows ``f_star``, else ``loss``."""
    known = all(math.isfinite(_f_star(t)) for t in traces)
    return "excess" if known else "loss"


def figure(traces: Sequence[Trace], *, y: str | None = None,
           x: Sequence[str] = ("step", "bits", "net_time"), labels: Sequence[str] | None = None,
           log_y: bool = True, title: str | None = None):
    """A matplotlib Figure: one panel per ``x`` axis, one line per run (see `plot`)."""
    if not traces or not x:
        raise ValueError("a figure needs at least one trace and one x axis")
    labels = list(labels or [run_name(t) for t in traces])
    if len(labels) != len(traces):
        raise ValueError(f"{len(labels)} labels for {len(traces)} traces")
    y = y or default_y(traces)
    curves = [[curve(t, y, axis) for axis in x] for t in traces]  # bad names fail before drawing
    plt = pyplot()
    fig, axes = plt.subplots(1, len(x), figsize=(4.2 * len(x), 3.4), squeeze=False,
                             layout="constrained")
    for label, points in zip(labels, curves):
        for ax, (xs, ys) in zip(axes[0], points):
            if log_y:
                ys = np.where(ys > 0, ys, np.nan)
            ax.plot(xs, ys, label=label, linewidth=1.4)
    for ax, axis in zip(axes[0], x):
        ax.set_xlabel(X_AXES[axis][1])
        ax.set_ylabel(Y_AXES.get(y, y))
        if log_y:
            ax.set_yscale("log")
        if axis != "step":
            ax.ticklabel_format(axis="x", style="sci", scilimits=(-3, 4))
        ax.grid(True, which="major", alpha=0.3)
    axes[0][0].legend(fontsize="small")
    if title:
        fig.suptitle(title)
    return fig


def plot(traces: Sequence[Trace], path: "str | os.PathLike[str]", *, y: str | None = None,
         x: Sequence[str] = ("step", "bits", "net_time"), labels: Sequence[str] | None = None,
         log_y: bool = True, title: str | None = None) -> Path:
    """One figure, one panel per ``x`` axis, one line per run, written to ``path``.

    Parameters
    ----------
    traces : sequence of Trace
        The runs (several on one figure).
    path : path
        Output file; its suffix (``.png``, ``.pdf``, ``.svg``) picks the format.
    y : str, optional
        ``excess`` (F − F*), ``loss``, ``dist_to_opt_sq``, ``grad_norm_sq`` or any trace column;
        default `default_y`.
    x : sequence of str
        Keys of `X_AXES`, one panel each.
    labels : sequence of str, optional
        Legend entries (default: the file names).
    log_y : bool
        Logarithmic vertical axis (points ≤ 0 are left out of it).
    title : str, optional
        Figure title.

    Returns
    -------
    Path
        The file written.
    """
    path = Path(path)
    if path.suffix.lower() not in PLOT_FORMATS:
        raise ValueError(f"plot file {path}: suffix {path.suffix!r} is not one of "
                         f"{', '.join(PLOT_FORMATS)}")
    fig = figure(traces, y=y, x=x, labels=labels, log_y=log_y, title=title)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=110)
    finally:
        pyplot().close(fig)
    return path


def pyplot():
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise ImportError("plots need matplotlib: pip install 'mpicomp[plot]'") from None
    return plt


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m mpicomp.analyze",
        description="Summary table, CSV and plots of mpicomp traces (HDF5).")
    parser.add_argument("traces", nargs="+", metavar="TRACE.h5", help="trace files")
    parser.add_argument("--label", action="append", metavar="NAME",
                        help="name of each run, in order (default: the file names)")
    parser.add_argument("--format", choices=("markdown", "csv", "json"), default="markdown",
                        help="summary printed on stdout (default markdown)")
    parser.add_argument("--csv", metavar="FILE", help="write the summaries as CSV")
    parser.add_argument("--rows-csv", metavar="FILE", help="write every logged row as CSV")
    parser.add_argument("--plot", action="append", metavar="FILE",
                        help="write a figure (.png, .pdf or .svg; may be repeated)")
    parser.add_argument("--y", help="vertical axis: excess (F − F*), loss, dist_to_opt_sq, "
                        "grad_norm_sq or any trace column (default excess when f_star is known)")
    parser.add_argument("--x", default="step,bits,net_time",
                        help=f"comma-separated panels from {', '.join(X_AXES)} "
                        "(default step,bits,net_time)")
    parser.add_argument("--linear", action="store_true", help="linear vertical axis")
    parser.add_argument("--title", help="figure title")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Command line; exit status 0, or 2 with a message on stderr for bad input."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        traces = load(args.traces)
        if args.label and len(args.label) != len(traces):
            raise ValueError(f"{len(args.label)} --label for {len(traces)} traces")
        summaries = [summarize(t, n) for t, n in zip(traces, args.label or [None] * len(traces))]
        names = [s["run"] for s in summaries]
        axes = [a.strip() for a in args.x.split(",") if a.strip()]
        if not axes:
            raise ValueError(f"--x names no axis; choose from {', '.join(X_AXES)}")
        for path in args.plot or ():
            plot(traces, path, y=args.y, x=axes, labels=names,
                 log_y=not args.linear, title=args.title)
        if args.csv:
            write_summary_csv(summaries, args.csv)
        if args.rows_csv:
            write_rows_csv(traces, args.rows_csv, names)
    except (TraceError, ValueError, ImportError, OSError) as exc:
        print(f"{parser.prog}: error: {exc}", file=sys.stderr)
        return 2
    if args.format == "markdown":
        print(summary_table(summaries))
    elif args.format == "csv":
        write_summary_csv(summaries, sys.stdout)
    else:
        print(json.dumps([{k: None if isinstance(v, float) and not math.isfinite(v) else v
                           for k, v in s.items()} for s in summaries], indent=1, allow_nan=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
