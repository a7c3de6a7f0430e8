"""How a training job is spread over GPUs: the parallel degrees and the ZeRO stage, as one value, and
the per-GPU formulas they give.

The degrees are the symbols t (tensor), p (pipeline), d (data), m (micro-batches per step) and v
(virtual stages per pipeline rank), so per-GPU formulas stay symbolic in them; a :class:`Layout`
gives their values. The default layout is one GPU, where every formula is the single-GPU one.

A layout is a value: tensor, sequence and pipeline parallelism act on the graph through
:mod:`symbert.tensor_parallel`, which traces the model again as one GPU holds it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import sympy

from symbert.symbols import A, I, L, d, m, p, seq_len, t, v

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
        if self.zero and self.data == 1:
            raise ValueError(f"ZeRO shards over the data-parallel group: --zero {self.zero} needs --data-parallel > 1")
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
