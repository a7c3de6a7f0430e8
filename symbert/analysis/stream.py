"""The replay's allocations and frees, in order and in bytes: the event stream the allocator simulation runs on.

:class:`Logged` is the replay (:class:`symbert.analysis.replay.Replay`) with each allocation and free noted as it
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
from collections.abc import Mapping

import sympy

from symbert.analysis.replay import Replay, Unit, _Buffer
from symbert.analysis.sizes import Size, expr_of, size_of
from symbert.analysis.states import Training
from symbert.ir import Graph

Event = tuple


class Logged(Replay):
    """A replay that also writes :attr:`stream`: ``("alloc", key, bytes[, stream, tag])``, ``("free", key)``
    and ``("phase", name)``, at the sizes ``values``."""

    def __init__(self, graph: Graph, training: Training, values: Mapping[sympy.Symbol, int]) -> None:
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

    def _count(self, buf: _Buffer, sign: int) -> None:
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
            sizes = [e for elements, count in self.sharding.local(self.graph, what)
                     for e in [elements] * int(sympy.sympify(count).subs(self.values))]
        else:
            sizes = [numel for _, numel, _ in self.parameter_order()]
        keys = [self._request(self.bytes_of(size_of(bytes_per_element * numel)))
                for numel in sizes for _ in range(tensors)]
        self._groups.append((group, keys))
        return out

    def workspace(self, unit: Unit) -> None:
        before = set(self.workspaces)
        super().workspace(unit)
        for thread in set(self.workspaces) - before:
            for w in self.runtime.workspaces if self.runtime else ():
                if w.phase == thread:
                    self._request(w.nbytes, "workspace")


def events(graph: Graph, training: Training, values: Mapping[sympy.Symbol, int], steps: int = 2) -> list[Event]:
    """The ordered allocation events of ``steps`` training steps at ``values`` (see :class:`Logged`). Where
    ``values`` leave out a size (B or seq_len), a request's bytes are a formula in it: see :func:`at`."""
    replay = Logged(graph, training, values)
    replay.run(steps)
    return replay.stream


def at(stream: list[Event], values: Mapping[sympy.Symbol, int]) -> list[Event]:
    """``stream`` with each request's formula evaluated at ``values``; the order of a replay does not depend on
    the sizes, so one replay serves every batch (each distinct formula is evaluated once)."""
    formulas = {e[2] for e in stream if e[0] == "alloc" and not isinstance(e[2], int)}
    bytes_at = {f: int(f.subs(values)) for f in formulas}
    return [e if e[0] != "alloc" or isinstance(e[2], int) else (e[0], e[1], bytes_at[e[2]], *e[3:]) for e in stream]
