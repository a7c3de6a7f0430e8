"""The tensor-parallel transform applied while tracing, and the cutting of a pipeline stage.

Tensor, sequence and pipeline parallelism act on the graph: the model is traced again under a
:class:`Sharding`, which applies the family's tensor-parallel plan (``ModelSpec.tensor_plan``, one
style per scope, as ``torch.distributed.tensor.parallel.parallelize_module`` takes it) to the ops as
they are recorded, inserts the collectives (:mod:`symbert.ops`), and cuts the graph to the first
pipeline stage (:class:`StageEnd`); :func:`last_stage` cuts out the last one. Every pass then runs on
that per-GPU graph unchanged. The tracer asks only what :class:`symbert.tracer.Transform` states.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field

import sympy

from symbert import ops as F
from symbert.ir import Graph, Node, Tensor
from symbert.symbols import p, seq_len, t, vocab_size

#: Tensor-parallel styles a plan names, per scope (Megatron-LM's layers; torch's ``ParallelStyle`` s):
#: ``colwise`` splits a linear's outputs (Q, K, V, the intermediate dense, an LM decoder): weight and
#: bias [out/t, in], output [..., out/t]; ``rowwise`` splits its inputs (the attention output and
#: output dense): weight [out, in/t], bias whole, the partial output summed by an all-reduce;
#: ``vocab`` splits an embedding's rows (the word embeddings): [⌈vocab/t⌉, E], then an all-reduce;
#: ``sequence`` starts the sequence-parallel region at that op (its input split along seq_len).
STYLES = ("colwise", "rowwise", "vocab", "sequence")

#: The sequence dimension of Hugging Face's batch-first activations [B, seq_len, H].
SEQ_DIM = 1


class StageEnd(Exception):
    """Raised by the repeat that ends the first pipeline stage, carrying its output (sent on)."""

    def __init__(self, output: Tensor) -> None:
        super().__init__("end of the first pipeline stage")
        self.output = output


@dataclass
class Sharding:
    """One GPU's view of the model while it is traced: the plan's styles by scope, sequence
    parallelism, and the pipeline stage it holds (``""`` without a pipeline, else ``first`` or ``last``;
    a stage holds L/p layers)."""

    plan: Mapping[str, str]
    tensor: bool
    sequence: bool
    pipeline: str
    _gathered: dict[str, Tensor] = field(default_factory=dict)

    def __post_init__(self) -> None:
        unknown = sorted(set(self.plan.values()) - set(STYLES))
        if unknown:
            raise ValueError(f"unknown tensor-parallel style {unknown[0]!r} (styles: {', '.join(STYLES)})")

    def style(self, path: str) -> str | None:
        """The plan's style for the op at ``path`` (a run index of an unrolled block ignored)."""
        if not self.tensor:
            return None
        return self.plan.get("/".join(part for part in path.split("/") if not part.isdigit()))

    def before(self, style: str | None, x: Tensor, size: sympy.Expr) -> tuple[Tensor, sympy.Expr]:
        """The input a sharded op reads and its sharded size (out features, embedding rows)."""
        if style == "colwise":
            return self.full_sequence(x), _shard(size)
        if style == "vocab":
            return x, _shard(size)
        if style == "sequence":
            return self.sequence_shard(x), size
        return x, size

    def after(self, style: str | None, y: Tensor) -> Tensor:
        """A row-parallel or vocab-parallel op's partial output, summed over the ranks (reduce-scattered
        along seq_len under sequence parallelism)."""
        if style == "rowwise" and self.sequence and _has_sequence(y):
            return F.reduce_scatter(y, SEQ_DIM, t)
        if style in ("rowwise", "vocab"):
            return F.all_reduce(y)
        return y

    def sequence_shard(self, x: Tensor) -> Tensor:
        """``x`` split along seq_len, under sequence parallelism (unless it is already)."""
        if not self.sequence or _sharded(x) or not _has_sequence(x):
            return x
        return F.split(x, SEQ_DIM, t, name="scatter_to_sequence_parallel")

    def full_sequence(self, x: Tensor) -> Tensor:
        """``x`` gathered along seq_len where it is sharded, once per tensor (Q, K and V share it)."""
        if not _sharded(x):
            return x
        if x.name not in self._gathered:
            self._gathered[x.name] = F.all_gather(x, SEQ_DIM, t, name="gather_from_sequence_parallel")
        return self._gathered[x.name]

    def enter_block(self, x: Tensor, shape: tuple, count: sympy.Expr) -> tuple[Tensor, tuple, sympy.Expr]:
        """A repeated block's input, shape and count on this GPU: sharded along seq_len under sequence
        parallelism, L/p runs on a pipeline stage."""
        if self.sequence:
            x = self.sequence_shard(x)
            shape = (shape[0], shape[SEQ_DIM] / t, *shape[SEQ_DIM + 1 :])
        return x, shape, count / p if self.pipeline else count

    def leave_block(self, y: Tensor) -> Tensor:
        """After the repeated block: the first pipeline stage ends (its output is sent on); else the
        sequence is gathered back for the pooler and heads (as Megatron's BERT pooler does)."""
        if self.pipeline == "first":
            raise StageEnd(y)
        return self.full_sequence(y)


def _shard(size: sympy.Expr) -> sympy.Expr:
    """One rank's share of ``size``: size/t, or ⌈size/t⌉ for a size t need not divide (the vocabulary,
    which the first ranks hold one row more of, as ``torch.chunk`` and DTensor's Shard split it)."""
    return sympy.ceiling(size / t) if size == vocab_size else size / t


def _has_sequence(x: Tensor) -> bool:
    return len(x.shape) == 3


def _sharded(x: Tensor) -> bool:
    return _has_sequence(x) and x.shape[SEQ_DIM] == seq_len / t


#: The input node of the last pipeline stage: the activations the previous stage sends.
RECEIVED = "from_previous_stage"


def last_stage(graph: Graph) -> Graph:
    """The last of several pipeline stages, from a graph traced with L/p layers: its repeated block reads
    what the previous stage sends (an input, which needs a gradient: it is sent back), and what only
    fed that (the embeddings) is dropped. What the layers and the head read besides (the attention mask,
    the labels, a decoder's weight tied to the word embeddings, which Megatron-LM keeps a copy of on the
    last stage) stays."""
    block = next(iter(graph.blocks.values()))
    received = {block.source, block.input}
    nodes = list(graph.nodes)
    start = next(i for i, n in enumerate(nodes) if n.block == block.name)
    keep = {n.name for n in nodes[start:]}
    wanted = [x for n in nodes[start:] for x in n.inputs]
    while wanted:
        name = wanted.pop()
        producer = graph.tensor(name).producer
        if name in received or producer in keep:
            continue
        keep.add(producer)
        wanted.extend(graph.node(producer).inputs)
    out = Graph(model=graph.model, head=graph.head, options=dict(graph.options))
    source = graph.tensor(block.source)
    sent = dataclasses.replace(source, producer=RECEIVED, block=None, base=None, requires_grad=True)
    out.add_node(Node(RECEIVED, "input", "", (), (sent.name,)), [sent])
    out.tensors[block.input] = dataclasses.replace(graph.tensor(block.input), producer=RECEIVED)
    for node in nodes:
        if node.name in keep:
            out.add_node(node, [graph.tensor(x) for x in node.outputs])
    out.blocks = dict(graph.blocks)
    ends = keep | set(out.blocks)
    out.held = {t: until for t, until in graph.held.items() if t in out.tensors and until in ends}
    return out
