"""Training-step memory: model states, and the peak over a step found by replaying the graph.

Model states are the parameter count (:func:`symbert.params`) times bytes per parameter, from a small
table per optimizer and precision (ZeRO's convention: mixed-precision Adam keeps 2 + 2 + 12 bytes).

The peak comes from replaying training steps the way PyTorch's eager autograd runs them:

* forward walks the ops in order; every output that is not a view is an allocation, and a tensor
  that nothing keeps for backward (:func:`symbert.analysis.activations.saved`) is freed once its last
  reader has run. Model inputs are held by the caller throughout, model outputs until backward ends;
* backward walks the ops in reverse, starting from a gradient of each model output. Each op
  allocates one gradient per differentiable input, except where PyTorch hands the incoming gradient
  through (views of the same size, copies, additions of same-shape tensors). Gradients reaching a
  tensor from several readers are summed in place when one of them is not shared, else into a fresh
  tensor. Parameter gradients persist; the op then drops its outputs' gradients and what it kept.
  A recomputed region first re-runs its forward; a flash-attention region is one fused op;
* the optimizer step creates the optimizer states at the first update (PyTorch allocates them
  lazily) and allocates temporaries that depend on how the backend runs it (:data:`IMPLEMENTATIONS`);
  ``zero_grad(set_to_none=True)`` then frees the gradients.

Two steps are replayed: the first, where the optimizer states appear at the update, and a second,
where they are present from the start. Every event's memory is sympy, split into :data:`CATEGORIES`.
A repeated block can be replayed as three runs (first, middle, last), the other L − 3 runs being added
as multiples of the middle run's steady state, so that the peak stays symbolic in L: memory is linear
in the index of the running layer, so over the middle runs it peaks at one of their two ends, and an
event in the middle run stands for both.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace

import numpy as np
import sympy

from symbert.analysis.activations import Saved, _region_key, saved
from symbert.analysis.params import params
from symbert.analysis.policy import MemoryOptions
from symbert.ir import Graph, Node, Role
from symbert.ops import OPS
from symbert.symbols import seq_len

#: Memory categories in stacking order, with their labels.
CATEGORIES = {
    "weights": "weights",
    "gradients": "gradients",
    "optimizer": "optimizer states",
    "attention": "seq_len² activations",
    "activations": "other activations",
}
OPTIMIZERS = ("sgd", "momentum", "adam", "adamw")
PRECISIONS = ("fp32", "mixed")


@dataclass(frozen=True)
class Precision:
    """Bytes per parameter of the weights and gradients, and of an fp32 master copy (mixed precision)."""

    weights: int
    gradients: int
    master: int


PRECISION = {"fp32": Precision(4, 4, 0), "mixed": Precision(2, 2, 4)}

#: fp32 optimizer state per parameter, created at the first update: SGD's momentum, Adam's two moments.
STATE_BYTES = {"sgd": 0, "momentum": 4, "adam": 8, "adamw": 8}

#: Adam's update math runs in fp32, whatever the weights' precision.
UPDATE_BYTES = 4


@dataclass(frozen=True)
class Implementation:
    """How a backend runs the optimizer step, which decides Adam's temporaries.

    ``for-loop`` updates one parameter at a time: the square root and the denominator of the current
    parameter, and the previous parameter's denominator (still referenced), are alive at once.
    ``foreach`` takes the square root of every parameter at once; ``fused`` keeps no temporaries.
    ``step_counter`` is the bytes of the step count Adam keeps per parameter tensor on the device.
    """

    temporaries: str
    step_counter: int


#: PyTorch picks the for-loop on CPU and foreach on CUDA; Megatron runs a fused Adam.
IMPLEMENTATIONS = {
    "torch-cpu": Implementation("for-loop", 4),
    "torch-cuda": Implementation("foreach", 0),
    "megatron": Implementation("fused", 0),
}

#: Ops that compute nothing: tensors the caller provides or receives, and the model's buffers.
PLACEHOLDERS = frozenset({"input", "buffer", "output"})

#: Ops whose backward hands the incoming gradient to a same-size input instead of allocating one.
PASS_THROUGH = frozenset({"contiguous", "add"})

Size = dict[sympy.Expr, sympy.Expr]
"""Bytes as monomial → coefficient: cheap to add while replaying."""


def size_of(expr: sympy.Expr) -> Size:
    return {m: int(c) if c.is_Integer else c for m, c in sympy.expand(expr).as_coefficients_dict().items() if c != 0}


def add_to(into: Size, other: Size, times: sympy.Expr | int = 1) -> None:
    for m, c in other.items():
        value = into.get(m, 0) + c * times
        if value == 0:
            into.pop(m, None)
        else:
            into[m] = value


def expr_of(size: Size) -> sympy.Expr:
    return sympy.Add(*(c * m for m, c in size.items()))


@dataclass(frozen=True)
class Training:
    """What a training step runs: optimizer, precision, and the activation policy and modifiers.

    Mixed precision stores activations in bfloat16 unless ``memory`` names a dtype.
    """

    optimizer: str = "adamw"
    precision: str = "fp32"
    memory: MemoryOptions = field(default_factory=MemoryOptions)

    def __post_init__(self) -> None:
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"unknown optimizer {self.optimizer!r} (choose from {', '.join(OPTIMIZERS)})")
        if self.precision not in PRECISIONS:
            raise ValueError(f"unknown precision {self.precision!r} (choose from {', '.join(PRECISIONS)})")
        if self.precision == "mixed" and self.memory.dtype is None:
            object.__setattr__(self, "memory", replace(self.memory, dtype="bfloat16"))

    @property
    def bytes(self) -> Precision:
        return PRECISION[self.precision]

    @property
    def implementation(self) -> Implementation:
        return IMPLEMENTATIONS[self.memory.policy]

    @property
    def adam(self) -> bool:
        return self.optimizer in ("adam", "adamw")

    def describe(self) -> str:
        return f"{self.optimizer}, {self.precision} precision; {self.memory.describe()}"


def model_states(graph: Graph, training: Training) -> dict[str, sympy.Expr]:
    """Weights, gradients and optimizer states in bytes, as formulas in the parameter symbols.

    ``optimizer`` holds the master weights (mixed precision) and the states created at the first
    update (``lazy``, also given apart), with Adam's per-tensor step counters where the backend keeps
    them on the device.
    """
    p = params(graph)
    tensors = sympy.Add(*(c.count for c in p.contributions))
    counters = training.implementation.step_counter * tensors if training.adam else sympy.S.Zero
    lazy = sympy.expand(STATE_BYTES[training.optimizer] * p.total + counters)
    return {
        "weights": sympy.expand(training.bytes.weights * p.total),
        "gradients": sympy.expand(training.bytes.gradients * p.total),
        "optimizer": sympy.expand(training.bytes.master * p.total + lazy),
        "lazy": lazy,
    }


# ----------------------------------------------------------------------------------------------- replay


@dataclass(frozen=True)
class Unit:
    """One op as the replay runs it: a node, or a fused flash-attention region, in one run of its block."""

    nodes: tuple[Node, ...]
    run: int | None

    @property
    def node(self) -> Node:
        return self.nodes[0]

    @property
    def block(self) -> str | None:
        return self.node.block

    @property
    def label(self) -> str:
        return self.node.name if len(self.nodes) == 1 else f"{self.node.scope}/{self.node.regions[-1]}"


@dataclass(frozen=True)
class Event:
    """Memory right after an op allocated its outputs or gradients, before it freed anything.

    ``memory`` is bytes per category. ``hidden`` says, per block, what the runs that were not replayed
    hold at this point: nothing (``none``), what they keep for backward (``saved``), their parameter
    gradients (``grads``), or, for an event in the middle run, either of two (``forward``: none or
    saved; ``backward``: grads or saved), since they may all come before it or all after it.
    """

    step: int
    phase: str
    label: str
    run: tuple[str, int] | None
    memory: Mapping[str, Size]
    hidden: Mapping[str, str]


@dataclass
class _Buffer:
    size: Size
    category: str
    owner: tuple[str, int | None] | None
    refs: int = 1


Key = tuple


class _Replay:
    """Replays training steps over a graph, recording an :class:`Event` after every allocation."""

    def __init__(self, graph: Graph, training: Training, runs: Mapping[str, int]) -> None:
        self.graph, self.training, self.runs = graph, training, runs
        self.options = training.memory
        self.plain = replace(self.options, recompute="none")
        groups = [(block, list(nodes)) for block, nodes in itertools.groupby(graph.nodes, key=lambda n: n.block)]
        self.units = [
            unit
            for block, nodes in groups
            for run in (range(runs[block]) if block else [None])
            for unit in self._fuse(nodes, run)
        ]
        self.kept = self._by_node(saved(graph, self.options))
        self.kept_plain = self._by_node(saved(graph, self.plain))
        self.regions: dict[Key, list[Unit]] = {}
        for unit in self.units:
            key = _region_key(unit.node, self.options)
            if key is not None and key[1] == "recompute":
                self.regions.setdefault((key[0], unit.run), []).append(unit)
        self.states = model_states(graph, training)
        self.totals: dict[str, Size] = {c: {} for c in CATEGORIES}
        self.middle: dict[str, dict[str, Size]] = {b: {c: {} for c in CATEGORIES} for b in graph.blocks}
        self.steady: dict[str, dict[str, dict[str, Size]]] = {b: {} for b in graph.blocks}
        self.hidden = dict.fromkeys(graph.blocks, "none")
        self.live: dict[Key, _Buffer] = {}
        self.held: set[Key] = set()
        self.savers: dict[Key, int] = {}
        self.reads_left: dict[Key, int] = {}
        self.grads: dict[Key, _Buffer] = {}
        self.param_grads: dict[Key, _Buffer] = {}
        self.events: list[Event] = []
        self.step, self.phase = 0, "start"
        self._sizes: dict[str, tuple[Size, str]] = {}

    def _fuse(self, nodes: list[Node], run: int | None) -> list[Unit]:
        """One unit per node, except a flash-attention region, which runs as one fused op."""
        units = []
        for key, group in itertools.groupby(nodes, key=lambda n: _region_key(n, self.plain)):
            group = tuple(group)
            units.extend([Unit(group, run)] if key is not None else [Unit((n,), run) for n in group])
        return units

    @staticmethod
    def _by_node(items: Iterable[Saved]) -> dict[str, list[Saved]]:
        out: dict[str, list[Saved]] = {}
        for item in items:
            out.setdefault(item.node.name, []).append(item)
        return out

    # ---- sizes, keys, accounting

    def tensor_size(self, name: str) -> tuple[Size, str]:
        """Bytes of tensor ``name`` (or of its gradient) and its category."""
        if name not in self._sizes:
            t = self.graph.tensor(name)
            category = "attention" if sympy.degree(t.numel, seq_len) >= 2 else "activations"
            self._sizes[name] = (size_of(t.numel * self.options.bytes_of(t.dtype)), category)
        return self._sizes[name]

    def tensor_alloc(self, name: str, owner: tuple[str, int | None] | None) -> _Buffer:
        return self.alloc(*self.tensor_size(name), owner)

    def tensor_key(self, name: str, run: int | None) -> Key:
        """The tensor instance a reference from run ``run`` means: a block's input is the previous run's
        output, or in the first run the tensor the block starts from."""
        for block in self.graph.blocks.values():
            if name == block.input:
                return self.tensor_key(block.source, None) if run == 0 else (block.output, run - 1)
        t = self.graph.tensor(name)
        if t.block is None:
            return (name, None)
        return (name, self.runs[t.block] - 1 if run is None else run)

    def storage_key(self, name: str, run: int | None) -> Key:
        name, run = self.tensor_key(name, run)
        base = self.graph.tensor(name).base
        return (name, run) if base is None else self.storage_key(base, run)

    def kept_key(self, item: Saved, run: int | None) -> Key:
        if item.tensor is None:
            return (f"{item.node.name}|{item.what}", run)
        return self.storage_key(item.tensor.name, run)

    def param_key(self, node: Node, name: str, run: int | None) -> Key:
        own = node.block is not None and not self.graph.blocks[node.block].shares_params
        return (name, run if own else None)

    @staticmethod
    def owner(unit: Unit) -> tuple[str, int | None] | None:
        return (unit.block, unit.run) if unit.block else None

    def alloc(self, size: Size, category: str, owner: tuple[str, int | None] | None) -> _Buffer:
        buf = _Buffer(size, category, owner)
        self._count(buf, 1)
        return buf

    def release(self, buf: _Buffer) -> None:
        """Drop one reference; the memory goes with the last one."""
        buf.refs -= 1
        if buf.refs == 0:
            self._count(buf, -1)

    def _count(self, buf: _Buffer, sign: int) -> None:
        add_to(self.totals[buf.category], buf.size, sign)
        if buf.owner is not None and buf.owner[1] == 1:
            add_to(self.middle[buf.owner[0]][buf.category], buf.size, sign)

    def record(self, label: str, run: tuple[str, int] | None = None) -> None:
        memory = {c: dict(s) for c, s in self.totals.items()}
        self.events.append(Event(self.step, self.phase, label, run, memory, dict(self.hidden)))

    def enter(self, unit: Unit, phase: str) -> None:
        """Track where the runs not replayed stand relative to this unit (see :class:`Event`)."""
        if unit.block is not None:
            if unit.run == 1:
                self.hidden[unit.block] = phase
            elif unit.run == 0:
                self.hidden[unit.block] = "none" if phase == "forward" else "grads"
            else:
                self.hidden[unit.block] = "saved"

    # ---- what a unit reads, writes and keeps

    @staticmethod
    def reads(unit: Unit) -> list[str]:
        inside = {t for n in unit.nodes for t in n.outputs}
        return list(dict.fromkeys(t for n in unit.nodes for t in n.inputs if t not in inside))

    def writes(self, unit: Unit) -> list[str]:
        """Outputs seen outside the unit."""
        if len(unit.nodes) == 1:
            return list(unit.node.outputs)
        inside = {n.name for n in unit.nodes}
        produced = [t for n in unit.nodes for t in n.outputs]
        return [t for t in produced if any(c not in inside for c in self.graph.consumers(t))]

    def keeps(self, unit: Unit, kept: Mapping[str, list[Saved]], rekey: Rekey) -> list[tuple[Saved, Key]]:
        return [(item, rekey(self.kept_key(item, unit.run))) for n in unit.nodes for item in kept.get(n.name, ())]

    def maybe_free(self, key: Key) -> None:
        if key in self.live and key not in self.held and not self.savers.get(key) and not self.reads_left.get(key):
            self.release(self.live.pop(key))

    # ---- the steps

    def run(self, steps: int) -> list[Event]:
        add_to(self.totals["weights"], size_of(self.states["weights"]))
        add_to(self.totals["optimizer"], size_of(self.states["optimizer"] - self.states["lazy"]))
        for node in self.graph.nodes:
            if node.op == "input":
                for t in node.outputs:
                    key = self.storage_key(t, None)
                    self.live[key] = self.tensor_alloc(t, None)
                    self.held.add(key)
        self.record("inputs and weights")
        outputs = [u for u in self.units if u.node.op == "output"]
        for step in range(1, steps + 1):
            self.step, self.phase = step, "forward"
            self.hidden = dict.fromkeys(self.graph.blocks, "none")
            for unit in self.units:
                for _, key in self.keeps(unit, self.kept, _same):
                    self.savers[key] = self.savers.get(key, 0) + 1
            held = {self.storage_key(t, u.run) for u in outputs for t in u.node.inputs}
            self.held |= held
            self.forward(self.units, self.kept, _same)
            self.record("end of forward")
            self.note_steady("saved")
            self.phase = "backward"
            for unit in reversed(outputs):
                self.loss_gradient(unit)
            self.backward()
            self.held -= held
            for key in held:
                self.maybe_free(key)
            self.record("end of backward")
            self.note_steady("grads")
            self.update(first=step == 1)
        return self.events

    def note_steady(self, what: str) -> None:
        for block, state in self.steady.items():
            state.setdefault(what, {c: dict(s) for c, s in self.middle[block].items()})

    def forward(self, units: list[Unit], kept: Mapping[str, list[Saved]], rekey: Rekey) -> None:
        """Run ``units`` forward, keying storages through ``rekey`` (recomputation makes new ones)."""
        units = [u for u in units if u.node.op not in PLACEHOLDERS]
        self.reads_left = {}
        for unit in units:
            for t in self.reads(unit):
                key = rekey(self.storage_key(t, unit.run))
                self.reads_left[key] = self.reads_left.get(key, 0) + 1
        for unit in units:
            self.enter(unit, "forward" if self.phase == "forward" else "backward")
            created = []
            for t in self.writes(unit):
                tensor = self.graph.tensor(t)
                if tensor.base is None and tensor.role != Role.BUFFER:
                    key = rekey(self.storage_key(t, unit.run))
                    self.live[key] = self.tensor_alloc(t, self.owner(unit))
                    created.append(key)
            for item, key in self.keeps(unit, kept, rekey):
                if item.tensor is None:
                    self.live[key] = self.alloc(size_of(item.nbytes), "activations", self.owner(unit))
            self.record(unit.label if self.phase == "forward" else f"recompute {unit.label}", self.owner(unit))
            for t in self.reads(unit):
                key = rekey(self.storage_key(t, unit.run))
                self.reads_left[key] -= 1
                self.maybe_free(key)
            for key in created:
                self.maybe_free(key)

    def loss_gradient(self, unit: Unit) -> None:
        """The loss hands each model output a gradient of its size."""
        t = unit.node.inputs[0]
        self.grads[self.tensor_key(t, unit.run)] = self.tensor_alloc(t, None)
        self.record(f"gradient of {unit.node.name}")

    def backward(self) -> None:
        done: set[Key] = set()
        for unit in reversed(self.units):
            region = _region_key(unit.node, self.options)
            if unit.node.op == "output":
                continue
            if region is None or region[1] != "recompute":
                self.backward_unit(unit, self.kept, _same)
            elif (region[0], unit.run) not in done:
                done.add((region[0], unit.run))
                self.recompute(self.regions[(region[0], unit.run)])

    def recompute(self, region: list[Unit]) -> None:
        """Re-run a region's forward as if nothing were recomputed, run its backward, then drop its inputs."""
        run = region[0].run
        names = {n.name for u in region for n in u.nodes}

        def rekey(key: Key) -> Key:
            name = str(key[0]).split("|")[0]
            producer = self.graph.tensors[name].producer if name in self.graph.tensors else name
            return ("recomputed", *key) if producer in names and key[1] == run else key

        units = [u for unit in region for u in self._fuse(list(unit.nodes), run)]
        for unit in units:
            for _, key in self.keeps(unit, self.kept_plain, rekey):
                self.savers[key] = self.savers.get(key, 0) + 1
        self.forward(units, self.kept_plain, rekey)
        for unit in reversed(units):
            self.backward_unit(unit, self.kept_plain, rekey)
        for unit in region:
            self.drop_kept(unit, self.kept, _same)

    def drop_kept(self, unit: Unit, kept: Mapping[str, list[Saved]], rekey: Rekey) -> None:
        for _, key in self.keeps(unit, kept, rekey):
            self.savers[key] -= 1
            self.maybe_free(key)

    def backward_unit(self, unit: Unit, kept: Mapping[str, list[Saved]], rekey: Rekey) -> None:
        """Gradients for the unit's differentiable inputs and parameters, then drop what it no longer needs."""
        incoming = [self.tensor_key(t, unit.run) for t in self.writes(unit)]
        if any(key in self.grads for key in incoming):
            self.enter(unit, "backward")
            drops: list[_Buffer] = []
            for t in self.reads(unit):
                if self.graph.tensor(t).requires_grad:
                    buf = self.passed(unit, t) or self.tensor_alloc(t, self.owner(unit))
                    drops += self.accumulate(self.tensor_key(t, unit.run), buf, t)
            for n in unit.nodes:
                for p in n.params:
                    key = self.param_key(n, p.name, unit.run)
                    buf = self.alloc(size_of(self.training.bytes.gradients * p.numel), "gradients", self.owner(unit))
                    if key in self.param_grads:
                        drops.append(buf)
                    else:
                        self.param_grads[key] = buf
            self.record(unit.label, self.owner(unit))
            for buf in drops:
                self.release(buf)
            for key in incoming:
                if key in self.grads:
                    self.release(self.grads.pop(key))
        self.drop_kept(unit, kept, rekey)

    def passed(self, unit: Unit, t: str) -> _Buffer | None:
        """The output gradient an op hands on unchanged to input ``t``, with a new reference, if it does."""
        node = unit.node
        if len(unit.nodes) > 1 or len(node.outputs) != 1:
            return None
        out = self.graph.tensor(node.outputs[0])
        if not (OPS[node.op].view or node.op in PASS_THROUGH):
            return None
        if self.tensor_size(t)[0] != self.tensor_size(out.name)[0]:
            return None
        buf = self.grads.get(self.tensor_key(node.outputs[0], unit.run))
        if buf is not None:
            buf.refs += 1
        return buf

    def accumulate(self, key: Key, buf: _Buffer, name: str) -> list[_Buffer]:
        """Sum ``buf`` into tensor ``key``'s gradient; returns the references to drop after the event.

        In place into whichever of the two is not shared, else into a new tensor.
        """
        old = self.grads.get(key)
        if old is None:
            self.grads[key] = buf
            return []
        if old.refs == 1:
            return [buf]
        if buf.refs == 1:
            self.grads[key] = buf
            return [old]
        self.grads[key] = self.tensor_alloc(name, old.owner)
        return [old, buf]

    def parameter_order(self) -> list[tuple[str, sympy.Expr, tuple[str, int] | None]]:
        """Every parameter tensor once, in the order the model declares them: (name, elements, run)."""
        seen: dict[Key, tuple[str, sympy.Expr, tuple[str, int] | None]] = {}
        for unit in self.units:
            for n in unit.nodes:
                for p in n.params:
                    key = self.param_key(n, p.name, unit.run)
                    seen.setdefault(key, (p.name, p.numel, None if key[1] is None else self.owner(unit)))
        return list(seen.values())

    def update(self, first: bool) -> None:
        """The optimizer step (states created at the first one, Adam's temporaries), then zero_grad."""
        self.phase = "optimizer"
        if first:
            add_to(self.totals["optimizer"], size_of(self.states["lazy"]))
        self.record("optimizer states created" if first else "optimizer step")
        kind = self.training.implementation.temporaries if self.training.adam else None
        temporaries: list[tuple[str, tuple[str, int] | None, sympy.Expr]] = []
        if kind == "for-loop":
            previous = sympy.S.Zero
            for name, numel, run in self.parameter_order():
                temporaries.append((f"update {name}", run, 2 * numel + previous))
                previous = numel
        elif kind == "foreach":
            temporaries.append(("update, all parameters at once", None, params(self.graph).total))
        for label, run, numel in temporaries:
            temp = size_of(UPDATE_BYTES * numel)
            add_to(self.totals["optimizer"], temp)
            self.record(label, run)
            add_to(self.totals["optimizer"], temp, -1)
        for buf in self.param_grads.values():
            self.release(buf)
        self.param_grads.clear()
        self.hidden = dict.fromkeys(self.graph.blocks, "none")
        self.record("zero_grad")


Rekey = Callable[[Key], Key]


def _same(key: Key) -> Key:
    return key


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
    holds for any count of at least three. Evaluation is numpy over a shared list of monomials.
    """

    def __init__(self, graph: Graph, training: Training, runs: Mapping[str, int], steps: int = 2) -> None:
        self.graph, self.training, self.runs = graph, training, dict(runs)
        replayed = _Replay(graph, training, self.runs)
        self.events = replayed.run(steps)
        self.states = replayed.states
        self.hidden_runs = {b: sympy.expand(block.count - self.runs[b]) for b, block in graph.blocks.items()}
        self._steady = {
            block: {
                what: {c: _times(s, self.hidden_runs[block]) for c, s in state.items()}
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
        return np.array(out, dtype=np.int64)

    def timeline(self, values: Mapping[sympy.Symbol, int]) -> list[Point]:
        """Every candidate at ``values``, in replay order."""
        memory = self.table @ self.monomial_values(values)
        return [self._point(i, memory[i], values) for i in range(len(self.candidates))]

    def peak(self, values: Mapping[sympy.Symbol, int]) -> Point:
        """The highest event at ``values`` (the first, if several tie)."""
        memory = self.table @ self.monomial_values(values)
        i = int(np.argmax(memory.sum(axis=1)))
        return self._point(i, memory[i], values)

    def candidate(self, values: Mapping[sympy.Symbol, int]) -> Candidate:
        """The candidate that peaks at ``values``."""
        return self.candidates[int(np.argmax((self.table @ self.monomial_values(values)).sum(axis=1)))]

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
        to_terms = np.zeros((len(self.monomials), len(exponents)), dtype=np.int64)
        for i, t in enumerate(terms):
            for k, v in t.items():
                if not v.is_Integer:
                    raise ValueError(f"memory needs values for: {', '.join(sorted(map(str, v.free_symbols)))}")
                to_terms[i, exponents.index(k)] = int(v)
        rows = self.table.sum(axis=1) @ to_terms
        _, first = np.unique(rows, axis=0, return_index=True)
        kept: list[int] = []
        for i in sorted(first, key=lambda i: (-int(rows[i].sum()), i)):
            if not kept or not (rows[kept] >= rows[i]).all(axis=1).any():
                kept.append(i)
        kept.sort()
        coefficients = self.table[kept] @ to_terms
        return Polynomials(free, tuple(exponents), tuple(self.candidates[i] for i in kept), coefficients)


@dataclass(frozen=True)
class Polynomials:
    """The peak at fixed values of all but the ``free`` symbols: the largest of a few polynomials.

    ``coefficients[i, c, t]`` is candidate i's coefficient of term ``exponents[t]`` in category c.
    Calls take numpy arrays (or numbers) for the free symbols and evaluate in float64, exact below
    2**53 bytes; :meth:`exact` evaluates one point in Python integers.
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

    def _terms(self, x: tuple) -> np.ndarray:
        arrays = np.broadcast_arrays(*(np.asarray(v, dtype=np.float64) for v in x))
        return np.stack([np.broadcast_to(_power(arrays, k), arrays[0].shape) for k in self.exponents], axis=-1)

    def __call__(self, *x) -> np.ndarray:
        """The peak at each point."""
        return (self._terms(x) @ self.totals.T.astype(np.float64)).max(axis=-1)

    def breakdown(self, *x) -> tuple[np.ndarray, np.ndarray]:
        """At each point: the index of the candidate that peaks, and its bytes per category."""
        terms = self._terms(x)
        winner = (terms @ self.totals.T.astype(np.float64)).argmax(axis=-1)
        parts = np.einsum("...t,...ct->...c", terms, self.coefficients[winner].astype(np.float64))
        return winner, parts


def _power(x, exponents: tuple[int, ...]):
    out = 1
    for v, e in zip(x, exponents, strict=True):
        out = out * v**e
    return out


def _times(size: Size, factor: sympy.Expr) -> Size:
    out: Size = {}
    for m2, c2 in size_of(factor).items():
        for m, c in size.items():
            add_to(out, {m * m2: c * c2})
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
