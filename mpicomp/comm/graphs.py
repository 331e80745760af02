"""Communication graphs and their mixing matrices (SPEC §3.1): pure graph maths, no MPI.

A `Topology` is an undirected graph on nodes ``0 … n−1`` (one node per MPI rank). It gives the
symmetric doubly-stochastic mixing matrix ``W`` (Metropolis–Hastings or uniform weights), dense
or sparse, and its spectral gap ``δ_W = 1 − |λ₂(W)|`` (exact dense eigenvalues up to 64 nodes,
ARPACK on the sparse ``W`` above: `sparse_spectral_gap`). Graphs come from `build`
(``build("torus", 16, rows=2)``) or from a spec string with `make_graph`
(``make_graph("erdos_renyi:p=0.3,seed=1", n)``, ``make_graph("edges:g.txt", n)``).
`mpicomp.comm.gossip.Gossip` puts a topology on a communicator.
"""

from __future__ import annotations

import hashlib
import inspect
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..spec_strings import Form, check_keys, parse_spec, unknown_name

WEIGHTS = ("metropolis", "uniform")

DENSE_GAP_MAX_NODES = 64
"""`sparse_spectral_gap` solves up to this many nodes densely: exact (no iteration tolerance)
and about a millisecond, where ARPACK, built for few eigenvalues of large matrices, brings
nothing; nor can it run below: it needs ``k < n`` and a Krylov basis ``ncv ≤ n``
(`ARPACK_BASIS` = 64)."""

ARPACK_BASIS = 64
"""ARPACK's Krylov basis (``ncv``) for ``|λ₂|``: its default, 20, restarts so often on clustered
spectra (a long ring's eigenvalues next to 1) that it needs ~2.5× as many products with ``W``."""

ARPACK_RESTARTS = 1000
"""Most ARPACK restarts (``maxiter``) before `sparse_spectral_gap` gives up on the sparse path."""

DENSE_FALLBACK_MAX_NODES = 2048
"""If ARPACK does not converge, `sparse_spectral_gap` falls back to the dense solver up to this
many nodes (32 MiB and seconds on one rank); above, it raises."""

SPARSE_GAP_TOLERANCE = 1e-12
"""ARPACK's relative residual tolerance for ``|λ₂|``: a symmetric matrix has an eigenvalue within
the residual of the Ritz value, so the gap is within ``1e-12`` of the exact one (in practice,
round-off: ~1e-15)."""


def _check_n(n: Any) -> int:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"a topology needs a whole number of nodes n ≥ 1, got {n!r}")
    return int(n)


def _check_weights(weights: str) -> None:
    if weights not in WEIGHTS:
        raise ValueError(f"unknown mixing weights {weights!r}: choose one of {', '.join(WEIGHTS)}")


def _self_weight(edge_weights) -> float:
    """``w_ii = 1 − Σ_{j≠i} w_ij``, the sum exactly rounded (`math.fsum`), so it does not depend
    on the order of the neighbours."""
    return 1.0 - math.fsum(edge_weights)


@dataclass(frozen=True, repr=False)
class Topology:
    """An undirected simple graph on nodes ``0 … n−1``.

    Parameters
    ----------
    kind : str
        The builder's name (``"ring"``, ``"torus"``, …).
    n : int
        Number of nodes.
    edges : sequence of (int, int)
        Undirected edges; stored as sorted pairs ``(i, j)`` with ``i < j``, duplicates removed.
        A self-loop or a node outside ``0 … n−1`` is a ValueError.
    params : mapping
        The builder's parameters (shown by `spec`; not compared).
    """

    kind: str
    n: int
    edges: tuple[tuple[int, int], ...] = ()
    params: Mapping[str, Any] = field(default_factory=dict, compare=False)
    _nbrs: tuple = field(init=False, compare=False)

    def __post_init__(self) -> None:
        n = _check_n(self.n)
        pairs = set()
        for i, j in self.edges:
            i, j = int(i), int(j)
            if not (0 <= i < n and 0 <= j < n):
                raise ValueError(f"{self.kind}: edge ({i}, {j}) has a node outside 0…{n - 1}")
            if i == j:
                raise ValueError(f"{self.kind}: self-loop ({i}, {i}) is not allowed")
            pairs.add((min(i, j), max(i, j)))
        nbrs: list[list[int]] = [[] for _ in range(n)]
        for i, j in pairs:
            nbrs[i].append(j)
            nbrs[j].append(i)
        object.__setattr__(self, "n", n)
        object.__setattr__(self, "edges", tuple(sorted(pairs)))
        object.__setattr__(self, "params", dict(self.params))
        object.__setattr__(self, "_nbrs", tuple(tuple(sorted(a)) for a in nbrs))

    def __repr__(self) -> str:
        return f"Topology({self.spec!r}, n={self.n}, {len(self.edges)} edges)"

    @property
    def spec(self) -> str:
        """The spec string `make_graph` turns back into this graph (``"torus:rows=2,cols=4"``)."""
        args = ",".join(f"{k}={v}" for k, v in self.params.items())
        return f"{self.kind}:{args}" if args else self.kind

    def neighbors(self, i: int) -> list[int]:
        """Neighbours of node ``i``, sorted."""
        return list(self._nbrs[i])

    def degree(self, i: int) -> int:
        """Number of neighbours of node ``i``."""
        return len(self._nbrs[i])

    def degrees(self) -> np.ndarray:
        """Degree of every node (int64, length n)."""
        return np.array([len(a) for a in self._nbrs], dtype=np.int64)

    def adjacency(self) -> np.ndarray:
        """Dense symmetric boolean adjacency matrix (n × n, zero diagonal)."""
        A = np.zeros((self.n, self.n), dtype=bool)
        if self.edges:
            i, j = np.array(self.edges).T
            A[i, j] = A[j, i] = True
        return A

    def components(self) -> list[list[int]]:
        """Connected components, each a sorted node list, largest first."""
        seen = np.zeros(self.n, dtype=bool)
        comps = []
        for start in range(self.n):
            if seen[start]:
                continue
            seen[start], stack, comp = True, [start], []
            while stack:
                u = stack.pop()
                comp.append(u)
                for v in self._nbrs[u]:
                    if not seen[v]:
                        seen[v] = True
                        stack.append(v)
            comps.append(sorted(comp))
        return sorted(comps, key=lambda c: (-len(c), c[0]))

    def is_connected(self) -> bool:
        """True if every node can reach every other."""
        return len(self.components()) == 1

    def _edge_weights(self, i: np.ndarray, j: np.ndarray, weights: str) -> np.ndarray:
        """``w_ij`` of the edges ``(i[k], j[k])`` (float64 array): the one place the weights are
        defined; `weight_row`, `mixing_matrix` and `mixing_matrix_sparse` all use it."""
        _check_weights(weights)
        deg = self.degrees()
        if weights == "metropolis":
            return 1.0 / (1 + np.maximum(deg[i], deg[j]))
        return np.full(len(i), 1.0 / (1 + int(deg.max(initial=0))))

    def _mixing_entries(self, weights: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The nonzeros of ``W`` as ``(rows, cols, values)``: both directions of every edge,
        then the diagonal (``w_ii = 1 − fsum`` of row ``i``'s edge weights, as in `weight_row`).
        Shared by the dense and the sparse builder, so the two hold the same numbers."""
        pairs = np.array(self.edges, dtype=np.int64).reshape(-1, 2)
        w = self._edge_weights(pairs[:, 0], pairs[:, 1], weights)
        rows = np.concatenate([pairs[:, 0], pairs[:, 1]])
        cols = np.concatenate([pairs[:, 1], pairs[:, 0]])
        values = np.concatenate([w, w])
        order = np.argsort(rows, kind="stable")
        rows, cols, values = rows[order], cols[order], values[order]
        bounds = np.searchsorted(rows, np.arange(self.n + 1)).tolist()
        listed = values.tolist()
        diagonal = [_self_weight(listed[a:b]) for a, b in zip(bounds[:-1], bounds[1:])]
        nodes = np.arange(self.n)
        return (np.concatenate([rows, nodes]), np.concatenate([cols, nodes]),
                np.concatenate([values, diagonal]))

    def weight_row(self, i: int, weights: str = "metropolis") -> dict[int, float]:
        """Row ``i`` of `mixing_matrix` as ``{j: w_ij}`` over the neighbours and ``i`` itself.

        Equals ``mixing_matrix(weights)[i]`` bit for bit (``w_ii`` uses `math.fsum`). The values
        are Python floats, so ``w_ij * x`` keeps the dtype of a float32 array ``x``.
        """
        neighbours = np.array(self._nbrs[i], dtype=np.int64)
        w = self._edge_weights(np.full(len(neighbours), i), neighbours, weights).tolist()
        row = dict(zip(neighbours.tolist(), w))
        row[i] = _self_weight(w)
        return dict(sorted(row.items()))

    def mixing_matrix(self, weights: str = "metropolis") -> np.ndarray:
        """Symmetric doubly-stochastic mixing matrix ``W`` (n × n, float64).

        Parameters
        ----------
        weights : {"metropolis", "uniform"}
            ``"metropolis"``: ``w_ij = 1/(1 + max(deg_i, deg_j))`` on edges; ``"uniform"``:
            ``w_ij = 1/(1 + d_max)`` on edges, ``d_max`` the largest degree. Either way
            ``w_ii = 1 − Σ_{j≠i} w_ij`` (≥ 1/(1 + d_max) > 0) and ``w_ij = 0`` off the graph.

        See Also
        --------
        mixing_matrix_sparse : the same matrix in CSR form, without the n × n array.
        """
        rows, cols, values = self._mixing_entries(weights)
        W = np.zeros((self.n, self.n))
        W[rows, cols] = values
        return W

    def mixing_matrix_sparse(self, weights: str = "metropolis"):
        """`mixing_matrix` as a ``scipy.sparse.csr_array``: the same entries, bit for bit, in
        ``O(n + edges)`` memory (never builds the dense n × n matrix).

        Parameters
        ----------
        weights : {"metropolis", "uniform"}
            See `mixing_matrix`.
        """
        from scipy import sparse

        rows, cols, values = self._mixing_entries(weights)
        return sparse.csr_array((values, (rows, cols)), shape=(self.n, self.n))

    def spectral_gap(self, W: np.ndarray | None = None, weights: str = "metropolis") -> float:
        """``δ_W = 1 − |λ₂(W)|``.

        Parameters
        ----------
        W : numpy.ndarray, optional
            A dense symmetric matrix: its gap by the dense solver (module `spectral_gap`).
        weights : {"metropolis", "uniform"}
            Without ``W``: the gap of this graph's mixing matrix, from `mixing_matrix_sparse`
            through `sparse_spectral_gap` (exact dense eigenvalues for ``n ≤``
            `DENSE_GAP_MAX_NODES`, ARPACK above). A disconnected graph has gap 0.
        """
        if W is not None:
            return spectral_gap(W)
        return sparse_spectral_gap(self.mixing_matrix_sparse(weights))

    def digest(self) -> str:
        """A short hash of ``n`` and the edges (to check that every rank holds the same graph)."""
        data = np.array([self.n, *np.ravel(self.edges)], dtype=np.int64).tobytes()
        return hashlib.sha256(data).hexdigest()[:16]


def spectral_gap(W: np.ndarray) -> float:
    """Spectral gap ``δ_W = 1 − |λ₂(W)|`` of a symmetric matrix.

    ``|λ₂|`` is the second largest eigenvalue magnitude (`numpy.linalg.eigvalsh`); for a
    connected graph's mixing matrix the largest is ``λ₁ = 1``. A 1 × 1 matrix has gap 1.
    """
    W = np.asarray(W, dtype=np.float64)
    if W.ndim != 2 or W.shape[0] != W.shape[1] or not np.allclose(W, W.T, rtol=0, atol=1e-12):
        raise ValueError(f"spectral_gap needs a symmetric square matrix, got shape {W.shape}")
    if W.shape[0] == 1:
        return 1.0
    mags = np.sort(np.abs(np.linalg.eigvalsh(W)))[::-1]
    return float(1.0 - mags[1])


def sparse_spectral_gap(W, tol: float = SPARSE_GAP_TOLERANCE) -> float:
    """Spectral gap ``δ_W = 1 − |λ₂(W)|`` of a sparse symmetric doubly-stochastic matrix.

    Up to `DENSE_GAP_MAX_NODES` nodes the matrix is densified and solved exactly by `spectral_gap`.
    Above, ``|λ₂|`` comes from ARPACK (`scipy.sparse.linalg.eigsh`) without forming the dense
    matrix: ``W`` is symmetric with row sums 1, so ``λ₁ = 1`` has the eigenvector ``1/√n`` and
    ``|λ₂|`` is the largest eigenvalue magnitude of the deflated operator ``W − (1/n)11ᵀ``
    (``x ↦ Wx − mean(x)``; ``k=1``, ``which="LM"``, `ARPACK_BASIS`, a fixed start vector so the
    result is reproducible). A disconnected graph keeps an eigenvalue 1 after the
    deflation (one per extra component), so its gap is 0 here too. The result is clipped to
    ``[0, 1]`` (``|λ| ≤ 1`` for a stochastic matrix: only round-off below 0 is clipped).

    Parameters
    ----------
    W : scipy.sparse array or matrix
        Symmetric, non-negative, every row summing to 1 (as `Topology.mixing_matrix_sparse`).
    tol : float
        ARPACK's relative residual tolerance (see `SPARSE_GAP_TOLERANCE`).

    Returns
    -------
    float

    Raises
    ------
    ValueError
        ``W`` is not square, symmetric, non-negative with unit row sums.
    RuntimeError
        ARPACK did not converge and ``n`` > `DENSE_FALLBACK_MAX_NODES` (below, the dense solver
        answers instead).
    """
    from scipy import sparse
    from scipy.sparse.linalg import ArpackNoConvergence, LinearOperator, eigsh

    W = sparse.csr_array(W, dtype=np.float64)
    n = W.shape[0]
    if (W.shape[1] != n or abs(W - W.T).max() > 1e-12 or (W.data < 0).any()
            or np.abs(W.sum(axis=1) - 1).max() > 1e-12):
        raise ValueError("sparse_spectral_gap needs a symmetric non-negative matrix with unit row "
                         f"sums (a mixing matrix), got shape {W.shape}")
    if n <= DENSE_GAP_MAX_NODES:
        return spectral_gap(W.toarray())
    deflated = LinearOperator((n, n), dtype=np.float64, matvec=lambda x: W @ x - x.mean(axis=0))
    start = np.random.default_rng(0).standard_normal(n)
    try:
        (lam,) = eigsh(deflated, k=1, which="LM", ncv=ARPACK_BASIS, tol=tol,
                       maxiter=ARPACK_RESTARTS, v0=start - start.mean(), return_eigenvectors=False)
    except ArpackNoConvergence:
        if n <= DENSE_FALLBACK_MAX_NODES:
            return spectral_gap(W.toarray())
        raise RuntimeError(f"ARPACK did not converge to |λ₂| of the {n}-node mixing matrix "
                           f"(tol={tol}, {ARPACK_RESTARTS} restarts): its eigenvalues next to 1 "
                           "lie too close together, i.e. the gap is tiny (a long ring or path); "
                           "call sparse_spectral_gap(W, tol=...) with a looser tol") from None
    return max(0.0, 1.0 - abs(float(lam)))


# ------------------------------------------------------------------------------ builders


def ring(n: int) -> Topology:
    """Cycle ``i — i+1 (mod n)``: n edges for n ≥ 3, one edge for n = 2, none for n = 1."""
    n = _check_n(n)
    return Topology("ring", n, [(i, (i + 1) % n) for i in range(n) if n > 1])


def _divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


def torus(n: int, rows: int | None = None, cols: int | None = None) -> Topology:
    """2-D torus ``rows × cols = n``; node ``r·cols + c`` links to its four wrap-around neighbours.

    Default shape: the most square factorisation with ``rows ≤ cols``. Duplicate wrap-around
    edges (a side of length 2) and self-loops (length 1) are dropped, so a side of 1 gives a ring.
    """
    n = _check_n(n)
    valid = _divisors(n)
    if rows is None and cols is None:
        rows = max(d for d in valid if d * d <= n)
    elif rows is None:
        rows = n // cols if isinstance(cols, int) and cols in valid else None
        if rows is None:
            raise ValueError(f"torus: cols={cols!r} does not divide n={n}; valid cols: "
                             f"{', '.join(map(str, valid))}")
    if not isinstance(rows, int) or rows not in valid:
        raise ValueError(f"torus: rows={rows!r} does not divide n={n}; valid rows: "
                         f"{', '.join(map(str, valid))}")
    if cols is not None and rows * cols != n:
        raise ValueError(f"torus: rows × cols = {rows} × {cols} ≠ n = {n}")
    cols = n // rows
    edges = []
    for r in range(rows):
        for c in range(cols):
            u = r * cols + c
            edges += [(u, r * cols + (c + 1) % cols), (u, ((r + 1) % rows) * cols + c)]
    return Topology("torus", n, [e for e in edges if e[0] != e[1]], {"rows": rows, "cols": cols})


def hypercube(n: int) -> Topology:
    """Hypercube of dimension ``log₂ n``: nodes whose indices differ in one bit are linked."""
    n = _check_n(n)
    if n & (n - 1):
        lo = 1 << (n.bit_length() - 1)
        raise ValueError(f"hypercube needs n a power of two, got n={n}; nearest: {lo} or {2 * lo}")
    return Topology("hypercube", n, [(i, i ^ (1 << b)) for i in range(n)
                                     for b in range(n.bit_length() - 1) if i < i ^ (1 << b)])


def complete(n: int) -> Topology:
    """Every pair of nodes linked: ``n(n−1)/2`` edges."""
    n = _check_n(n)
    return Topology("complete", n, [(i, j) for i in range(n) for j in range(i + 1, n)])


def star(n: int) -> Topology:
    """Node 0 (the hub) linked to every other node: ``n − 1`` edges."""
    n = _check_n(n)
    return Topology("star", n, [(0, j) for j in range(1, n)])


def erdos_renyi(n: int, p: float | None = None, seed: int = 0, tries: int = 1000) -> Topology:
    """Seeded Erdős–Rényi graph G(n, p), conditioned on being connected.

    Each pair ``i < j`` (in `numpy.triu_indices` order) is an edge with probability ``p``,
    drawn from ``numpy.random.default_rng(seed)``; a disconnected draw is discarded and the same
    generator draws again, up to ``tries`` times (then a ValueError). The result is therefore a
    uniform sample of the connected graphs of G(n, p) and depends only on ``(n, p, seed)``.

    Parameters
    ----------
    p : float, optional
        Edge probability in (0, 1]; default ``min(1, 2 ln n / n)``, twice the connectivity
        threshold.
    seed : int
        Seed of the generator (the same on every rank, so every rank builds the same graph).
    tries : int
        Most draws before giving up.
    """
    n = _check_n(n)
    if p is None:
        p = min(1.0, 2 * math.log(n) / n) if n > 1 else 1.0
    if not (isinstance(p, (int, float)) and 0 < p <= 1):
        raise ValueError(f"erdos_renyi: p must be in (0, 1], got p={p!r}")
    if not (isinstance(tries, int) and tries >= 1):
        raise ValueError(f"erdos_renyi: tries must be a positive integer, got {tries!r}")
    params = {"p": p, "seed": seed}
    rng = np.random.default_rng(seed)
    iu, ju = np.triu_indices(n, 1)
    for _ in range(tries):
        keep = rng.random(iu.size) < p
        topo = Topology("erdos_renyi", n, list(zip(iu[keep].tolist(), ju[keep].tolist())), params)
        if topo.is_connected():
            return topo
    raise ValueError(f"erdos_renyi: no connected G(n={n}, p={p}) in {tries} draws (seed={seed}); "
                     f"raise p (connectivity needs p well above ln(n)/n = {math.log(n) / n:.3g}) "
                     "or tries")


def edge_list(n: int, path: str | Path) -> Topology:
    """Graph from a text file with one ``i j`` pair (0-based node indices) per line.

    ``#`` starts a comment; blank lines are skipped; a pair given twice (either way round) is one
    edge. A malformed line, a node outside ``0 … n−1``, a self-loop or a disconnected graph is a
    ValueError naming the file (and line).
    """
    n = _check_n(n)
    path = Path(path)
    edges = []
    try:
        f = open(path, encoding="utf-8")
    except OSError as exc:
        raise ValueError(f"cannot read the edge list {path}: {exc.strerror or exc}") from None
    with f:
        for lineno, line in enumerate(f, 1):
            text = line.split("#", 1)[0].strip()
            if not text:
                continue
            where = f"{path}:{lineno}"
            fields = text.split()
            try:
                if len(fields) != 2:
                    raise ValueError
                i, j = int(fields[0]), int(fields[1])
            except ValueError:
                raise ValueError(f"{where}: expected two node indices 'i j', "
                                 f"got {text!r}") from None
            if not (0 <= i < n and 0 <= j < n):
                raise ValueError(f"{where}: node index out of range in {text!r}: nodes are "
                                 f"0…{n - 1} for n={n}")
            if i == j:
                raise ValueError(f"{where}: self-loop {i} {j} is not allowed")
            edges.append((i, j))
    topo = Topology("edges", n, edges, {"path": str(path)})
    comps = topo.components()
    if len(comps) > 1:
        example = comps[1][:5]
        raise ValueError(f"{path}: the graph on n={n} nodes is not connected: components of sizes "
                         f"{[len(c) for c in comps]}; e.g. node(s) {example} cannot reach node "
                         f"{comps[0][0]}")
    return topo


BUILDERS: dict[str, Callable[..., Topology]] = {
    "ring": ring, "torus": torus, "hypercube": hypercube, "complete": complete, "star": star,
    "erdos_renyi": erdos_renyi, "edges": edge_list,
}


def build(kind: str, n: int, **params: Any) -> Topology:
    """The topology ``kind`` on ``n`` nodes (see `BUILDERS`), e.g. ``build("torus", 8, rows=2)``.

    Unknown kinds and parameters are ValueErrors that list the valid choices.
    """
    if kind not in BUILDERS:
        raise unknown_name("topology", kind, BUILDERS)
    check_keys("topology", kind, params, _parameters(kind))
    if kind == "edges" and "path" not in params:
        raise ValueError("edges needs a file: edges:PATH or build('edges', n, path=PATH)")
    return BUILDERS[kind](n, **params)


def _parameters(kind: str) -> list[str]:
    """The keyword parameters of builder ``kind`` (all but ``n``)."""
    return [p for p in inspect.signature(BUILDERS[kind]).parameters if p != "n"]


def graph_forms() -> dict[str, Form]:
    """Every graph name of the spec grammar (`mpicomp.spec_strings`) → what it accepts:
    the builder's parameters; ``edges`` takes its file as ``edges:PATH``."""
    return {kind: Form(rest="path", required=("path",)) if kind == "edges"
            else Form(keys=tuple(_parameters(kind))) for kind in BUILDERS}


def make_graph(spec: str | Topology, n: int) -> Topology:
    """The graph ``spec`` on ``n`` nodes: ``"kind"`` or ``"kind:key=value,…"``.

    Parameters
    ----------
    spec : str or Topology
        A spec of `mpicomp.spec_strings` over `BUILDERS` (``"torus:rows=2"``); ``"edges:PATH"``
        (or ``"edges:path=PATH"``) reads an edge list. A `Topology` is returned as it is after
        checking its size.
    n : int
        Number of nodes.

    Raises
    ------
    ValueError
        An unknown kind or parameter, a malformed item, or parameters the builder rejects.
    """
    if isinstance(spec, Topology):
        if spec.n != n:
            raise ValueError(f"topology {spec.spec!r} has {spec.n} nodes, expected {n}")
        return spec
    kind, params = parse_spec(spec, graph_forms(), "topology")
    return build(kind, n, **params)
