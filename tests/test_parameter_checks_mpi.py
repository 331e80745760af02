"""Operator parameters that do not fit the vectors they will compress (a sparsifier keeping more
coordinates than the model or a two-phase chunk has) are refused at set-up: exit 2 on every
rank, one message naming the value and the valid range, a trace with status ``failed``. The
valid edge cases still run."""

from __future__ import annotations

import os

import apps.choco
import apps.dcgd
import apps.diana
import apps.efsgd
import apps.malcom
import apps.qadam
import pytest

from mpicomp.run import EXIT_BAD_INPUT, EXIT_FINISHED
from mpicomp.trace import read_trace

pytestmark = pytest.mark.mpi
D = 30  # breast_cancer has 30 features


def run(comm, main, tmp, *args):
    """``main(argv)`` on every rank over breast_cancer; (exit status, trace on rank 0 or None)."""
    trace = str(tmp / "run.h5")
    rc = main(["--data", "breast_cancer", "--trace", trace, "--progress", "off", "--iters", "3",
               *map(str, args)], comm)
    assert comm.allgather(rc) == [rc] * comm.size  # every rank ends the same way
    comm.Barrier()
    return rc, (read_trace(trace) if comm.rank == 0 and os.path.exists(trace) else None)


def smallest_chunk(comm) -> int:
    """The shortest two-phase chunk of a D-vector (``numpy.array_split`` sizes)."""
    return D // comm.size


def refused(comm, tmp, capsys, app, args, message):
    rc, t = run(comm, app.main, tmp, *args)
    assert rc == EXIT_BAD_INPUT
    if comm.rank == 0:
        err = capsys.readouterr().err
        assert err.count(message) == 1, err  # reported once, by rank 0
        assert "Traceback" not in err, err
        assert t is not None and t.status == "failed" and t.attrs["error"] == message


@pytest.mark.parametrize("app,args,message", [
    (apps.dcgd, ["--compressor", "topk:k=40", "--lr", 0.1],
     "topk:k=40 keeps more coordinates than the 30 of the model; use k ≤ 30 or a fraction k < 1"),
    (apps.dcgd, ["--compressor", "topk:k=40", "--lr", 0.1, "--topology", "allgather"],
     "topk:k=40 keeps more coordinates than the 30 of the model; use k ≤ 30 or a fraction k < 1"),
    (apps.choco, ["--compressor", "topk:k=40"],
     "topk:k=40 keeps more coordinates than the 30 of the model; use k ≤ 30 or a fraction k < 1"),
    (apps.malcom, ["--compressor", "randk:k=31", "--lr", 0.1],
     "randk:k=31 keeps more coordinates than the 30 of the model; use k ≤ 30 or a fraction k < 1"),
    # refused by the same check whether or not a theory value would have needed ω first
    (apps.diana, ["--compressor", "randk:k=40"],
     "randk:k=40 keeps more coordinates than the 30 of the model; use k ≤ 30 or a fraction k < 1"),
    (apps.diana, ["--compressor", "randk:k=40", "--alpha", 0.5, "--lr", 0.1],
     "randk:k=40 keeps more coordinates than the 30 of the model; use k ≤ 30 or a fraction k < 1"),
    (apps.efsgd, ["--compressor", "topk:k=40+natural", "--lr", 0.1],
     "topk:k=40+natural keeps more coordinates than the 30 of the model; use k ≤ 30 or a "
     "fraction k < 1"),
    (apps.dcgd, ["--compressor", "qsgd:s=4", "--downlink", "topk:k=31", "--lr", 0.1],
     "downlink topk:k=31 keeps more coordinates than the 30 of the model; use k ≤ 30 or a "
     "fraction k < 1"),
    (apps.qadam, ["--weight-quant", "topk:k=31"],
     "weight_quant topk:k=31 keeps more coordinates than the 30 of the model; use k ≤ 30 or a "
     "fraction k < 1"),
], ids=["dcgd-server", "dcgd-allgather", "choco", "malcom-randk", "diana-theory", "diana-numbers",
        "efsgd-composition", "dcgd-downlink", "qadam-weight-quant"])
def test_a_count_larger_than_the_model_is_refused_at_set_up(comm, mpi_shared_tmp, capsys, app, args,
                                                            message):
    refused(comm, mpi_shared_tmp, capsys, app, args, message)


@pytest.mark.parametrize("app,spec,downlink", [
    (apps.dcgd, "topk:k={k}", None),
    (apps.diana, "randk:k={k}+natural", None),
    (apps.dcgd, "qsgd:s=4", "topk:k={k}"),
])
def test_a_count_larger_than_the_smallest_two_phase_chunk_is_refused(comm, mpi_shared_tmp, capsys,
                                                                     app, spec, downlink):
    m = smallest_chunk(comm)
    args = ["--topology", "two-phase", "--lr", 0.1]
    if downlink is None:
        args += ["--compressor", spec.format(k=m + 1)]
        name = spec.format(k=m + 1)
    else:
        args += ["--compressor", spec, "--downlink", downlink.format(k=m + 1)]
        name = "downlink " + downlink.format(k=m + 1)
    if app is apps.diana:
        args += ["--alpha", 0.5]
    message = (f"{name} keeps more coordinates than the {m} of the smallest two-phase chunk "
               f"(d = {D} over {comm.size} ranks); use k ≤ {m} or a fraction k < 1")
    refused(comm, mpi_shared_tmp, capsys, app, args, message)


@pytest.mark.parametrize("app,args", [
    (apps.dcgd, ["--compressor", f"topk:k={D}", "--lr", 0.1]),  # k = d on a server
    (apps.choco, ["--compressor", f"topk:k={D}"]),
    (apps.diana, ["--compressor", f"randk:k={D}+natural"]),
    # a fraction
    (apps.dcgd, ["--compressor", "topk:k=0.5", "--lr", 0.1, "--topology", "two-phase"]),
    (apps.choco, ["--compressor", "randk:k=0.3"]),
    (apps.qadam, ["--weight-quant", f"topk:k={D}"]),
    # a block longer than the vector is one block, as before (not an error)
    (apps.dcgd, ["--compressor", "qsgd:s=4,block=64", "--topology", "two-phase"]),
], ids=["dcgd-k=d", "choco-k=d", "diana-k=d-composition", "two-phase-fraction", "choco-fraction",
        "qadam-k=d", "block-longer-than-d"])
def test_valid_edge_cases_still_run(comm, mpi_shared_tmp, app, args):
    rc, t = run(comm, app.main, mpi_shared_tmp, *args)
    assert rc == EXIT_FINISHED
    if comm.rank == 0:
        assert t.status == "finished" and t["step"][-1] == 3


def test_k_equal_to_the_smallest_two_phase_chunk_runs(comm, mpi_shared_tmp):
    for spec in (f"topk:k={smallest_chunk(comm)}", f"randk:k={smallest_chunk(comm)}+natural"):
        rc, t = run(comm, apps.dcgd.main, mpi_shared_tmp, "--compressor", spec, "--lr", 0.1,
                    "--topology", "two-phase", "--overwrite")
        assert rc == EXIT_FINISHED
        if comm.rank == 0:
            assert t.status == "finished" and t.attrs["compressor"] == spec
