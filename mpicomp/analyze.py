"""Summaries, CSV export and plots of traces: ``python -m mpicomp.analyze TRACE.h5 [...]``.

Everything here reads traces with :func:`mpicomp.trace.read_trace` and is importable for
notebooks::

    from mpicomp import analyze
    runs = analyze.load(["diana.h5", "qsgd.h5"])
    print(analyze.summary_table([analyze.summarize(t) for t in runs]))
    analyze.plot(runs, "loss.png", y="excess", x=("step", "bits", "bits_up", "net_time"))

A summary is the last logged row of a run: the loss and ``F − F*`` (with the trace's ``f_star``),
``‖x − x*‖²``, total bits up and down (all ranks), bits per coordinate per worker and step
(``bits / (world_size · dim · steps)``; 32 or 64 is an uncompressed float32 or float64 vector),
wall time and network-model time (seconds), and the status; then the trace's path and the run's main
hyperparameters (data, lr, seed, batch and the compressor's parameters, see `hyperparameters`)
so that runs from different folders or settings stay apart in a shared CSV.

Matplotlib draws the figures (``Agg``, no screen); the file's suffix picks the format (``.png``,
``.pdf``, ``.svg``). Bits axes are logarithmic by default, every run gets its own (colour,
line style) pair (`run_styles`), and the legend sits outside the panels.
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
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from .spec_strings import parse_value, spec_items
from .trace import STANDARD_COLUMNS, Trace, TraceError, read_trace

#: Hyperparameters of a summary: the trace's resolved ``hyperparameters`` value, else its config's.
HYPERPARAMETER_FIELDS = ("data", "lr", "seed", "batch")

#: Fields of a summary, in order; then ``compressor_<key>`` for each parameter of the compressor
#: spec (`compressor_parameters`) and the final value of each extra trace column.
SUMMARY_FIELDS = ("run", "algorithm", "compressor", "topology", "world_size", "dim", "status",
                  "steps", "loss", "excess_loss", "dist_to_opt_sq", "bits_up", "bits_down",
                  "bits_per_coord_up", "bits_per_coord_down", "wall_time", "net_time",
                  "path", *HYPERPARAMETER_FIELDS)

#: Prefix of the summary fields that hold the compressor spec's parameters.
COMPRESSOR_PREFIX = "compressor_"

#: Summary fields the Markdown table leaves out (long texts; the CSV and JSON have them), besides
#: the ``compressor_<key>`` fields (the table's ``compressor`` spec shows them).
TABLE_OMITS = ("path", "data")

#: Horizontal axes of a plot: trace column (or sum of columns) and its label.
X_AXES = {
    "step": (("step",), "step"),
    "bits": (("bits_up", "bits_down"), "bits sent, up + down, all ranks"),
    "bits_up": (("bits_up",), "bits sent up, all ranks"),
    "net_time": (("net_time",), "network-model time (s)"),
    "wall_time": (("wall_time",), "wall time (s)"),
}

#: The panels of a figure when none are named.
DEFAULT_X = ("step", "bits", "bits_up", "net_time")

#: Horizontal axes drawn logarithmic unless ``log_x=False`` (``--linear-x``): compressed and
#: uncompressed runs differ by orders of magnitude in bits.
LOG_X_AXES = ("bits", "bits_up")

#: Line styles combined with colours when a figure has more runs than `QUALITATIVE_COLOURS`.
LINESTYLES = ("-", "--", ":", "-.")

#: Colour map (matplotlib's) of up to 10 runs' colours, in order.
QUALITATIVE_COLOURS = "tab10"

#: Perceptually uniform colour map sampled when a figure needs more colours than that; its
#: top tenth (pale yellow) is left out, hard to see on white.
MANY_COLOURS = "viridis"

#: Vertical axes with their own meaning; any other trace column may be named too.
Y_AXES = {
    "excess": "F(x) − F*",
    "loss": "F(x)",
    "dist_to_opt_sq": "‖x − x*‖²",
    "grad_norm_sq": "‖∇F(x)‖²",
}

#: Figure formats, by file suffix.
PLOT_FORMATS = (".png", ".pdf", ".svg")


def load(paths: Iterable[str | os.PathLike[str]]) -> list[Trace]:
    """Read each trace (TraceError, naming the file, for one that is missing or malformed)."""
    return [read_trace(p) for p in paths]


def run_name(trace: Trace) -> str:
    """A run's default label: its file name without ``.h5``."""
    return Path(trace.path).name.removesuffix(".h5")


def run_names(traces: Sequence[Trace]) -> list[str]:
    """Default labels of several runs: each `run_name`, with as many parent folders
    (``a/diana``, ``b/diana``) as tell apart different files of the same name.

    Parameters
    ----------
    traces : sequence of Trace
        The runs, in order.

    Returns
    -------
    list of str
        One label per run; equal only for the same file given twice.
    """
    files = [Path(os.path.abspath(t.path)) for t in traces]
    parts = [(*f.relative_to(f.anchor).parent.parts, run_name(t)) for f, t in zip(files, traces)]
    depth = [1] * len(traces)
    while True:
        names = ["/".join(p[-d:]) for p, d in zip(parts, depth)]
        clashing = [i for i, name in enumerate(names) if depth[i] < len(parts[i]) and any(
            other == name and parts[j] != parts[i] for j, other in enumerate(names))]
        if not clashing:
            return names
        for i in clashing:
            depth[i] += 1


def _f_star(trace: Trace) -> float:
    """The trace's F* (NaN when the run does not know it)."""
    return float(trace.attrs.get("f_star", math.nan))


def _last(trace: Trace, column: str) -> float:
    values = trace.columns.get(column)
    return float(values[-1]) if values is not None and len(values) else math.nan


def compressor_parameters(spec: str) -> dict:
    """The ``key=value`` parameters of a compressor spec as summary fields ``compressor_<key>``.

    Values are read as int, then finite float, else left as text (``p=inf`` stays ``"inf"``, which
    JSON keeps, where it would make a float infinity null). A composition ``A+B``
    (``topk:k=0.01+natural``) gives the parameters of both parts (``compressor_k``); a key both
    parts have is named after the second part's operator too (``compressor_<name>_<key>``).
    Parameters the spec leaves out (the operator's defaults) give no field. A per-layer operator
    (``qsgd:s=4|layers=10``) gives its base's parameters and ``compressor_layers``.

    Parameters
    ----------
    spec : str
        A spec as the trace's ``compressor`` attribute holds it, e.g. ``qsgd:s=4,block=512``.

    Returns
    -------
    dict
        ``{"compressor_s": 4, "compressor_block": 512}`` for that example; empty for ``natural``.
    """
    fields = {}
    spec, _, layers = spec.partition("|layers=")  # per layer: the base's parameters, the count
    if layers:
        fields[COMPRESSOR_PREFIX + "layers"] = parse_value(layers)
    for part in spec.split("+"):
        operator, _, arguments = part.partition(":")
        for key, value in spec_items(operator.strip(), arguments):
            field = COMPRESSOR_PREFIX + key
            if field in fields:
                field = f"{COMPRESSOR_PREFIX}{operator.strip()}_{key}"
            number = parse_value(value)
            infinite = isinstance(number, float) and not math.isfinite(number)
            fields[field] = value if infinite else number
    return fields


def hyperparameters(trace: Trace) -> dict:
    """The run's `HYPERPARAMETER_FIELDS`: the resolved value of the trace's ``hyperparameters``
    attribute (e.g. the lr used when the config said ``theory``), else the config's value, else
    None (a run that stopped before it resolved them, or a trace written without them).

    Raises
    ------
    TraceError
        When the ``hyperparameters`` attribute is not a JSON object.
    """
    config = trace.config if isinstance(trace.config, dict) else {}
    try:
        resolved = json.loads(trace.attrs.get("hyperparameters", "{}"))
        if not isinstance(resolved, dict):
            raise ValueError(f"a JSON object expected, got {resolved!r}")
    except (TypeError, ValueError) as exc:
        raise TraceError(f"{trace.path}: attribute 'hyperparameters' is not a JSON object: "
                         f"{exc}") from None
    return {key: resolved.get(key, config.get(key)) for key in HYPERPARAMETER_FIELDS}


def summarize(trace: Trace, name: str | None = None) -> dict:
    """The summary of one run: ``SUMMARY_FIELDS``, then ``compressor_<key>`` for each parameter of
    its compressor spec (`compressor_parameters`), then ``final_<column>`` for each trace column
    beyond the standard ones. NaN where a trace has no rows or does not know a number; None for a
    hyperparameter it does not record (`hyperparameters`). ``path`` is the trace's path as given
    to `load`; ``name`` (default `run_name`) labels the run."""
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
        "path": trace.path,
        **hyperparameters(trace),
        **compressor_parameters(trace.attrs["compressor"]),
    }
    for column in trace.columns:
        if column not in STANDARD_COLUMNS:
            summary[f"final_{column}"] = _last(trace, column)
    return summary


def _fields(summaries: Sequence[dict]) -> list[str]:
    """``SUMMARY_FIELDS``, the ``compressor_<key>`` fields of any summary, then its other extra
    fields (``final_<column>``), each group in first-seen order."""
    extras = []
    for s in summaries:
        extras += [k for k in s if k not in SUMMARY_FIELDS and k not in extras]
    return [*SUMMARY_FIELDS, *sorted(extras, key=lambda f: not f.startswith(COMPRESSOR_PREFIX))]


def _table_fields(summaries: Sequence[dict]) -> list[str]:
    """`_fields` but `TABLE_OMITS` and the ``compressor_<key>`` fields."""
    return [f for f in _fields(summaries)
            if f not in TABLE_OMITS and not f.startswith(COMPRESSOR_PREFIX)]


def _format(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.6g}"
    return str(value)


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """A Markdown table of strings: the header, the rule, one line per row."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


def summary_table(summaries: Sequence[dict], fields: Sequence[str] | None = None) -> str:
    """A Markdown table, one row per summary; floats to 6 significant digits; a field a run
    lacks (or None) is empty. ``fields`` defaults to every field but the long texts and the
    compressor's parameters (`TABLE_OMITS`); the CSV and JSON have them all."""
    fields = list(fields or _table_fields(summaries))
    return markdown_table(fields, [[_format(s[f]) if f in s else "" for f in fields]
                                   for s in summaries])


def write_summary_csv(summaries: Sequence[dict],
                      path: str | os.PathLike[str] | io.TextIOBase) -> None:
    """The summaries as CSV with a header: every field (`_fields`; ``path``, the hyperparameters
    and ``compressor_<key>`` included), floats in full precision (``repr``), empty where a run
    lacks a field or does not record it (None)."""
    fields = _fields(summaries)
    with _text_out(path) as out:
        writer = csv.DictWriter(out, fieldnames=fields, restval="", lineterminator="\n")
        writer.writeheader()
        for s in summaries:
            writer.writerow({k: repr(v) if isinstance(v, float) else v for k, v in s.items()})


def write_rows_csv(traces: Sequence[Trace], path: str | os.PathLike[str] | io.TextIOBase,
                   names: Sequence[str] | None = None) -> None:
    """Every logged row of every run in one long CSV: ``run`` then the union of the columns
    (empty where a run has no such column); ``names`` defaults to `run_names`."""
    names = list(names or run_names(traces))
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


def run_styles(n: int) -> list[dict]:
    """Line styles of ``n`` runs on one figure, no two alike.

    Up to 10 runs get the colours of `QUALITATIVE_COLOURS`, solid. More runs combine colours
    with the `LINESTYLES`: as few line styles as keep the colours to 10 (runs 1–6 solid, 7–12
    dashed for 12 runs), and past 40 runs colours sampled evenly from the perceptual
    `MANY_COLOURS` map, as many as needed. Run ``i`` gets colour ``i mod c`` and line style
    ``i div c`` (``c`` colours), so every (colour, line style) pair is distinct for any ``n``.

    Parameters
    ----------
    n : int
        Number of runs.

    Returns
    -------
    list of dict
        ``{"color": RGBA tuple, "linestyle": str}`` per run, keywords of ``Axes.plot``.
    """
    pyplot()  # matplotlib, or an ImportError that says how to install it
    import matplotlib
    from matplotlib.colors import LinearSegmentedColormap

    qualitative = matplotlib.colormaps[QUALITATIVE_COLOURS].colors
    n_linestyles = min(max(1, math.ceil(n / len(qualitative))), len(LINESTYLES))
    n_colours = math.ceil(n / n_linestyles)
    if n_colours <= len(qualitative):
        colours = [matplotlib.colors.to_rgba(c) for c in qualitative[:n_colours]]
    else:  # a map of exactly n_colours entries, interpolated: distinct however many
        anchors = matplotlib.colormaps[MANY_COLOURS](np.linspace(0.0, 0.9, 16))
        palette = LinearSegmentedColormap.from_list("runs", anchors, N=n_colours)
        colours = [tuple(c) for c in palette(np.arange(n_colours))]
    return [{"color": colours[i % n_colours], "linestyle": LINESTYLES[i // n_colours]}
            for i in range(n)]


def _panel_points(curves: Sequence[tuple[np.ndarray, np.ndarray]], log_x: bool, log_y: bool):
    """The points one panel draws of each curve, and whether its axes are (log x, log y).

    A log axis needs a positive value: an axis where no curve has one stays linear (bits of
    runs that have sent nothing, an F − F* of 0). On a log x axis, points at x ≤ 0 are left
    out (step 0 has sent no bits yet); on a log y axis, y ≤ 0 becomes NaN (a gap in the line).
    """
    log_x = log_x and any(np.any(xs > 0) for xs, _ in curves)
    if log_x:
        curves = [(xs[xs > 0], ys[xs > 0]) for xs, ys in curves]
    log_y = log_y and any(np.any(ys > 0) for _, ys in curves)
    if log_y:
        curves = [(xs, np.where(ys > 0, ys, np.nan)) for xs, ys in curves]
    return curves, log_x, log_y


def _legend_width(labels: Sequence[str], columns: int) -> float:
    """Inches beside the panels for a figure legend of ``labels`` in ``columns`` columns: the
    line sample and about 0.07 in a character, per column."""
    return columns * (0.7 + 0.07 * max(len(label) for label in labels))


def _draw_panel(ax, axis: str, y: str, curves: Sequence[tuple[np.ndarray, np.ndarray]],
                labels: Sequence[str], styles: Sequence[dict], *, log_x: bool,
                log_y: bool) -> None:
    """Draw one panel of `figure`: the runs' ``curves`` of ``y`` against the x axis ``axis``,
    on log axes where asked and possible (`_panel_points`)."""
    from matplotlib.ticker import LogFormatterSciNotation

    points, log_x_here, log_y_here = _panel_points(curves, log_x, log_y)
    for label, style, (xs, ys) in zip(labels, styles, points):
        ax.plot(xs, ys, label=label, linewidth=1.4, **style)
    ax.set_xlabel(X_AXES[axis][1])
    ax.set_ylabel(Y_AXES.get(y, y))
    if log_y_here:
        ax.set_yscale("log")
    if log_x_here:
        ax.set_xscale("log")
        # label ticks between powers of ten only when the axis shows no power of ten; the
        # default labels some beside one, and they overlap on a narrow panel
        ax.xaxis.set_minor_formatter(LogFormatterSciNotation(labelOnlyBase=False,
                                                             minor_thresholds=(0.5, 0.4)))
    elif axis != "step":
        ax.ticklabel_format(axis="x", style="sci", scilimits=(-3, 4))
    ax.grid(True, which="major", alpha=0.3)


def figure(traces: Sequence[Trace], *, y: str | None = None, x: Sequence[str] = DEFAULT_X,
           labels: Sequence[str] | None = None, log_y: bool = True, log_x: bool = True,
           title: str | None = None):
    """A matplotlib Figure: one panel per ``x`` axis, one line per run, one legend for the
    figure, outside the panels (at the right).

    Parameters
    ----------
    traces : sequence of Trace
        The runs (several on one figure); each gets its own `run_styles` entry.
    y : str, optional
        ``excess`` (F − F*), ``loss``, ``dist_to_opt_sq``, ``grad_norm_sq`` or any trace column;
        default `default_y`.
    x : sequence of str
        Keys of `X_AXES`, one panel each (default `DEFAULT_X`: step, bits, bits_up, net_time).
    labels : sequence of str, optional
        Legend entries (default `run_names`).
    log_y : bool
        Logarithmic vertical axes (points with y ≤ 0 are left out of them).
    log_x : bool
        Logarithmic bits axes (`LOG_X_AXES`; points with x ≤ 0, e.g. step 0, are left out of
        the drawn curve); the step and time axes stay linear. A log axis on which no run has a
        positive value (no bits sent yet) stays linear.
    title : str, optional
        Figure title.

    Returns
    -------
    matplotlib.figure.Figure
        Close it with ``pyplot().close(fig)`` when done.
    """
    if not traces or not x:
        raise ValueError("a figure needs at least one trace and one x axis")
    labels = list(labels or run_names(traces))
    if len(labels) != len(traces):
        raise ValueError(f"{len(labels)} labels for {len(traces)} traces")
    y = y or default_y(traces)
    curves = [[curve(t, y, axis) for axis in x] for t in traces]  # bad names fail before drawing
    plt = pyplot()
    legend_columns = math.ceil(len(traces) / 24)
    width = 3.8 * len(x) + _legend_width(labels, legend_columns)
    fig, axes = plt.subplots(1, len(x), figsize=(width, 3.4), squeeze=False, layout="constrained")
    styles = run_styles(len(traces))
    for panel, (ax, axis) in enumerate(zip(axes[0], x)):
        _draw_panel(ax, axis, y, [run_curves[panel] for run_curves in curves], labels, styles,
                    log_x=log_x and axis in LOG_X_AXES, log_y=log_y)
    fig.legend(handles=axes[0][0].get_lines(), loc="outside right upper", fontsize="small",
               ncols=legend_columns)
    if title:
        fig.suptitle(title)
    return fig


def plot(traces: Sequence[Trace], path: str | os.PathLike[str], *, y: str | None = None,
         x: Sequence[str] = DEFAULT_X, labels: Sequence[str] | None = None,
         log_y: bool = True, log_x: bool = True, title: str | None = None) -> Path:
    """`figure` written to ``path`` (``bbox_inches="tight"``: the outside legend is kept whole).

    Parameters
    ----------
    traces : sequence of Trace
        The runs (several on one figure).
    path : path
        Output file; its suffix (``.png``, ``.pdf``, ``.svg``) picks the format.
    y, x, labels, log_y, log_x, title
        As for `figure`.

    Returns
    -------
    Path
        The file written.
    """
    path = Path(path)
    if path.suffix.lower() not in PLOT_FORMATS:
        raise ValueError(f"plot file {path}: suffix {path.suffix!r} is not one of "
                         f"{', '.join(PLOT_FORMATS)}")
    fig = figure(traces, y=y, x=x, labels=labels, log_y=log_y, log_x=log_x, title=title)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=110, bbox_inches="tight")
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
                        help="name of each run, in order (default: the file names, with "
                        "parent folders where two files share a name)")
    parser.add_argument("--format", choices=("markdown", "csv", "json"), default="markdown",
                        help="summary printed on stdout (default markdown)")
    parser.add_argument("--csv", metavar="FILE", help="write the summaries as CSV (all fields: "
                        "path, data, lr, seed, batch, compressor_<key>, ...)")
    parser.add_argument("--rows-csv", metavar="FILE", help="write every logged row as CSV")
    parser.add_argument("--plot", action="append", metavar="FILE",
                        help="write a figure (.png, .pdf or .svg; may be repeated)")
    parser.add_argument("--y", help="vertical axis: excess (F − F*), loss, dist_to_opt_sq, "
                        "grad_norm_sq or any trace column (default excess when f_star is known)")
    parser.add_argument("--x", default=",".join(DEFAULT_X),
                        help=f"comma-separated panels from {', '.join(X_AXES)} "
                        f"(default {','.join(DEFAULT_X)})")
    parser.add_argument("--linear", action="store_true", help="linear vertical axis")
    parser.add_argument("--linear-x", action="store_true",
                        help=f"linear bits axes ({', '.join(LOG_X_AXES)}; default logarithmic)")
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
        summaries = [summarize(t, n) for t, n in zip(traces, args.label or run_names(traces))]
        names = [s["run"] for s in summaries]
        axes = [a.strip() for a in args.x.split(",") if a.strip()]
        if not axes:
            raise ValueError(f"--x names no axis; choose from {', '.join(X_AXES)}")
        for path in args.plot or ():
            plot(traces, path, y=args.y, x=axes, labels=names,
                 log_y=not args.linear, log_x=not args.linear_x, title=args.title)
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
