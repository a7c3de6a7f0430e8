"""The replay of training steps: every allocation and free, the way PyTorch's eager autograd runs them.

* forward walks the ops in order; every output that is not a view is an allocation, and a tensor
  that nothing keeps for backward (:func:`symbert.analysis.activations.saved`) is freed once its last
  reader has run. Model inputs are held by the caller throughout, model outputs (a task model: its loss
  alone) until backward ends;
* backward walks the ops in reverse, starting from a gradient of each model output. Each op
  allocates one gradient per differentiable input, except where PyTorch hands the incoming gradient
  through (:attr:`symbert.ops.OpDef.grad_passes_through`: views of the same size, copies, additions
  of same-shape tensors). Gradients reaching a tensor from several readers are summed in place when
  one of them is not shared, else into a fresh tensor. Parameter gradients persist; the op then drops
  its outputs' gradients and what it kept. A recomputed region first re-runs its forward; an
  attention call under sdpa (or flash) is one fused op, the kernel's;
* over d data-parallel GPUs with ZeRO (:mod:`symbert.training.zero`), the model states are the
  GPU's shards; under stage 3 each layer's parameters are all-gathered before its forward and its
  backward and freed after, and under stages 2 and 3 a layer's gradients are reduce-scattered to
  shards when its backward ends; DDP (stage 0 under torch) holds flat gradient buckets throughout;
* the optimizer step creates the optimizer states at the first update (PyTorch allocates them
  lazily) and allocates temporaries that depend on how the backend runs it
  (:data:`symbert.training.states.IMPLEMENTATIONS`); ``zero_grad(set_to_none=True)`` then frees the
  gradients.

The device runtime (:attr:`symbert.training.states.Training.runtime`, CUDA's under the torch-cuda
policy) adds its own memory, in the ``runtime`` category: each allocation's rounding (parameters,
gradients and optimizer states per tensor too), and the workspaces it allocates at the first matmul of
forward and of backward (recomputation runs on the backward thread), which stay allocated.

Placeholder ops (inputs, buffers, outputs) compute nothing, so neither pass runs them. Every event's
memory is sympy, split into :data:`symbert.training.states.CATEGORIES`. A block may be replayed for
only some of its runs: the replay then also notes what its middle run (run 1) holds at the end of
forward and of backward (``steady``), and each :class:`Event` says where the runs not replayed stand.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace

import sympy

from symbert.analysis import sdpa
from symbert.analysis.activations import Saved, Values, region_of, saved
from symbert.analysis.autocast import cached_params, promotion_copies, resolve, weight_copies
from symbert.analysis.breakdown import model_of
from symbert.analysis.policy import BYTES
from symbert.analysis.sdpa import is_mask_bias, mask_dtype
from symbert.analysis.sizes import Size, add_to, at_least, expr_of, folded, scaled, size_of
from symbert.ir import ACT, RUN, Graph, Node, Param, Role, Tensor, numel
from symbert.ops import OPS
from symbert.symbols import pad512, seq_len, settled
from symbert.training.states import (
    CATEGORIES,
    CPU_SCALAR_BYTES,
    FOUND_INF_BYTES,
    LOSS_BYTES,
    STATE_BYTES,
    STEP_BYTES,
    UPDATE_BYTES,
    Training,
    model_states,
)
from symbert.training.zero import pieces

#: The sharding unit of the parameters outside the repeated layers (FSDP's root module).
ROOT: tuple = (None, None)


@dataclass(frozen=True)
class Unit:
    """One op as the replay runs it: a node, or a fused attention call (sdpa), in one run of its block."""

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
        if len(self.nodes) == 1:
            return self.node.name
        shared = next(r for r in self.node.regions if all(r in n.regions for n in self.nodes) and not r.startswith(RUN))
        return f"{self.node.scope}/{shared}"


@dataclass(frozen=True)
class Event:
    """Memory right after an op allocated its outputs or gradients, before it freed anything.

    ``memory`` is bytes per category. ``hidden`` says, per block, what the runs that were not replayed
    hold at this point: nothing (``none``), what they keep for backward (``saved``), that and autocast's
    cached weight copies while the forward runs (``cached``), that and what a module's locals hold past
    the block's end until it returns (``holding``), their parameter gradients (``grads``), or, for an
    event in the middle run, either of two (``forward``: none or holding, else cached; ``backward``:
    grads or saved), since they may all come before it or all after it.
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
    pad: Size
    refs: int = 1


def _split_pads(pads: Size, view: sympy.Expr) -> tuple[Size, Size]:
    """An allocation's rounding terms where ``view`` (a bracket) does not hold, and where it does:
    pad512(X) is pad512((1 − [c])·X) + pad512([c]·X), each a rounding term the closed forms compile."""
    parts: tuple[Size, Size] = ({}, {})
    for term, count in pads.items():
        for part, share in zip(parts, (1 - view, view), strict=True):
            split = pad512(settled(share * term.args[0])) if isinstance(term, pad512) else settled(share * term)
            if split != 0:
                add_to(part, {split: count})
    return parts


Key = tuple
Rekey = Callable[[Key], Key]


def _same(key: Key) -> Key:
    return key


class Replay:
    """Replays training steps over a graph, recording an :class:`Event` after every allocation."""

    def __init__(
        self,
        graph: Graph,
        training: Training,
        runs: Mapping[str, int],
        values: Values = None,
    ) -> None:
        training = training.for_model(model_of(graph))
        self.options = training.memory
        graph = resolve(graph, self.options)
        self.graph, self.training, self.runs = graph, training, runs
        self.plain = replace(self.options, recompute="none")
        self.values = values
        groups = [(block, list(nodes)) for block, nodes in itertools.groupby(graph.nodes, key=lambda n: n.block)]
        self.units = [
            unit
            for block, nodes in groups
            for run in (range(runs[block]) if block else [None])
            for unit in self._fuse(nodes, run)
        ]
        self.kept = self._by_node(saved(graph, self.options, values))
        self.kept_plain = self._by_node(saved(graph, self.plain, values))
        every = [i for kept in (self.kept, self.kept_plain) for items in kept.values() for i in items]
        self.kept_storages = {graph.storage(i.tensor.name).name for i in every if i.tensor is not None}
        self.regions: dict[Key, list[Unit]] = {}
        for unit in self.units:
            key = region_of(unit.node, self.options)
            if key is not None and key[1] == "recompute":
                self.regions.setdefault((key[0], unit.run), []).append(unit)
        self.states = model_states(graph, training)
        self.sharding = training.sharding
        self.unit_params: dict[str | None, list[Param]] = {}
        for piece in pieces(graph):
            self.unit_params.setdefault(piece.unit, []).append(piece.param)
        ordered = [u for u in self.units if not OPS[u.node.op].placeholder]
        self.first_of = {self.unit_of(u): u for u in reversed(ordered)}
        self.last_of = {self.unit_of(u): u for u in ordered}
        self.gathered: dict[Key, _Buffer] = {}
        self.flat: dict[Key, _Buffer] = {}
        self.last_flat: _Buffer | None = None
        self.unit_grads: dict[Key, list[Key]] = {}
        self.grad_shards: list[_Buffer] = []
        self.rs_input: _Buffer | None = None
        self.runtime = training.runtime
        self.workspaces: set[str] = set()
        #: When a list: every allocation (+1) and free (−1) as (event index, sign, bytes, copies), for
        #: :func:`symbert.training.step.reserved`.
        self.log: list[tuple[int, int, Size, sympy.Expr]] | None = None
        self._pads: dict[frozenset, Size] = {}
        self.totals: dict[str, Size] = {c: {} for c in CATEGORIES}
        self.middle: dict[str, dict[str, Size]] = {b: {c: {} for c in CATEGORIES} for b in graph.blocks}
        self.steady: dict[str, dict[str, dict[str, Size]]] = {b: {} for b in graph.blocks}
        self.hidden = dict.fromkeys(graph.blocks, "none")
        #: Blocks whose runs' tensors a module's locals hold past the block's end (Hugging Face's tuple of
        #: every layer's output): once run, the runs not replayed hold them too until it returns.
        self.held_past = {graph.tensor(t).block for t, until in graph.held.items() if self.past(t, until)}
        self.block_end = {n.block: n.name for n in graph.nodes if n.block is not None}
        self.live: dict[Key, _Buffer] = {}
        self.held: set[Key] = set()
        self.savers: dict[Key, int] = {}
        self.reads_left: dict[Key, int] = {}
        self.grads: dict[Key, _Buffer] = {}
        self.param_grads: dict[Key, _Buffer] = {}
        self.pending: list[tuple[Unit, Node, Param, _Buffer]] = []
        self.events: list[Event] = []
        self.step, self.phase = 0, "start"
        self._sizes: dict[str, tuple[Size, str]] = {}

    def _fuse(self, nodes: list[Node], run: int | None) -> list[Unit]:
        """One unit per node, except an attention call under sdpa, which runs as one fused op."""
        units = []
        for key, group in itertools.groupby(nodes, key=lambda n: region_of(n, self.plain)):
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
            dtype = (is_mask_bias(self.graph, t) and mask_dtype(self.options)) or t.dtype
            nbytes = t.numel * self.options.bytes_of(dtype) * self.graph.presence(t)
            self._sizes[name] = (size_of(nbytes), category)
        return self._sizes[name]

    def extra_size(self, item: Saved | sdpa.Kept) -> tuple[Size, str]:
        """Bytes of a buffer an op keeps beyond its graph tensors (an SDPA kernel's), and its category.

        A size rounded up to a multiple (the memory-efficient kernel's logsumexp rows, ⌈seq_len/32⌉) stays
        exact: the closed forms carry it as a generator of their polynomials
        (:func:`~symbert.analysis.sizes.generators`)."""
        nbytes = sympy.sympify(item.nbytes)
        category = "attention" if sympy.degree(at_least(nbytes), seq_len) >= 2 else "activations"
        return size_of(nbytes), category

    def tensor_alloc(self, name: str, owner: tuple[str, int | None] | None) -> _Buffer:
        return self.alloc(*self.tensor_size(name), owner)

    def output_alloc(self, unit: Unit, name: str, rekey: Rekey) -> _Buffer:
        """A forward output's allocation. Where the op is a view at some sizes (:func:`folded`), only
        its copy at the others; the view then holds the storage it views, unless that is kept anyway:
        that share of the storage moves to the output, to be freed with it."""
        size, category = self.tensor_size(name)
        producer = self.graph.node(self.graph.tensor(name).producer)
        storage = OPS[producer.op].storage
        if storage is not None:  # the output views a larger buffer
            size = size_of(expr_of(size) * storage(producer))
        fold = folded(self.graph, self.graph.tensor(name))
        if fold is None:
            return self.alloc(size, category, self.owner(unit))
        view, base = fold
        buf = self.alloc(size_of(expr_of(size) - settled(view * expr_of(size))), category, self.owner(unit))
        if base.name not in self.kept_storages:
            viewed = self.live[rekey(self.storage_key(unit.node.inputs[0], unit.run))]
            moved = size_of(settled(view * expr_of(viewed.size)))
            viewed.size, buf.size = {**viewed.size}, {**buf.size}
            add_to(viewed.size, moved, -1)
            add_to(buf.size, moved)
            kept, taken = _split_pads(viewed.pad, view)
            viewed.pad, buf.pad = kept, {**buf.pad}
            add_to(buf.pad, taken)
        return buf

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
        if item.param is not None:
            return (f"{item.param}|{item.what}", self.param_key(item.node, item.param, run)[1])
        if item.tensor is None:
            return (f"{item.node.name}|{item.what}", run)
        return self.storage_key(item.tensor.name, run)

    def param_key(self, node: Node, name: str, run: int | None) -> Key:
        own = node.block is not None and not self.graph.blocks[node.block].shares_params
        return (name, run if own else None)

    def unit_of(self, unit: Unit) -> Key:
        """The sharding unit a unit's parameters belong to: its layer run, or the root."""
        return (unit.block, unit.run) if unit.block is not None and unit.block in self.unit_params else ROOT

    @staticmethod
    def owner(unit: Unit) -> tuple[str, int | None] | None:
        return (unit.block, unit.run) if unit.block else None

    def alloc(self, size: Size, category: str, owner: tuple[str, int | None] | None) -> _Buffer:
        buf = _Buffer(size, category, owner, self.pad_of(size))
        self._count(buf, 1)
        return buf

    def pad_of(self, size: Size) -> Size:
        """What the runtime adds to one allocation of ``size`` (its rounding), in the runtime category."""
        if self.runtime is None:
            return {}
        key = frozenset(size.items())
        if key not in self._pads:
            self._pads[key] = self.runtime.padding(expr_of(size))
        return self._pads[key]

    def state_pads(self, bytes_per_element: int, what: str, tensors: int = 1, sign: int = 1) -> Size:
        """The rounding of ``tensors`` allocations of ``bytes_per_element`` per element for each parameter,
        or for each of this GPU's shards of the model state ``what`` (logged as allocations, or frees
        with ``sign`` −1)."""
        out: Size = {}
        if self.runtime is None or not bytes_per_element or not tensors:
            return out
        local = self.sharding.local(self.graph, what)
        if self.log is not None:
            for elements, count in local:
                self.log.append((len(self.events), sign, size_of(bytes_per_element * elements), tensors * count))
        for elements, count in local:
            add_to(out, scaled(self.pad_of(size_of(bytes_per_element * elements)), count), tensors)
        return out

    def counter_pads(self) -> Size:
        """The rounding of Adam's step counts where they are on the device: one scalar per parameter tensor
        (logged as allocations)."""
        counters = self.states["counters"]
        if self.runtime is None or counters == 0:
            return {}
        scalar, tensors = size_of(sympy.Integer(STEP_BYTES)), sympy.expand(counters / STEP_BYTES)
        if self.log is not None:
            self.log.append((len(self.events), 1, scalar, tensors))
        return size_of(tensors * expr_of(self.pad_of(scalar)))

    def workspace(self, unit: Unit) -> None:
        """The runtime's workspaces for this thread, at its first matmul (a fused region uses no cuBLAS)."""
        if self.runtime is None or len(unit.nodes) > 1 or OPS[unit.node.op].matmul is None:
            return
        thread = "forward" if self.phase == "forward" else "backward"
        if thread in self.workspaces:
            return
        self.workspaces.add(thread)
        for w in self.runtime.workspaces:
            if w.phase == thread:
                add_to(self.totals["runtime"], {sympy.S.One: w.nbytes})
                if self.log is not None:
                    self.log.append((len(self.events), 1, {sympy.S.One: w.nbytes}, sympy.S.One))

    def release(self, buf: _Buffer) -> None:
        """Drop one reference; the memory goes with the last one."""
        buf.refs -= 1
        if buf.refs == 0:
            self._count(buf, -1)

    def _count(self, buf: _Buffer, sign: int) -> None:
        if self.log is not None:
            self.log.append((len(self.events), sign, buf.size, sympy.S.One))
        add_to(self.totals[buf.category], buf.size, sign)
        add_to(self.totals["runtime"], buf.pad, sign)
        if buf.owner is not None and buf.owner[1] == 1:
            add_to(self.middle[buf.owner[0]][buf.category], buf.size, sign)
            add_to(self.middle[buf.owner[0]]["runtime"], buf.pad, sign)

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
            elif phase == "forward":
                self.hidden[unit.block] = "holding" if unit.block in self.held_past else "cached"
            else:
                self.hidden[unit.block] = "saved"

    # ---- what a unit reads, writes and keeps

    @staticmethod
    def reads(unit: Unit) -> list[str]:
        """Tensors the unit reads from outside it (a fused SDPA call: its mask too, where there is one)."""
        inside = {t for n in unit.nodes for t in n.outputs}
        return list(dict.fromkeys(t for n in unit.nodes for t in n.inputs if t not in inside))

    def writes(self, unit: Unit) -> list[str]:
        """Outputs seen outside the unit."""
        if len(unit.nodes) == 1:
            return list(unit.node.outputs)
        inside = {n.name for n in unit.nodes}
        produced = [t for n in unit.nodes for t in n.outputs]
        return [t for t in produced if any(c not in inside for c in self.graph.consumers(t))]

    def allocation_order(self, unit: Unit) -> list[str]:
        """:meth:`writes` in the order the op allocates them: on a CUDA runtime, its kernel's
        (:attr:`symbert.ops.OpDef.cuda_order`)."""
        writes = self.writes(unit)
        order = OPS[unit.node.op].cuda_order if self.runtime is not None and len(unit.nodes) == 1 else ()
        return [writes[i] for i in order] if order and len(order) == len(writes) else writes

    def gradient_order(self, unit: Unit) -> list[str]:
        """:meth:`reads` in the order the unit's backward makes their gradients
        (:attr:`symbert.ops.OpDef.grad_order`)."""
        reads = self.reads(unit)
        order = OPS[unit.node.op].grad_order if len(unit.nodes) == 1 else ()
        return [reads[i] for i in order] if order and len(order) == len(reads) else reads

    def keeps(self, unit: Unit, kept: Mapping[str, list[Saved]], rekey: Rekey) -> list[tuple[Saved, Key]]:
        return [(item, rekey(self.kept_key(item, unit.run))) for n in unit.nodes for item in kept.get(n.name, ())]

    def maybe_free(self, key: Key) -> None:
        if key in self.live and key not in self.held and not self.savers.get(key) and not self.reads_left.get(key):
            self.release(self.live.pop(key))

    # ---- the steps

    def buffers(self) -> list[tuple[str, sympy.Expr]]:
        """The modules' registered buffers (:attr:`symbert.ir.Graph.registered`), name and bytes, under a device
        runtime, where they sit on the device beside the parameters (the CPU measurements count only what
        the steps allocate); none otherwise."""
        if self.runtime is None:
            return []
        return [(f"{module}.{name}" if module else name, numel(shape) * BYTES[dtype])
                for module, registered in self.graph.registered.items() for name, shape, dtype in registered.buffers]

    def run(self, steps: int) -> list[Event]:
        add_to(self.totals["weights"], size_of(self.states["weights"] + sum(b for _, b in self.buffers())))
        for _, nbytes in self.buffers():
            add_to(self.totals["runtime"], self.pad_of(size_of(nbytes)))
        add_to(self.totals["optimizer"], size_of(self.states["optimizer"] - self.states["lazy"]))
        add_to(self.totals["runtime"], self.state_pads(self.training.bytes.weights, "weights"))
        add_to(self.totals["runtime"], self.state_pads(self.training.bytes.master, "optimizer"))
        add_to(self.totals["gradients"], size_of(self.states["buckets"]))
        for node in self.graph.nodes:
            if OPS[node.op].graph_input:
                for t in node.outputs:
                    key = self.storage_key(t, None)
                    self.live[key] = self.tensor_alloc(t, None)
                    self.held.add(key)
        self.record("inputs and weights")
        outputs = [u for u in self.units if OPS[u.node.op].graph_output]
        for step in range(1, steps + 1):
            self.step, self.phase = step, "forward"
            self.hidden = dict.fromkeys(self.graph.blocks, "none")
            for unit in self.units:
                for _, key in self.keeps(unit, self.kept, _same):
                    self.savers[key] = self.savers.get(key, 0) + 1
            held = {self.storage_key(t, u.run) for u in outputs for t in u.node.inputs}
            self.held |= held
            self.gather(ROOT)
            self.forward(self.units, self.kept, _same)
            self.drop_last_flat()
            if not self.sharding.engine.root_stays:
                self.reshard(ROOT)
            self.record("end of forward")
            self.note_steady("saved")
            self.phase = "backward"
            self.gather(ROOT)
            losses = [self.alloc(size_of(sympy.Integer(LOSS_BYTES)), "activations", None) for _ in range(self.losses)]
            for unit in reversed(outputs):
                self.loss_gradient(unit)
            self.backward()
            self.post_backward(ROOT)
            if self.rs_input is not None:
                self.release(self.rs_input)
                self.rs_input = None
            self.held -= held
            for key in held:
                self.maybe_free(key)
            for buf in losses:
                self.release(buf)
            self.record("end of backward")
            self.note_steady("grads")
            self.update(first=step == 1)
        return self.events

    def note_steady(self, what: str) -> None:
        for block, state in self.steady.items():
            state.setdefault(what, {c: dict(s) for c, s in self.middle[block].items()})

    def forward(self, units: list[Unit], kept: Mapping[str, list[Saved]], rekey: Rekey) -> None:
        """Run ``units`` forward, keying storages through ``rekey`` (recomputation makes new ones)."""
        units = [u for u in units if not OPS[u.node.op].placeholder]
        cache: dict[Key, _Buffer] = {}
        self.reads_left = {}
        for unit in units:
            for t in self.reads(unit):
                key = rekey(self.storage_key(t, unit.run))
                self.reads_left[key] = self.reads_left.get(key, 0) + 1
        returns, past = self.returns(units, rekey)
        for keys in returns.values():
            for key in keys:
                self.reads_left[key] = self.reads_left.get(key, 0) + 1
        for unit in units:
            self.enter(unit, "forward" if self.phase == "forward" else "backward")
            layer = self.unit_of(unit)
            if self.phase == "forward" and layer != ROOT and self.first_of[layer] is unit:
                self.gather(layer)
            created = []
            for t in self.allocation_order(unit):
                tensor = self.graph.tensor(t)
                if tensor.base is None and tensor.role not in (Role.BUFFER, Role.PARAMETER):
                    key = rekey(self.storage_key(t, unit.run))
                    self.live[key] = self.output_alloc(unit, t, rekey)
                    created.append(key)
            self.workspace(unit)  # cuBLAS makes its workspace at its first call, after the op's output
            for item, key in self.keeps(unit, kept, rekey):
                if item.tensor is None and key not in self.live:
                    self.live[key] = self.alloc(*self.extra_size(item), self.owner(unit))
            for n in unit.nodes:
                self.cache_params(n, unit.run, cache)
            copies = self.transients(unit)
            self.record(unit.label if self.phase == "forward" else f"recompute {unit.label}", self.owner(unit))
            for buf in copies:
                self.release(buf)
            for t in self.reads(unit):
                key = rekey(self.storage_key(t, unit.run))
                self.reads_left[key] -= 1
                self.maybe_free(key)
            for key in created:
                self.maybe_free(key)
            for block in past.get(id(unit), ()):  # the runs not replayed held them too, until now
                self.steady[block].setdefault("holding", {c: dict(s) for c, s in self.middle[block].items()})
                self.hidden[block] = "cached"
            for key in returns.get(id(unit), ()):
                self.reads_left[key] -= 1
                self.maybe_free(key)
            layer_done = self.phase == "forward" and layer != ROOT and self.last_of[layer] is unit
            if layer_done and not self.sharding.keeps_gathered:
                self.reshard(layer)
        if self.phase == "forward":
            self.note_steady("cached")
        for buf in cache.values():  # autocast's region ends: its cache is cleared
            self.release(buf)

    def returns(self, units: list[Unit], rekey: Rekey) -> tuple[dict[int, list[Key]], dict[int, set[str]]]:
        """What modules' Python locals hold past its last use (:attr:`symbert.ir.Graph.held`), by the
        unit (its ``id``) after which the module returns, for those among ``units``: a recomputed
        layer re-runs its forward and holds its own locals again. Also by unit, the blocks whose runs'
        tensors it holds past the block's end."""
        out: dict[int, list[Key]] = {}
        past: dict[int, set[str]] = {}
        for unit in units:
            for t, until in self.graph.held.items():
                if self.ends(unit, until):
                    block = self.graph.tensor(t).block
                    runs = range(self.runs[block]) if self.past(t, until) else [unit.run]
                    out.setdefault(id(unit), []).extend(rekey(self.storage_key(t, run)) for run in runs)
                    if self.past(t, until):
                        past.setdefault(id(unit), set()).add(block)
        return out, past

    def past(self, t: str, until: str) -> bool:
        """Whether ``t``, of a block, is held past the block's end."""
        block = self.graph.tensor(t).block
        return block is not None and (until in self.graph.blocks or self.graph.node(until).block != block)

    def ends(self, unit: Unit, until: str) -> bool:
        """Whether a module returns after ``unit``: ``until`` is its last op, or a block (its last run's
        last op, in the forward pass: recomputing one run is not the module returning)."""
        if until in self.graph.blocks:
            last = unit.run == self.runs[until] - 1 and unit.nodes[-1].name == self.block_end[until]
            return last and self.phase == "forward"
        return any(n.name == until for n in unit.nodes)

    def transients(self, unit: Unit) -> list[_Buffer]:
        """What a unit holds while it runs and frees when it returns: a fused attention call's kernel's
        (:func:`symbert.analysis.sdpa.transients`), or the CPU promotion copies of an op's inputs."""
        if len(unit.nodes) > 1:
            call = sdpa.call_of(self.graph, list(unit.nodes))
            return [self.alloc(*self.extra_size(k), None) for k in sdpa.transients(call, self.options, self.values)]
        return [self.promotion_copy(unit.node, t) for t in promotion_copies(self.graph, unit.node, self.options)]

    def promotion_copy(self, node: Node, t: Tensor) -> _Buffer:
        """A temporary copy of input ``t`` in the dtype of ``node``'s output (CPU type promotion)."""
        common = self.graph.tensor(node.outputs[0]).dtype
        return self.alloc(size_of(t.numel * self.options.bytes_of(common)), self.tensor_size(t.name)[1], None)

    def cache_params(self, node: Node, run: int | None, cache: dict[Key, _Buffer]) -> None:
        """Autocast's cached 16-bit copies of a node's parameters, other than those it keeps for backward."""
        kept = {p.name for p in weight_copies(self.graph, node, self.options)}
        for p in cached_params(self.graph, node, self.options):
            key = ("autocast cache", *self.param_key(node, p.name, run))
            if p.name not in kept and key not in cache:
                size = size_of(p.numel * self.options.bytes_of(ACT))
                cache[key] = self.alloc(size, "activations", (node.block, run) if node.block else None)

    @property
    def losses(self) -> int:
        """The 0-dim float32 tensors backward starts from outside the graph, alive until it ends: the
        gradient it seeds the loss with (``loss.backward()`` holds it until it returns); a bare model's
        loss, the caller's (a task model's is its graph's); GradScaler's scaled loss."""
        return 1 + (self.graph.head == "model") + self.training.grad_scaler

    def loss_gradient(self, unit: Unit) -> None:
        """The loss hands each model output a gradient of its size; a task model's loss gets the seed
        itself (:attr:`losses`), or under GradScaler the unscaled gradient the scaling's backward makes."""
        t = unit.node.inputs[0]
        seeded = self.graph.head != "model" and not self.training.grad_scaler
        size = size_of(sympy.S.Zero) if seeded else self.tensor_size(t)[0]
        self.grads[self.tensor_key(t, unit.run)] = self.alloc(size, self.tensor_size(t)[1], None)
        self.record(f"gradient of {unit.node.name}")

    def backward(self) -> None:
        done: set[Key] = set()
        for unit in reversed(self.units):
            if OPS[unit.node.op].placeholder:
                continue
            layer = self.unit_of(unit)
            if layer != ROOT and self.last_of[layer] is unit:
                self.pre_backward(layer)
            region = region_of(unit.node, self.options)
            if region is None or region[1] != "recompute":
                self.backward_unit(unit, self.kept, _same)
            elif (region[0], unit.run) not in done:
                done.add((region[0], unit.run))
                self.flush_casts()
                self.recompute(self.regions[(region[0], unit.run)])
            if layer != ROOT and self.first_of[layer] is unit:
                self.post_backward(layer)
        self.flush_casts()

    # ---- ZeRO: gathering a unit's parameters, reducing its gradients

    def gather(self, unit: Key, prefetch: bool = False) -> None:
        """All-gather a sharding unit's full parameters (stage 3), unless they are gathered already.

        Where the engine copies out (FSDP2), the all-gather fills a flat buffer that is copied out into
        one buffer per parameter. In backward the flat buffer goes after the copy-out; in forward FSDP2
        keeps it until the next unit's copy-out (``all_gather_state``), or until the forward ends. A
        prefetched unit keeps its flat buffer until its backward starts."""
        if not self.sharding.gathers or unit in self.gathered or not self.unit_params.get(unit[0]):
            return
        size = size_of(self.training.bytes.weights * self.sharding.gathered(self.unit_params[unit[0]]))
        owner = None if unit == ROOT else unit
        copy_out = self.sharding.engine.copy_out
        if prefetch:
            if copy_out and unit not in self.flat:
                self.flat[unit] = self.alloc(size, "weights", owner)
                self.record(f"all-gather {self.unit_name(unit)} (prefetch)", owner)
            return
        flat = self.flat.pop(unit, None) or (self.alloc(size, "weights", owner) if copy_out else None)
        self.gathered[unit] = self.alloc(size, "weights", owner)
        self.record(f"all-gather {self.unit_name(unit)}", owner)
        if self.phase == "forward":
            self.drop_last_flat()
            self.last_flat = flat
        elif flat is not None:
            self.release(flat)

    def drop_last_flat(self) -> None:
        """Free the flat buffer of the forward's last all-gather."""
        if self.last_flat is not None:
            self.release(self.last_flat)
            self.last_flat = None

    def reshard(self, unit: Key) -> None:
        """Free a unit's gathered parameters."""
        if unit in self.gathered:
            self.release(self.gathered.pop(unit))

    def unit_name(self, unit: Key) -> str:
        return "the root's parameters" if unit == ROOT else f"{unit[0]} parameters"

    def pre_backward(self, unit: Key) -> None:
        """Gather the unit for its backward, and prefetch the layers the engine gathers ahead."""
        self.gather(unit)
        block, run = unit
        for ahead in range(1, self.sharding.engine.prefetch + 1):
            if run - ahead >= 0:
                self.gather((block, run - ahead), prefetch=True)

    def post_backward(self, unit: Key) -> None:
        """Free the unit's gathered parameters; under stage 2 and 3 reduce-scatter its gradients to shards.

        Dim-0 shards (FSDP2): the padded gradients are copied into a reduce-scatter input, kept until the
        next unit's reduce-scatter (one buffer in flight), and this GPU's shard is the output. A flat
        partition (the paper, DeepSpeed) is allocated at the first reduction and holds every shard.
        """
        self.reshard(unit)
        if not self.sharding.sharded("gradients") or not self.unit_params.get(unit[0]):
            return
        self.flush_casts()
        grads = [self.param_grads.pop(k) for k in self.unit_grads.pop(unit, []) if k in self.param_grads]
        nbytes, owner = self.training.bytes.gradients, None if unit == ROOT else unit
        if self.sharding.engine.split == "dim0":
            if self.rs_input is not None:
                self.release(self.rs_input)
            gathered = self.sharding.gathered(self.unit_params[unit[0]])
            self.rs_input = self.alloc(size_of(nbytes * gathered), "gradients", None)
            shard = self.sharding.shard(self.unit_params[unit[0]])
            self.grad_shards.append(self.alloc(size_of(nbytes * shard), "gradients", owner))
        elif not self.grad_shards:
            partition = self.sharding.elements(self.graph, "gradients")
            self.grad_shards.append(self.alloc(size_of(nbytes * partition), "gradients", None))
        self.record(f"reduce-scatter gradients of {self.unit_name(unit)}", owner)
        for buf in grads:
            self.release(buf)

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
        if self.pending and unit.node.op != "cast":
            self.flush_casts()
        incoming = [self.tensor_key(t, unit.run) for t in self.writes(unit)]
        cast: list[tuple[Node, Param]] = []
        if any(key in self.grads for key in incoming):
            self.enter(unit, "backward")
            self.relayout(unit, incoming)
            drops: list[_Buffer] = []
            for t in self.gradient_order(unit):
                if self.graph.tensor(t).requires_grad:
                    buf = self.passed(unit, t) or self.tensor_alloc(t, self.owner(unit))
                    drops += self.accumulate(self.tensor_key(t, unit.run), buf, t)
            self.workspace(unit)  # after the input's gradient, the output of the first product cuBLAS runs
            cast = [(n, p) for n in unit.nodes for p in cached_params(self.graph, n, self.options)]
            bits16 = self.options.bytes_of(ACT)
            low = {p.name: self.alloc(size_of(p.numel * bits16), "gradients", None) for _, p in cast}
            for n in unit.nodes:
                for p in n.params:
                    if p.name not in low:
                        drops += self.param_gradient(n, p, unit)
            self.kernel_scratch(unit)
            self.record(unit.label, self.owner(unit))
            for buf in drops:
                self.release(buf)
            for key in incoming:
                if key in self.grads:
                    self.release(self.grads.pop(key))
        self.drop_kept(unit, kept, rekey)
        if cast:
            # Under autocast the op's parameter gradients are 16-bit; the casts' backward turn them into
            # float32 after the cast of the op's input has run its own (the weight's, then the bias's).
            self.pending = [(unit, n, p, low[p.name]) for n, p in cast]
            if not any(self.graph.node(self.graph.tensor(t).producer).op == "cast" for t in self.reads(unit)):
                self.flush_casts()
        elif unit.node.op == "cast":
            self.flush_casts()

    def relayout(self, unit: Unit, incoming: list[Key]) -> None:
        """Where a node's output gradient comes back in another layout (``grad_copy_when``, :mod:`symbert.ops`)
        and no fused kernel made it: the copy into the node's own layout replaces the gradient, which goes."""
        copy = unit.node.attr("grad_copy_when") if len(unit.nodes) == 1 else None
        if copy is None or self.fused_reader(unit.node.outputs[0]):
            return
        for key, t in zip(incoming, self.writes(unit), strict=True):
            if key in self.grads:
                size, category = self.tensor_size(t)
                buf = self.alloc(size_of(settled(copy * expr_of(size))), category, self.owner(unit))
                self.release(self.grads[key])
                self.grads[key] = buf

    def fused_reader(self, name: str) -> bool:
        """Whether tensor ``name`` is read, through views, by an op that runs fused (an sdpa attention call)."""
        for consumer in self.graph.consumers(name):
            node = self.graph.node(consumer)
            if region_of(node, self.plain) is not None:
                return True
            if OPS[node.op].view and any(self.fused_reader(t) for t in node.outputs):
                return True
        return False

    def kernel_scratch(self, unit: Unit) -> None:
        """What the unit's backward kernels allocate and free within the call (softmax's temporary, a CUDA
        reduction's staging for a bias gradient: :attr:`symbert.ops.OpDef.cuda_backward_temps` and
        :attr:`~symbert.ops.OpDef.column_sums`): the event stream's (:mod:`symbert.training.stream`), not the
        replay's sums, whose closed forms are polynomials in the sizes."""

    def flush_casts(self) -> None:
        """Run the backward of the casts of an op's parameters: each 16-bit gradient becomes float32."""
        pending, self.pending = self.pending, []
        for unit, node, p, low in pending:
            drops = self.param_gradient(node, p, unit)
            self.record(f"{unit.label}: {p.name} gradient to float32", self.owner(unit))
            for buf in [*drops, low]:
                self.release(buf)

    def param_gradient(self, node: Node, p: Param, unit: Unit) -> list[_Buffer]:
        """Allocate a parameter's gradient (as the engine holds it:
        :meth:`symbert.training.zero.ZeroPlan.gradient_numel`);
        returns it to drop when it is summed into an existing one."""
        key = self.param_key(node, p.name, unit.run)
        numel = self.sharding.gradient_numel(node, p)
        buf = self.alloc(size_of(self.training.bytes.gradients * numel), "gradients", self.owner(unit))
        if key in self.param_grads:
            return [buf]
        self.param_grads[key] = buf
        self.unit_grads.setdefault(self.unit_of(unit), []).append(key)
        return []

    def passed(self, unit: Unit, t: str) -> _Buffer | None:
        """The output gradient an op hands on unchanged to input ``t``, with a new reference, if it does."""
        node = unit.node
        if len(unit.nodes) > 1 or len(node.outputs) != 1:
            return None
        if not OPS[node.op].grad_passes_through:
            return None
        if self.tensor_size(t)[0] != self.tensor_size(node.outputs[0])[0]:
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
        """Every parameter tensor the optimizer steps once, in the order the model declares them:
        (name, elements on this GPU, run); a flat ZeRO partition is one tensor."""
        sharded = self.sharding.sharded("optimizer")
        if sharded and self.sharding.engine.split == "flat":
            return [("the optimizer's partition", self.sharding.elements(self.graph, "optimizer"), None)]
        seen: dict[Key, tuple[str, sympy.Expr, tuple[str, int] | None]] = {}
        for unit in self.units:
            for n in unit.nodes:
                for p in n.params:
                    key = self.param_key(n, p.name, unit.run)
                    numel = self.sharding.shard([p]) if sharded else p.numel
                    seen.setdefault(key, (p.name, numel, None if key[1] is None else self.owner(unit)))
        order = self.graph.parameter_order(list(dict.fromkeys(name for name, _, _ in seen.values())))
        runs = itertools.groupby(seen.values(), key=lambda item: item[2])  # each run of a block in turn
        return [item for _, same in runs for item in sorted(same, key=lambda item: order.index(item[0]))]

    def fp32_gradients(self) -> _Buffer | None:
        """DeepSpeed's float32 copy of the gradient partition, held through a mixed-precision update."""
        sharding = self.sharding
        if not (sharding.engine.fp32_gradients and sharding.sharded("optimizer") and self.training.bytes.master):
            return None
        elements = sharding.elements(self.graph, "optimizer")
        return self.alloc(size_of(UPDATE_BYTES * elements), "gradients", None)

    def update(self, first: bool) -> None:
        """The optimizer step (states created at the first one, Adam's temporaries), then zero_grad."""
        self.phase = "optimizer"
        held = self.training.step_scalars
        found_inf = size_of(sympy.Integer(FOUND_INF_BYTES * held))
        found_pad = size_of(held * expr_of(self.pad_of(size_of(sympy.Integer(FOUND_INF_BYTES)))))
        add_to(self.totals["optimizer"], found_inf)
        add_to(self.totals["runtime"], found_pad)
        if first:
            add_to(self.totals["optimizer"], size_of(self.states["lazy"]))
            states = STATE_BYTES[self.training.algorithm] // UPDATE_BYTES
            add_to(self.totals["runtime"], self.state_pads(UPDATE_BYTES, "optimizer", states))
            add_to(self.totals["runtime"], self.counter_pads())
        partition = self.fp32_gradients()
        self.record("optimizer states created" if first else "optimizer step")
        kind = self.training.implementation.temporaries if self.training.adam else None
        scalars = CPU_SCALAR_BYTES if kind and self.options.backend.device == "cpu" else 0
        temporaries: list[tuple[str, tuple[str, int] | None, sympy.Expr]] = []
        if kind == "for-loop":
            previous = sympy.S.Zero
            for name, numel, run in self.parameter_order():
                temporaries.append((f"update {name}", run, 2 * numel + previous))
                previous = numel
        elif kind == "foreach":
            local = self.sharding.elements(self.graph, "optimizer")
            temporaries.append(("update, all parameters at once", None, local))
        elif scalars:
            temporaries.append(("step counts incremented", None, sympy.S.Zero))
        for label, run, numel in temporaries:
            temp = size_of(UPDATE_BYTES * numel + scalars)
            pad = self.state_pads(UPDATE_BYTES, "optimizer") if kind == "foreach" else self.pad_of(temp)
            add_to(self.totals["optimizer"], temp)
            add_to(self.totals["runtime"], pad)
            self.record(label, run)
            add_to(self.totals["optimizer"], temp, -1)
            if kind == "foreach":
                self.state_pads(UPDATE_BYTES, "optimizer", sign=-1)
            add_to(self.totals["runtime"], pad, -1)
        add_to(self.totals["optimizer"], found_inf, -1)
        add_to(self.totals["runtime"], found_pad, -1)
        if partition is not None:
            self.release(partition)
        for buf in [*self.param_grads.values(), *self.grad_shards]:
            self.release(buf)
        self.param_grads.clear()
        self.grad_shards.clear()
        self.unit_grads.clear()
        self.hidden = dict.fromkeys(self.graph.blocks, "none")
        self.record("zero_grad")
