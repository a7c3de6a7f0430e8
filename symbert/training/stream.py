"""The allocation requests of a replay, in order and in bytes: the stream the allocator simulation runs on.

:class:`Requests` is a second consumer of the driver's events (:mod:`symbert.training.events`), beside the
ledger, at given sizes. Each buffer is one request. A model state, which the ledger counts per group of equal
tensors, becomes one request per tensor, in the order the model declares its parameters and, for states, a
parameter's states together, as ``Module.to`` and AdamW's ``_init_group`` make them
(:mod:`symbert.training.order`). The runtime's workspaces are requests tagged ``workspace``, at the first
matmul of each thread. Phase markers (``"1 forward"``, ``"1 backward"``, ``"1 optimizer"``, …) start where
the phases' first requests or frees are. Not in the stream yet, because the replay counts them without an
allocation of their own (:class:`symbert.training.events.Change`): DDP's gradient buckets, the GradScaler's
scalars, Adam's step counts, and the for-loop AdamW's temporaries (the CPU policies).

:func:`described` replays a model of one repeated block for a few runs and repeats the middle one
(:mod:`symbert.training.repeats`) where that reproduces the replay of one run more.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping
from typing import NamedTuple

import sympy

from symbert.analysis.sizes import Size, expr_of, size_of
from symbert.ir import Graph
from symbert.training.driver import Driver
from symbert.training.events import Alloc, Event, Free, State
from symbert.training.order import buffers, load_order, parameter_order
from symbert.training.plan import Plan
from symbert.training.repeats import Mismatch, extend
from symbert.training.states import Training

Request = tuple


class Cause(NamedTuple):
    """What made a request: the op and its scope, at a step and phase (step 0: loading the model), in which run
    of its block (None: outside the blocks)."""

    op: str
    scope: str
    step: int
    phase: str
    run: int | None = None


class Requests:
    """Writes :attr:`stream`: ``("alloc", key, bytes[, stream, tag])``, ``("free", key)`` and ``("phase", name)``,
    for the events it takes, at the sizes ``values``."""

    def __init__(self, plan: Plan, values: Mapping[sympy.Symbol, int]) -> None:
        self.plan, self.values = plan, values
        self.stream: list[Request] = []
        #: Each request's cause: (op, scope, step, phase) by its key.
        self.causes: dict[int, Cause] = {}
        self._keys: dict[int, list[int]] = {}
        self._serial = itertools.count()
        self._bytes: dict[frozenset, int | sympy.Expr] = {}
        self._sized: dict[int, tuple[Size, int | sympy.Expr]] = {}  # by the id of a size the replay shares
        self._states: dict[State, list[int | sympy.Expr]] = {}
        self._at: tuple[int, str] | None = None

    def bytes_of(self, size: Size) -> int | sympy.Expr:
        """The bytes of ``size`` at :attr:`values`: a whole number, or a formula in the sizes left out of them."""
        known = self._sized.get(id(size))
        if known is not None and known[0] is size:
            return known[1]
        key = frozenset(size.items())
        if key not in self._bytes:
            nbytes = sympy.sympify(expr_of(size).subs(self.values))
            self._bytes[key] = int(nbytes) if nbytes.is_Integer else nbytes
        self._sized[id(size)] = (size, self._bytes[key])  # holding the size keeps its id from being reused
        return self._bytes[key]

    def take(self, events: Iterable[Event]) -> None:
        for event in events:
            if isinstance(event, Alloc):
                keys = [key for n, tag in self.requests(event) if (key := self._request(event, n, tag)) is not None]
                if keys:
                    self._keys[event.id] = keys
            elif isinstance(event, Free) and event.id in self._keys:
                self._mark(event)
                self.stream.extend(("free", key) for key in self._keys.pop(event.id))

    def requests(self, event: Alloc) -> list[tuple[int | sympy.Expr, str]]:
        """The bytes of the requests an allocation makes, each with its tag."""
        if event.kind in ("tensor", "workspace", "scratch"):
            return [(self.bytes_of(event.size), "workspace" if event.kind == "workspace" else "")]
        if event.kind == "state" and event.state is not None:
            if event.state not in self._states:
                self._states[event.state] = self.state_requests(event.state)
            return [(nbytes, "") for nbytes in self._states[event.state]]
        return []

    def _mark(self, event: Alloc | Free) -> None:
        if event.step and self._at != (event.step, event.phase):
            self._at = (event.step, event.phase)
            self.stream.append(("phase", f"{event.step} {event.phase}"))

    def _request(self, event: Alloc, nbytes: int | sympy.Expr, tag: str = "") -> int | None:
        """A request's key; none for 0 bytes (a copy that is a view at these sizes), whose key goes unused, as
        :func:`at` leaves it."""
        key = next(self._serial)
        if isinstance(nbytes, int) and not nbytes:  # a formula is never 0: bytes_of makes a 0 one an int
            return None
        self._mark(event)
        run = event.owner[1] if event.owner is not None else None
        self.causes[key] = Cause(event.cause, event.scope, event.step, event.phase, run)
        self.stream.append(("alloc", key, nbytes, 0, tag) if tag else ("alloc", key, nbytes))
        return key

    def state_requests(self, state: State) -> list[int | sympy.Expr]:
        """The bytes of each tensor of a model state, in the order they are allocated: this GPU's shards, each
        parameter's at load (``Module.to``, the registered buffers among them), else in the order the optimizer
        steps them; a parameter's ``tensors`` states together."""
        plan, what, per_element = self.plan, state.what, state.per_element
        if not per_element or not state.tensors:
            return []
        if plan.sharding.sharded(what):
            items = [(per_element, e) for elements, count in plan.sharding.local(plan.graph, what)
                     for e in [elements] * int(sympy.sympify(count).subs(self.values))]
            items += [(1, nbytes) for _, nbytes in buffers(plan)] if what == "weights" else []
        elif what == "weights":
            items = [(1 if buffer else per_element, elements) for elements, buffer in load_order(plan)]
        else:
            items = [(per_element, elements) for _, elements, _ in parameter_order(plan)]
        nbytes = {item: self.bytes_of(size_of(item[0] * item[1])) for item in dict.fromkeys(items)}
        return [nbytes[item] for item in items for _ in range(state.tensors)]


def replay(
    graph: Graph, training: Training, values: Mapping[sympy.Symbol, int], steps: int = 2,
    runs: Mapping[str, int] | None = None,
) -> tuple[Plan, list[Event]]:
    """``steps`` training steps of every run of each block at ``values`` (or of ``runs`` runs): the plan and its
    events."""
    values = {**training.memory.layout.values(), **values}
    runs = runs or counts(graph, values)
    plan = Plan(graph, training, runs, kernel_values=values)
    return plan, Driver(plan).run(steps)


def events(graph: Graph, training: Training, values: Mapping[sympy.Symbol, int], steps: int = 2) -> list[Request]:
    """The ordered allocation requests of ``steps`` training steps at ``values`` (see :class:`Requests`). Where
    ``values`` leave out a size (B or seq_len), a request's bytes are a formula in it: see :func:`at`."""
    return described(graph, training, values, steps).stream


def counts(graph: Graph, values: Mapping[sympy.Symbol, int]) -> dict[str, int]:
    """The runs of each block at ``values``."""
    return {name: int(sympy.sympify(block.count).subs(values)) for name, block in graph.blocks.items()}


#: The runs a one-block replay walks before it repeats its middle run (:mod:`symbert.training.repeats`).
FEW = 6


def described(
    graph: Graph, training: Training, values: Mapping[sympy.Symbol, int], steps: int = 2, full: bool = False
) -> Requests:
    """The requests of :func:`events`, with each one's cause (:attr:`Requests.causes`). A block of many runs is
    replayed for :data:`FEW` runs and its middle run repeated, where that gives a replay of ``FEW + 1`` runs
    exactly (``full``: every run replayed)."""
    runs = counts(graph, {**training.memory.layout.values(), **values})
    if not full and len(runs) == 1 and next(iter(runs.values())) > FEW + 1:
        (name, count), = runs.items()
        every = Plan(graph, training, runs, kernel_values={**training.memory.layout.values(), **values})
        few, more = (_requests(graph, training, values, steps, {name: n}, every) for n in (FEW, FEW + 1))
        try:
            if extend(few.stream, few.causes, FEW // 2, 1) == (more.stream, more.causes):
                few.stream, few.causes = extend(few.stream, few.causes, FEW // 2, count - FEW)
                return few
        except Mismatch:
            pass
    return _requests(graph, training, values, steps, runs)


def _requests(graph: Graph, training: Training, values: Mapping[sympy.Symbol, int], steps: int,
              runs: Mapping[str, int], every: Plan | None = None) -> Requests:
    """The requests of a replay of ``runs`` runs, the model states' those of ``every`` run (its plan)."""
    plan, stream = replay(graph, training, values, steps, runs)
    requests = Requests(every or plan, {**training.memory.layout.values(), **values})
    requests.take(stream)
    return requests


def at(stream: list[Request], values: Mapping[sympy.Symbol, int]) -> list[Request]:
    """``stream`` with each request's formula evaluated at ``values``; the order of a replay does not depend on
    the sizes, so one replay serves every batch (each distinct formula is evaluated once). A request that comes
    to 0 bytes is none (the caching allocator hands out no block for it), nor is its free."""
    formulas = {e[2] for e in stream if e[0] == "alloc" and not isinstance(e[2], int)}
    exact = {k: sympy.Integer(v) for k, v in values.items()}
    bytes_at = {f: int(f.xreplace(exact)) for f in formulas}  # subs' result, without its pattern matching
    empty = {e[1] for e in stream if e[0] == "alloc" and not isinstance(e[2], int) and not bytes_at[e[2]]}
    return [e if e[0] != "alloc" or isinstance(e[2], int) else (e[0], e[1], bytes_at[e[2]], *e[3:])
            for e in stream if e[0] == "phase" or e[1] not in empty]
