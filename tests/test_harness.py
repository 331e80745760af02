"""Tests of the MPI test harness in ``conftest.py``.

Serial tests check the outcome-merging rules and, through ``mpiexec`` subprocesses running the
files in ``harness_cases/``, the behaviour of a whole MPI run. MPI tests check the fixtures.
"""
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CASES = Path(__file__).resolve().parent / "harness_cases"
MPIEXEC = shutil.which("mpiexec") or shutil.which("mpiexec", path=str(Path(sys.executable).parent))

# Serial tests that launch mpiexec themselves: never inside an MPI run (mpi_skip, for --with-mpi
# without --only-mpi), and only where mpiexec exists.
not_under_mpi = pytest.mark.mpi_skip
needs_mpiexec = pytest.mark.skipif(MPIEXEC is None, reason="mpiexec not found on PATH")


@pytest.fixture
def harness(request):
    """The ``conftest`` module as pytest loaded it."""
    conftest = Path(__file__).with_name("conftest.py")
    return next(p for p in request.config.pluginmanager.get_plugins()
                if getattr(p, "__file__", None) and Path(p.__file__) == conftest)


def view(outcome="passed", text="", wasxfail=None, crash=None, skip=None, sections=()):
    return {"outcome": outcome, "text": text, "longrepr": skip, "crash": crash,
            "wasxfail": wasxfail, "sections": list(sections)}


# ----------------------------------------------------------------------- serial: merging rules


def test_format_ranks(harness):
    assert harness.format_ranks([3]) == "rank 3"
    assert harness.format_ranks([5, 0, 2, 1, 1]) == "ranks 0-2,5"
    assert harness.format_ranks([0, 2, 4, 5, 6, 7]) == "ranks 0,2,4-7"


def test_combine_agreeing_ranks_keep_their_reports(harness):
    assert harness.combine([view()] * 3) is None
    skip = ("t.py", 3, "Skipped: no gpu")
    assert harness.combine([view("skipped", skip=skip)] * 3) is None


def test_combine_failure_on_one_rank_fails_once_with_its_traceback(harness):
    views = [view(), view("failed", "E   assert 1 == 2\nt.py:9: AssertionError",
                          crash=("t.py", 9, "assert 1 == 2"),
                          sections=[("Captured stdout call", "hello\n")]), view()]
    verdict = harness.combine(views)
    assert verdict["outcome"] == "failed" and verdict["wasxfail"] is None
    assert str(verdict["longrepr"]).splitlines() == [
        "[rank 1] E   assert 1 == 2", "[rank 1] t.py:9: AssertionError"]
    assert verdict["longrepr"].reprcrash.message == "[rank 1] assert 1 == 2"
    assert verdict["sections"] == [("Captured stdout call [rank 1]", "hello\n")]


def test_combine_groups_identical_failures(harness):
    views = [view("failed", "E boom")] * 3 + [view("failed", "E other")]
    assert str(harness.combine(views)["longrepr"]).splitlines() == [
        "[ranks 0-2] E boom", "[rank 3] E other"]


def test_combine_partial_skip_is_a_failure(harness):
    views = [view(), view("skipped", skip=("t.py", 4, "Skipped: only here"))]
    verdict = harness.combine(views)
    assert verdict["outcome"] == "failed"
    assert "skipped on rank 1 but not on rank 0" in verdict["longrepr"]
    assert "[rank 1] Skipped: only here" in verdict["longrepr"]


def test_combine_xfail_on_some_ranks_is_an_xfail(harness):
    views = [view(wasxfail="flaky"), view("skipped", "E assert 0", wasxfail="flaky")]
    verdict = harness.combine(views)
    assert (verdict["outcome"], verdict["wasxfail"], verdict["longrepr"]) == (
        "skipped", "flaky", "E assert 0")


def test_combine_failure_wins_over_xfail_and_skip(harness):
    views = [view("skipped", wasxfail="x"), view("failed", "E bad"),
             view("skipped", skip=("t", 1, "s"))]
    verdict = harness.combine(views)
    assert verdict["outcome"] == "failed" and str(verdict["longrepr"]) == "[rank 1] E bad"


def test_combine_groups_failures_differing_only_in_addresses(harness):
    views = [view("failed", f"x = <object at 0x{a}>\nE boom") for a in ("7f01", "7f02")]
    assert str(harness.combine(views)["longrepr"]).splitlines() == [
        "[ranks 0-1] x = <object at 0x7f01>", "[ranks 0-1] E boom"]


def test_fixtures_also_work_outside_mpi_tests(mpi_shared_tmp, mpi_skip_unless):
    assert mpi_shared_tmp.is_dir()
    (mpi_shared_tmp / "x").write_text("ok")
    mpi_skip_unless(True, "never")
    with pytest.raises(pytest.skip.Exception, match="^needs it"):
        mpi_skip_unless(False, "needs it")


# ----------------------------------------------------------------------- serial: whole MPI runs


def run_case(name: str, tmp_path: Path, nprocs: int = 2, timeout_s: str = "120",
             hard_timeout: float = 180) -> subprocess.CompletedProcess:
    """Run one file of ``harness_cases/`` under ``mpiexec``; stdout and stderr together."""
    cmd = [MPIEXEC, "-n", str(nprocs), sys.executable, "-m", "pytest", "--with-mpi",
           "--only-mpi", "-p", "no:cacheprovider", f"--basetemp={tmp_path / 'basetemp'}",
           str(CASES / name)]
    env = {**os.environ, "MPICOMP_TEST_TIMEOUT": timeout_s}
    return subprocess.run(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, timeout=hard_timeout)


@not_under_mpi
@needs_mpiexec
def test_failure_on_rank1_fails_the_run_and_is_reported_once(tmp_path):
    proc = run_case("case_rank_outcomes.py", tmp_path)
    out = proc.stdout
    assert proc.returncode != 0, out
    assert out.count("2 failed, 1 passed, 1 skipped, 1 xfailed, 1 error in") == 1, out
    assert len(re.findall(r"^\[rank 1\] E +AssertionError: deliberate failure on rank 1$", out,
                          re.MULTILINE)) == 1, out
    assert "deliberate failure on rank 0" not in out
    assert out.count("Captured stdout call [rank 1]") == 1 and "stdout of rank 0" not in out
    assert len(re.findall(r"^\[rank 1\] E +RuntimeError: fixture broke on rank 1$", out,
                          re.MULTILINE)) == 1, out
    assert "skipped on rank 1 but not on rank 0" in out
    assert "needs something rank 1 lacks (false on rank 1)" in out
    assert out.count("test session starts") == 1, out  # one report, from rank 0


@not_under_mpi
@needs_mpiexec
def test_rank_raising_before_a_collective_ends_the_job_via_watchdog(tmp_path):
    proc = run_case("case_hang.py", tmp_path, timeout_s="5", hard_timeout=120)
    out = proc.stdout
    assert proc.returncode != 0, out
    assert "watchdog: tests/harness_cases/case_hang.py::test_rank1_raises_before_collective" \
        " still running after 5 s" in out, out
    assert re.search(r"^\[rank 1\] E +RuntimeError: rank 1 raised before the collective$", out,
                     re.MULTILINE), out
    assert "stacks of all threads" in out


@not_under_mpi
@needs_mpiexec
def test_collection_differing_between_ranks_stops_the_run(tmp_path):
    proc = run_case("case_collect_mismatch.py", tmp_path)
    out = proc.stdout
    assert proc.returncode == pytest.ExitCode.INTERRUPTED, out
    assert "tests collected differ between MPI ranks" in out
    assert re.search(r"^\[rank 1\] E +ImportError: this module breaks on rank 1 only$", out,
                     re.MULTILINE), out


def test_serial_run_does_not_import_mpi(tmp_path):
    cmd = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", f"--basetemp={tmp_path}",
           str(CASES / "case_serial_no_mpi.py")]
    proc = subprocess.run(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, timeout=120)
    assert proc.returncode == 0 and "1 passed" in proc.stdout, proc.stdout


# ----------------------------------------------------------------------- MPI: fixtures


@pytest.mark.mpi
def test_comm_is_world(comm):
    from mpi4py import MPI

    assert comm is MPI.COMM_WORLD
    assert comm.allreduce(comm.rank) == comm.size * (comm.size - 1) // 2


_shared_paths = []


@pytest.mark.mpi
def test_shared_tmp_is_one_writable_dir(comm, mpi_shared_tmp):
    paths = comm.allgather(str(mpi_shared_tmp))
    assert len(set(paths)) == 1
    (mpi_shared_tmp / f"rank{comm.rank}.txt").write_text(str(comm.rank))
    comm.Barrier()
    names = sorted(p.name for p in mpi_shared_tmp.iterdir())
    assert names == sorted(f"rank{r}.txt" for r in range(comm.size))
    assert all((mpi_shared_tmp / f"rank{r}.txt").read_text() == str(r) for r in range(comm.size))
    _shared_paths.append(mpi_shared_tmp)


@pytest.mark.mpi
def test_shared_tmp_is_removed_after_the_test(comm, mpi_skip_unless):
    mpi_skip_unless(bool(_shared_paths), "run together with test_shared_tmp_is_one_writable_dir")
    assert not _shared_paths[-1].exists()


@pytest.mark.mpi
def test_tmp_path_is_per_rank(comm, tmp_path):
    (tmp_path / "mine").write_text(str(comm.rank))
    paths = [Path(p) for p in comm.allgather(str(tmp_path))]
    assert len(set(paths)) == comm.size
    assert [p.parent.name for p in paths] == [f"rank{r}" for r in range(comm.size)]
    assert len({p.parent.parent for p in paths}) == 1  # one base dir for the run
    comm.Barrier()
    assert (tmp_path / "mine").read_text() == str(comm.rank)
    assert [p.name for p in tmp_path.iterdir()] == ["mine"]


@pytest.mark.mpi
def test_skip_unless_is_collective(comm, mpi_skip_unless):
    mpi_skip_unless(True, "never skips")
    last = comm.size - 1
    with pytest.raises(pytest.skip.Exception, match=f"needs it \\(false on rank {last}\\)"):
        mpi_skip_unless(comm.rank != last, "needs it")
