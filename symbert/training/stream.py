"""The replay's allocations and frees, in order and in bytes: the event stream the allocator simulation runs on.

:class:`Logged` is the replay (:class:`symbert.training.replay.Replay`) with each allocation and free noted as it
happens, at given sizes: the replay's own numbers are untouched. Each buffer is one request. The model states the
replay counts per group of equal tensors (parameters, optimizer states, foreach AdamW's temporary) become one
request per tensor, in the order the model declares its parameters and, for states, a parameter's states together,
as ``Module.to`` and AdamW's ``_init_group`` make them. The runtime's workspaces are requests tagged ``workspace``,
at the first matmul of each thread. Phase markers (``"1 forward"``, ``"1 backward"``, ``"1 optimizer"``, …) start
where the replay's phases start. Not in the stream yet, because the replay counts them without an allocation of
their own: DDP's gradient buckets, the GradScaler's found_inf flag, and the for-loop AdamW's temporaries and step
counters (the CPU policies).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Mapping

import sympy

from symbert.analysis.sizes import Size, expr_of, size_of
from symbert.ir import Graph, Registered
from symbert.training.replay import Replay, Unit, _Buffer
from symbert.training.states import Training

Event = tuple


class Logged(Replay):
    """A replay that also writes :attr:`stream`: ``("alloc", key, bytes[, stream, tag])``, ``("free", key)``
    and ``("phase", name)``, at the sizes ``values``."""

    def __init__(
        self, graph: Graph, training: Training, values: Mapping[sympy.Symbol, int], tally: bool = True
    ) -> None:
        values = {**training.memory.layout.values(), **values}
        runs = {name: int(sympy.sympify(block.count).subs(values)) for name, block in graph.blocks.items()}
        super().__init__(graph, training, runs)
        self.values = values
        self.stream: list[Event] = []
        self._keys: dict[int, tuple[int, _Buffer]] = {}
        self._serial = itertools.count()
        self._bytes: dict[frozenset, int] = {}
        self._groups: list[tuple[tuple, list[int]]] = []
        self._at: tuple[int, str] | None = None
        #: Whether the replay also keeps its own sums and events (False: the stream alone, faster).
        self.tally = tally

    def bytes_of(self, size: Size) -> int | sympy.Expr:
        """The bytes of ``size`` at :attr:`values`: a whole number, or a formula in the sizes left out of them."""
        key = frozenset(size.items())
        if key not in self._bytes:
            nbytes = sympy.sympify(expr_of(size).subs(self.values))
            self._bytes[key] = int(nbytes) if nbytes.is_Integer else nbytes
        return self._bytes[key]

    def _mark(self) -> None:
        if self.step and self._at != (self.step, self.phase):
            self._at = (self.step, self.phase)
            self.stream.append(("phase", f"{self.step} {self.phase}"))

    def _request(self, nbytes: int, tag: str = "") -> int:
        self._mark()
        key = next(self._serial)
        self.stream.append(("alloc", key, nbytes, 0, tag) if tag else ("alloc", key, nbytes))
        return key

    def record(self, label: str, run: tuple[str, int] | None = None) -> None:
        if self.tally:
            super().record(label, run)

    def _count(self, buf: _Buffer, sign: int) -> None:
        if self.tally:
            super()._count(buf, sign)
        nbytes = self.bytes_of(buf.size)
        if sign > 0:
            self._keys[id(buf)] = (self._request(nbytes), buf)
        elif id(buf) in self._keys:
            self._mark()
            self.stream.append(("free", self._keys.pop(id(buf))[0]))

    def state_pads(self, bytes_per_element: int, what: str, tensors: int = 1, sign: int = 1) -> Size:
        out = super().state_pads(bytes_per_element, what, tensors, sign)
        if not bytes_per_element or not tensors:
            return out
        group = (bytes_per_element, what, tensors)
        if sign < 0:
            index = max(i for i, (g, _) in enumerate(self._groups) if g == group)
            self._mark()
            self.stream.extend(("free", key) for key in self._groups.pop(index)[1])
            return out
        if self.sharding.sharded(what):
            sizes = [bytes_per_element * e for elements, count in self.sharding.local(self.graph, what)
                     for e in [elements] * int(sympy.sympify(count).subs(self.values))]
            sizes += [nbytes for _, nbytes in self.buffers()] if what == "weights" and not self.step else []
        elif what == "weights" and not self.step:
            sizes = [numel if buffer else bytes_per_element * numel for numel, buffer in self.load_order()]
        else:
            sizes = [bytes_per_element * numel for _, numel, _ in self.parameter_order()]
        keys = [self._request(self.bytes_of(size_of(nbytes))) for nbytes in sizes for _ in range(tensors)]
        self._groups.append((group, keys))
        return out

    def load_order(self) -> list[tuple[sympy.Expr, bool]]:
        """The parameters (elements) and the registered buffers (bytes, marked True) in the order
        ``Module.to`` visits them: a module's children first, each in turn (in the order the module registers
        them where it says so, else as the forward first uses them), then its own parameters, then its
        buffers. A repeated block's runs are children of the block's module."""
        tree = _Module()
        for name, numel, owner in self.parameter_order():
            path = name.split(".")
            if owner is not None:
                depth = owner[0].count("/") + 1
                path = [*path[:depth], str(owner[1]), *path[depth:]]
            tree.at(path[:-1]).params.append(numel)
        for prefix, nbytes in self.buffers():
            tree.at(prefix.split(".")[:-1]).buffers.append(nbytes)
        return list(tree.visit(self.graph.registered))

    def workspace(self, unit: Unit) -> None:
        before = set(self.workspaces)
        super().workspace(unit)
        for thread in set(self.workspaces) - before:
            for w in self.runtime.workspaces if self.runtime else ():
                if w.phase == thread:
                    self._request(w.nbytes, "workspace")


class _Module:
    """A module of the parameter tree: its children by name (first use first), parameters and buffers."""

    def __init__(self, path: tuple[str, ...] = ()) -> None:
        self.path = path
        self.children: dict[str, _Module] = {}
        self.params: list[sympy.Expr] = []
        self.buffers: list[sympy.Expr] = []

    def at(self, path: list[str]) -> _Module:
        module = self
        for part in path:
            module = module.children.setdefault(part, _Module((*module.path, part)))
        return module

    def visit(self, registered: Mapping[str, Registered]) -> Iterator[tuple[sympy.Expr, bool]]:
        declared = registered.get(".".join(self.path), Registered()).children
        order = [c for c in declared if c in self.children] + [c for c in self.children if c not in declared]
        for child in order:
            yield from self.children[child].visit(registered)
        yield from ((numel, False) for numel in self.params)
        yield from ((nbytes, True) for nbytes in self.buffers)


def events(graph: Graph, training: Training, values: Mapping[sympy.Symbol, int], steps: int = 2) -> list[Event]:
    """The ordered allocation events of ``steps`` training steps at ``values`` (see :class:`Logged`). Where
    ``values`` leave out a size (B or seq_len), a request's bytes are a formula in it: see :func:`at`."""
    replay = Logged(graph, training, values, tally=False)
    replay.run(steps)
    return replay.stream


def at(stream: list[Event], values: Mapping[sympy.Symbol, int]) -> list[Event]:
    """``stream`` with each request's formula evaluated at ``values``; the order of a replay does not depend on
    the sizes, so one replay serves every batch (each distinct formula is evaluated once)."""
    formulas = {e[2] for e in stream if e[0] == "alloc" and not isinstance(e[2], int)}
    exact = {k: sympy.Integer(v) for k, v in values.items()}
    bytes_at = {f: int(f.xreplace(exact)) for f in formulas}  # subs' result, without its pattern matching
    return [e if e[0] != "alloc" or isinstance(e[2], int) else (e[0], e[1], bytes_at[e[2]], *e[3:]) for e in stream]
