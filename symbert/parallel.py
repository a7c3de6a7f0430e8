"""How a training job is spread over GPUs: the parallel degrees and the ZeRO stage, as one value.

The degrees are the symbols t (tensor), p (pipeline), d (data), m (micro-batches per step) and v
(virtual stages per pipeline rank), so per-GPU formulas stay symbolic in them; a :class:`Layout`
gives their values. The default layout is one GPU, where every formula is the single-GPU one.
"""

from __future__ import annotations

from dataclasses import dataclass

import sympy

_INT = {"integer": True, "positive": True}

t = sympy.Symbol("t", **_INT)
p = sympy.Symbol("p", **_INT)
d = sympy.Symbol("d", **_INT)
m = sympy.Symbol("m", **_INT)
v = sympy.Symbol("v", **_INT)

DEGREES: tuple[sympy.Symbol, ...] = (t, p, d, m, v)

#: ZeRO stages: 0 is plain data parallelism (DDP), 3 shards weights too (FSDP's full sharding).
ZERO_STAGES = (0, 1, 2, 3)


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

    def describe(self) -> str:
        if self.single:
            return "one GPU"
        parts = [f"t={self.tensor}" + (" with sequence parallelism" if self.sequence else "")]
        parts.append(f"p={self.pipeline}, m={self.microbatches}" + (f", v={self.virtual}" if self.virtual > 1 else ""))
        parts.append(f"d={self.data}, ZeRO {self.zero}")
        return f"per GPU of {self.gpus} ({'; '.join(parts)}), on the most loaded GPU (first pipeline stage)"
