"""How a training job is spread over GPUs: the parallel degrees and the ZeRO stage, as one value, and
the per-GPU graph they give.

The degrees are the symbols t (tensor), p (pipeline), d (data), m (micro-batches per step) and v
(virtual stages per pipeline rank), so per-GPU formulas stay symbolic in them; a :class:`Layout`
gives their values. The default layout is one GPU, where every formula is the single-GPU one.

Tensor, sequence and pipeline parallelism act on the graph: the model is traced again under a
:class:`Sharding`, which applies the family's tensor-parallel plan (``ModelSpec.tensor_plan``, one
style per scope, as ``torch.distributed.tensor.parallel.parallelize_module`` takes it) to the ops as
they are recorded, inserts the collectives (:mod:`symbert.ops`), and cuts the graph to the first
pipeline stage. Every pass then runs on that per-GPU graph unchanged.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field

import sympy

from symbert import ops as F
from symbert.ir import Graph, Node, Tensor
from symbert.symbols import A, I, L, d, m, p, seq_len, t, v, vocab_size

#: ZeRO stages: 0 is plain data parallelism (DDP), 3 shards weights too (FSDP's full sharding).
ZERO_STAGES = (0, 1, 2, 3)
#: The pipeline stages a layout can describe.
STAGES = ("first", "last")


@dataclass(frozen=True)
class Layout:
    """Tensor (``tensor``, t), sequence (``sequence``, with t), pipeline (``pipeline``, p, with
    ``microbatches`` m and ``virtual`` v stages per rank) and data (``data``, d) parallelism, and the
    ZeRO stage over the data-parallel group. ``--batch`` is then the micro-batch size."""

    tensor: int = 1
    sequence: bool = False
    pipeline: int = 1
    microbatches: int = 1
    virtual: int = 1
    data: int = 1
    zero: int = 0
    stage: str = "first"
    """The pipeline stage whose GPU the figures are for: ``first`` (the embeddings and L/p layers, with
    every micro-batch in flight: the most loaded) or ``last`` (L/p layers, the pooler and the head, one
    micro-batch at a time; with a large-vocabulary head it can hold more)."""

    def __post_init__(self) -> None:
        for name in ("tensor", "pipeline", "microbatches", "virtual", "data"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} parallel degree must be a positive integer, got {value!r}")
        if self.zero not in ZERO_STAGES:
            raise ValueError(f"ZeRO stage must be one of {', '.join(map(str, ZERO_STAGES))}, got {self.zero!r}")
        if self.sequence and self.tensor == 1:
            raise ValueError(
                "sequence parallelism shards along the tensor-parallel group: it needs --tensor-parallel > 1"
            )
        if self.virtual > 1 and self.pipeline == 1:
            raise ValueError("virtual stages interleave a pipeline: they need --pipeline-parallel > 1")
        if self.stage not in STAGES:
            raise ValueError(f"the pipeline stage is one of {', '.join(STAGES)}, got {self.stage!r}")
        if self.stage != "first" and self.pipeline == 1:
            raise ValueError("--stage last needs --pipeline-parallel > 1")

    @property
    def gpus(self) -> int:
        return self.tensor * self.pipeline * self.data

    @property
    def single(self) -> bool:
        """One GPU, no sharding: the single-GPU formulas hold unchanged."""
        return self.gpus == 1

    def values(self) -> dict[sympy.Symbol, int]:
        """The degrees' values, by symbol."""
        return {t: self.tensor, p: self.pipeline, d: self.data, m: self.microbatches, v: self.virtual}

    def check(self, sizes: Mapping[sympy.Symbol, int]) -> None:
        """Raise ValueError unless the degrees split a model of these sizes evenly: t the heads and the
        intermediate size (and seq_len under sequence parallelism), p the layers, p the micro-batches
        under interleaving."""
        needs = [(self.tensor, A, "attention heads"), (self.tensor, I, "intermediate size")]
        needs += [(self.tensor, seq_len, "seq_len")] if self.sequence else []
        needs += [(self.pipeline, L, "layers")]
        for degree, symbol, what in needs:
            size = sizes.get(symbol)
            if size is not None and size % degree:
                flag = "--pipeline-parallel" if symbol is L else "--tensor-parallel"
                raise ValueError(f"{flag} {degree} does not divide the {what} ({symbol}={size})")
        if self.virtual > 1 and self.microbatches % self.pipeline:
            raise ValueError(
                f"interleaving needs --microbatches a multiple of --pipeline-parallel, got {self.microbatches}"
            )

    @property
    def tag(self) -> str:
        """The layout in one word-separated field (a sweep's CSV column): ``t=2+sp p=1 m=1 v=1 d=1 zero=0``."""
        parts = [f"t={self.tensor}{'+sp' if self.sequence else ''}", f"p={self.pipeline}", f"m={self.microbatches}"]
        parts += [f"v={self.virtual}", f"d={self.data}", f"zero={self.zero}"]
        return " ".join(parts + (["stage=last"] if self.stage == "last" else []))

    def describe(self) -> str:
        if self.single:
            return "one GPU"
        parts = [f"t={self.tensor}" + (" with sequence parallelism" if self.sequence else "")]
        parts.append(f"p={self.pipeline}, m={self.microbatches}" + (f", v={self.virtual}" if self.virtual > 1 else ""))
        parts.append(f"d={self.data}, ZeRO {self.zero}")
        where = "the last pipeline stage" if self.stage == "last" else "the most loaded GPU"
        where += " (first pipeline stage)" if self.stage == "first" and self.pipeline > 1 else ""
        return f"per GPU of {self.gpus} ({'; '.join(parts)}), on {where}"


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


def stage_factor(layout: Layout) -> sympy.Expr:
    """How many micro-batches' activations the first pipeline stage keeps at once: min(p, m) under
    1F1B, and p·(1 + (p − 1)/(p·v)) with v interleaved stages (Korthikanti et al. 2022, eq. 5;
    Narayanan et al. 2021). 1 without a pipeline, and on the last stage, which runs each micro-batch's
    backward right after its forward."""
    if layout.pipeline == 1 or layout.stage == "last":
        return sympy.S.One
    if layout.virtual > 1:
        return p * (1 + (p - 1) / (p * v))
    return sympy.Min(p, m)


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


def whole_sequence(expr: sympy.Expr, layout: Layout) -> sympy.Expr:
    """``expr`` with seq_len written t·⌈seq_len/t⌉ under sequence parallelism, where t divides it: equal,
    and once t has a value a polynomial with integer coefficients in ⌈seq_len/t⌉, as the compiled
    closed forms of fit, plot and sweep need (sizes already rounded up are left alone)."""
    if not layout.sequence:
        return expr
    expr = sympy.sympify(expr)
    rounded = {c: sympy.Dummy() for c in expr.atoms(sympy.ceiling)}
    whole = expr.xreplace(rounded).subs(seq_len, t * sympy.ceiling(seq_len / t))
    return whole.xreplace({d: c for c, d in rounded.items()})


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
