"""The reproductions in experiments/ run end to end (``--quick``: 1/20 of the steps) on 3 ranks
and leave what their docstrings promise: a trace per run, the tables and figures in summary.md,
and every figure a real PNG file. Their numbers at full length are in the README."""

from __future__ import annotations

import importlib
import re

import pytest

from mpicomp.trace import read_trace

pytestmark = pytest.mark.mpi

#: module, tables in its summary, figures
EXPERIMENTS = [("diana", 2, 2), ("signsgd", 3, 2), ("natural", 2, 2), ("qadam", 2, 2),
               ("error_feedback", 1, 1), ("decentralised", 2, 2)]


@pytest.mark.parametrize("name,tables,figures", EXPERIMENTS)
def test_reproduction_writes_traces_tables_and_figures(comm, mpi_shared_tmp, mpi_skip_unless, name,
                                                       tables, figures):
    mpi_skip_unless(comm.size == 3, "the reproductions are smoke-tested on 3 ranks")
    module = importlib.import_module(f"experiments.{name}")
    out = mpi_shared_tmp / name
    assert module.main(["--out", str(out), "--quick"], comm) == 0
    comm.Barrier()
    if comm.rank != 0:
        return
    summary = (out / "summary.md").read_text()
    assert summary.startswith(f"# {module.__doc__.splitlines()[0]}")
    assert f"`mpiexec -n 3 python -m experiments.{name} --out {out} --quick` on 3 ranks" in summary
    assert summary.count("\n### ") == tables
    linked = re.findall(r"!\[[^]]*\]\(([^)]+\.png)\)", summary)
    assert len(linked) == figures
    for png in linked:
        data = (out / png).read_bytes()
        assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 5000
    traces = sorted(out.glob("*.h5"))
    assert traces and all(read_trace(t).status == "finished" for t in traces)
