"""MPI-aware pytest harness on top of pytest-mpi.

Serial run: ``python -m pytest``; MPI run: ``mpiexec -n 4 python -m pytest --with-mpi --only-mpi``
(``tests/run_all.sh`` runs both). Under MPI (``--with-mpi`` or ``--only-mpi``) this file

- reports on rank 0 only: the other ranks' terminal output goes to ``os.devnull``;
- gathers every phase (setup, call, teardown) of every test from all ranks, so a failure on any
  rank fails the test once on rank 0 with the failing ranks' tracebacks, each line prefixed by
  its rank; every rank then records the same outcome, so all ranks exit with the same status and
  take the same path through the test protocol;
- fails a test that was skipped on some ranks only (decide skips with ``mpi_skip_unless``);
- checks that all ranks collected the same tests;
- gives each rank its own ``tmp_path`` base directory (pytest-mpi 0.6 lets all ranks create and
  clean pytest's numbered temp directories at once);
- runs a watchdog per test: after ``MPICOMP_TEST_TIMEOUT`` seconds (default 300, ``0`` turns it
  off) it prints the test, this rank's pending failure and the stacks of all threads to stderr,
  then calls ``MPI.COMM_WORLD.Abort(1)``, so a rank left waiting in a collective cannot hang CI;
- with ``--only-mpi``, deselects tests not marked ``mpi`` (pytest-mpi 0.6 ignores ``--only-mpi``
  when ``--with-mpi`` is also given).

mpi4py is imported only under MPI, with its default ``mpi4py.rc``. Fixtures: ``comm``,
``mpi_shared_tmp``, ``mpi_skip_unless``.
"""
from __future__ import annotations

import dataclasses
import faulthandler
import hashlib
import os
import re
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

# GPU kernels run under Numba's CUDA simulator here (no GPU; set before numba.cuda is imported).
# On a machine with a GPU, NUMBA_ENABLE_CUDASIM=0 runs them on the device instead.
os.environ.setdefault("NUMBA_ENABLE_CUDASIM", "1")

DEFAULT_TIMEOUT = 300.0
WATCHDOG_GRACE = 3.0  # s a rank without a failure of its own waits before reporting


@dataclasses.dataclass
class _MPIState:
    """What the harness keeps per MPI process (in ``config.stash``)."""

    world: Any  # MPI.COMM_WORLD, used by fixtures and tests
    comm: Any  # a duplicate of it for the harness's own collectives
    timeout: float
    stderr: Any  # the process's real stderr (fd 2 is captured while tests run)
    pending: tuple | None = None  # (nodeid, phase, text) of a local failure being gathered
    cleanup: list = dataclasses.field(default_factory=list)
    collect_errors: list = dataclasses.field(default_factory=list)


_STATE = pytest.StashKey[_MPIState]()


def _state(config: pytest.Config) -> _MPIState | None:
    return config.stash.get(_STATE, None)


def _testing_mpi(config: pytest.Config) -> bool:
    return bool(config.getoption("--with-mpi", False) or config.getoption("--only-mpi", False))


def format_ranks(ranks: list[int]) -> str:
    """Name a set of ranks compactly.

    Parameters
    ----------
    ranks : list of int
        Rank numbers.

    Returns
    -------
    str
        ``"rank 3"`` for one rank, otherwise e.g. ``"ranks 0-2,5"``.
    """
    ranks = sorted(set(ranks))
    runs: list[list[int]] = []
    for r in ranks:
        if runs and r == runs[-1][-1] + 1:
            runs[-1].append(r)
        else:
            runs.append([r])
    body = ",".join(str(x[0]) if len(x) == 1 else f"{x[0]}-{x[-1]}" for x in runs)
    return f"rank{'s' if len(ranks) > 1 else ''} {body}"


def _prefixed(texts: dict[int, str]) -> str:
    """Join per-rank texts, each line prefixed by its rank. Ranks whose texts differ only in
    object addresses are shown once, as the first of them."""
    groups: dict[str, list[int]] = {}
    for rank, text in sorted(texts.items()):
        groups.setdefault(re.sub(r" at 0x[0-9a-fA-F]+", "", text), []).append(rank)
    out = []
    for ranks in groups.values():
        text, tag = texts[ranks[0]], f"[{format_ranks(ranks)}] "
        out.extend(tag + line for line in (text.rstrip("\n") or "(no traceback)").splitlines())
    return "\n".join(out)


@dataclasses.dataclass
class _Crash:
    """Stands in for pytest's ``ReprFileLocation`` in the one-line summaries."""

    path: str
    lineno: int
    message: str

    def __str__(self) -> str:
        return f"{self.path}:{self.lineno}: {self.message}"


class RankedRepr:
    """Failure text gathered from several ranks, each line prefixed by its rank(s).

    Parameters
    ----------
    texts : dict
        Rank -> that rank's formatted failure (``report.longreprtext``).
    crash : tuple or None
        ``(rank, path, lineno, message)`` of the first failing rank, for one-line summaries.
    """

    def __init__(self, texts: dict[int, str], crash: tuple | None = None) -> None:
        self.text = _prefixed(texts)
        self.reprcrash = None
        if crash is not None:
            rank, path, lineno, message = crash
            self.reprcrash = _Crash(path, lineno, f"[{format_ranks([rank])}] {message}")

    def toterminal(self, tw) -> None:
        for line in self.text.splitlines():
            tw.line(line)

    def __str__(self) -> str:
        return self.text


def local_view(report: pytest.TestReport) -> dict:
    """Summarise one rank's report of one phase as a small picklable dict."""
    crash = getattr(report.longrepr, "reprcrash", None)
    return {
        "outcome": report.outcome,
        "text": "" if report.passed else report.longreprtext,
        "longrepr": report.longrepr if isinstance(report.longrepr, tuple) else None,
        "crash": None if crash is None else (str(crash.path), crash.lineno, crash.message),
        "wasxfail": getattr(report, "wasxfail", None),
        "sections": list(report.sections) if report.failed else [],
    }


def _kind(view: dict) -> str:
    if view["outcome"] == "skipped":
        return "xfailed" if view["wasxfail"] is not None else "skipped"
    return view["outcome"]


def combine(views: list[dict]) -> dict | None:
    """Decide the outcome every rank reports for one phase of one test.

    Parameters
    ----------
    views : list of dict
        ``local_view`` of each rank, indexed by rank.

    Returns
    -------
    dict or None
        ``None`` when all ranks agree (each keeps its own report), otherwise the fields to set:
        ``outcome``, ``longrepr``, ``sections`` and ``wasxfail``. A failure on any rank fails the
        test; an expected failure (xfail) on some ranks while the others pass is an xfail; a skip
        taken on some ranks only is a failure, since the skipping ranks may leave the others
        waiting in a collective.
    """
    kinds = [_kind(v) for v in views]
    failed = [r for r, k in enumerate(kinds) if k == "failed"]
    if failed:
        crash = next(((r, *views[r]["crash"]) for r in failed if views[r]["crash"]), None)
        sections = [(f"{title} [rank {r}]", body)
                    for r in failed for title, body in views[r]["sections"]]
        longrepr = RankedRepr({r: views[r]["text"] for r in failed}, crash)
        return {"outcome": "failed", "longrepr": longrepr, "sections": sections, "wasxfail": None}
    if len(set(kinds)) == 1:
        return None
    if set(kinds) == {"xfailed", "passed"}:
        r = kinds.index("xfailed")
        return {"outcome": "skipped", "longrepr": views[r]["text"], "sections": [],
                "wasxfail": views[r]["wasxfail"]}
    skipped = [r for r, k in enumerate(kinds) if k == "skipped"]
    others = [r for r in range(len(kinds)) if r not in skipped]
    reasons = {r: str(views[r]["longrepr"][2]) if views[r]["longrepr"] else views[r]["text"]
               for r in skipped}
    text = (f"skipped on {format_ranks(skipped)} but not on {format_ranks(others)}: a skip must be "
            f"taken on every rank (decide it collectively, e.g. with the mpi_skip_unless fixture)\n"
            + _prefixed(reasons))
    return {"outcome": "failed", "longrepr": text, "sections": [], "wasxfail": None}


def _apply(report: pytest.TestReport, verdict: dict) -> None:
    report.outcome = verdict["outcome"]
    report.longrepr = verdict["longrepr"]
    report.sections = verdict["sections"]
    if verdict["wasxfail"] is not None:
        report.wasxfail = verdict["wasxfail"]
    elif hasattr(report, "wasxfail"):
        del report.wasxfail  # else the session would not count the failure


# --------------------------------------------------------------------------- configuration


def _timeout_from_env() -> float:
    raw = os.environ.get("MPICOMP_TEST_TIMEOUT", "")
    try:
        return float(raw) if raw.strip() else DEFAULT_TIMEOUT
    except ValueError:
        raise pytest.UsageError(
            f"MPICOMP_TEST_TIMEOUT={raw!r} is not a number of seconds (e.g. 300; 0 turns the "
            "watchdog off)") from None


@pytest.hookimpl(trylast=True)
def pytest_configure(config: pytest.Config) -> None:
    """Under MPI: set up the harness state, per-rank temp dirs and rank-0-only reporting."""
    if not _testing_mpi(config):
        return
    from mpi4py import MPI

    world = MPI.COMM_WORLD
    state = _MPIState(world=world, comm=world.Dup(), timeout=_timeout_from_env(),
                      stderr=os.fdopen(os.dup(2), "w", buffering=1))
    config.stash[_STATE] = state
    config.add_cleanup(state.stderr.close)
    config.add_cleanup(state.comm.Free)

    # One numbered base temp dir per run, made by rank 0 (pytest's retention rules apply to it),
    # with a subdirectory per rank; so no two ranks create or clean the same directories.
    factory = getattr(config, "_tmp_path_factory", None)
    if factory is not None:
        root = state.comm.bcast(factory.getbasetemp() if world.rank == 0 else None, root=0)
        mine = root / f"rank{world.rank}"
        mine.mkdir(mode=0o700)
        factory._basetemp = mine.resolve()

    if world.rank != 0:
        reporter = config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            devnull = open(os.devnull, "w")
            config.add_cleanup(devnull.close)
            config.pluginmanager.unregister(reporter)
            config.pluginmanager.register(pytest.TerminalReporter(config, devnull),
                                          "terminalreporter")
        cache = getattr(config, "cache", None)
        if cache is not None:  # rank 0 alone writes .pytest_cache
            cache.set = lambda key, value: None


def pytest_report_header(config: pytest.Config) -> str | None:
    state = _state(config)
    if state is None:
        return None
    watchdog = f"{state.timeout:g} s per test" if state.timeout > 0 else "off"
    return (f"mpi: {state.world.size} ranks, rank 0 reports for all; "
            f"watchdog (MPICOMP_TEST_TIMEOUT): {watchdog}")


def pytest_collection_modifyitems(config: pytest.Config, items: list) -> None:
    """With ``--only-mpi``, deselect tests not marked ``mpi``."""
    if not config.getoption("--only-mpi", False):
        return
    keep = [item for item in items if item.get_closest_marker("mpi")]
    if len(keep) < len(items):
        config.hook.pytest_deselected(items=[i for i in items if not i.get_closest_marker("mpi")])
        items[:] = keep


@pytest.hookimpl(wrapper=True)
def pytest_make_collect_report(collector: pytest.Collector):
    report = yield
    state = _state(collector.config)
    if state is not None and report.failed:
        state.collect_errors.append((report.nodeid, report.longreprtext))
    return report


def pytest_collection_finish(session: pytest.Session) -> None:
    """Stop every rank if the ranks collected different tests or had different errors."""
    state = _state(session.config)
    if state is None:
        return
    view = ([item.nodeid for item in session.items], sorted(state.collect_errors))
    digest = hashlib.sha256(repr(view).encode()).hexdigest()
    if len(set(state.comm.allgather(digest))) == 1:
        return
    views = state.comm.gather(view, root=0)
    if state.world.rank == 0:
        lines = ["tests collected differ between MPI ranks; every rank must run the same tests:"]
        for rank, (ids, errors) in enumerate(views):
            extra = [i for i in ids if i not in set(views[0][0])]
            missing = sorted(set(views[0][0]) - set(ids))
            lines.append(f"[rank {rank}] collected {len(ids)}, collection errors {len(errors)}"
                         + (f"; not on rank 0: {extra[:5]}" if extra else "")
                         + (f"; missing: {missing[:5]}" if missing else ""))
            lines.extend(_prefixed({rank: text}) for _, text in errors)
        _write(session.config, "\n".join(lines))
    pytest.exit("tests collected differ between MPI ranks", returncode=pytest.ExitCode.INTERRUPTED)


def _write(config: pytest.Config, text: str) -> None:
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    if reporter is None:
        sys.stderr.write(text + "\n")
    else:
        reporter.ensure_newline()
        for line in text.splitlines():
            reporter.write_line(line, red=True)


# --------------------------------------------------------------------------- running a test


def _watchdog(state: _MPIState, nodeid: str) -> None:
    """Report a test that ran past the timeout, then abort the whole MPI job.

    A rank that failed in this test (the others probably wait for it in a collective) reports at
    once; the others wait a few seconds first, so that its report comes out whole, usually alone.
    """
    if state.pending is None:
        time.sleep(WATCHDOG_GRACE)
    lines = [f"watchdog: {nodeid} still running after {state.timeout:g} s "
             "(MPICOMP_TEST_TIMEOUT); probably waiting in a collective that another rank never "
             "entered. Aborting the MPI job."]
    if state.pending is not None:
        _, phase, text = state.pending
        lines += [f"this rank failed in {phase} of that test:", *text.splitlines()]
    with tempfile.TemporaryFile() as f:
        faulthandler.dump_traceback(f, all_threads=True)
        f.seek(0)
        lines += ["stacks of all threads:", *f.read().decode(errors="replace").splitlines()]
    tag = f"[rank {state.world.rank}] "
    state.stderr.write("\n" + "\n".join(tag + line for line in lines) + "\n")
    state.stderr.flush()
    time.sleep(1.0)  # let mpiexec pass the output on before the job is killed
    state.world.Abort(1)


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem):
    state = _state(item.config)
    if state is None or state.timeout <= 0:
        return (yield)
    timer = threading.Timer(state.timeout, _watchdog, args=(state, item.nodeid))
    timer.daemon = True
    timer.start()
    try:
        return (yield)
    finally:
        timer.cancel()


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    """Make each phase's report the same on every rank (after xfail handling).

    Subtests report through here too, so a subtest must be entered on every rank.
    """
    report = yield
    state = _state(item.config)
    if state is None:
        return report
    view = local_view(report)
    state.pending = (item.nodeid, call.when, view["text"]) if report.failed else None
    views = state.comm.allgather(view)  # also a barrier: every rank has finished this phase
    state.pending = None
    verdict = combine(views)
    if verdict is not None:
        _apply(report, verdict)
    if call.when == "teardown":
        for path in state.cleanup:
            shutil.rmtree(path, ignore_errors=True)
        state.cleanup.clear()
    return report


# --------------------------------------------------------------------------- fixtures


@pytest.fixture
def comm(request: pytest.FixtureRequest):
    """``MPI.COMM_WORLD`` (needs an MPI run: ``--with-mpi`` or ``--only-mpi``)."""
    state = _state(request.config)
    if state is None:
        pytest.fail("the comm fixture needs an MPI run: mark the test @pytest.mark.mpi and run "
                    "mpiexec -n N python -m pytest --with-mpi --only-mpi")
    return state.world


@pytest.fixture
def mpi_shared_tmp(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    """A temporary directory made by rank 0, the same path on every rank; removed afterwards.

    It lies under rank 0's ``tmp_path`` base, or under ``$MPICOMP_TEST_SHARED_TMPDIR`` when set
    (needed when the ranks run on several nodes: it must be a file system they all see). Every
    rank checks that it can see the directory. In a serial run it is a plain temp directory.
    """
    state = _state(request.config)
    if state is None:
        path = tmp_path_factory.mktemp("shared")
        yield path
        shutil.rmtree(path, ignore_errors=True)
        return
    world = state.world
    path = None
    if world.rank == 0:
        base = os.environ.get("MPICOMP_TEST_SHARED_TMPDIR")
        path = (Path(tempfile.mkdtemp(prefix="shared-", dir=base)) if base
                else tmp_path_factory.mktemp("shared"))
        state.cleanup.append(path)  # removed once every rank has finished the test's teardown
    path = Path(world.bcast(None if path is None else str(path), root=0))
    blind = [r for r, seen in enumerate(world.allgather(path.is_dir())) if not seen]
    if blind:
        pytest.fail(f"mpi_shared_tmp {path} made by rank 0 is not visible on "
                    f"{format_ranks(blind)}; set MPICOMP_TEST_SHARED_TMPDIR to a directory on a "
                    "file system all ranks share")
    yield path


@pytest.fixture
def one_torch_thread():
    """PyTorch on one thread during the test (its CPU kernels are then deterministic, so runs
    can be compared bit for bit); the thread count is restored after."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def mpi_skip_unless(request: pytest.FixtureRequest) -> Callable[[bool, str], None]:
    """A function ``skip_unless(condition, reason)`` that skips the test on every rank unless
    ``condition`` holds on every rank. Collective under MPI: call it on all ranks."""
    state = _state(request.config)

    def skip_unless(condition: bool, reason: str) -> None:
        oks = state.world.allgather(bool(condition)) if state else [bool(condition)]
        if not all(oks):
            where = f" (false on {format_ranks([r for r, ok in enumerate(oks) if not ok])})"
            # reported at the test's location, as a skip in the test itself would be
            raise pytest.skip.Exception(reason + (where if state else ""), _use_item_location=True)

    return skip_unless
