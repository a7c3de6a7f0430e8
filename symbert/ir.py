"""The intermediate representation: a static graph of ops over tensors with symbolic shapes.

A :class:`Graph` holds :class:`Node` s (one per op) in trace order, the :class:`Tensor` s they read and
write, and the :class:`Block` s that repeat a traced body a symbolic number of times (BERT's L
encoder layers). The networkx graph behind it links producer to consumer, one edge per tensor use.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from enum import StrEnum

import networkx as nx
import sympy

from symbert.display import Displayed
from symbert.formula import human

Shape = tuple[sympy.Expr, ...]


class Role(StrEnum):
    """What a tensor is for, which decides how analyses treat it. A ``PARAMETER`` tensor is a parameter
    read as a tensor: it needs a gradient but, like a buffer, is the model's storage, not an activation."""

    ACTIVATION = "activation"
    INDEX = "index"
    MASK = "mask"
    STATISTICS = "statistics"
    BUFFER = "buffer"
    PARAMETER = "parameter"


#: The prefix of the region that tags one run of an unrolled repeat (``run:encoder/layer/3``).
RUN = "run:"

#: Dtype classes a backend policy resolves; every other dtype string is a concrete torch dtype name.
ACT, MASK_DTYPE, STATS_DTYPE = "act", "mask", "stats"


def numel(shape: Shape) -> sympy.Expr:
    """Number of elements of a symbolic shape."""
    return sympy.Mul(*shape)


@dataclass(frozen=True)
class Tensor:
    """A value flowing between ops. ``base`` names the tensor whose storage a view shares."""

    name: str
    shape: Shape
    dtype: str
    role: Role
    requires_grad: bool
    producer: str
    block: str | None = None
    base: str | None = None

    @property
    def numel(self) -> sympy.Expr:
        return numel(self.shape)


@dataclass(frozen=True)
class Param:
    """A parameter, named like its Hugging Face counterpart (layer index dropped). ``trained`` False: its
    module registers it but no op reads it (an untied LM head's old ``bias``), so backward gives it no
    gradient and the optimizer skips it; it still counts among the parameters and the weights, and loads
    with them (:func:`symbert.tracer.unused_param`)."""

    name: str
    shape: Shape
    trained: bool = True

    @property
    def numel(self) -> sympy.Expr:
        return numel(self.shape)


@dataclass(frozen=True)
class Node:
    """One op: its kind, where it sits (scope, block, regions), what it reads, writes and owns."""

    name: str
    op: str
    scope: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    params: tuple[Param, ...] = ()
    attrs: tuple[tuple[str, object], ...] = ()
    block: str | None = None
    regions: tuple[str, ...] = ()

    def attr(self, key: str, default: object = None) -> object:
        return dict(self.attrs).get(key, default)


@dataclass(frozen=True)
class Block:
    """A body traced once that runs ``count`` times, each run reading the previous run's output.

    ``input`` is the tensor each run reads, ``source`` the outside tensor the first run reads, and
    ``output`` the tensor each run returns; together they form the chain x_0 … x_count, where x_0 is
    ``source`` and run k reads x_k and returns x_(k+1).
    """

    name: str
    count: sympy.Expr
    shares_params: bool
    input: str
    source: str
    output: str


@dataclass(frozen=True)
class Registered:
    """What a module registers in ``__init__`` that the trace does not show: the order of its children where
    the forward uses them in another, and its buffers (name, shape, dtype), e.g. the position ids the forward
    slices to the sequence."""

    children: tuple[str, ...] = ()
    buffers: tuple[tuple[str, Shape, str], ...] = ()


@dataclass(frozen=True)
class Pattern:
    """The order a scope's layers run in, where the graph traces them grouped by kind (for drawing).

    Each of ``kinds`` is (name, the scopes or blocks that trace it, its layers in one repeat); the kinds run
    in turn, the whole ``count`` times, and stop after ``layers`` layers in all (the last repeat may stop
    early). ModernBERT: a global layer then global_every − 1 local ones, L_global times, L layers in all.
    """

    kinds: tuple[tuple[str, tuple[str, ...], sympy.Expr], ...]
    count: sympy.Expr
    layers: sympy.Expr


@dataclass
class Graph(Displayed):
    """Nodes in trace order, tensors by name, repeated blocks by name, over a networkx MultiDiGraph.

    ``head`` names the task head traced on the model (``model``: the bare encoder).
    """

    model: str
    head: str = "model"
    nx: nx.MultiDiGraph = field(default_factory=nx.MultiDiGraph)
    tensors: dict[str, Tensor] = field(default_factory=dict)
    blocks: dict[str, Block] = field(default_factory=dict)
    options: dict[str, object] = field(default_factory=dict)
    held: dict[str, str] = field(default_factory=dict)
    """Tensors a module's Python locals keep past their last use: tensor → the node after which the
    module returns, or the block whose last run ends it (a module around a repeated block: its locals
    then keep the tensors of every run) (:func:`symbert.tracer.held`)."""
    registered: dict[str, Registered] = field(default_factory=dict)
    """By module (its parameter-name prefix, ``embeddings``): what it registers (:func:`symbert.tracer.registers`)."""
    patterns: dict[str, Pattern] = field(default_factory=dict)
    """Scopes whose layers run interleaved although traced grouped by kind (:func:`symbert.tracer.pattern`)."""

    def parameter_order(self, names: list[str]) -> list[str]:
        """Parameter names (first use first) in the order ``Module.parameters()`` yields them: each
        module's children in registration order where :attr:`registered` gives it, else first use."""

        def key(item: tuple[int, str]) -> tuple[int, int, int]:
            index, name = item
            for prefix, module in self.registered.items():
                children = module.children
                child = name.removeprefix(f"{prefix}.").split(".")[0] if name.startswith(f"{prefix}.") else None
                if child in children:
                    first = next(i for i, n in enumerate(names) if n.startswith(f"{prefix}."))
                    return first, children.index(child), index
            return index, 0, index

        return [name for _, name in sorted(enumerate(names), key=key)]

    def add_node(self, node: Node, outputs: list[Tensor]) -> None:
        for t in outputs:
            self.tensors[t.name] = t
        self.nx.add_node(node.name, node=node)
        for t in node.inputs:
            self.nx.add_edge(self.tensors[t].producer, node.name, key=t)

    @property
    def nodes(self) -> Iterator[Node]:
        for _, data in self.nx.nodes(data=True):
            yield data["node"]

    def node(self, name: str) -> Node:
        return self.nx.nodes[name]["node"]

    def tensor(self, name: str) -> Tensor:
        return self.tensors[name]

    def consumers(self, name: str) -> list[str]:
        """Names of the nodes that read tensor ``name``."""
        producer = self.tensors[name].producer
        return [v for _, v, key in self.nx.out_edges(producer, keys=True) if key == name]

    def storage(self, name: str) -> Tensor:
        """The tensor owning the storage ``name`` lives in (itself unless it is a view)."""
        t = self.tensors[name]
        while t.base is not None:
            t = self.tensors[t.base]
        return t

    def presence(self, tensor: Tensor) -> sympy.Expr:
        """The bracket of the sizes where ``tensor`` exists (its node's ``present``, a mask Hugging Face
        does not always build), else 1."""
        return self.node(tensor.producer).attr("present", sympy.S.One) if tensor.producer else sympy.S.One

    def multiplicity(self, node: Node) -> sympy.Expr:
        """How many times the node runs: its block's count, or 1."""
        return self.blocks[node.block].count if node.block else sympy.Integer(1)

    def param_multiplicity(self, node: Node) -> sympy.Expr:
        """How many distinct copies of the node's parameters exist."""
        if node.block and not self.blocks[node.block].shares_params:
            return self.blocks[node.block].count
        return sympy.Integer(1)

    def op_kinds(self) -> list[str]:
        return sorted({n.op for n in self.nodes})

    def __repr__(self) -> str:
        nodes = sum(1 for _ in self.nodes)
        blocks = ", ".join(f"{b.name} × {human(b.count)}" for b in self.blocks.values()) or "none"
        return f"<Graph {self.model}, head {self.head}: {nodes} nodes, {len(self.tensors)} tensors; repeated: {blocks}>"
