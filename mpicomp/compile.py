"""``python -m mpicomp.compile``: compile the Numba kernels ahead of time, once per machine.

A representative workload of every operator (each registry operator with its blocks, coders,
packings and roundings, compositions and per-layer use, float32 and float64, encode, decode,
decode-add and the aggregators' mean) runs under Numba's JIT; the signatures it leaves on the
kernels are exported from one extension module built with ``numba.pycc.CC`` for this CPU
(name and features of the JIT's, so the machine code, fastmath reductions included, is the
JIT's), with a manifest, in ``aot-<key>`` of the cache directory (`aot.cache_root`). Runs then
load it instead of importing Numba (`mpicomp.compress.aot`). Kernels with ``parallel=True``
are left to the JIT.

Without a C compiler or ``numba.pycc``, the workload still fills Numba's on-disk cache and the
command exits 0 with a note: runs then start as before, compiling nothing.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

from .compress import aot, jit

#: operator specs of the workload: every registry operator, its variants and compositions
SPECS = (
    "identity", "fp16", "bf16", "sign", "scaled_sign", "scaled_sign:block=7",
    "dither:p=inf,s=5,block=300", "dither:p=1,s=3,coder=golomb",
    "dither:p=2,s=2,block=64,coder=elias", "dither:p=inf,s=1",
    "qsgd:s=4", "qsgd:s=4,block=16", "qsgd:s=7,coder=elias", "qsgd:s=4,block=50,coder=elias",
    "qsgd:s=4,coder=golomb", "qsgd:s=16,block=33,coder=golomb",
    "terngrad", "terngrad:block=10,clip=2.5", "terngrad:pack=trits",
    "natural", "natural_dither:s=8", "natural_dither:p=inf,s=3,block=20",
    "natural_dither:p=1,s=3,block=4",
    "topk:k=0.1", "topk:k=3", "randk:k=0.3", "randk:k=0.2,shared=1",
    "uniform:bits=4", "uniform:bits=3,block=10,rounding=stochastic", "uniform:bits=8",
    "uniform:bits=16,block=100",
    "topk:k=0.5+qsgd:s=4,coder=elias", "topk:k=0.1+natural", "randk:k=0.25+qsgd:s=3,coder=golomb",
    "topk:k=0.3+uniform:bits=5", "randk:k=0.4+terngrad", "topk:k=0.5+scaled_sign:block=4",
    "topk:k=0.2+fp16",
)
DTYPES = (np.float32, np.float64)
SIZES = (1, 7, 1025, 5003)  # odd sizes: partial bytes, blocks and chunks
LAYERS = (700, 5, 300)


def vector(d: int, dtype, seed: int) -> np.ndarray:
    """A test vector with a wide range of magnitudes, a zero and a ± pair."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(d) * np.exp(rng.uniform(-3, 3, d))
    if d > 5:
        x[3], x[5] = 0.0, -x[4]
    return (x / 1e3).astype(dtype)


def exercise(op, x: np.ndarray, seed: int) -> list[bytes]:
    """Encode ``x`` (writable and read-only), decode, decode-add and average the payloads
    (writable arrays and read-only bytes); the bytes of every result."""
    from .comm.aggregate import mean_of

    d, dtype = x.size, x.dtype
    frozen = x.copy()
    frozen.flags.writeable = False
    out = []
    payloads = []
    for i, v in enumerate((x, frozen)):
        p = op.encode(v, np.random.default_rng(seed + i))
        payloads.append(p.buffer)
        out.append(p.buffer.tobytes())
    received = [np.frombuffer(p.tobytes(), dtype=np.uint8) for p in payloads]  # read-only
    for buf in payloads + received:
        out.append(op.decode(buf, d, dtype).tobytes())
        acc = np.linspace(-1.0, 1.0, d)
        op.decode_add(buf, d, dtype, acc)
        out.append(acc.tobytes())
    mean, kept = mean_of(op, payloads + received, d, dtype, keep=1)
    out += [mean.tobytes(), kept.tobytes()]
    return out


def workload(specs=SPECS, dtypes=DTYPES, sizes=SIZES) -> dict[str, list[bytes]]:
    """Run every operator of ``specs`` in every dtype and size (and per layer); the result
    bytes by case, for comparisons between kernel builds."""
    from .compress import make_compressor, per_layer

    results = {}
    for spec in specs:
        for dtype in dtypes:
            name = np.dtype(dtype).name
            op = make_compressor(spec)
            for d in sizes:
                if op.min_length() <= d:
                    results[f"{spec}/{name}/{d}"] = exercise(op, vector(d, dtype, seed=d), d)
            layered = per_layer(spec, LAYERS)
            x = vector(sum(LAYERS), dtype, seed=1)
            results[f"{spec}|layers/{name}"] = exercise(layered, x, seed=1)
    return results


# --- signatures and the build ----------------------------------------------------------------
def signatures(kernels) -> list[tuple]:
    """(kernel, argument types, return type) of every compiled overload of ``kernels``; an
    omitted argument becomes the type of its default (calls pass every argument)."""
    from numba import typeof, types

    out = []
    for k in kernels:
        seen = set()
        for sig in k.dispatcher.signatures:
            args = tuple(typeof(a.value) if isinstance(a, types.Omitted) else a for a in sig)
            if args in seen:
                continue
            seen.add(args)
            restype = k.dispatcher.overloads[sig].signature.return_type
            out.append((k, args, restype))
    return out


def thin_wrapper(dispatcher, nargs: int):
    """A Python function calling ``dispatcher`` with its ``nargs`` arguments (pycc exports
    it; the kernel itself is compiled with its own options: fastmath, inlined callees)."""
    names = ", ".join(f"a{i}" for i in range(nargs))
    namespace = {"kernel": dispatcher}
    exec(f"def wrapper({names}):\n    return kernel({names})\n", namespace)
    return namespace["wrapper"]


@contextlib.contextmanager
def host_target():
    """pycc as the JIT compiles: the code generator with the JIT's CPU features (pycc sets
    only a CPU name, whose default features can differ from this machine's, e.g. AVX-512
    masked in a VM), and entry points that release the GIL (``nogil=True``)."""
    from numba.core import codegen
    from numba.pycc import compiler

    class NoGilFlags(compiler.Flags):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.release_gil = True

    features = codegen.JITCPUCodegen._get_host_cpu_features
    saved = codegen.AOTCPUCodegen._customize_tm_features, compiler.Flags
    codegen.AOTCPUCodegen._customize_tm_features = lambda self: features(self)
    compiler.Flags = NoGilFlags
    try:
        yield
    finally:
        codegen.AOTCPUCodegen._customize_tm_features, compiler.Flags = saved


def toolchain_problem() -> str | None:
    """Why pycc cannot build here (no ``numba.pycc``, no working C compiler), or None."""
    try:
        with warnings.catch_warnings():
            # numba.pycc is pending deprecation (Numba ≥ 0.57): its warnings are expected here
            warnings.simplefilter("ignore", DeprecationWarning)
            warnings.simplefilter("ignore", PendingDeprecationWarning)
            from numba.pycc.platform import external_compiler_works
    except ImportError as exc:
        return f"numba.pycc is not available ({exc})"
    if not external_compiler_works():
        return "no working C compiler (pycc needs the one Python's extensions are built with)"
    return None


def build(entries: list[tuple], key: str, parts: dict, target: Path) -> dict:
    """Compile ``entries`` (kernel, args, return type) into one extension module and write it
    with its manifest to ``target`` atomically (a temporary directory renamed into place)."""
    import json

    from numba.core import codegen, config

    with warnings.catch_warnings():
        # numba.pycc is pending deprecation (Numba ≥ 0.57): silence only its warnings
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", PendingDeprecationWarning)
        from numba.pycc import CC

        module = f"mpicomp_aot_{key}"
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
        try:
            cc = CC(module, source_module=__name__)
            cc.output_dir = str(tmp)
            cc.target_cpu = config.CPU_NAME or codegen.JITCPUCodegen._get_host_cpu_name(None)
            manifest_entries = []
            for i, (k, args, restype) in enumerate(entries):
                symbol = f"k{i}"
                cc.export(symbol, restype(*args))(thin_wrapper(k.dispatcher, len(args)))
                manifest_entries.append({"kernel": k.name, "args": [str(a) for a in args],
                                         "symbol": symbol})
            with host_target():
                cc.compile()
            library = cc.output_file
            manifest = {"format": aot.FORMAT, "key": key, "module": module, "library": library,
                        "sha256": aot.file_hash(tmp / library), "cpu": cc.target_cpu,
                        "parts": parts, "entries": manifest_entries}
            (tmp / aot.MANIFEST).write_text(json.dumps(manifest, indent=1))
            install(tmp, target)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return manifest


def install(tmp: Path, target: Path) -> None:
    """Rename the finished build ``tmp`` to ``target``; a build already there (another job's,
    or one that failed to load) is moved aside first and removed after."""
    try:
        os.rename(tmp, target)
        return
    except OSError:
        pass
    old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
    try:
        os.rename(target, old / "build")
    except FileNotFoundError:
        pass
    os.rename(tmp, target)
    shutil.rmtree(old, ignore_errors=True)


def usable(target: Path, key: str) -> bool:
    """True if ``target`` holds a build for ``key`` whose library matches its manifest."""
    import json

    try:
        manifest = json.loads((target / aot.MANIFEST).read_text())
        return (manifest.get("format") == aot.FORMAT and manifest.get("key") == key
                and aot.file_hash(target / manifest["library"]) == manifest["sha256"])
    except (OSError, ValueError, KeyError, TypeError):
        return False


def byte_compile() -> None:
    """Write the package's bytecode (``__pycache__``) where it is missing, also when Python is
    told not to (``PYTHONDONTWRITEBYTECODE``): otherwise every rank of every run compiles each
    module from source again. A package directory that cannot be written is left as it is."""
    import compileall

    package = Path(__file__).resolve().parent
    with contextlib.redirect_stdout(None):
        compileall.compile_dir(package, quiet=2, workers=1)


def jit_marker(key: str) -> Path:
    """The file that says Numba's cache was warmed for ``key`` where no build can be made."""
    return aot.build_dir(key).with_name(f"jit-warm-{key}")


def ready() -> bool:
    """Whether this machine has the kernels of this process's key compiled: a build, or (no
    C compiler here) Numba's cache warmed by `main`."""
    key = aot.build_key()
    return usable(aot.build_dir(key), key) or jit_marker(key).exists()


def compile_once(mpi_comm) -> None:
    """Before a run's set-up (collective): one rank per node compiles the kernels (`main`)
    when this machine has not, while the node's other ranks sleep, so a cold cache costs one
    compilation instead of one per rank. Nothing to do with a build in place, without Numba, or
    under ``MPICOMP_AOT=0``; a failed build is reported and the ranks compile as they go."""
    from mpi4py import MPI

    from .comm.agreement import wait_patiently

    if not (jit.HAVE_NUMBA and aot.aot_allowed()):
        return
    node = mpi_comm.Split_type(MPI.COMM_TYPE_SHARED)
    try:
        if node.Get_rank() == 0:
            try:
                if not ready() and cache_writable():
                    print("mpicomp: compiling the kernels once for this machine (python -m "
                          "mpicomp.compile; about a minute)", file=sys.stderr, flush=True)
                    with contextlib.redirect_stdout(sys.stderr):
                        main([])
            except Exception as exc:  # the run goes on; its ranks compile what they use
                print(f"mpicomp: compiling the kernels failed ({type(exc).__name__}: {exc}); "
                      "each rank compiles what it uses instead", file=sys.stderr, flush=True)
        wait_patiently(node)
    finally:
        node.Free()


def cache_writable() -> bool:
    """Whether builds can be stored (`aot.cache_root`, made if missing): where they cannot,
    a run does not try one (it would, in vain, at every start)."""
    root = aot.cache_root()
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError:
        return False
    return os.access(root, os.W_OK | os.X_OK)


def main(argv=None) -> int:
    """The command line (exit status)."""
    parser = argparse.ArgumentParser(prog="python -m mpicomp.compile", description=__doc__.split(
        "\n\n")[0])
    parser.add_argument("--cache-dir", help=f"where builds are kept (default ${aot.CACHE_ENV}, "
                        "else ~/.cache/mpicomp)")
    parser.add_argument("--force", action="store_true", help="rebuild even if up to date")
    parser.add_argument("--spec", action="append", help="an operator spec of the workload "
                        "(repeatable; default: every one of SPECS)")
    args = parser.parse_args(argv)
    if args.cache_dir:
        os.environ[aot.CACHE_ENV] = args.cache_dir
    if not jit.HAVE_NUMBA:
        print("mpicomp.compile: Numba is not installed; the kernels run as plain Python, "
              "there is nothing to compile.")
        return 0
    start = time.perf_counter()
    parts = aot.key_parts()
    key = aot.build_key(parts)
    target = aot.build_dir(key)
    byte_compile()
    if not args.force and usable(target, key):
        print(f"mpicomp.compile: up to date: {target}")
        return 0
    aot.jit_all("python -m mpicomp.compile")
    specs = tuple(args.spec) if args.spec else SPECS
    workload(specs)
    kernels = [k for k in aot.registry() if k.dispatcher is not None]
    entries = signatures(k for k in kernels if k.ahead)
    t_jit = time.perf_counter() - start
    left = sorted(k.name for k in kernels if not k.ahead and k.dispatcher.signatures)
    problem = toolchain_problem()
    if problem:
        target.parent.mkdir(parents=True, exist_ok=True)
        jit_marker(key).write_text(f"{problem}\n")
        print(f"mpicomp.compile: cannot compile ahead of time: {problem}.\n"
              f"  Numba's cache is warm instead ({len(entries)} signatures, {t_jit:.1f} s): runs "
              "compile nothing but still import Numba at start-up.")
        return 0
    manifest = build(entries, key, parts, target)
    size = (target / manifest["library"]).stat().st_size
    print(f"mpicomp.compile: {len(entries)} kernel signatures "
          f"({len({e['kernel'] for e in manifest['entries']})} kernels) for {manifest['cpu']} "
          f"in {target}\n  {manifest['library']}: {size / 2**20:.1f} MiB; workload under the JIT "
          f"{t_jit:.1f} s, total {time.perf_counter() - start:.1f} s")
    if left:
        print(f"  left to the JIT (parallel=True): {', '.join(left)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
