"""Saved-tensor pass: the bytes autograd keeps for backward after one training-mode forward.

Each op names what its backward needs (:mod:`symbert.ops`), the policy says in what dtype it is kept
(:mod:`symbert.analysis.policy`). Saved tensors are deduplicated by storage: a tensor saved by several
ops counts once, and a saved view keeps its whole base alive. Inside a repeated block every tensor
exists once per run, except the chain x_0 … x_L of layer inputs and outputs, which runs share: run k's
output is run k+1's input.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import sympy

from symbert.analysis import sdpa
from symbert.analysis.autocast import weight_copies, with_dtypes
from symbert.analysis.breakdown import Breakdown, Contribution, component_of, component_order, model_of
from symbert.analysis.policy import ATTENTION_CALL, ATTENTION_CORE, MemoryOptions
from symbert.analysis.sizes import folded
from symbert.configs import ConfigError
from symbert.ir import ACT, RUN, Graph, Node, Role, Tensor
from symbert.ops import OPS, tensor_of
from symbert.parallel import stage_factor
from symbert.symbols import settled

NOT_SAVED = frozenset({Role.BUFFER, Role.PARAMETER})

#: Sizes known so far (a config's), which decide what depends on a concrete size (the SDPA kernel).
Values = Mapping[sympy.Symbol, int] | None


@dataclass(frozen=True)
class Saved:
    """One thing a node keeps: a graph tensor, or (``tensor`` None) an extra buffer of ``nbytes``."""

    node: Node
    what: str
    tensor: Tensor | None = None
    nbytes: sympy.Expr = sympy.S.Zero
    param: str | None = None
    """The parameter an extra buffer copies (autocast's 16-bit weight copies), which it is one per."""
    hooked: bool = True
    """Whether ``saved_tensors_hooks`` see it, and so whether it counts as saved for backward: autograd
    keeps a Python number an op multiplies by as a 0-dim tensor (a wrapped number) without calling them."""


def region_of(node: Node, options: MemoryOptions) -> tuple[str, str] | None:
    """The fused or recomputed region a node belongs to, with what happens to it. Full recomputation
    recomputes each run of a repeated body: a block, or one run of an unrolled one; selective
    recomputation the attention core. Under sdpa (or flash) the whole attention call is one kernel,
    which keeps no seq_len² tensor, so selective recomputation leaves it alone."""
    run = node.block or next((r for r in node.regions if r.startswith(RUN)), None)
    if options.recompute == "full" and run:
        return run, "recompute"
    if ATTENTION_CALL in node.regions and options.attention != "eager":
        return f"{node.scope}/{ATTENTION_CALL}", "sdpa"
    if ATTENTION_CORE in node.regions and options.recompute == "selective":
        return f"{node.scope}/{ATTENTION_CORE}", "recompute"
    return None


def regions(graph: Graph, options: MemoryOptions) -> dict[str, tuple[str, list[Node]]]:
    """Each fused or recomputed region under ``options``: its mode and nodes, by key, in trace order."""
    out: dict[str, tuple[str, list[Node]]] = {}
    for node in graph.nodes:
        key = region_of(node, options)
        if key:
            out.setdefault(key[0], (key[1], []))[1].append(node)
    return out


def attention_calls(graph: Graph, options: MemoryOptions) -> list[sdpa.Call]:
    """The attention calls an SDPA kernel runs under ``options`` (none under eager attention)."""
    return [sdpa.call_of(graph, nodes) for mode, nodes in regions(graph, options).values() if mode == "sdpa"]


def attention_kernels(graph: Graph, options: MemoryOptions, values: Values = None) -> tuple[str, ...]:
    """The SDPA kernels the attention calls run, each named once (empty under eager attention)."""
    options = options.for_model(model_of(graph))
    return tuple(dict.fromkeys(sdpa.kept(call, options, values)[0] for call in attention_calls(graph, options)))


def _kept_by_node(graph: Graph, node: Node, options: MemoryOptions) -> Iterator[Saved]:
    """What the op's autograd formula keeps, less what the policy ignores."""
    if not any(graph.tensor(t).requires_grad for t in node.outputs):
        return
    for entry in OPS[node.op].saves:
        slot, _, needs = entry.partition(" for ")
        if needs and not graph.tensor(node.inputs[int(needs[-1])]).requires_grad:
            continue
        if slot == "number":
            if options.backend.device == "cpu":  # on CUDA it stays in host memory, outside the GPU's allocator
                yield Saved(node, "wrapped number (0-dim, 8 bytes)", None, sympy.Integer(8), hooked=False)
            continue
        tensor = kept_as(graph, graph.tensor(tensor_of(node, slot)), options)
        if tensor.role not in NOT_SAVED | options.backend.ignored:
            yield Saved(node, f"{tensor.role} {slot}", tensor)
    for p in weight_copies(graph, node, options):
        what = f"16-bit weight copy: {p.name} ({options.activation_dtype})"
        yield Saved(node, what, None, p.numel * options.bytes_of(ACT), p.name)


def kept_as(graph: Graph, tensor: Tensor, options: MemoryOptions) -> Tensor:
    """The tensor kept for ``tensor``: under a policy that gathers again in backward, the shard an
    all-gather (sequence parallelism) read, else ``tensor`` itself."""
    if options.backend.regathers and graph.node(tensor.producer).op == "all_gather":
        return graph.tensor(graph.node(tensor.producer).inputs[0])
    return tensor


def _kept_by_region(
    graph: Graph, nodes: list[Node], mode: str, options: MemoryOptions, values: Values = None
) -> Iterator[Saved]:
    """A recomputed region keeps its activation inputs; an sdpa region what its kernel keeps."""
    if mode == "sdpa":
        _, items = sdpa.kept(sdpa.call_of(graph, nodes), options, values)
        for item in items:
            if item.role not in options.backend.ignored:
                tensor = graph.tensor(item.tensor) if item.tensor else None
                yield Saved(nodes[0], item.what, tensor, item.nbytes)
        return
    produced = [t for n in nodes for t in n.outputs]
    inputs = dict.fromkeys(t for n in nodes for t in n.inputs if t not in produced)
    for name in inputs:
        tensor = graph.tensor(name)
        if tensor.role == Role.ACTIVATION and tensor.requires_grad:
            yield Saved(nodes[0], f"{mode} input", tensor)


def saved(graph: Graph, options: MemoryOptions, values: Values = None) -> Iterator[Saved]:
    """Everything kept for backward, in node order, regions kept where their first node stands.

    ``values`` (a config's sizes) decide what depends on a concrete size: the SDPA kernel on CUDA.
    """
    grouped = regions(graph, options)
    emitted: set[str] = set()
    copies: set[str] = set()
    for node in graph.nodes:
        key = region_of(node, options)
        if key is None:
            for item in _kept_by_node(graph, node, options):
                if item.param is None:
                    yield item
                elif item.param not in copies:  # one 16-bit copy per parameter (a tied weight: once)
                    copies.add(item.param)
                    yield item
        elif key[0] not in emitted:
            emitted.add(key[0])
            mode, nodes = grouped[key[0]]
            yield from _kept_by_region(graph, nodes, mode, options, values)


def _instances(graph: Graph, node: Node, tensor: Tensor) -> tuple[list[tuple[str, sympy.Expr]], Tensor]:
    """The storage instances a reference keeps alive: (key, how many) pairs, and the tensor sizing them."""
    root = graph.storage(tensor.name)
    for block in graph.blocks.values():
        inside = node.block == block.name
        if root.name == block.input:
            parts = ["first", "middle"] if inside else ["first"]
        elif root.name == graph.storage(block.source).name:
            parts = ["first"]
        elif root.name == block.output:
            parts = ["middle", "last"] if inside else ["last"]
        else:
            continue
        counts = {"first": sympy.S.One, "middle": block.count - 1, "last": sympy.S.One}
        return [(f"{block.name}:chain:{p}", counts[p]) for p in parts], graph.tensor(block.output)
    if root.block is None:
        return [(root.name, sympy.S.One)], root
    if node.block != root.block:
        raise ValueError(f"{node.name} keeps {root.name} from inside block {root.block}; unsupported")
    return [(root.name, graph.blocks[root.block].count)], root


def _stored(graph: Graph, tensor: Tensor, options: MemoryOptions, storages: set[str]) -> sympy.Expr:
    """Bytes a kept storage holds; for the output of an op that is a view at some sizes
    (:func:`~symbert.analysis.sizes.folded`), the storage it views there, unless that is kept anyway."""
    size = tensor.numel * options.bytes_of(tensor.dtype) * graph.presence(tensor)
    fold = folded(graph, tensor)
    if fold is None:
        return size
    view, base = fold
    held = 0 if base.name in storages else base.numel * options.bytes_of(base.dtype)
    return size + settled(view * (held - size))


def activations(graph: Graph, options: MemoryOptions | None = None, values: Values = None) -> Breakdown:
    """Bytes kept for backward, by component, each term traced to the node that keeps it (``values``:
    see :func:`saved`). On the first of several pipeline stages, ``graph`` being that stage's, the
    activations of every micro-batch in flight (:func:`symbert.parallel.stage_factor`)."""
    spec = model_of(graph)
    options = (options or MemoryOptions()).for_model(spec)
    if options.attention != "eager" and not any(ATTENTION_CALL in n.regions for n in graph.nodes):
        raise ConfigError(f"{graph.model} marks no attention call to fuse: run it with --attention eager")
    graph = with_dtypes(graph, options)
    flight = stage_factor(options.layout)
    claimed: set[str] = set()
    parts = []
    items = [item for item in saved(graph, options, values) if item.hooked]
    storages = {graph.storage(item.tensor.name).name for item in items if item.tensor is not None}
    for item in items:
        component = component_of(item.node, spec.activation_components)
        if item.tensor is None:
            count = graph.param_multiplicity(item.node) if item.param else graph.multiplicity(item.node)
            parts.append(Contribution(item.node.name, component, item.what, item.nbytes * flight, count))
            continue
        instances, sizing = _instances(graph, item.node, item.tensor)
        new = [(key, count) for key, count in instances if key not in claimed]
        if not new:
            continue
        claimed.update(key for key, _ in new)
        size = _stored(graph, sizing, options, storages)
        what = f"{item.what}: {graph.storage(item.tensor.name).name} ({options.dtype_of(sizing.dtype)})"
        parts.append(Contribution(item.node.name, component, what, size * flight, sympy.Add(*(c for _, c in new))))
    order = component_order(spec.activation_components)
    return Breakdown("activation_bytes", "bytes", tuple(parts), order, spec.substitutions)
