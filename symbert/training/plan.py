"""What a training step allocates, keeps and frees at each op, computed once per graph and policy.

A :class:`Plan` reads the graph the way an fx interpreter reads ``node.meta``: for each :class:`Op` (a node,
or a fused attention call under sdpa) what it reads and writes, the outputs it allocates and in which
order, what it keeps for backward (:func:`symbert.analysis.activations.saved`, with and without
recomputation), autocast's parameter copies (:mod:`symbert.analysis.autocast`), the transients it holds
while it runs (an SDPA kernel's, CPU promotion copies), its recomputed region and its ZeRO unit
(:mod:`symbert.training.zero`). It also names the instances of tensors across a block's runs (the keys
the walk tracks them by), their sizes and categories, and the runtime's rounding of an allocation. The
walk over the plan is :class:`symbert.training.driver.Driver`.
"""

from __future__ import annotations

import copy
import functools
import itertools
from collections.abc import Iterable, Mapping
from dataclasses import replace

import sympy

from symbert.analysis import sdpa
from symbert.analysis.activations import Saved, Values, region_of, saved
from symbert.analysis.autocast import cached_params, promotion_copies, weight_copies, with_dtypes
from symbert.analysis.breakdown import model_of
from symbert.analysis.sdpa import is_mask_bias, mask_dtype
from symbert.analysis.sizes import Size, at_least, expr_of, folded, size_of
from symbert.ir import ACT, RUN, Graph, Node, Param, Role, Tensor
from symbert.ops import OPS, tensor_of
from symbert.symbols import seq_len, settled
from symbert.training.keys import Key, Keys
from symbert.training.runtime import ColumnSumScratch
from symbert.training.states import Training, model_states
from symbert.training.units import ROOT, Op, Unit
from symbert.training.zero import pieces


class Plan:
    """Everything the walk over ``runs`` runs of each block needs to know, computed before it starts."""

    def __init__(
        self,
        graph: Graph,
        training: Training,
        runs: Mapping[str, int],
        values: Values = None,
        kernel_values: Values = None,
        open_workspaces: bool = False,
    ) -> None:
        """``values`` (a config's sizes) decide what depends on a concrete size
        (:func:`~symbert.analysis.activations.saved`); ``kernel_values``, where given instead, the kernels
        whose transients an attention call holds. ``open_workspaces``: the runtime's workspace sizes are left
        as symbols (:meth:`~symbert.training.runtime.Runtime.opened`)."""
        training = training.for_model(model_of(graph))
        self.options = options = training.memory
        graph = with_dtypes(graph, options)
        self.graph, self.training, self.runs, self.values = graph, training, runs, values
        self.kernel_values = values if kernel_values is None else kernel_values
        self.plain = replace(options, recompute="none")
        self.sharding, self.runtime, self.states = training.sharding, training.runtime, model_states(graph, training)
        if open_workspaces and self.runtime is not None:
            self.runtime = self.runtime.opened()
        self.keys = Keys(graph, runs)
        self._sizes: dict[str, tuple[Size, str]] = {}
        self._pads: dict[frozenset, Size] = {}
        #: The runtime's rounding of whole model states (:func:`symbert.training.optimizer.state_pads`).
        self.state_pads: dict[tuple[int, str, int], Size] = {}
        self._padded: dict[int, tuple[Size, Size]] = {}  # by the id of a size the replay shares
        self._extras: dict[sympy.Expr, tuple[Size, str]] = {}
        self._casts: dict[sympy.Expr, Size] = {}
        self._grads: dict[tuple[str, str], Size] = {}
        kept, kept_plain = _by_node(saved(graph, options, values)), _by_node(saved(graph, self.plain, values))
        every = [i for k in (kept, kept_plain) for items in k.values() for i in items]
        self.kept_storages = {graph.storage(i.tensor.name).name for i in every if i.tensor is not None}
        self.block_end = {n.block: n.name for n in graph.nodes if n.block is not None}
        #: Blocks whose runs' tensors a module's locals hold past the block's end (Hugging Face's tuple of
        #: every layer's output): once run, the runs not replayed hold them too until it returns.
        self.held_past = {graph.tensor(t).block for t, until in graph.held.items() if self.past(t, until)}
        #: The ops of each stretch of nodes of one block (or of none), in graph order.
        self.groups = [
            (block, [self._op(tuple(g), kept, kept_plain) for _, g in itertools.groupby(nodes, key=self._fused)])
            for block, nodes in itertools.groupby(graph.nodes, key=lambda n: n.block)
        ]
        self.units = [
            Unit(op, run) for block, ops in self.groups for run in (range(runs[block]) if block else [None])
            for op in ops
        ]
        self.regions: dict[Key, list[Unit]] = {}
        for unit in self.units:
            if unit.op.recompute is not None:
                self.regions.setdefault((unit.op.recompute, unit.run), []).append(unit)
        self.unit_params: dict[str | None, list[Param]] = {}
        for piece in pieces(graph):
            self.unit_params.setdefault(piece.unit, []).append(piece.param)
        ordered = [u for u in self.units if not u.op.placeholder]
        self.first_of = {self.unit_of(u): u for u in reversed(ordered)}
        self.last_of = {self.unit_of(u): u for u in ordered}

    def with_optimizer(self, training: Training) -> Plan:
        """This plan under ``training``, which differs from the plan's in the optimizer alone: the walk's ops
        are the same, the model states are the new optimizer's."""
        training = training.for_model(model_of(self.graph))
        if replace(training, optimizer=self.training.optimizer) != self.training:
            raise ValueError(f"{training.describe()} differs from the plan's setup in more than the optimizer")
        plan = copy.copy(self)
        plan.training, plan.states = training, model_states(self.graph, training)
        return plan

    # ---- what each op does

    def _fused(self, node: Node) -> tuple:
        return region_of(node, self.plain) or ("node", node.name)

    def _op(self, nodes: tuple[Node, ...], kept: dict[str, list[Saved]], kept_plain: dict[str, list[Saved]]) -> Op:
        graph, options, node = self.graph, self.options, nodes[0]
        op = Op(nodes, placeholder=OPS[node.op].placeholder, cast=node.op == "cast")
        inside = {t for n in nodes for t in n.outputs}
        op.reads = list(dict.fromkeys(t for n in nodes for t in n.inputs if t not in inside))
        if len(nodes) == 1:
            op.label, op.writes = node.name, list(node.outputs)
        else:
            shared = next(r for r in node.regions if all(r in n.regions for n in nodes) and not r.startswith(RUN))
            names = {n.name for n in nodes}
            op.label = f"{node.scope}/{shared}"
            op.writes = [t for n in nodes for t in n.outputs if any(c not in names for c in graph.consumers(t))]
        order = OPS[node.op].cuda_order if self.runtime is not None and len(nodes) == 1 else ()
        written = [op.writes[i] for i in order] if order and len(order) == len(op.writes) else op.writes
        for t in written:
            tensor = graph.tensor(t)
            if tensor.base is None and tensor.role not in (Role.BUFFER, Role.PARAMETER):
                op.outputs.append(self.output(t))
        op.kept = [item for n in nodes for item in kept.get(n.name, ())]
        op.kept_plain = [item for n in nodes for item in kept_plain.get(n.name, ())]
        for n in nodes:
            copies = {p.name for p in weight_copies(graph, n, options)}
            for p in cached_params(graph, n, options):
                op.casts.append((n, p))
                if p.name not in copies:
                    op.cached.append((n, p))
        op.transients = self.transients(nodes)
        op.backward_transients = self.backward_transients(nodes)
        for t, until in graph.held.items():
            if until in graph.blocks and nodes[-1].name == self.block_end[until]:
                op.returns.append((t, True, self.past(t, until)))
            elif any(n.name == until for n in nodes):
                op.returns.append((t, False, self.past(t, until)))
        region = region_of(node, options)
        op.recompute = region[0] if region is not None and region[1] == "recompute" else None
        op.matmul = self.runtime is not None and len(nodes) == 1 and OPS[node.op].matmul is not None
        order = OPS[node.op].grad_order if len(nodes) == 1 else ()
        reads = [op.reads[i] for i in order] if order and len(order) == len(op.reads) else op.reads
        op.grads = [t for t in reads if graph.tensor(t).requires_grad]  # in the order backward makes them
        copy = node.attr("grad_copy_when") if len(nodes) == 1 else None
        op.relayout = None if copy is None or self.fused_reader(node.outputs[0]) else copy
        op.scratch = self.kernel_scratch(node) if len(nodes) == 1 else []
        passes = len(nodes) == 1 and len(node.outputs) == 1 and OPS[node.op].grad_passes_through
        op.passes = {t for t in op.grads if passes and self.tensor_size(t)[0] == self.tensor_size(node.outputs[0])[0]}
        op.after_cast = any(graph.node(graph.tensor(t).producer).op == "cast" for t in op.reads)
        return op

    def output(self, name: str) -> tuple[str, Size, str, sympy.Expr | None, bool]:
        """A forward output's allocation. Where the op is a view at some sizes (:func:`folded`), only its copy
        at the others; the view then holds the storage it views, unless that is kept anyway: that share of the
        storage then moves to the output, to be freed with it."""
        size, category = self.tensor_size(name)
        producer = self.graph.node(self.graph.tensor(name).producer)
        storage = OPS[producer.op].storage
        if storage is not None:  # the output views a larger buffer
            size = size_of(expr_of(size) * storage(producer))
        fold = folded(self.graph, self.graph.tensor(name))
        if fold is None:
            return name, size, category, None, False
        view, base = fold
        copied = size_of(expr_of(size) - settled(view * expr_of(size)))
        return name, copied, category, view, base.name not in self.kept_storages

    def transients(self, nodes: tuple[Node, ...]) -> list[tuple[Size, str]]:
        """What an op holds while it runs and frees when it returns: a fused attention call's kernel's
        (:func:`symbert.analysis.sdpa.transients`), or the CPU promotion copies of an op's inputs."""
        if len(nodes) > 1:
            call = sdpa.call_of(self.graph, list(nodes))
            return [self.extra_size(k) for k in sdpa.transients(call, self.options, self.kernel_values)]
        return [self.promotion_copy(nodes[0], t) for t in promotion_copies(self.graph, nodes[0], self.options)]

    def backward_transients(self, nodes: tuple[Node, ...]) -> list[tuple[Size, str]]:
        """A fused attention call's backward at its highest point, as a change from its event
        (:func:`symbert.analysis.sdpa.backward_transients`); nothing for another op."""
        if len(nodes) == 1:
            return []
        call = sdpa.call_of(self.graph, list(nodes))
        return [self.extra_size(k) for k in sdpa.backward_transients(call, self.options, self.kernel_values)]

    def fused_reader(self, name: str) -> bool:
        """Whether tensor ``name`` is read, through views, by an op that runs fused (an sdpa attention call)."""
        for consumer in self.graph.consumers(name):
            node = self.graph.node(consumer)
            if region_of(node, self.plain) is not None:
                return True
            if OPS[node.op].view and any(self.fused_reader(t) for t in node.outputs):
                return True
        return False

    def kernel_scratch(self, node: Node) -> list[Size]:
        """What the CUDA kernels of the op's backward allocate for the call and free as it returns: its
        temporaries (:attr:`symbert.ops.OpDef.cuda_backward_temps`), and a reduction's staging buffer and
        semaphores for each sum over rows it runs, on the runtime's GPU (none unnamed), a formula in the rows
        (:class:`~symbert.training.runtime.ColumnSumScratch`). The allocator's requests, not the ledger's sums,
        whose closed forms are polynomials in the sizes."""
        if self.runtime is None:
            return []
        op, card = OPS[node.op], self.runtime.gpu
        sizes = [self.tensor_size(tensor_of(node, name))[0] for name in op.cuda_backward_temps]
        for rows, columns in op.column_sums(node, self.graph) if op.column_sums and card else ():
            sizes += [size_of(ColumnSumScratch(rows, columns, sympy.Symbol(card.key), part)) for part in (0, 1)]
        return sizes

    def promotion_copy(self, node: Node, t: Tensor) -> tuple[Size, str]:
        """A temporary copy of input ``t`` in the dtype of ``node``'s output (CPU type promotion)."""
        common = self.graph.tensor(node.outputs[0]).dtype
        return size_of(t.numel * self.options.bytes_of(common)), self.tensor_size(t.name)[1]

    def past(self, t: str, until: str) -> bool:
        """Whether ``t``, of a block, is held past the block's end."""
        block = self.graph.tensor(t).block
        return block is not None and (until in self.graph.blocks or self.graph.node(until).block != block)

    # ---- sizes

    def tensor_size(self, name: str) -> tuple[Size, str]:
        """Bytes of tensor ``name`` (or of its gradient) and its category."""
        if name not in self._sizes:
            t = self.graph.tensor(name)
            category = _category(t.numel)
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
        if nbytes not in self._extras:
            self._extras[nbytes] = size_of(nbytes), _category(at_least(nbytes))
        return self._extras[nbytes]

    def cache_size(self, p: Param) -> Size:
        """Bytes of autocast's 16-bit copy of ``p`` (or of its 16-bit gradient)."""
        if p.numel not in self._casts:
            self._casts[p.numel] = size_of(p.numel * self.options.bytes_of(ACT))
        return self._casts[p.numel]

    def gradient_size(self, node: Node, p: Param) -> Size:
        """Bytes of ``p``'s gradient as the engine holds it (:meth:`symbert.training.zero.ZeroPlan.gradient_numel`)."""
        if (node.name, p.name) not in self._grads:
            numel = self.sharding.gradient_numel(node, p)
            self._grads[(node.name, p.name)] = size_of(self.training.bytes.gradients * numel)
        return self._grads[(node.name, p.name)]

    @property
    def losses(self) -> int:
        """The 0-dim float32 tensors backward starts from outside the graph, alive until it ends: the
        gradient it seeds the loss with (``loss.backward()`` holds it until it returns); a bare model's
        loss, the caller's (a task model's is its graph's); GradScaler's scaled loss."""
        return 1 + (self.graph.head == "model") + self.training.grad_scaler

    def pad_of(self, size: Size) -> Size:
        """What the runtime adds to one allocation of ``size`` (its rounding), in the runtime category."""
        if self.runtime is None:
            return {}
        known = self._padded.get(id(size))
        if known is not None and known[0] is size:
            return known[1]
        key = frozenset(size.items())
        if key not in self._pads:
            self._pads[key] = self.runtime.padding(expr_of(size))
        self._padded[id(size)] = (size, self._pads[key])  # holding the size keeps its id from being reused
        return self._pads[key]

    def unit_of(self, unit: Unit) -> Key:
        """The sharding unit a unit's parameters belong to: its layer run, or the root."""
        block = unit.op.block
        return (block, unit.run) if block is not None and block in self.unit_params else ROOT


@functools.lru_cache(maxsize=1 << 12)
def _category(numel: sympy.Expr) -> str:
    """A tensor's category by its elements (or bytes): attention where they grow with seq_len²."""
    return "attention" if sympy.degree(numel, seq_len) >= 2 else "activations"


def _by_node(items: Iterable[Saved]) -> dict[str, list[Saved]]:
    out: dict[str, list[Saved]] = {}
    for item in items:
        out.setdefault(item.node.name, []).append(item)
    return out
