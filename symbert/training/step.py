"""Training-step memory: the peak over replayed steps, as formulas and at concrete values.

:func:`step_memory` replays two steps (:mod:`symbert.training.driver`, summed by
:mod:`symbert.training.ledger`): the first, where the optimizer states appear at the update, and a
second, where they are present from the start. A repeated block can be replayed as three runs (first,
middle, last), the other L − 3 runs being added as multiples of the middle run's steady state, so that
the peak stays symbolic in L: memory is linear in the index of the running layer, so over the middle
runs it peaks at one of their two ends, and an event in the middle run stands for both.
:class:`StepMemory` turns the events into candidates for the peak and evaluates them;
:class:`Polynomials` gives the peak as the largest of a few polynomials in chosen symbols;
:func:`phases` summarises a timeline.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

import numpy as np
import sympy

from symbert.analysis.activations import activations
from symbert.analysis.breakdown import Breakdown, model_of
from symbert.analysis.sizes import Size, add_to, at_least, expr_of, generator_values, generators, scaled, size_of
from symbert.ir import Graph
from symbert.parallel import Layout, stage_factor, whole_sequence
from symbert.symbols import ROUND, pad512, seq_len
from symbert.training import exact
from symbert.training.driver import Driver
from symbert.training.events import Alloc, Change, Mark
from symbert.training.ledger import Ledger, Snapshot
from symbert.training.plan import Plan
from symbert.training.runtime import reserved_estimate
from symbert.training.states import CATEGORIES, Training


@dataclass(frozen=True)
class Candidate:
    """A possible peak: an event, with what the runs not replayed hold added (symbolic in their count).

    ``index`` names the run the event is in, as a formula in the block count (``L - 2``), when the
    event belongs to a replayed block.
    """

    event: Snapshot
    memory: Mapping[str, Size]
    index: sympy.Expr | None

    @property
    def total(self) -> sympy.Expr:
        """Bytes, as a formula in the model's symbols, B and seq_len."""
        return sympy.Add(*(expr_of(s) for s in self.memory.values()))

    @property
    def where(self) -> str:
        index = "" if self.index is None else f" [{self.index}]"
        return f"step {self.event.step} {self.event.phase}: {self.event.label}{index}"


@dataclass(frozen=True)
class Point:
    """One event at concrete values: bytes per category."""

    step: int
    phase: str
    label: str
    index: int | None
    bytes: Mapping[str, int]

    @property
    def total(self) -> int:
        return sum(self.bytes.values())

    @property
    def where(self) -> str:
        index = "" if self.index is None else f" [{self.index}]"
        return f"step {self.step} {self.phase}: {self.label}{index}"


class StepMemory:
    """Memory over replayed training steps: every event as sympy, and the peak among them.

    ``runs`` gives how many runs of each block were replayed: all of them (an exact timeline at that
    count), or three, the others added as the middle run's steady state times their number, which
    holds for any count of at least three. Evaluation is numpy over a shared list of monomials, in int64
    where a bound proves it exact and in Python integers otherwise (:mod:`symbert.training.exact`).

    A step of m micro-batches is replayed as one micro-batch in the steady state: its forward and
    backward events also hold every parameter's gradient (accumulated by the micro-batches before it)
    and, on the first of several pipeline stages, what the other micro-batches in flight keep
    (:func:`in_flight`).
    """

    def __init__(
        self,
        graph: Graph,
        training: Training,
        runs: Mapping[str, int],
        steps: int = 2,
        values: Mapping[sympy.Symbol, int] | None = None,
        open_workspaces: bool = False,
    ) -> None:
        training = training.for_model(model_of(graph))
        self.graph, self.training, self.runs = graph, training, dict(runs)
        self.plan = plan = Plan(graph, training, self.runs, values, open_workspaces=open_workspaces)
        replayed = Ledger(plan.graph.blocks, Driver(plan).run(steps))
        self.events = replayed.snapshots
        self.in_flight = in_flight(graph, training, values)
        accumulating = training.memory.layout.microbatches > 1
        self.accumulated = size_of(self.states["gradients"]) if accumulating else None
        self.hidden_runs = {b: sympy.expand(block.count - self.runs[b]) for b, block in graph.blocks.items()}
        self._replayed = {b for b, hidden in self.hidden_runs.items() if hidden == 0}  # every run replayed
        self._indices: dict[tuple[str, int], sympy.Expr] = {}
        self._steady = {
            block: {
                what: {c: scaled(s, self.hidden_runs[block]) for c, s in state.items()}
                for what, state in steady.items()
            }
            for block, steady in replayed.steady.items()
        }
        self.candidates = [c for event in self.events for c in self.candidates_at(event)]
        self.monomials, self.table = table_of(self.candidates)
        self._polynomials: dict[tuple, Polynomials] = {}

    @property
    def states(self) -> dict[str, sympy.Expr]:
        """The model states' bytes, as the plan has them."""
        return self.plan.states

    def candidates_at(self, event: Snapshot) -> list[Candidate]:
        """The event, once per place the runs not replayed may stand (an event in a middle run: two)."""
        options = []
        for block, status in event.hidden.items():
            if block in self._replayed:
                continue
            saved_, grads, cached = (self._steady[block][k] for k in ("saved", "grads", "cached"))
            holding = self._steady[block].get("holding", cached)
            choices = {"none": [None], "saved": [saved_], "cached": [cached], "holding": [holding], "grads": [grads]}
            choices |= {"forward": [None, holding], "backward": [grads, saved_]}
            options.append([(block, extra) for extra in choices[status]])
        out = []
        for combo in itertools.product(*options):
            memory = dict(event.memory)  # a category's size is the snapshot's until something is added to it
            if event.phase in ("forward", "backward"):
                for c, extra in self.in_flight.items():
                    _add(memory, event.memory, c, extra)
                if self.accumulated is not None:  # a later micro-batch: every gradient is there already
                    memory["gradients"] = dict(self.accumulated)
            for _, extra in combo:
                for c, size in (extra or {}).items():
                    _add(memory, event.memory, c, size)
            out.append(Candidate(event, memory, self._index(event, dict(combo))))
        return out

    def _index(self, event: Snapshot, extras: Mapping[str, object]) -> sympy.Expr | None:
        if event.run is None:
            return None
        block, run = event.run
        if block in self._replayed or run == 0:
            return self._run_index(block, run)
        if run == self.runs[block] - 1:
            return self._run_index(block, -1)
        extra = extras.get(block)
        after = extra is not None and any(extra is self._steady[block].get(k) for k in ("saved", "cached", "holding"))
        return self._run_index(block, -2) if after else self._run_index(block, 1)

    def _run_index(self, block: str, run: int) -> sympy.Expr:
        """Run ``run`` of ``block`` as a formula, counted from the block's end where negative (−1: the last)."""
        if (block, run) not in self._indices:
            count = self.graph.blocks[block].count
            self._indices[(block, run)] = count + run if run < 0 else sympy.Integer(run)
        return self._indices[(block, run)]

    def with_layout(self, values: Mapping[sympy.Symbol, int]) -> dict[sympy.Symbol, int]:
        """``values`` with the parallel degrees (d, …) of the training's layout, which formulas keep symbolic."""
        return {**self.training.memory.layout.values(), **values}

    def check(self, values: Mapping[sympy.Symbol, int]) -> None:
        """Raise unless the replay holds at ``values``: at least three runs of each block, or all of them."""
        values = self.with_layout(values)
        for block, hidden in self.hidden_runs.items():
            left = sympy.sympify(hidden).subs(values)
            if left.is_number and (left < 0 or (left > 0 and self.runs[block] < 3)):
                raise ValueError(f"{block} was replayed {self.runs[block]} times; it runs {left + self.runs[block]}")

    def monomial_values(self, values: Mapping[sympy.Symbol, int]) -> np.ndarray:
        """Every monomial at ``values`` (each symbol in them must be given)."""
        values = self.with_layout(values)
        self.check(values)
        out = []
        exact_values = {k: sympy.Integer(v) for k, v in values.items()}
        for m in self.monomials:
            value = m.xreplace(exact_values)  # symbols for integers: subs' result, without its pattern matching
            if not value.is_Integer:
                missing = ", ".join(sorted(str(s) for s in value.free_symbols))
                raise ValueError(f"memory needs values for: {missing}")
            out.append(int(value))
        return exact.int_array(out)

    def memory(self, values: Mapping[sympy.Symbol, int]) -> np.ndarray:
        """Every candidate's bytes per category at ``values``, exactly (int64 or Python ints)."""
        return exact.matmul(self.table, self.monomial_values(values))

    def timeline(self, values: Mapping[sympy.Symbol, int]) -> list[Point]:
        """Every candidate at ``values``, in replay order."""
        memory = self.memory(values)
        return [self._point(i, memory[i], values) for i in range(len(self.candidates))]

    def peak(self, values: Mapping[sympy.Symbol, int]) -> Point:
        """The highest event at ``values`` (the first, if several tie)."""
        memory = self.memory(values)
        i = int(np.argmax(memory.sum(axis=1)))
        return self._point(i, memory[i], values)

    def candidate(self, values: Mapping[sympy.Symbol, int]) -> Candidate:
        """The candidate that peaks at ``values``."""
        return self.candidates[int(np.argmax(self.memory(values).sum(axis=1)))]

    def formula(self, values: Mapping[sympy.Symbol, int]) -> sympy.Expr:
        """The formula of the peak at ``values``, symbolic in every symbol; in a block's count too when
        at least three runs were replayed (else that count is fixed at the number replayed)."""
        fixed = {b.count: self.runs[name] for name, b in self.graph.blocks.items() if self.runs[name] < 3}
        return sympy.expand(self.candidate(values).total.subs(fixed))

    def _point(self, i: int, memory: np.ndarray, values: Mapping[sympy.Symbol, int]) -> Point:
        c = self.candidates[i]
        index = None if c.index is None else int(sympy.sympify(c.index).subs(self.with_layout(values)))
        return Point(
            c.event.step, c.event.phase, c.event.label, index, dict(zip(CATEGORIES, map(int, memory), strict=True))
        )

    def polynomials(self, values: Mapping[sympy.Symbol, int], free: tuple[sympy.Symbol, ...]) -> Polynomials:
        """The candidates at ``values`` as polynomials in the ``free`` symbols, the dominated ones dropped.

        A candidate is dominated when another's coefficients are all at least as large: its memory is
        then never higher, every symbol being positive. The peak is the largest of those kept. Each is
        derived once per ``values`` and ``free`` (``fit`` at several budgets asks again).
        """
        fixed = {k: v for k, v in self.with_layout(values).items() if k not in free}
        key = (frozenset(fixed.items()), tuple(free))
        if key not in self._polynomials:
            self._polynomials[key] = self._polynomials_at(fixed, free)
        return self._polynomials[key]

    def _polynomials_at(self, fixed: Mapping[sympy.Symbol, int], free: tuple[sympy.Symbol, ...]) -> Polynomials:
        self.check(fixed)
        terms: list[dict] = []
        pads: dict[sympy.Expr, list[tuple[int, int]]] = {}
        layout = self.training.memory.layout
        monomials = [sympy.expand(whole_sequence(m, layout).subs(fixed)) for m in self.monomials]
        gens = generators(monomials, free)
        for i, m in enumerate(monomials):
            if m.has(pad512) and m.free_symbols & set(free):
                coefficient, pad = m.as_coeff_Mul()
                if not isinstance(pad, pad512) or not coefficient.is_Integer:
                    raise ValueError(f"cannot compile the allocator's rounding term {m}")
                pads.setdefault(pad.args[0], []).append((i, int(coefficient)))
                terms.append({})
            else:
                terms.append(sympy.Poly(m, *free, *gens).as_dict())
        args = {arg: sympy.Poly(arg, *free, *gens).as_dict() for arg in pads}
        exponents = sorted({k for t in (*terms, *args.values()) for k in t})
        column = {k: j for j, k in enumerate(exponents)}
        to_terms = [[0] * len(exponents) for _ in self.monomials]
        for i, t in enumerate(terms):
            for k, v in t.items():
                if not v.is_Integer:
                    raise ValueError(f"memory needs values for: {', '.join(sorted(map(str, v.free_symbols)))}")
                to_terms[i][column[k]] = int(v)
        matrix = exact.int_array(to_terms).reshape(len(self.monomials), len(exponents))
        to_pads = [[0] * len(pads) for _ in self.monomials]
        pad_rows = [[0] * len(exponents) for _ in pads]
        for j, (arg, uses) in enumerate(pads.items()):
            for i, c in uses:
                to_pads[i][j] += c
            for k, v in args[arg].items():
                pad_rows[j][column[k]] = int(v)
        pad_matrix = exact.int_array(to_pads).reshape(len(self.monomials), len(pads))
        pad_args = exact.int_array(pad_rows).reshape(len(pads), len(exponents))
        summed = self.table.sum(axis=1)
        rows = np.concatenate([exact.matmul(summed, matrix), exact.matmul(summed, pad_matrix)], axis=1)
        first: dict[tuple[int, ...], int] = {}
        for i, row in enumerate(rows.tolist()):
            first.setdefault(tuple(row), i)
        kept: list[int] = []
        for i in sorted(first.values(), key=lambda i: (-sum(rows[i].tolist()), i)):
            if not kept or not (rows[kept] >= rows[i]).all(axis=1).any():
                kept.append(i)
        kept.sort()
        return Polynomials(
            free,
            tuple(exponents),
            tuple(self.candidates[i] for i in kept),
            exact.matmul(self.table[kept], matrix),
            pad_args,
            exact.matmul(self.table[kept], pad_matrix),
            gens,
        )


@dataclass(frozen=True)
class Polynomials:
    """The peak at fixed values of all but the ``free`` symbols: the largest of a few polynomials,
    plus, under a device runtime, the allocator's rounding of allocations whose size depends on them.

    ``coefficients[i, c, t]`` (int64, or Python ints where one does not fit) is candidate i's coefficient
    in category c of term ``exponents[t]``, a monomial in the free symbols and ``gens``: the sizes
    rounded up to a multiple (``⌈seq_len/32⌉``), evaluated from the free symbols
    (:func:`~symbert.analysis.sizes.generator_values`). Rounding term j is
    ``pad512(pad_args[j] · terms)``, which candidate i holds ``pad_coefficients[i, c, j]`` times (it is
    at most 511 bytes, so the polynomial alone is a lower bound). Calls take numpy arrays (or numbers)
    of non-negative integers for the free symbols and evaluate exactly
    (:func:`symbert.training.exact.polyval_rounded`); :meth:`exact` evaluates one point in Python integers.
    """

    free: tuple[sympy.Symbol, ...]
    exponents: tuple[tuple[int, ...], ...]
    candidates: tuple[Candidate, ...]
    coefficients: np.ndarray
    pad_args: np.ndarray | None = None
    pad_coefficients: np.ndarray | None = None
    gens: tuple[sympy.Expr, ...] = ()

    @property
    def totals(self) -> np.ndarray:
        return self.coefficients.sum(axis=1)

    @property
    def _pad_coefficients(self) -> np.ndarray:
        if self.pad_coefficients is None:
            return np.zeros((*self.coefficients.shape[:2], 0), dtype=np.int64)
        return self.pad_coefficients

    @property
    def pad_totals(self) -> np.ndarray:
        return self._pad_coefficients.sum(axis=1)

    def _monomials(self) -> list[sympy.Expr]:
        return [sympy.Mul(*(s**e for s, e in zip((*self.free, *self.gens), k, strict=True))) for k in self.exponents]

    def _points(self, x: tuple) -> list:
        """The free symbols' values followed by the generators' at them."""
        return generator_values(self.gens, self.free, x)

    def polynomial(self, i: int) -> sympy.Expr:
        """Candidate i's total without the allocator's rounding terms, a lower bound of it."""
        return sympy.Add(*(int(c) * m for c, m in zip(self.totals[i], self._monomials(), strict=True)))

    def expr(self, i: int) -> sympy.Expr:
        """Candidate i's total, with its rounding terms."""
        monomials = self._monomials()
        pads = [pad512(sympy.Add(*(int(a) * m for a, m in zip(row, monomials, strict=True)))) for row in self._args]
        return self.polynomial(i) + sympy.Add(*(int(c) * p for c, p in zip(self.pad_totals[i], pads, strict=True)))

    @property
    def _args(self) -> np.ndarray:
        return self.pad_args if self.pad_args is not None else np.zeros((0, len(self.exponents)), dtype=np.int64)

    def exact(self, *x: int) -> list[int]:
        """Every candidate's total at one point, in Python integers."""
        powers = [_power(self._points(x), k) for k in self.exponents]
        pads = [-sum(int(a) * p for a, p in zip(row, powers, strict=True)) % ROUND for row in self._args]
        return [
            sum(int(c) * p for c, p in zip(row, powers, strict=True))
            + sum(int(c) * p for c, p in zip(pad_row, pads, strict=True))
            for row, pad_row in zip(self.totals, self.pad_totals, strict=True)
        ]

    def top(self, *x: int) -> sympy.Expr:
        """The polynomial that gives the peak at one point."""
        totals = self.exact(*x)
        return self.expr(totals.index(max(totals)))

    def values(self, *x) -> np.ndarray:
        """Every candidate's total at each point, rounding included: ``out[..., i]``, exactly."""
        rounding = (self._args, self.pad_totals, ROUND)
        return exact.polyval_rounded(self.exponents, self.totals, rounding, *self._points(x))

    def __call__(self, *x) -> np.ndarray:
        """The peak at each point, exactly (int64, or Python ints past 2**63)."""
        rounding = (self._args, self.pad_totals, ROUND)
        return exact.polymax_rounded(self.exponents, self.totals, rounding, *self._points(x))

    def breakdown(self, *x) -> tuple[np.ndarray, np.ndarray]:
        """At each point: the index of the candidate that peaks, and its bytes per category, exactly."""
        winner = self.values(*x).argmax(axis=-1)
        parts = np.stack(
            [
                exact.polyval_rounded(
                    self.exponents,
                    self.coefficients[:, c, :],
                    (self._args, self._pad_coefficients[:, c, :], ROUND),
                    *self._points(x),
                )
                for c in range(self.coefficients.shape[1])
            ],
            axis=-1,
        )
        picked = np.take_along_axis(parts, winner[..., None, None], axis=-2)[..., 0, :]
        return winner, picked


def _power(x, exponents: tuple[int, ...]):
    out = 1
    for v, e in zip(x, exponents, strict=True):
        out = out * v**e
    return out


def one_microbatch(graph: Graph, training: Training, values: Mapping[sympy.Symbol, int] | None) -> Breakdown:
    """What one micro-batch keeps for backward on the stage ``graph`` is: the activations pass without the
    pipeline's in-flight factor."""
    return activations(graph, replace(training.memory, layout=Layout()), values)


def in_flight(graph: Graph, training: Training, values: Mapping[sympy.Symbol, int] | None = None) -> dict[str, Size]:
    """On the first of several pipeline stages (``graph`` being its), what the other micro-batches in
    flight keep for backward while one runs forward and backward, by category: 1F1B's steady state,
    (k − 1) times one micro-batch's saved activations, k from :func:`symbert.parallel.stage_factor`."""
    layout = training.memory.layout
    extra: dict[str, Size] = {"attention": {}, "activations": {}}
    if layout.pipeline == 1:
        return extra
    others = stage_factor(layout) - 1
    for c in one_microbatch(graph, training, values).contributions:
        category = "attention" if sympy.degree(at_least(c.total), seq_len) >= 2 else "activations"
        add_to(extra[category], size_of(c.total * others))
    return extra


def table_of(candidates: Sequence[Candidate]) -> tuple[list[sympy.Expr], np.ndarray]:
    """The candidates' monomials, in a fixed order, and their coefficients: ``table[i, c, j]``, candidate i's
    category c at monomial j, int64.

    Candidates share the sizes of the categories nothing was added to (and the ledger's snapshots those that
    did not change): each distinct size is checked and made a row once."""
    distinct: dict[int, tuple[Size, Candidate]] = {}
    for c in candidates:
        for size in c.memory.values():
            distinct.setdefault(id(size), (size, c))
    column: dict[sympy.Expr, int] = {}  # in the order met; sorted below
    rows, columns, values = [], [], []
    for r, (size, c) in enumerate(distinct.values()):
        for m, coefficient in size.items():
            if not (isinstance(coefficient, (int, sympy.Integer)) or sympy.sympify(coefficient).is_Integer):
                raise ValueError(f"{c.event.label}: a size with a fractional coefficient, {coefficient}·{m}")
            rows.append(r)
            columns.append(column.setdefault(m, len(column)))
            values.append(int(coefficient))  # never truncated: past int64, numpy raises
    monomials = sorted(column, key=sympy.default_sort_key)
    place = np.empty(len(column), dtype=np.intp)
    place[[column[m] for m in monomials]] = np.arange(len(monomials))
    table = np.zeros((len(distinct), len(monomials)), dtype=np.int64)
    table[np.array(rows, dtype=np.intp), place[np.array(columns, dtype=np.intp)]] = np.array(values, dtype=np.int64)
    row_of = {key: r for r, key in enumerate(distinct)}
    index = [[row_of[id(c.memory[category])] for category in CATEGORIES] for c in candidates]
    return monomials, table[np.array(index, dtype=np.intp).reshape(len(candidates), len(CATEGORIES))]


def _add(memory: dict[str, Size], shared: Mapping[str, Size], category: str, extra: Size) -> None:
    """Add ``extra`` to ``memory``'s ``category``, copying it first where it is still ``shared``'s."""
    if extra:
        if memory[category] is shared[category]:
            memory[category] = dict(memory[category])
        add_to(memory[category], extra)


def step_memory(
    graph: Graph, training: Training, values: Mapping[sympy.Symbol, int] | None = None, full: bool = False,
    open_workspaces: bool = False,
) -> StepMemory:
    """Replay two training steps of ``graph``.

    Each block is replayed three times and the rest is symbolic, unless it runs fewer times at
    ``values``, or ``full`` asks for every run (an exact timeline at ``values``). ``open_workspaces``: the
    runtime's workspace sizes stay symbols (:meth:`~symbert.training.runtime.Runtime.opened`).
    """
    runs = {}
    for name, block in graph.blocks.items():
        count = sympy.sympify(block.count).subs({**training.memory.layout.values(), **(values or {})})
        if full and not count.is_Integer:
            raise ValueError(f"a full replay needs the count of {name}: {block.count}")
        runs[name] = int(count) if count.is_Integer and (full or count < 3) else 3
    return StepMemory(graph, training, runs, values=values, open_workspaces=open_workspaces)


#: The most runs of repeated blocks :func:`reserved` replays one by one.
MAX_REPLAYED_RUNS = 4096


def reserved(graph: Graph, training: Training, values: Mapping[sympy.Symbol, int], steps: int = 2) -> int | None:
    """An estimate of the caching allocator's reserved bytes over ``steps`` training steps at ``values``.

    Every run is replayed; at each event the allocations alive (each rounded up to 512 bytes) are
    grouped into segments by :func:`symbert.training.runtime.reserved_estimate`, and the largest such
    total is the estimate. None without a device runtime, or when more than :data:`MAX_REPLAYED_RUNS`
    runs would have to be replayed (a million layers).
    """
    if training.runtime is None:
        return None
    values = {**training.memory.layout.values(), **values}
    runs = {name: int(sympy.sympify(block.count).subs(values)) for name, block in graph.blocks.items()}
    if sum(runs.values()) > MAX_REPLAYED_RUNS:
        return None
    plan = Plan(graph, training, runs)
    sizes: dict[frozenset, int] = {}
    alive: dict[int, int] = {}
    others = in_flight_allocations(graph, training, values)
    highest = 0
    for event in Driver(plan).run(steps):
        if isinstance(event, Change):
            for size, copies in _requests(plan, event):
                key = frozenset(size.items())
                if key not in sizes:
                    n = int(expr_of(size).subs(values))
                    sizes[key] = n + (-n % ROUND)
                sign = 1 if isinstance(event, Alloc) else -1
                alive[sizes[key]] = alive.get(sizes[key], 0) + sign * int(sympy.sympify(copies).subs(values))
        elif isinstance(event, Mark):
            held = [*alive.items(), *(others.items() if event.phase in ("forward", "backward") else ())]
            highest = max(highest, reserved_estimate(n for n, count in held for _ in range(count)))
    return highest


def _requests(plan: Plan, change: Change) -> list[tuple[Size, sympy.Expr]]:
    """The allocations a change is made of, as (bytes, how many): a model state's per group of equal tensors
    (or shards); Adam's step counts too; none for the bytes counted without a request."""
    if change.kind == "state" and change.state is not None:
        state = change.state
        if not state.per_element or not state.tensors:
            return []
        return [(size_of(state.per_element * elements), state.tensors * count)
                for elements, count in plan.sharding.local(plan.graph, state.what)]
    if change.kind in ("counted", "scratch"):
        return []
    return list(change.requests or [(change.size, sympy.S.One)])


def in_flight_allocations(graph: Graph, training: Training, values: Mapping[sympy.Symbol, int]) -> dict[int, int]:
    """The allocations :func:`in_flight` holds, by size rounded to 512 bytes, with how many of each
    (the micro-batches in flight rounded up, as Megatron-LM counts them)."""
    layout = training.memory.layout
    if layout.pipeline == 1:
        return {}
    others = sympy.ceiling(stage_factor(layout).subs(layout.values())) - 1
    out: dict[int, int] = {}
    for c in one_microbatch(graph, training, values).contributions:
        n = int(sympy.sympify(c.expr).subs(values))
        n += -n % ROUND
        out[n] = out.get(n, 0) + int(sympy.sympify(c.count).subs(values)) * int(others)
    return out


@dataclass(frozen=True)
class Phase:
    """One phase of one step on a timeline: its highest event and the memory it ends with."""

    step: int
    name: str
    peak: Point
    end: int


def phases(points: Sequence[Point]) -> list[Phase]:
    """The timeline's phases in order (the starting point, step 0, left out)."""
    out: list[Phase] = []
    for (step, name), group in itertools.groupby((p for p in points if p.step), key=lambda p: (p.step, p.phase)):
        group = list(group)
        out.append(Phase(step, name, max(group, key=lambda p: p.total), group[-1].total))
    return out
