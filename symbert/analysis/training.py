"""Training-step memory: the peak over replayed steps, as formulas and at concrete values.

:func:`step_memory` replays two steps (:mod:`symbert.analysis.replay`): the first, where the optimizer
states appear at the update, and a second, where they are present from the start. A repeated block
can be replayed as three runs (first, middle, last), the other L − 3 runs being added as multiples of
the middle run's steady state, so that the peak stays symbolic in L: memory is linear in the index of
the running layer, so over the middle runs it peaks at one of their two ends, and an event in the
middle run stands for both. :class:`StepMemory` turns the events into candidates for the peak and
evaluates them; :class:`Polynomials` gives the peak as the largest of a few polynomials in chosen
symbols; :func:`phases` summarises a timeline.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import sympy

from symbert.analysis import exact
from symbert.analysis.replay import Event, Replay
from symbert.analysis.sizes import Size, add_to, expr_of, scaled
from symbert.analysis.states import CATEGORIES, Training
from symbert.ir import Graph


@dataclass(frozen=True)
class Candidate:
    """A possible peak: an event, with what the runs not replayed hold added (symbolic in their count).

    ``index`` names the run the event is in, as a formula in the block count (``L - 2``), when the
    event belongs to a replayed block.
    """

    event: Event
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
    where a bound proves it exact and in Python integers otherwise (:mod:`symbert.analysis.exact`).
    """

    def __init__(self, graph: Graph, training: Training, runs: Mapping[str, int], steps: int = 2) -> None:
        self.graph, self.training, self.runs = graph, training, dict(runs)
        replayed = Replay(graph, training, self.runs)
        self.events = replayed.run(steps)
        self.states = replayed.states
        self.hidden_runs = {b: sympy.expand(block.count - self.runs[b]) for b, block in graph.blocks.items()}
        self._steady = {
            block: {
                what: {c: scaled(s, self.hidden_runs[block]) for c, s in state.items()}
                for what, state in steady.items()
            }
            for block, steady in replayed.steady.items()
        }
        self.candidates = [c for event in self.events for c in self._candidates(event)]
        monomials = {m for c in self.candidates for size in c.memory.values() for m in size}
        self.monomials = sorted(monomials, key=sympy.default_sort_key)
        column = {m: i for i, m in enumerate(self.monomials)}
        self.table = np.zeros((len(self.candidates), len(CATEGORIES), len(self.monomials)), dtype=np.int64)
        for i, c in enumerate(self.candidates):
            for j, category in enumerate(CATEGORIES):
                for m, coefficient in c.memory[category].items():
                    self.table[i, j, column[m]] = coefficient

    def _candidates(self, event: Event) -> list[Candidate]:
        """The event, once per place the runs not replayed may stand (an event in a middle run: two)."""
        options = []
        for block, status in event.hidden.items():
            if self.hidden_runs[block] == 0:
                continue
            saved_, grads = self._steady[block]["saved"], self._steady[block]["grads"]
            choices = {"none": [None], "saved": [saved_], "grads": [grads], "forward": [None, saved_]}
            choices["backward"] = [grads, saved_]
            options.append([(block, extra) for extra in choices[status]])
        out = []
        for combo in itertools.product(*options):
            memory = {c: dict(s) for c, s in event.memory.items()}
            for _, extra in combo:
                for c in CATEGORIES:
                    add_to(memory[c], (extra or {}).get(c, {}))
            out.append(Candidate(event, memory, self._index(event, dict(combo))))
        return out

    def _index(self, event: Event, extras: Mapping[str, object]) -> sympy.Expr | None:
        if event.run is None:
            return None
        block, run = event.run
        count = self.graph.blocks[block].count
        if self.hidden_runs[block] == 0 or run == 0:
            return sympy.Integer(run)
        if run == self.runs[block] - 1:
            return count - 1
        return count - 2 if extras.get(block) is self._steady[block]["saved"] else sympy.Integer(1)

    def check(self, values: Mapping[sympy.Symbol, int]) -> None:
        """Raise unless the replay holds at ``values``: at least three runs of each block, or all of them."""
        for block, hidden in self.hidden_runs.items():
            left = sympy.sympify(hidden).subs(values)
            if left.is_number and (left < 0 or (left > 0 and self.runs[block] < 3)):
                raise ValueError(f"{block} was replayed {self.runs[block]} times; it runs {left + self.runs[block]}")

    def monomial_values(self, values: Mapping[sympy.Symbol, int]) -> np.ndarray:
        """Every monomial at ``values`` (each symbol in them must be given)."""
        self.check(values)
        out = []
        for m in self.monomials:
            value = m.subs(values)
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
        index = None if c.index is None else int(sympy.sympify(c.index).subs(values))
        return Point(
            c.event.step, c.event.phase, c.event.label, index, dict(zip(CATEGORIES, map(int, memory), strict=True))
        )

    def polynomials(self, values: Mapping[sympy.Symbol, int], free: tuple[sympy.Symbol, ...]) -> Polynomials:
        """The candidates at ``values`` as polynomials in the ``free`` symbols, the dominated ones dropped.

        A candidate is dominated when another's coefficients are all at least as large: its memory is
        then never higher, every symbol being positive. The peak is the largest of those kept.
        """
        fixed = {k: v for k, v in values.items() if k not in free}
        self.check(fixed)
        terms = [sympy.Poly(m.subs(fixed), *free).as_dict() for m in self.monomials]
        exponents = sorted({k for t in terms for k in t})
        column = {k: j for j, k in enumerate(exponents)}
        to_terms = [[0] * len(exponents) for _ in self.monomials]
        for i, t in enumerate(terms):
            for k, v in t.items():
                if not v.is_Integer:
                    raise ValueError(f"memory needs values for: {', '.join(sorted(map(str, v.free_symbols)))}")
                to_terms[i][column[k]] = int(v)
        matrix = exact.int_array(to_terms).reshape(len(self.monomials), len(exponents))
        rows = exact.matmul(self.table.sum(axis=1), matrix)
        first: dict[tuple[int, ...], int] = {}
        for i, row in enumerate(rows.tolist()):
            first.setdefault(tuple(row), i)
        kept: list[int] = []
        for i in sorted(first.values(), key=lambda i: (-sum(rows[i].tolist()), i)):
            if not kept or not (rows[kept] >= rows[i]).all(axis=1).any():
                kept.append(i)
        kept.sort()
        coefficients = exact.matmul(self.table[kept], matrix)
        return Polynomials(free, tuple(exponents), tuple(self.candidates[i] for i in kept), coefficients)


@dataclass(frozen=True)
class Polynomials:
    """The peak at fixed values of all but the ``free`` symbols: the largest of a few polynomials.

    ``coefficients[i, c, t]`` is candidate i's coefficient of term ``exponents[t]`` in category c
    (int64, or Python ints where a coefficient does not fit). Calls take numpy arrays (or numbers) of
    non-negative integers for the free symbols and evaluate exactly (:func:`symbert.analysis.exact.polyval`);
    :meth:`exact` evaluates one point in Python integers.
    """

    free: tuple[sympy.Symbol, ...]
    exponents: tuple[tuple[int, ...], ...]
    candidates: tuple[Candidate, ...]
    coefficients: np.ndarray

    @property
    def totals(self) -> np.ndarray:
        return self.coefficients.sum(axis=1)

    def expr(self, i: int) -> sympy.Expr:
        """Candidate i's total as a sympy polynomial."""
        monomials = [sympy.Mul(*(s**e for s, e in zip(self.free, k, strict=True))) for k in self.exponents]
        return sympy.Add(*(int(c) * m for c, m in zip(self.totals[i], monomials, strict=True)))

    def exact(self, *x: int) -> list[int]:
        """Every candidate's total at one point, in Python integers."""
        powers = [_power(x, k) for k in self.exponents]
        return [sum(int(c) * p for c, p in zip(row, powers, strict=True)) for row in self.totals]

    def top(self, *x: int) -> sympy.Expr:
        """The polynomial that gives the peak at one point."""
        totals = self.exact(*x)
        return self.expr(totals.index(max(totals)))

    def values(self, *x) -> np.ndarray:
        """Every candidate's total at each point: ``out[..., i]``, exactly."""
        return exact.polyval(self.exponents, self.totals, *x)

    def __call__(self, *x) -> np.ndarray:
        """The peak at each point, exactly (int64, or Python ints past 2**63)."""
        return exact.polymax(self.exponents, self.totals, *x)

    def breakdown(self, *x) -> tuple[np.ndarray, np.ndarray]:
        """At each point: the index of the candidate that peaks, and its bytes per category, exactly."""
        winner = self.values(*x).argmax(axis=-1)
        parts = np.stack(
            [exact.polyval(self.exponents, self.coefficients[:, c, :], *x) for c in range(self.coefficients.shape[1])],
            axis=-1,
        )
        picked = np.take_along_axis(parts, winner[..., None, None], axis=-2)[..., 0, :]
        return winner, picked


def _power(x, exponents: tuple[int, ...]):
    out = 1
    for v, e in zip(x, exponents, strict=True):
        out = out * v**e
    return out


def step_memory(
    graph: Graph, training: Training, values: Mapping[sympy.Symbol, int] | None = None, full: bool = False
) -> StepMemory:
    """Replay two training steps of ``graph``.

    Each block is replayed three times and the rest is symbolic, unless it runs fewer times at
    ``values``, or ``full`` asks for every run (an exact timeline at ``values``).
    """
    runs = {}
    for name, block in graph.blocks.items():
        count = sympy.sympify(block.count).subs(values or {})
        if full and not count.is_Integer:
            raise ValueError(f"a full replay needs the count of {name}: {block.count}")
        runs[name] = int(count) if count.is_Integer and (full or count < 3) else 3
    return StepMemory(graph, training, runs)


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
