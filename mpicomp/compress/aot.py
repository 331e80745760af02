"""Lazy kernels: an ahead-of-time (AOT) compiled build when there is one, Numba's JIT otherwise.

`jit.njit` wraps each kernel in a `Kernel`. Its first call looks for the build that
``python -m mpicomp.compile`` leaves in the cache directory (`cache_root`): one extension
module exporting every (kernel, argument types) the operators use, and a manifest mapping
(kernel name, `arg_key`) to the exported function. A call whose types the manifest holds runs
that function, so such a process never imports Numba or llvmlite. Any other call switches the
whole process to the JIT (`jit_all`): Numba is imported then, and every kernel of the kernel
modules becomes a ``numba.njit(cache=True, nogil=True, …)`` dispatcher, bound in place of the
lazy kernel in its modules' globals (compiled kernels call each other through them).

The build lives in ``aot-<key>``: `build_key` hashes the kernel modules' sources, the Numba,
NumPy and Python versions and the CPU, so a stale or foreign build is never looked at. A build
whose files do not match their manifest is not loaded: one warning, then the JIT.
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import importlib.util
import json
import os
import platform
import sys
import sysconfig
import threading
import warnings
from pathlib import Path

import numpy as np

#: the modules whose `Kernel` objects the build holds and the JIT rebinds (sources: `build_key`)
KERNEL_MODULES = ("mpicomp.compress.jit", "mpicomp.compress.numba_kernels",
                  "mpicomp.compress.coding")
#: further sources of the key: the argument keys are this module's rules
KEYED_MODULES = KERNEL_MODULES + (__name__,)
#: where builds are kept (default ``$XDG_CACHE_HOME/mpicomp``, else ``~/.cache/mpicomp``)
CACHE_ENV = "MPICOMP_CACHE_DIR"
#: ``MPICOMP_AOT=0`` never loads a build
AOT_ENV = "MPICOMP_AOT"
#: Numba settings that change the JIT's machine code: part of the key
KEY_ENV = ("NUMBA_CPU_NAME", "NUMBA_CPU_FEATURES", "NUMBA_OPT", "NUMBA_LOOP_VECTORIZE",
           "NUMBA_SLP_VECTORIZE", "NUMBA_ENABLE_AVX", "NUMBA_FASTMATH")
#: Numba settings that change what a kernel does (plain Python, index checks): no build then
JIT_ONLY_ENV = ("NUMBA_DISABLE_JIT", "NUMBA_BOUNDSCHECK")
FORMAT = 1
MANIFEST = "manifest.json"


class _NumbaStandIn:
    """``numba`` until Numba is imported: any attribute imports it (the kernels' globals get
    the real module when the process switches to the JIT)."""

    def __getattr__(self, name):
        import numba

        return getattr(numba, name)

    def __repr__(self):
        return "<numba, imported on first use>"


numba_stand_in = _NumbaStandIn()
#: global name → stand-in the kernel modules bind until the JIT replaces it by Numba's object
STAND_INS = {"numba": numba_stand_in, "prange": range}

_lock = threading.RLock()
_registry: list[Kernel] = []
_tables: dict[str, dict[tuple, object]] | None = None  # kernel name → {arg key: AOT function}
_numba = None  # the numba module once the process runs the JIT
_status = {"build": None, "entries": 0, "jit": None}


class Kernel:
    """A Numba kernel compiled ahead of time or on first use (`jit.njit` makes them).

    Parameters
    ----------
    fn : function
        The kernel's Python source (``py_func``, as on a Numba dispatcher).
    options : dict
        Keyword arguments of ``numba.njit``; ``parallel=True`` kernels are never in a build.
    """

    def __init__(self, fn, options: dict):
        functools.update_wrapper(self, fn)
        self.py_func = fn
        self.options = dict(options)
        self.name = f"{fn.__module__}.{fn.__qualname__}"
        self.ahead = not self.options.get("parallel", False)
        code = fn.__code__
        self._params = code.co_varnames[:code.co_argcount]
        self._defaults = fn.__defaults__ or ()
        self._table = None  # {arg key: AOT function}; None until the first call looks
        self.dispatcher = None  # the Numba dispatcher once the process runs the JIT

    def __repr__(self):
        return f"<kernel {self.name}>"

    def __call__(self, *args, **kwargs):
        if self.dispatcher is not None:
            return self.dispatcher(*args, **kwargs)
        if self._table is None:
            load()
        if self._table:
            full = self.complete(args, kwargs)
            fn = self._table.get(arg_key(full)) if full is not None else None
            if fn is not None:
                return fn(*full)
        jit_all(f"{self.name}{arg_key(self.complete(args, kwargs) or args)} is not in a build")
        return self.dispatcher(*args, **kwargs)

    def complete(self, args: tuple, kwargs: dict) -> tuple | None:
        """All positional arguments, defaults filled in (None if they do not bind)."""
        n = len(self._params)
        if len(args) > n:
            return None
        if kwargs:
            kwargs = dict(kwargs)
            args = list(args)
            for name in self._params[len(args):]:
                if name not in kwargs:
                    break
                args.append(kwargs.pop(name))
            if kwargs:
                return None
            args = tuple(args)
        missing = n - len(args)
        if missing:
            if missing > len(self._defaults):
                return None
            args += self._defaults[len(self._defaults) - missing:]
        return args


def kernel(fn, options: dict):
    """``fn`` as a lazy `Kernel`, or as a Numba dispatcher once the process runs the JIT."""
    with _lock:
        if _numba is not None:
            return _numba.njit(**options)(fn)
        k = Kernel(fn, options)
        _registry.append(k)
        return k


# --- argument keys: numba.typeof's names, computed without Numba ------------------------------
_array_names: dict[tuple, str | None] = {}
_INTP = f"int{8 * np.dtype(np.intp).itemsize}"


def dtype_name(dtype: np.dtype) -> str | None:
    """Numba's name of a NumPy scalar type (``float32``, ``bool``…), None where it has none."""
    if not dtype.isnative or dtype.kind not in "biufc" or dtype.fields is not None:
        return None
    return "bool" if dtype.kind == "b" else dtype.name


def type_name(value) -> str | None:
    """``str(numba.typeof(value))`` for the kinds of argument kernels receive: arrays
    (dtype, ndim, layout C/F/A, read-only), bool, int, float, complex and NumPy scalars; None
    for anything else (the JIT then decides)."""
    if isinstance(value, np.ndarray):
        if isinstance(value, np.ma.MaskedArray):  # Numba refuses them
            return None
        flags = value.flags
        layout = "C" if flags.c_contiguous else "F" if flags.f_contiguous else "A"
        key = (value.dtype, value.ndim, layout, flags.writeable)
        try:
            return _array_names[key]
        except KeyError:
            pass
        dt = dtype_name(value.dtype)
        if dt is None:
            return None
        name = f"{'' if flags.writeable else 'readonly '}array({dt}, {value.ndim}d, {layout})"
        _array_names[key] = name
        return name
    if isinstance(value, np.generic):
        return dtype_name(value.dtype)
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        bits = value.bit_length() if value >= 0 else (-value - 1).bit_length()
        if bits < 32:
            return _INTP
        if bits < 64:
            return "int64"
        return "uint64" if bits == 64 and value >= 0 else None
    if isinstance(value, float):
        return "float64"
    if isinstance(value, complex):
        return "complex128"
    return None


def arg_key(args: tuple) -> tuple | None:
    """The manifest's key of a call's arguments (`type_name` of each); None if one has none."""
    key = tuple(type_name(a) for a in args)
    return None if None in key else key


# --- the build's place and key ---------------------------------------------------------------
def cache_root() -> Path:
    """``$MPICOMP_CACHE_DIR``, else ``$XDG_CACHE_HOME/mpicomp``, else ``~/.cache/mpicomp``."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "mpicomp"


def cpu_fingerprint() -> str:
    """The CPU as the OS names it (Linux: the first processor's model and flags)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            head = f.read(1 << 16).split("\n\n", 1)[0]
        keep = ("vendor_id", "cpu family", "model", "model name", "flags", "Features",
                "CPU implementer", "CPU part", "cpu", "isa")
        lines = [ln for ln in head.splitlines() if ln.split(":", 1)[0].strip() in keep]
        if lines:
            return hashlib.sha256("\n".join(lines).encode()).hexdigest()[:16]
    except OSError:
        pass
    return f"{platform.machine()} {platform.processor()}"


def numba_version() -> str:
    """The installed Numba's version, read from its metadata (Numba is not imported)."""
    from importlib import metadata

    return metadata.version("numba")


def source_hashes() -> dict[str, str]:
    """sha256 of each keyed module's source file."""
    out = {}
    for name in KEYED_MODULES:
        spec = importlib.util.find_spec(name)
        out[name] = hashlib.sha256(Path(spec.origin).read_bytes()).hexdigest()
    return out


def key_parts() -> dict:
    """What `build_key` hashes."""
    return {"format": FORMAT, "sources": source_hashes(), "numba": numba_version(),
            "numpy": np.__version__, "python": sys.implementation.cache_tag,
            "platform": sysconfig.get_platform(), "cpu": cpu_fingerprint(),
            "env": {v: os.environ.get(v) for v in KEY_ENV}}


def build_key(parts: dict | None = None) -> str:
    """The build's key: a hash of the kernel sources, Numba version, CPU and settings."""
    text = json.dumps(parts or key_parts(), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def build_dir(key: str | None = None) -> Path:
    """The directory of the build with ``key`` (default: this process's)."""
    return cache_root() / f"aot-{key or build_key()}"


def file_hash(path: Path) -> str:
    """sha256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def aot_allowed() -> bool:
    """False under ``MPICOMP_AOT=0``, ``NUMBA_DISABLE_JIT`` or ``NUMBA_BOUNDSCHECK``."""
    if os.environ.get(AOT_ENV, "1").strip() in ("0", "no", "off", "false"):
        return False
    return not any(os.environ.get(v, "0").strip() not in ("", "0") for v in JIT_ONLY_ENV)


class BuildError(Exception):
    """A build directory whose files do not match its manifest."""


def read_build(path: Path, key: str) -> tuple[dict, dict[str, dict[tuple, object]]]:
    """Load the build in ``path``: (manifest, kernel name → {arg key: function}).

    Raises
    ------
    BuildError
        The manifest is unreadable or for another key, or the library's hash or exports do not
        match it.
    """
    try:
        manifest = json.loads((path / MANIFEST).read_text())
    except (OSError, ValueError) as exc:
        raise BuildError(f"unreadable manifest: {exc}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise BuildError("manifest of another format")
    if manifest.get("key") != key:
        raise BuildError(f"manifest for key {manifest.get('key')!r}, not {key!r}")
    try:
        library = path / manifest["library"]
        if Path(manifest["library"]).name != manifest["library"]:
            raise BuildError("library outside the build directory")
        if file_hash(library) != manifest["sha256"]:
            raise BuildError(f"{library.name} does not match its manifest (sha256)")
        spec = importlib.util.spec_from_file_location(manifest["module"], library)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        tables: dict[str, dict[tuple, object]] = {}
        for entry in manifest["entries"]:
            fn = getattr(module, entry["symbol"])
            tables.setdefault(entry["kernel"], {})[tuple(entry["args"])] = fn
    except BuildError:
        raise
    except Exception as exc:  # a damaged library or manifest: ImportError, KeyError, OSError…
        raise BuildError(f"{type(exc).__name__}: {exc}") from None
    return manifest, tables


def load() -> None:
    """Give every kernel its table of AOT functions (empty without a usable build); the
    first call of any kernel does this once."""
    global _tables
    with _lock:
        if _tables is None:
            _tables = {}
            for name in KERNEL_MODULES:  # every kernel registered before the lookup
                importlib.import_module(name)
            if aot_allowed():
                _tables = _find_build()
        for k in _registry:
            if k._table is None:
                k._table = _tables.get(k.name, {}) if k.ahead else {}


def _find_build() -> dict[str, dict[tuple, object]]:
    try:
        key = build_key()
    except (OSError, ImportError) as exc:  # no Numba metadata, an unreadable source
        _status["jit"] = f"no build key: {exc}"
        return {}
    path = build_dir(key)
    if not (path / MANIFEST).exists():
        return {}
    try:
        manifest, tables = read_build(path, key)
    except BuildError as exc:
        warnings.warn(f"mpicomp: ignoring the ahead-of-time kernel build in {path} ({exc}); "
                      "the kernels are compiled by Numba instead (run python -m mpicomp.compile "
                      "to rebuild it)", RuntimeWarning, stacklevel=4)
        return {}
    _status.update(build=str(path), entries=len(manifest["entries"]))
    return tables


def jit_all(reason: str = "requested") -> None:
    """Switch the process to the JIT: import Numba and make every kernel a dispatcher, bound
    in place of the lazy kernel (and the `STAND_INS`) in the kernel modules' globals."""
    global _numba
    with _lock:
        if _numba is not None:
            return
        import numba

        for k in _registry:
            k.dispatcher = numba.njit(**k.options)(k.py_func)
        modules = {k.py_func.__module__ for k in _registry} | set(KERNEL_MODULES)
        for name in sorted(modules):
            module = sys.modules.get(name)
            if module is None:
                continue
            for attr, value in list(vars(module).items()):
                if isinstance(value, Kernel) and value.dispatcher is not None:
                    setattr(module, attr, value.dispatcher)
                elif attr in STAND_INS and value is STAND_INS[attr]:
                    setattr(module, attr, numba if attr == "numba" else getattr(numba, attr))
        _numba = numba
        _status["jit"] = reason


def registry() -> list[Kernel]:
    """Every lazy kernel made so far."""
    return list(_registry)


def status() -> dict:
    """Where the kernels come from: ``build`` (the loaded build's directory or None),
    ``entries`` (its exports) and ``jit`` (why the process runs the JIT, or None)."""
    return dict(_status)
