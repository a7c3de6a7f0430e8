"""The ops of a training step as the driver runs them: an :class:`Op` per node (or fused attention call), which
the plan (:mod:`symbert.training.plan`) fills in once, and a :class:`Unit`, an op in one run of its block."""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

import sympy

from symbert.analysis.activations import Saved
from symbert.analysis.sizes import Size
from symbert.ir import Node, Param

#: The sharding unit of the parameters outside the repeated layers (FSDP's root module).
ROOT: tuple = (None, None)

Run = tuple[str, int | None]


@dataclass(eq=False)
class Op:
    """One op as the walk runs it, in any run of its block: its nodes (several: a fused attention call),
    what it reads and writes, and what it allocates, keeps and holds (filled in by the plan)."""

    nodes: tuple[Node, ...]
    label: str = ""
    reads: list[str] = field(default_factory=list)
    writes: list[str] = field(default_factory=list)
    #: The outputs it allocates, in the order it allocates them (views, buffers and parameters left out):
    #: name, bytes, category, and where the op is a view at some sizes (:func:`~symbert.analysis.sizes.folded`),
    #: the bracket of a view and whether the share of the viewed storage it then holds moves to the output.
    outputs: list[tuple[str, Size, str, sympy.Expr | None, bool]] = field(default_factory=list)
    #: The inputs that get a gradient, and those the op hands its output's gradient to unchanged.
    grads: list[str] = field(default_factory=list)
    passes: set[str] = field(default_factory=set)
    kept: list[Saved] = field(default_factory=list)
    kept_plain: list[Saved] = field(default_factory=list)
    #: Autocast's cached 16-bit parameter copies (those not kept for backward), and every cached one.
    cached: list[tuple[Node, Param]] = field(default_factory=list)
    casts: list[tuple[Node, Param]] = field(default_factory=list)
    #: What it holds while it runs and frees when it returns: bytes and category.
    transients: list[tuple[Size, str]] = field(default_factory=list)
    #: What its backward adds to (or, negative, leaves out of) its backward's event at its highest point.
    backward_transients: list[tuple[Size, str]] = field(default_factory=list)
    #: What its backward's CUDA kernels allocate for the call and free as it returns (the allocator's requests
    #: only), and the bracket under which its output's gradient is copied into its own layout first.
    scratch: list[Size] = field(default_factory=list)
    relayout: sympy.Expr | None = None
    #: Tensors modules' locals hold past their last use that are returned after this op: (tensor, until a
    #: block, past the block's end).
    returns: list[tuple[str, bool, bool]] = field(default_factory=list)
    recompute: str | None = None
    matmul: bool = False
    placeholder: bool = False
    cast: bool = False
    #: Whether an input is a cast's output (under autocast, the cast of its input runs its backward next).
    after_cast: bool = False

    @functools.cached_property
    def node(self) -> Node:
        return self.nodes[0]

    @functools.cached_property
    def block(self) -> str | None:
        return self.node.block


@dataclass(frozen=True, eq=False)
class Unit:
    """An op in one run of its block (``run`` None outside the blocks)."""

    op: Op
    run: int | None

    @functools.cached_property
    def owner(self) -> Run | None:
        return (self.op.block, self.run) if self.op.block else None
