"""``symbert explore``: one self-contained HTML page per model (or a comparison of several), offline.

The page carries the architecture diagrams (Graphviz SVG, overview and layer levels), a calculator and
the formulas. Everything it shows is computed here, by the same passes the other commands run, and
written into the page in one of three forms:

* closed forms compiled to BigInt JavaScript (:mod:`symbert.render.js`) and evaluated in the browser
  for any B and seq_len: parameters, activation bytes and FLOPs (in total and per diagram box), for
  every choice of precision, attention and recomputation;
* the training step's candidates for the peak, per setup (precision, attention, recompute, optimizer
  and the GPU's runtime): each a row of integer coefficients over compiled monomials in B and seq_len,
  so the page finds every phase's peak, its breakdown and the largest batch that fits exactly as
  :class:`~symbert.training.step.StepMemory` does;
* values precomputed at a grid of B and seq_len where no closed form exists: the caching allocator's
  simulation (:mod:`symbert.training.oom`) for the command's precision, attention, recompute and optimizer,
  every GPU: the reserved bytes at each point, and each card's largest batch at each of the grid's seq_len,
  as ``symbert fit`` finds it. One replay of the step serves every point and card.

Formulas are MathML (:mod:`symbert.render.mathml`) with their LaTeX (:mod:`symbert.render.latex`).
The output is deterministic: the same command writes the same bytes.
"""

from __future__ import annotations

import contextlib
import functools
import html
import itertools
import json
import multiprocessing
import os
import re
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field, replace
from importlib.resources import files

import numpy as np
import sympy

from symbert.analysis.activations import activations
from symbert.analysis.breakdown import Breakdown
from symbert.analysis.flops import flops
from symbert.analysis.params import params
from symbert.analysis.policy import ATTENTION, RECOMPUTE
from symbert.analysis.sizes import Size
from symbert.api import per_gpu, trace
from symbert.configs import Config, ConfigError
from symbert.formula import human
from symbert.gpus import GPUS
from symbert.render import js
from symbert.render.diagram import boxes as diagram_boxes
from symbert.render.diagram import diagram
from symbert.render.latex import notation
from symbert.render.mathml import mathml
from symbert.render.reports import describe
from symbert.symbols import B, below, pad512, seq_len
from symbert.training import exact
from symbert.training.oom import Simulation, applies, cap_of, largest
from symbert.training.runtime import Runtime
from symbert.training.states import CATEGORIES, OPTIMIZERS, PRECISIONS, Training, model_states
from symbert.training.step import Candidate, step_memory, table_of
from symbert.training.swap import OptimizerSwap

#: The diagram levels the page shows.
LEVELS = ("overview", "layer")
#: The attention kinds the calculator offers (with the command's own, when it names another).
PAGE_ATTENTION = ("eager", "sdpa")
FREE = (B, seq_len)
#: The model states, in the order the page lists them.
STATES = ("weights", "gradients", "optimizer")
#: The most points of the reserved-memory grid (each one allocator simulation, each seq_len one search per GPU).
MAX_GRID = 64
#: The calculator's axes besides B and seq_len.
AXES = ("precision", "attention", "recompute", "optimizer", "gpu")


@dataclass(frozen=True)
class Axes:
    """The calculator's choices besides B and seq_len, the first of each being the command's."""

    precision: tuple[str, ...]
    attention: tuple[str, ...]
    recompute: tuple[str, ...]
    optimizer: tuple[str, ...]
    gpu: tuple[str, ...]

    @classmethod
    def around(cls, training: Training) -> Axes:
        memory = training.memory

        def first(value: str, values: Sequence[str]) -> tuple[str, ...]:
            return (value, *(v for v in values if v != value))

        attention = first(memory.attention, [a for a in ATTENTION if a in PAGE_ATTENTION])
        return cls(
            first(training.precision, PRECISIONS),
            attention,
            first(memory.recompute, RECOMPUTE),
            first(training.optimizer, OPTIMIZERS),
            first(training.gpu or next(iter(GPUS)), list(GPUS)),
        )


def training_for(base: Training, precision: str, attention: str, recompute: str, optimizer: str, gpu: str) -> Training:
    """``base`` with one choice of each axis: the command's dtype where its precision is kept, else the
    precision's default."""
    memory = base.memory if precision == base.precision else replace(base.memory, dtype=None, amp=False)
    memory = replace(memory, attention=attention, recompute=recompute)
    return Training(optimizer, precision, memory, gpu, base.cublas_workspace_config, base.engine)


class Table:
    """Values written once into the page and referred to by index: compiled functions, texts."""

    def __init__(self) -> None:
        self.items: dict[str, int] = {}

    def add(self, item: str) -> int:
        return self.items.setdefault(item, len(self.items))

    def listed(self) -> list[str]:
        return list(self.items)


@dataclass
class Page:
    """The tables every model of the page shares: compiled functions and formula texts, each written once."""

    functions: Table = field(default_factory=Table)
    texts: Table = field(default_factory=Table)
    compiled: dict[sympy.Expr, int] = field(default_factory=dict)
    printed: dict[sympy.Expr, int] = field(default_factory=dict)

    def function(self, expr: sympy.Expr) -> int:
        """A compiled function of B and seq_len (a constant too); every other symbol must have its value."""
        if expr not in self.compiled:
            left = sympy.sympify(expr).free_symbols - set(FREE)
            if left:
                raise ValueError(f"cannot compile {expr}: no values for {', '.join(sorted(map(str, left)))}")
            self.compiled[expr] = self.functions.add(js.function(expr, FREE))
        return self.compiled[expr]

    def formula(self, expr: sympy.Expr) -> int:
        """A formula's MathML and LaTeX, as one text entry."""
        if expr not in self.printed:
            texts = json.dumps([mathml(expr), notation().latex(expr)], ensure_ascii=False)
            self.printed[expr] = self.texts.add(texts)
        return self.printed[expr]


def _key(*parts: str) -> str:
    return "|".join(parts)


def _box_sums(breakdown: Breakdown, box_of: dict[str, str]) -> dict[str, sympy.Expr]:
    """Each box's share of a quantity: the contributions of its nodes, and of what a node adds under
    its own name (autocast's weight copies ``…/query/cast0``), all runs counted."""
    out: dict[str, sympy.Expr] = {}
    for c in breakdown.contributions:
        node = c.node
        while node not in box_of and "/" in node:
            node = node.rsplit("/", 1)[0]
        out[box_of[node]] = out.get(box_of[node], sympy.S.Zero) + c.total
    return {k: sympy.expand(v) for k, v in out.items()}


def _per_box(breakdown: Breakdown, levels: dict[str, dict[str, str]], sizes: dict, page: Page) -> dict:
    """Per level, each box's formula and its compiled value."""
    return {
        level: {box: [page.formula(e), page.function(e.subs(sizes))] for box, e in _box_sums(breakdown, of).items()}
        for level, of in levels.items()
    }


def _attentions(config: Config, base: Training, axes: Axes) -> list[str]:
    """The attention kinds of ``axes`` the model runs, at some precision and recomputation."""
    graph, sizes = trace(config), config.symbols()

    def runs(p: str, a: str, r: str) -> bool:
        try:
            activations(graph, training_for(base, p, a, r, axes.optimizer[0], axes.gpu[0]).memory, sizes)
        except ConfigError:
            return False
        return True

    choices = list(itertools.product(axes.precision, axes.recompute))
    found = [a for a in axes.attention if any(runs(p, a, r) for p, r in choices)]
    if not found:
        raise ConfigError(f"{config.name} runs none of the attention kinds {', '.join(axes.attention)}")
    return found


def _memory_setups(config: Config, base: Training, axes: Axes, attentions: list[str], page: Page) -> dict:
    """Totals and per-box amounts of activation bytes and FLOPs per (precision, attention, recompute) the
    model runs, and each box's parameters."""
    graph, sizes = trace(config), config.symbols()
    drawn = {level: diagram_boxes(graph, level) for level in LEVELS}
    levels = {level: {n.name: box.id for box in boxes for n in box.nodes} for level, boxes in drawn.items()}
    totals, per_box = {}, {}
    for p, a, r in itertools.product(axes.precision, attentions, axes.recompute):
        memory = training_for(base, p, a, r, axes.optimizer[0], axes.gpu[0]).memory
        try:
            act = activations(graph, memory, sizes)
        except ConfigError:
            continue
        f = flops(graph, memory, sizes)
        quantities = {"activation_bytes": act, "flops_forward": f["forward"], "flops_backward": f["backward"]}
        totals[_key(p, a, r)] = {q: page.function(b.total.subs(sizes)) for q, b in quantities.items()}
        per_box[_key(p, a, r)] = {q: _per_box(b, levels, sizes, page) for q, b in quantities.items()}
    param_boxes = _per_box(params(graph), levels, sizes, page)
    boxes = {level: [{"id": b.id, "params": param_boxes[level].get(b.id)} for b in drawn[level]] for level in LEVELS}
    return {"totals": totals, "boxes": per_box, "levels": boxes}


def _positive(term: sympy.Expr) -> bool:
    """Whether a term is at least 1 wherever B and seq_len are: no bracket or rounding term in it."""
    return not term.has(below, pad512)


Sizes = tuple[tuple[sympy.Symbol, int], ...]


@functools.lru_cache(maxsize=1 << 10)
def _index(index: sympy.Expr, sizes: Sizes) -> int:
    return int(sympy.sympify(index).subs(dict(sizes)))


#: Per config's sizes, each replay monomial as :meth:`Terms._split` splits it (shared by the replays of a process).
_SPLITS: dict[Sizes, dict[sympy.Expr, tuple[int, sympy.Expr]]] = {}


class Terms:
    """Terms in B and seq_len, each numbered once: the replays' monomials at a config's sizes are integer
    multiples of fewer terms (12·H·B·seq_len and 3·I·B·seq_len are both multiples of B·seq_len)."""

    def __init__(self, sizes: Sizes) -> None:
        self.sizes, self.index = dict(sizes), {}
        self.splits = _SPLITS.setdefault(sizes, {})

    def _split(self, monomial: sympy.Expr) -> tuple[int, int]:
        """A replay monomial at the sizes: an integer times a term in B and seq_len, by number."""
        if monomial not in self.splits:
            coefficient, term = sympy.expand(monomial.subs(self.sizes)).as_coeff_Mul()
            self.splits[monomial] = (int(coefficient), term) if coefficient.is_Integer else (1, coefficient * term)
        coefficient, term = self.splits[monomial]
        return coefficient, self.index.setdefault(term, len(self.index))

    def of(self, size: Size) -> dict[int, int]:
        """``size`` (monomial → coefficient) as term number → coefficient."""
        out: dict[int, int] = {}
        for m, c in size.items():
            coefficient, j = self._split(m)
            out[j] = out.get(j, 0) + coefficient * int(c)
        return {j: v for j, v in out.items() if v}

    def matrix(self, monomials: Sequence[sympy.Expr]) -> np.ndarray:
        """The matrix that takes coefficients of ``monomials`` to the terms' (numbering new terms)."""
        rows = [self.of({m: 1}) for m in monomials]
        out = [[0] * len(self.index) for _ in rows]
        for row, entries in zip(out, rows, strict=True):
            for j, v in entries.items():
                row[j] = v
        return exact.int_array(out).reshape(len(rows), len(self.index))


def _kept(rows: np.ndarray, group: list[int], positive: np.ndarray) -> list[int]:
    """The candidates of one phase that may be its peak, and its last: all pairs compared at once."""
    r = rows[group]
    over = (r[None, :, :] >= r[:, None, :]).all(axis=2)  # over[i, j]: j's coefficients all at least i's
    beats = ((r[None, :, :] > r[:, None, :]) & positive).any(axis=2)
    order = np.arange(len(group))
    earlier_or_beats = (order[None, :] < order[:, None]) | beats
    dropped = (over & earlier_or_beats & (order[None, :] != order[:, None])).any(axis=1)
    dropped[-1] = False
    return [i for i, d in zip(group, dropped.tolist(), strict=True) if not d]


#: A candidate on the page: where it is, and per category its (term number, coefficient) pairs.
Kept = tuple[str, tuple[tuple[tuple[int, int], ...], ...]]


@dataclass(frozen=True)
class Replayed:
    """A setup's training step, reduced: the terms in B and seq_len, and per phase its candidates for
    the peak."""

    terms: tuple[sympy.Expr, ...]
    phases: tuple[tuple[int, str, tuple[Kept, ...]], ...]


def _reduced(candidates: Sequence[Candidate], table: tuple[list[sympy.Expr], np.ndarray], terms: Terms, values: dict
             ) -> list[tuple[int, str, tuple[Kept, ...]]]:
    """Per phase of ``candidates`` (those of step 0, loading, left out), the ones that may be its peak;
    ``table``: their monomials and coefficients (:func:`~symbert.training.step.table_of`).

    A candidate is left out when an earlier one's coefficients are all at least as large (ties go to
    the earlier, as in :meth:`StepMemory.peak`), or a later one's are, and larger at a term that never
    vanishes. Terms are non-negative, so what is left out is never the peak. The phase's last
    candidate is always kept: its total is the memory the phase ends with.
    """
    monomials, coefficients = table
    table = exact.matmul(coefficients, terms.matrix(monomials))
    positive = np.array([_positive(t) for t in terms.index], dtype=bool)
    rows = table.sum(axis=1)
    phases = []
    events = [(c.event.step, c.event.phase) for c in candidates]
    for (step, phase), group in itertools.groupby(range(len(events)), key=lambda i: events[i]):
        if not step:
            continue
        kept = []
        for i in _kept(rows, list(group), positive):
            cats = tuple(
                tuple((j, int(v)) for j, v in enumerate(table[i, c].tolist()) if v) for c in range(len(CATEGORIES))
            )
            kept.append((_where(candidates[i], values), cats))
        phases.append((step, phase, tuple(kept)))
    return phases


def _where(candidate: Candidate, values: dict) -> str:
    """Where a candidate is, its run's index evaluated, as :attr:`Point.where` writes it."""
    index = None if candidate.index is None else _index(candidate.index, tuple(values.items()))
    return replace(candidate, index=index).where


def _shifted(kept: Kept, shift: dict[str, dict[int, int]]) -> Kept:
    """A candidate with ``shift`` (per category, term number → coefficient) added."""
    cats = []
    for c, row in zip(CATEGORIES, kept[1], strict=True):
        total = dict(row)
        for j, v in shift[c].items():
            total[j] = total.get(j, 0) + v
        cats.append(tuple(sorted((j, v) for j, v in total.items() if v)))
    return kept[0], tuple(cats)


def _opened(runtime: Runtime | None) -> tuple | None:
    """A runtime's workspaces, their sizes left open."""
    return runtime and runtime.opened().workspaces


def replayed(config: Config, trainings: Sequence[Training]) -> list[Replayed]:
    """Replay the training step of ``config`` under each of ``trainings``, which differ in the optimizer and
    the GPU alone, and keep what the page needs: the candidates of each phase that may be its peak, over
    terms in B and seq_len.

    One walk serves them all. It is replayed under the first, with the runtime's workspace sizes left open
    (:meth:`~symbert.training.runtime.Runtime.opened`): each GPU evaluates the candidates at its own. The
    other optimizers are swapped in (:mod:`symbert.training.swap`): a uniform shift leaves the same
    candidates of a phase in the running, so only their optimizer phases are reduced anew.
    """
    sizes = dict(config.symbols())
    first = trainings[0]
    memory = step_memory(trace(config), first, sizes, open_workspaces=True)
    swap, values, swapped = OptimizerSwap(memory), memory.with_layout(sizes), {}
    by_runtime: dict[tuple, tuple[Terms, list]] = {}
    out = []
    for training in trainings:
        runtime = training.runtime
        if _opened(runtime) != _opened(first.runtime):
            raise ValueError(f"{training.describe()} has other workspaces than {first.describe()}")
        at = tuple(sorted({**sizes, **(runtime.workspace_values() if runtime else {})}.items(), key=str))
        if at not in by_runtime:
            terms = Terms(at)
            by_runtime[at] = terms, _reduced(memory.candidates, (memory.monomials, memory.table), terms, values)
        terms, walk = by_runtime[at]
        if training.optimizer == first.optimizer:
            out.append((terms, walk))
            continue
        if training.optimizer not in swapped:  # its optimizer steps' candidates, with their table
            other = swap.of(replace(training, gpu=first.gpu))
            swapped[training.optimizer] = other, {s: (c, table_of(c)) for s, c in other.updates.items()}
        other, tabled = swapped[training.optimizer]
        updates = {s: _reduced(c, table, terms, values) for s, (c, table) in tabled.items()}
        shifts = {s: {c: terms.of(size) for c, size in shift.items()} for s, shift in other.shifts.items()}
        out.append((terms, [
            updates[step][0] if phase == "optimizer" else
            (step, phase, tuple(_shifted(k, shifts[step]) for k in kept))
            for step, phase, kept in walk
        ]))
    return [Replayed(tuple(terms.index), tuple(phases)) for terms, phases in out]


def _phases(step: Replayed, model: Model) -> list:
    """``[step, phase, [[label, row per category], …]]``, the rows (``function:coefficient,…``) and the
    labels by index into the model's tables."""
    functions = [model.page.function(t) for t in step.terms]
    numbered = model.numbered.setdefault(tuple(functions), {})  # a row over these functions → its index

    def row_of(row: tuple[tuple[int, int], ...]) -> int:
        if row not in numbered:
            numbered[row] = model.rows.add(",".join(f"{functions[j]}:{v}" for j, v in row))
        return numbered[row]

    return [
        [number, phase, [[model.labels.add(where), *map(row_of, cats)] for where, cats in candidates]]
        for number, phase, candidates in step.phases
    ]


def _allocator(
    config: Config, training: Training, gpus: Sequence[str], batches: Sequence[int], length: int
) -> tuple[list[str], dict[str, str]]:
    """The caching allocator's simulation at one seq_len for GPUs of one runtime class, ``training`` being
    at one of them: the reserved bytes at each of ``batches`` (no cap), and each GPU's largest batch under
    its cap (the card's memory less the CUDA context; 0 where none fits) as ``symbert fit`` finds it. One
    replay serves every batch, and one of the step's, for the closed form that starts each search, every card."""
    sim = Simulation(config, training)
    graph, sizes = per_gpu(config, training.memory.layout)
    memory = step_memory(graph, training.for_model(config.spec), sizes)
    reserved = [str(sim.run(b, length).reserved) for b in batches]
    fits = {}
    for g in gpus:
        solved = largest(config, replace(training, gpu=g), cap_of(None, g).bytes, None, length, sim=sim, memory=memory)
        fits[g] = str(solved.value or 0)
    return reserved, fits


def _call(task: tuple) -> object:
    """``task[0](*task[1:])``."""
    return task[0](*task[1:])


@contextlib.contextmanager
def _started(tasks: list[tuple]) -> Iterator[Callable[[], list]]:
    """Start each task's ``fn(*args)`` (a task is ``(fn, *args)``), spread over the CPUs (forked processes)
    when there are several; the context gives what waits for the results, in order. The caller works on
    meanwhile."""
    workers = min(len(tasks), len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1)
    if workers < 2 or "fork" not in multiprocessing.get_all_start_methods():
        yield lambda: [_call(t) for t in tasks]
        return
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork")) as pool:
        futures = [pool.submit(_call, t) for t in tasks]
        yield lambda: [f.result() for f in futures]


@dataclass
class Model:
    """The tables one model's step data index: rows of coefficients (``function:coefficient,…``) and labels."""

    page: Page
    rows: Table = field(default_factory=Table)
    labels: Table = field(default_factory=Table)
    numbered: dict[tuple[int, ...], dict[tuple, int]] = field(default_factory=dict)


def _runtimes(base: Training, axes: Axes) -> dict[str, str]:
    """Each GPU's runtime class: GPUs whose runtimes allocate the same workspaces share the step's replays."""
    classes: dict[object, str] = {}
    out = {}
    for g in axes.gpu:
        runtime = training_for(base, *_firsts(axes)[:4], g).runtime
        out[g] = classes.setdefault(runtime and runtime.workspaces, f"r{len(classes)}")
    return out


def _replay_key(training: Training) -> tuple:
    """What of a setup its training step's replay reads: all of it but the optimizer's name, of which only
    the algorithm (AdamW keeps what Adam keeps) and Adam's implementation (plain ``adam``: the device's)
    matter. Setups with the same key share one replay."""
    return replace(training, optimizer="sgd"), training.algorithm, training.adam and training.implementation


def _firsts(axes: Axes) -> tuple[str, ...]:
    """The command's own choice on every axis."""
    return tuple(getattr(axes, a)[0] for a in AXES)


Grid = tuple[Sequence[int], Sequence[int]]


def model_data(config: Config, base: Training, axes: Axes, batch: int, length: int, grid: Grid, page: Page) -> dict:
    """Everything the page shows of one config."""
    graph, sizes = trace(config), config.symbols()
    attentions = _attentions(config, base, axes)
    runtimes = _runtimes(base, axes)
    tables = Model(page)
    representative = {r: g for g, r in reversed(runtimes.items())}
    setups = list(itertools.product(axes.precision, attentions, axes.recompute, axes.optimizer, representative))
    # The command's setup, with the model's first attention kind where it cannot run the command's
    # (DeBERTa is eager only): the formulas and the allocator's answers are given at it.
    own = _firsts(axes)
    own = (own[0], own[1] if own[1] in attentions else attentions[0], *own[2:])
    cli = training_for(base, *own)
    lengths = [s for s in grid[1] if config.max_length is None or s <= config.max_length]
    lengths = lengths if applies(config, cli) else []  # no caching allocator to simulate
    classes = [(rt, [g for g in axes.gpu if runtimes[g] == rt]) for rt in representative]
    simulated = [(rt, gpus, s) for rt, gpus in classes for s in lengths]
    trainings = [training_for(base, p, a, r, o, representative[rt]) for p, a, r, o, rt in setups]
    firsts: dict[tuple, Training] = {}  # each distinct replay, at the first setup that asks for it
    for t in trainings:
        firsts.setdefault(_replay_key(t), t)
    walks: dict[Training, list[tuple]] = {}  # the replays that differ in the optimizer and GPU alone share one walk
    for key in firsts:
        walks.setdefault(replace(key[0], gpu=None), []).append(key)
    sims = [(_allocator, config, training_for(base, *own[:4], gpus[0]), gpus, grid[0], s) for _, gpus, s in simulated]
    tasks = [(replayed, config, [firsts[k] for k in keys]) for keys in walks.values()]
    with _started(sims + tasks) as results:  # the longest first; what needs no replay is done meanwhile
        memory_data = _memory_setups(config, base, axes, attentions, page)
        states = {}
        for p, o in itertools.product(axes.precision, axes.optimizer):
            s = model_states(graph, training_for(base, p, axes.attention[0], axes.recompute[0], o, axes.gpu[0]))
            states[_key(p, o)] = [str(int(s[k].subs(sizes))) for k in STATES]
        formulas = _formulas(config, cli, batch, length)
        diagrams = {level: _svg(config, level) for level in LEVELS}
        done = results()
    step_of = {
        k: r for keys, rs in zip(walks.values(), done[len(sims) :], strict=True) for k, r in zip(keys, rs, strict=True)
    }
    listed: dict[tuple, list] = {}  # each replay's phases, listed once (setups that share a replay share them)
    for t in trainings:
        if _replay_key(t) not in listed:
            listed[_replay_key(t)] = _phases(step_of[_replay_key(t)], tables)
    steps = {_key(*setup): listed[_replay_key(t)] for setup, t in zip(setups, trainings, strict=True)}
    answers = {(rt, s): answer for (rt, _, s), answer in zip(simulated, done[: len(sims)], strict=True)}
    allocator = {
        "setup": _key(*own[:4]),
        "grid": [[b, s, {rt: answers[rt, s][0][i] for rt in representative}] for i, b in enumerate(grid[0])
                 for s in lengths],
        "largest": [[s, {g: answers[rt, s][1][g] for rt, gpus in classes for g in gpus}] for s in lengths],
    }
    return {
        "name": config.name,
        "describe": describe(config),
        "maxLength": config.max_length,
        "params": str(int(params(graph).total.subs(sizes))),
        "attention": attentions,
        "runtimes": runtimes,
        "states": states,
        "steps": steps,
        "rows": tables.rows.listed(),
        "labels": tables.labels.listed(),
        "setup": cli.describe(),
        "allocator": allocator,
        "formulas": [[name, page.formula(e), str(value), human(e)] for name, e, value in formulas],
        "diagrams": diagrams,
        **memory_data,
    }


def _formulas(config: Config, training: Training, batch: int, length: int) -> list[tuple[str, sympy.Expr, int]]:
    """The formulas at the command's setup, with their values: totals, model states and the step's peak at
    its shape."""
    graph, sizes = trace(config), config.symbols()
    f = flops(graph, training.memory, sizes)
    states = model_states(graph, training)
    values = {**sizes, B: batch, seq_len: length}
    peak = step_memory(graph, training, sizes).formula(values)
    rows = [
        ("parameters", params(graph).total),
        ("activation bytes", activations(graph, training.memory, sizes).total),
        ("forward FLOPs", f["forward"].total),
        ("backward FLOPs", f["backward"].total),
        *((CATEGORIES[k], states[k]) for k in STATES),
        (f"training-step peak at B = {values[B]}, seq_len = {values[seq_len]}", peak),
    ]
    return [(name, e, int(e.subs(values))) for name, e in rows]


_XML_HEAD = re.compile(r"^<\?xml[^>]*>\s*(<!DOCTYPE[^>]*>\s*)?(<!--.*?-->\s*)*", re.S)


def _svg(config: Config, level: str) -> str:
    """The diagram at ``level`` as inline SVG, without its XML prologue."""
    svg = diagram(config, level).render("svg").decode()
    return _XML_HEAD.sub("", svg)


def page(
    configs: Sequence[Config], training: Training, batch: int, length: int, grid: Grid, axes: Axes | None = None
) -> str:
    """The HTML page for ``configs`` (one, or several to compare), starting at the command's setup;
    ``axes`` may narrow the calculator's choices (each must start with the command's own)."""
    if not training.memory.layout.single:
        raise ConfigError("explore draws one GPU: leave out the parallel layout flags")
    if len(grid[0]) * len(grid[1]) > MAX_GRID:
        raise ConfigError(f"the reserved-memory grid has {len(grid[0]) * len(grid[1])} points; at most {MAX_GRID}")
    for c in configs:
        if c.max_length is not None and length > c.max_length:
            raise ConfigError(f"seq_len={length} exceeds {c.name}'s {c.max_length} positions")
    if training.memory.attention is None:  # the model's default: the first config's
        training = training.for_model(configs[0].spec)
    axes = axes or Axes.around(training)
    data = Page()
    models = [model_data(c, training, axes, batch, length, grid, data) for c in configs]
    start = {
        "B": batch,
        "seq_len": length,
        **dict(zip(AXES, _firsts(axes), strict=True)),
    }
    document = {
        "models": models,
        "axes": {a: list(getattr(axes, a)) for a in AXES},
        "gpus": {k: {"name": g.name, "memory": str(g.memory)} for k, g in GPUS.items()},
        "categories": list(CATEGORIES.values()),
        "start": start,
        "texts": [json.loads(t) for t in data.texts.listed()],
        "maxSize": 10**12,
        "policy": training.memory.policy,
    }
    payload = json.dumps(document, ensure_ascii=False, separators=(",", ":")).replace("</", "<\\/")
    functions = ",\n".join(data.functions.listed())
    template = files("symbert.render").joinpath("explore.html").read_text(encoding="utf-8")
    title = html.escape(" · ".join(c.name for c in configs))
    # The data go in last, so that no text inside them is taken for a placeholder.
    filled = template.replace("{{title}}", title).replace("{{helpers}}", js.HELPERS)
    return filled.replace("{{functions}}", functions).replace("{{data}}", payload)
