"""Ahead-of-time compiled kernels (`mpicomp.compress.aot`, ``python -m mpicomp.compile``).

One build of a workload that covers every registry operator is shared by the session (in a
temporary cache directory); each check that loads it runs in a child process, so this process's
kernels (JIT, or the user's own build) stay out of it.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from mpicomp.compress import aot, jit
from mpicomp.compress.registry import OPERATORS

pytestmark = pytest.mark.skipif(not jit.HAVE_NUMBA, reason="needs numba")

REPO = Path(__file__).resolve().parents[1]
#: one or more specs per registry operator: blocks, both coders, trits, stochastic rounding,
#: a composition, and the default app's compressor
TEST_SPECS = (
    "identity", "fp16", "bf16", "sign", "scaled_sign:block=7", "dither:p=inf,s=1",
    "dither:p=2,s=3,block=300", "qsgd:s=7,coder=elias", "qsgd:s=5,block=300,coder=golomb",
    "terngrad", "terngrad:pack=trits", "natural", "natural_dither:p=1,s=3,block=4",
    "topk:k=0.1", "randk:k=0.2,shared=1", "uniform:bits=3,block=5,rounding=stochastic",
    "uniform:bits=8", "topk:k=0.3+natural",
)
#: sizes of the comparisons: odd, and none of them a size the build's workload ran
SIZES = (3, 999, 4099, 65541)


def child(code: str, cache: Path | None = None, **env) -> dict:
    """Run ``code`` (pieces joined by `join`) in a fresh interpreter (kernels from the build
    in ``cache``, if given); it prints one JSON line last, returned here."""
    full = {**os.environ, "PYTHONPATH": str(REPO), **env}
    if aot.AOT_ENV not in env:
        full.pop(aot.AOT_ENV, None)
    if cache is not None:
        full[aot.CACHE_ENV] = str(cache)
    proc = subprocess.run([sys.executable, "-c", join(code)], env=full,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def join(*pieces: str) -> str:
    """Python source from indented pieces."""
    return "".join(textwrap.dedent(p) for p in pieces)


@pytest.fixture(scope="session")
def build(tmp_path_factory) -> Path:
    """A cache directory holding one build of the `TEST_SPECS` workload."""
    cache = tmp_path_factory.mktemp("aot-cache")
    args = [arg for spec in TEST_SPECS for arg in ("--spec", spec)]
    proc = subprocess.run([sys.executable, "-m", "mpicomp.compile", "--cache-dir", str(cache),
                           *args], env={**os.environ, "PYTHONPATH": str(REPO)},
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "kernel signatures" in proc.stdout, proc.stdout
    return cache


def build_path(cache: Path) -> Path:
    (path,) = cache.glob("aot-*")
    return path


def copy_build(cache: Path, to: Path, name: str | None = None) -> Path:
    """A copy of the build in ``cache`` under ``to`` (in ``aot-<name>`` if given)."""
    src = build_path(cache)
    dst = to / (f"aot-{name}" if name else src.name)
    shutil.copytree(src, dst)
    return dst


PROBE = """
    import json, sys, warnings
    import numpy as np
    warnings.simplefilter("always")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        from mpicomp.compress import aot, make_compressor
        op = make_compressor("qsgd:s=5,block=300,coder=golomb")
        x = np.random.default_rng(3).standard_normal(1001)
        p = op.encode(x, np.random.default_rng(4))
        y = op.decode(p.buffer, x.size, x.dtype)
    print(json.dumps({"status": aot.status(), "numba": "numba" in sys.modules,
                      "llvmlite": "llvmlite" in sys.modules,
                      "warnings": [str(w.message) for w in caught if w.category is RuntimeWarning],
                      "payload": p.buffer.tobytes().hex(), "decoded": y.tobytes().hex()}))
"""


@pytest.fixture(scope="session")
def jit_probe() -> dict:
    """`PROBE` under the JIT (no build loaded)."""
    out = child(PROBE, MPICOMP_AOT="0")
    assert out["numba"] and out["status"]["build"] is None
    return out


# --- the build against the JIT ---------------------------------------------------------------
def test_workloads_cover_every_registry_operator():
    from mpicomp import compile as aot_compile

    for specs in (TEST_SPECS, aot_compile.SPECS):
        named = {spec.split("+")[-1].split(":")[0] for spec in specs}
        named |= {spec.split("+")[0].split(":")[0] for spec in specs}
        assert set(OPERATORS) <= named, set(OPERATORS) - named
    assert {"coder=elias", "coder=golomb"} <= {p for s in TEST_SPECS for p in s.split(",")
                                               if p.startswith("coder=")}


WORKLOAD = """
    import json, pickle, sys
    from mpicomp.compile import workload
    from mpicomp.compress import aot
    results = workload({specs!r}, sizes={sizes!r})
    with open({out!r}, "wb") as f:
        pickle.dump(results, f)
    print(json.dumps({{"status": aot.status(), "numba": "numba" in sys.modules,
                       "llvmlite": "llvmlite" in sys.modules}}))
"""


def test_aot_bytes_equal_jit_bytes_and_never_import_numba(build, tmp_path):
    """Every operator and dtype, encode (writable and read-only inputs), decode, decode-add and
    mean: the build writes the JIT's bytes, and the process never imports Numba."""
    runs = {}
    for kind, env in (("aot", {}), ("jit", {"MPICOMP_AOT": "0"})):
        out = tmp_path / f"{kind}.pkl"
        code = WORKLOAD.format(specs=TEST_SPECS, sizes=SIZES, out=str(out))
        info = child(code, build if kind == "aot" else None, **env)
        runs[kind] = info, pickle.loads(out.read_bytes())
    (aot_info, aot_results), (jit_info, jit_results) = runs["aot"], runs["jit"]
    assert aot_info["status"]["build"] == str(build_path(build))
    assert aot_info["status"]["jit"] is None
    assert not aot_info["numba"] and not aot_info["llvmlite"]
    assert jit_info["numba"] and jit_info["status"]["build"] is None
    assert aot_results.keys() == jit_results.keys()
    assert len(aot_results) >= 2 * len(TEST_SPECS) * len(SIZES)
    differ = [case for case in aot_results if aot_results[case] != jit_results[case]]
    assert not differ, f"AOT and JIT bytes differ in {differ}"
    # the comparison is not vacuous: the operators' payloads depend on the data
    assert jit_results["qsgd:s=7,coder=elias/float32/999"][0] != \
        jit_results["qsgd:s=7,coder=elias/float64/999"][0]


def test_app_run_with_the_build_never_imports_numba(build, tmp_path):
    """The default app (DIANA, ``dither:p=inf,s=1``) runs its steps on the build alone."""
    code = f"""
        import json, sys
        from mpicomp.apps.diana import main
        rc = main(["--iters", "2", "--quiet", "--progress", "off",
                   "--trace", {str(tmp_path / "t.h5")!r}])
        from mpicomp.compress import aot
        print(json.dumps({{"rc": rc, "numba": "numba" in sys.modules,
                           "llvmlite": "llvmlite" in sys.modules, "status": aot.status()}}))
    """
    out = child(code, build)
    assert out["rc"] == 0
    assert out["status"]["build"] is not None and out["status"]["jit"] is None
    assert not out["numba"] and not out["llvmlite"]


def test_importing_the_package_does_not_import_numba():
    out = child("""
        import json, sys
        import mpicomp.compress, mpicomp.compress.kernels, mpicomp.compress.coding
        from mpicomp.compress import jit
        print(json.dumps({"numba": "numba" in sys.modules, "have": jit.HAVE_NUMBA,
                          "kernel": type(jit.pack_uint).__name__}))
    """)
    assert out == {"numba": False, "have": True, "kernel": "Kernel"}


# --- argument keys ----------------------------------------------------------------------------
def _arrays():
    base = np.arange(60, dtype=np.float64)
    grid = base.reshape(6, 10)
    cube = base.reshape(3, 4, 5)
    yield from (base, base[::2], base[3:9], base[:0], base[::2][:1], grid, grid.T, grid[:, 2:5],
                grid[::2], grid[:, :1], cube, cube.transpose(2, 1, 0), cube[:, ::2],
                np.asfortranarray(cube), np.zeros(()))
    for dtype in (np.float32, np.uint8, np.uint32, np.uint64, np.int64, np.int8, np.bool_,
                  np.complex128, np.float16):
        yield np.zeros(7, dtype=dtype)
        yield np.zeros((3, 4), dtype=dtype).T
    view = np.frombuffer(bytes(17), dtype=np.uint8)[1:13].view("<u4")  # read-only, unaligned
    yield view


@pytest.mark.parametrize("readonly", [False, True])
def test_array_keys_are_numbas_types(readonly):
    from numba import typeof

    for a in _arrays():
        if readonly:
            a = a.view()
            a.flags.writeable = False
        want = str(typeof(a))
        assert aot.type_name(a) == want, (a.shape, a.strides, a.dtype, want)
        assert ("readonly" in want) == (not a.flags.writeable)


def test_scalar_keys_are_numbas_types():
    from numba import typeof

    for v in (True, False, np.bool_(True), 0, 1, -1, 2**31 - 1, 2**31, -2**31 - 1, 2**40,
              2**63 - 1, -2**63, 2**63, 2**64 - 1, 1.5, -0.0, float("nan"), 1 + 2j,
              np.float32(1), np.float64(2), np.uint64(5), np.int32(-3), np.uint8(7),
              np.int64(2**62), np.complex64(1j)):
        assert aot.type_name(v) == str(typeof(v)), v


def test_unsupported_arguments_have_no_key():
    """What Numba rejects (or types otherwise) never matches a manifest entry."""
    for v in (2**64, -2**63 - 1, None, "s", (1, 2), np.zeros(3, dtype=">f8"),
              np.zeros(2, dtype="U3"), np.ma.masked_array([1.0, 2.0])):
        assert aot.type_name(v) is None, v
    assert aot.arg_key((np.zeros(3), None)) is None
    assert aot.arg_key((np.zeros(3), 1)) == ("array(float64, 1d, C)", "int64")


def test_defaults_and_keywords_complete_the_key():
    from mpicomp.compress import numba_kernels as nk

    k = nk.sign_unpack
    if not isinstance(k, aot.Kernel):
        pytest.skip("this process already runs the JIT")
    buf, scales, out = np.zeros(2, np.uint8), np.ones(1), np.zeros(9)
    full = (buf, scales, 16, out, False)
    assert k.complete((buf, scales, 16, out), {}) == full
    assert k.complete((buf, scales), {"block": 16, "out": out}) == full
    assert k.complete((buf, scales, 16, out), {"accumulate": True})[-1] is True
    assert k.complete((buf,), {}) is None  # missing arguments without defaults
    assert k.complete(full, {"bogus": 1}) is None
    assert k.complete(full + (1,), {}) is None


# --- stale, foreign and damaged builds -------------------------------------------------------
STALE = """
    from mpicomp.compress import aot
    real = aot.source_hashes
    aot.source_hashes = lambda: {**real(), "mpicomp.compress.numba_kernels": "edited"}
"""


def test_stale_build_is_never_used(build, tmp_path, jit_probe):
    """A build for other kernel sources sits in its own ``aot-<key>``: a process whose sources
    differ does not look at it (no warning), and compiles with Numba."""
    cache = tmp_path / "cache"
    copy_build(build, cache)
    out = child(join(STALE, PROBE), cache)
    assert out["status"]["build"] is None and out["numba"]
    assert out["warnings"] == []
    assert (out["payload"], out["decoded"]) == (jit_probe["payload"], jit_probe["decoded"])
    fresh = child(PROBE, cache)  # the same copy serves a process with the build's sources
    assert fresh["status"]["build"] is not None and not fresh["numba"]
    assert (fresh["payload"], fresh["decoded"]) == (jit_probe["payload"], jit_probe["decoded"])


def test_foreign_manifest_is_refused_with_one_warning(build, tmp_path, jit_probe):
    """A build copied into the directory of another key: its manifest does not match."""
    cache = tmp_path / "cache"
    stale_key = child(join(STALE, """
        import json
        print(json.dumps({"key": aot.build_key()}))
    """))["key"]
    copy_build(build, cache, name=stale_key)
    out = child(join(STALE, PROBE), cache)
    assert out["status"]["build"] is None and out["numba"]
    assert len(out["warnings"]) == 1 and "manifest for key" in out["warnings"][0]
    assert (out["payload"], out["decoded"]) == (jit_probe["payload"], jit_probe["decoded"])


def _flip_bytes(path: Path) -> None:
    data = bytearray(path.read_bytes())
    mid = len(data) // 2
    data[mid:mid + 64] = bytes(64)
    path.write_bytes(bytes(data))


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _not_a_library(path: Path) -> None:
    """A file that is no shared library, with its hash in the manifest (what the hash cannot
    catch: the loader refuses it)."""
    path.write_bytes(b"not an ELF file\n" * 100)
    manifest_path = path.parent / aot.MANIFEST
    manifest = json.loads(manifest_path.read_text())
    manifest["sha256"] = aot.file_hash(path)
    manifest_path.write_text(json.dumps(manifest))


def _missing_symbol(path: Path) -> None:
    manifest_path = path.parent / aot.MANIFEST
    manifest = json.loads(manifest_path.read_text())
    manifest["entries"][0]["symbol"] = "k999999"
    manifest_path.write_text(json.dumps(manifest))


def _broken_manifest(path: Path) -> None:
    manifest_path = path.parent / aot.MANIFEST
    manifest_path.write_text(manifest_path.read_text()[:100])


@pytest.mark.parametrize("damage,message", [
    (_flip_bytes, "does not match its manifest"),
    (_truncate, "does not match its manifest"),
    (_not_a_library, "ImportError"),
    (_missing_symbol, "AttributeError"),
    (_broken_manifest, "unreadable manifest"),
])
def test_damaged_build_falls_back_to_jit_with_one_warning(build, tmp_path, jit_probe, damage,
                                                          message):
    cache = tmp_path / "cache"
    path = copy_build(build, cache)
    (library,) = path.glob("*.so")
    damage(library)
    out = child(PROBE, cache)
    assert out["status"]["build"] is None and out["numba"]
    assert len(out["warnings"]) == 1, out["warnings"]
    assert message in out["warnings"][0] and str(path) in out["warnings"][0]
    assert (out["payload"], out["decoded"]) == (jit_probe["payload"], jit_probe["decoded"])


def test_settings_that_change_the_kernels_skip_the_build(build, jit_probe):
    for env in ({"NUMBA_BOUNDSCHECK": "1"}, {"MPICOMP_AOT": "0"}):
        out = child(PROBE, build, **env)
        assert out["status"]["build"] is None and out["numba"], env
        assert out["payload"] == jit_probe["payload"]
    assert child(PROBE, build, NUMBA_OPT="2")["status"]["build"] is None  # another key


# --- the JIT fallback -------------------------------------------------------------------------
def test_jit_fallback_rebinds_kernels_and_numba_names():
    out = child("""
        import json
        import numpy as np
        from mpicomp.compress import aot, coding, jit, numba_kernels as nk
        lazy = nk.chunk_words
        nk.pack_fields(np.arange(100, dtype=np.uint32) % 8, 3)  # the first call: no build
        import numba
        from numba.core.registry import CPUDispatcher
        print(json.dumps({
            "dispatchers": all(isinstance(v, CPUDispatcher) for v in (
                jit.pack_chunk, nk.pack_chunk, nk.chunk_words, coding.unpack_chunk,
                coding.golomb_encode, nk.block_norms)),
            "shared": nk.chunk_words is jit.chunk_words is lazy.dispatcher,
            "lazy_forwards": int(lazy(np.uint64(1), 0, 2, np.empty(1, np.uint64))[0]),
            "expected": int(jit.splitmix(np.uint64(1), 0) & np.uint64(0xFFFFFFFF)),
            "fastmath": sorted(nk._norm2.targetoptions["fastmath"]),
            "cache": nk.dither_range._cache.__class__.__name__,
            "numba": jit.numba is numba, "prange": jit.prange is numba.prange,
            "late": isinstance(jit.njit(lambda a: a + 1, cache=False), CPUDispatcher),
            "status": aot.status()}))
    """, MPICOMP_AOT="0")
    assert out["dispatchers"] and out["shared"]
    assert out["lazy_forwards"] == out["expected"]
    assert out["fastmath"] == ["nsz", "reassoc"]
    assert out["cache"] == "FunctionCache"  # cache=True kept
    assert out["numba"] and out["prange"] and out["late"]
    assert "pack_uint" in out["status"]["jit"]


def test_parallel_kernels_are_left_to_the_jit(build, tmp_path):
    (tmp_path / "par_kernels.py").write_text(textwrap.dedent("""
        from mpicomp.compress.jit import njit, prange

        @njit(parallel=True)
        def total(x):
            s = 0.0
            for i in prange(x.size):
                s += x[i]
            return s
    """))
    out = child("""
        import json, sys
        import numpy as np
        import par_kernels
        from mpicomp.compress import aot, numba_kernels as nk

        assert isinstance(par_kernels.total, aot.Kernel) and not par_kernels.total.ahead
        nk.pack_fields(np.arange(100, dtype=np.uint32) % 8, 3)
        before = "numba" in sys.modules
        total = par_kernels.total(np.arange(10.0))
        import numba
        print(json.dumps({"before": before, "total": total, "status": aot.status(),
                          "prange": par_kernels.prange is numba.prange,
                          "parallel": par_kernels.total.targetoptions.get("parallel")}))
    """, build, PYTHONPATH=f"{tmp_path}{os.pathsep}{REPO}")
    assert out["before"] is False  # the other kernels ran from the build
    assert out["total"] == 45.0
    assert "par_kernels.total" in out["status"]["jit"]
    assert out["prange"] and out["parallel"]


# --- python -m mpicomp.compile ----------------------------------------------------------------
def test_compile_is_up_to_date_the_second_time(build):
    proc = subprocess.run([sys.executable, "-m", "mpicomp.compile", "--cache-dir", str(build)],
                          env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0 and "up to date" in proc.stdout
    manifest = json.loads((build_path(build) / aot.MANIFEST).read_text())
    kernels = {e["kernel"] for e in manifest["entries"]}
    assert {"mpicomp.compress.numba_kernels.dither_range",
            "mpicomp.compress.coding.golomb_encode",
            "mpicomp.compress.coding.elias_decode_values"} <= kernels
    assert manifest["cpu"] and len(manifest["entries"]) == len({e["symbol"] for e in
                                                                manifest["entries"]})


def test_compile_without_a_toolchain_warms_the_cache_and_exits_0(tmp_path):
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(f"""
        import sys
        import mpicomp.compile as c
        c.toolchain_problem = lambda: "no working C compiler (test)"
        sys.exit(c.main(["--cache-dir", {str(tmp_path)!r}, "--spec", "qsgd:s=4"]))
    """)], env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True, text=True,
        timeout=600)
    assert out.returncode == 0, out.stderr
    assert "cannot compile ahead of time: no working C compiler (test)" in out.stdout
    assert "cache is warm" in out.stdout
    assert not list(tmp_path.glob("aot-*"))


def test_install_replaces_a_damaged_build_atomically(tmp_path):
    from mpicomp.compile import install, usable

    target = tmp_path / "aot-k"
    target.mkdir()
    (target / aot.MANIFEST).write_text("{garbage")
    assert not usable(target, "k")
    new = tmp_path / ".aot-k.tmp"
    new.mkdir()
    (new / "lib.so").write_bytes(b"library")
    (new / aot.MANIFEST).write_text(json.dumps({
        "format": aot.FORMAT, "key": "k", "library": "lib.so",
        "sha256": aot.file_hash(new / "lib.so")}))
    install(new, target)
    assert usable(target, "k") and not usable(target, "other")
    assert not new.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["aot-k"]  # nothing left aside
