"""Data parallelism with ZeRO: where each GPU's weights, gradients and optimizer states live.

Over d data-parallel GPUs, ZeRO stage 1 shards the optimizer states (fp32 master weights included),
stage 2 the gradients too, stage 3 the weights too (Rajbhandari et al. 2020). How a shard is cut, and
what the engine holds beyond the shards, differ between engines; each is one entry of :data:`ENGINES`:

* ``paper``: the ZeRO paper's accounting. Every rank holds ⌈Ψ/d⌉ elements of each sharded quantity (one
  flat partition; the paper's Ψ/d when d divides Ψ) and nothing else.
* ``deepspeed``: as the paper, and under mixed precision the update holds a float32 copy of the gradient
  partition (``single_partition_of_fp32_groups[i].grad`` in DeepSpeed's ``stage_1_and_2.py``;
  ``fp32_partitioned_groups_flat`` in ``stage3.py``), 4·⌈Ψ/d⌉ bytes.
* ``torch``: PyTorch's own engines. Stage 0 is DDP: its Reducer keeps a flat bucket copy of every
  gradient from construction on (``gradient_as_bucket_view=False``, the default; buckets of 25 MiB,
  the first 1 MiB). Stage 3 is FSDP2 ``fully_shard`` on each encoder layer and on the root model: every
  parameter is padded to a multiple of d along dim 0 and each rank keeps ⌈n₀/d⌉ rows; a layer's
  parameters are all-gathered (padded, into one flat buffer copied out to one buffer per parameter:
  ``foreach_all_gather_copy_out``) before its forward and resharded after it, gathered again for its
  backward with the previous layer prefetched, and its gradients reduce-scattered to shards when its
  backward ends. The root (embeddings, pooler, head) stays gathered from forward to the end of backward
  (``reshard_after_forward`` is False for the root). Stage 2 is FSDP2 with
  ``reshard_after_forward=False`` (FSDP1's SHARD_GRAD_OP): the weights are sharded at rest too, but each
  layer stays gathered from its forward to the end of its backward. Stage 1 (ZeroRedundancyOptimizer)
  is not modelled. Under tensor parallelism (DTensor's ``parallelize_module``), the word embeddings split
  by vocabulary (``RowwiseParallel(input_layouts=Replicate())``, weight ``Shard(0)``) get a
  ``Replicate`` gradient: every rank holds the whole [vocab, E] gradient until ``zero_grad``, while the
  weight and the optimizer states stay shards (AdamW redistributes the gradient to the weight's shard
  op by op; its temporaries are shard-sized). Megatron's ``VocabParallelEmbedding`` keeps a shard.

The degree d stays the sympy symbol :data:`symbert.parallel.d`, so per-GPU formulas are symbolic in it;
on one GPU (d = 1) nothing is sharded and every formula is the single-GPU one.
"""

from __future__ import annotations

from dataclasses import dataclass

import sympy

from symbert.analysis.params import params
from symbert.ir import Graph, Node, Param
from symbert.symbols import d

#: The stage from which each model state is sharded.
SHARDED_FROM = {"optimizer": 1, "gradients": 2, "weights": 3}


@dataclass(frozen=True)
class Engine:
    """How one engine shards and what it holds beyond the shards.

    ``split``: ``flat`` (one partition of ⌈Ψ/d⌉ elements) or ``dim0`` (each tensor padded to a multiple of
    d along dim 0). ``buckets``: stage 0 keeps a flat copy of every gradient. ``fp32_gradients``: under
    mixed precision the update holds a float32 copy of the gradient partition. ``prefetch``: layers
    all-gathered ahead in backward. ``copy_out``: an all-gather lands in one flat buffer, copied out to a
    buffer per parameter and then freed (a prefetched one is copied out when its layer's backward
    starts). ``root_stays``: the parameters outside the repeated layers stay
    gathered from forward to the end of backward (else they are gathered for each pass).
    ``weights_from``: the stage from which the weights are sharded at rest; below stage 3 the layers
    then stay gathered from their forward to the end of their backward. ``whole_vocab_gradient``: a
    vocab-parallel embedding's gradient is the whole table on every tensor-parallel rank (DTensor's
    Replicate gradient) until ``zero_grad``, or until ZeRO reduce-scatters gradients to shards.
    """

    name: str
    summary: str
    stages: dict[int, str]
    split: str
    buckets: bool = False
    fp32_gradients: bool = False
    prefetch: int = 0
    copy_out: bool = False
    root_stays: bool = False
    weights_from: int = 3
    whole_vocab_gradient: bool = False


ENGINES: dict[str, Engine] = {
    e.name: e
    for e in (
        Engine(
            "paper",
            "ZeRO as Rajbhandari et al. 2020 count it: ⌈Ψ/d⌉ elements of each sharded state per GPU",
            {0: "data parallelism", 1: "ZeRO-1", 2: "ZeRO-2", 3: "ZeRO-3"},
            "flat",
        ),
        Engine(
            "deepspeed",
            "DeepSpeed ZeRO: the paper's partitions, and a float32 gradient partition during the update",
            {1: "ZeRO-1", 2: "ZeRO-2", 3: "ZeRO-3"},
            "flat",
            fp32_gradients=True,
        ),
        Engine(
            "torch",
            "PyTorch: DDP (flat gradient buckets) at stage 0, FSDP2 fully_shard per layer at stages 2 and 3",
            {0: "DDP", 2: "FSDP2 fully_shard(reshard_after_forward=False)", 3: "FSDP2 fully_shard"},
            "dim0",
            buckets=True,
            prefetch=1,
            copy_out=True,
            root_stays=True,
            weights_from=2,
            whole_vocab_gradient=True,
        ),
    )
}

#: The engine each policy assumes unless one is named: Megatron's setup is the paper's accounting.
DEFAULT_ENGINE = {"megatron": "paper", "torch-cpu": "torch", "torch-cuda": "torch"}


def engine(name: str | None, policy: str) -> Engine:
    """The engine named ``name``, or the policy's default; ValueError naming the known ones."""
    key = DEFAULT_ENGINE[policy] if name is None else name
    if key not in ENGINES:
        raise ValueError(f"unknown ZeRO engine {key!r} (choose from {', '.join(ENGINES)})")
    return ENGINES[key]


@dataclass(frozen=True)
class Piece:
    """Parameter tensors of one shape: the node that owns them, where they belong (a block's layer, or
    None: the root) and how many."""

    node: Node
    param: Param
    unit: str | None
    count: sympy.Expr


def pieces(graph: Graph) -> list[Piece]:
    """Every distinct parameter, with its unit: a repeated block's own layer, else the root."""
    seen: set[str] = set()
    out = []
    for node in graph.nodes:
        for p in node.params:
            if p.name not in seen:
                seen.add(p.name)
                own = node.block is not None and not graph.blocks[node.block].shares_params
                out.append(Piece(node, p, node.block if own else None, graph.param_multiplicity(node)))
    return out


def _rows(p: Param) -> tuple[sympy.Expr, sympy.Expr]:
    return p.shape[0], sympy.Mul(*p.shape[1:])


def _row_shard(p: Param) -> sympy.Expr:
    """Elements of one GPU's dim-0 shard of ``p``: ⌈rows/d⌉ rows, the rows padded to a multiple of d."""
    rows, width = _rows(p)
    return sympy.ceiling(rows / d) * width


@dataclass(frozen=True)
class ZeroPlan:
    """The sharding of one training setup: the engine, the ZeRO stage and whether d > 1."""

    engine: Engine
    stage: int
    spread: bool

    def sharded(self, what: str) -> bool:
        """Whether ``what`` (weights, gradients, optimizer) is sharded over the data-parallel group."""
        start = self.engine.weights_from if what == "weights" else SHARDED_FROM[what]
        return self.spread and self.stage >= start

    @property
    def gathers(self) -> bool:
        """Weights are sharded: each layer is all-gathered around its forward and its backward."""
        return self.sharded("weights")

    @property
    def keeps_gathered(self) -> bool:
        """Each layer stays gathered from its forward to the end of its backward."""
        return self.gathers and self.stage < 3

    @property
    def buckets(self) -> bool:
        """DDP's flat gradient buckets."""
        return self.spread and self.stage == 0 and self.engine.buckets

    def local(self, graph: Graph, what: str) -> list[tuple[sympy.Expr, sympy.Expr]]:
        """The allocations one GPU holds of a per-parameter state (weights, gradients, optimizer), as
        (elements, how many); a parameter that is not trained has weights only."""
        every = [x for x in pieces(graph) if what == "weights" or x.param.trained]
        if not self.sharded(what):
            gradients = what == "gradients"
            return [(self.gradient_numel(x.node, x.param) if gradients else x.param.numel, x.count) for x in every]
        if self.engine.split == "flat":
            return [(sympy.ceiling(params(graph).total / d), sympy.S.One)]
        return [(_row_shard(x.param), x.count) for x in every]

    def gradient_numel(self, node: Node, p: Param) -> sympy.Expr:
        """Elements of ``p``'s gradient as backward makes it (before any ZeRO reduce-scatter): the whole
        table of a vocab-parallel embedding where the engine holds it whole, else ``p``'s."""
        rows = node.attr("whole_rows")
        if rows is None or not self.engine.whole_vocab_gradient:
            return p.numel
        return rows * _rows(p)[1]

    def elements(self, graph: Graph, what: str) -> sympy.Expr:
        """Elements per GPU of a per-parameter state (weights, gradients, optimizer)."""
        return sympy.Add(*(e * n for e, n in self.local(graph, what)))

    def gathered(self, params_: list[Param]) -> sympy.Expr:
        """Elements of one all-gather of ``params_`` (dim 0 split: padded to a multiple of d)."""
        if self.engine.split == "flat":
            return sympy.Add(*(p.numel for p in params_))
        return d * self.shard(params_)

    def shard(self, params_: list[Param]) -> sympy.Expr:
        """Elements of one GPU's shard of ``params_`` (dim 0 split)."""
        return sympy.Add(*(_row_shard(p) for p in params_))

    def describe(self) -> str:
        return f"ZeRO stage {self.stage} as {self.engine.stages[self.stage]} ({self.engine.name} convention)"
