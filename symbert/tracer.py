"""Records op calls made by model code into a :class:`~symbert.ir.Graph`.

Model code calls the functions in :mod:`symbert.ops`; each appends one node to the tracer that is
active. Scopes name nodes (``encoder/layer/attention/self/query``), regions tag groups of nodes that a
policy may treat as one (the attention core, recomputed or fused), and :func:`repeat` traces a body
once and marks it to run a symbolic number of times.
"""

from __future__ import annotations

import contextvars
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Protocol

import sympy

from symbert.ir import RUN, Block, Graph, Node, Param, Pattern, Registered, Role, Shape, Tensor
from symbert.symbols import B


class Transform(Protocol):
    """What the tracer and the ops ask of a transform applied while tracing (one GPU's share of a model
    spread over several, :class:`symbert.tensor_parallel.Sharding`)."""

    def style(self, path: str) -> str | None:
        """The style the op at ``path`` is recorded in, or None to record it unchanged."""

    def before(self, style: str, x: Tensor, size: sympy.Expr) -> tuple[Tensor, sympy.Expr]:
        """The input an op of ``style`` reads, and its size (out features, embedding rows) under the transform."""

    def after(self, style: str, y: Tensor) -> Tensor:
        """What the rest of the model reads of that op's output ``y``."""

    def enter_block(self, x: Tensor, shape: Shape, count: sympy.Expr) -> tuple[Tensor, Shape, sympy.Expr]:
        """A repeated block's input, shape and count under the transform."""

    def leave_block(self, y: Tensor) -> Tensor:
        """What follows a repeated block reads of its output ``y`` (or raise, to end the trace there)."""


class TraceError(ValueError):
    """Model code did something inconsistent: mismatched shapes, bad nesting."""


@dataclass
class _Frame:
    name: str
    in_param_name: bool = True
    in_path: bool = True


@dataclass
class Tracer:
    """The state of one trace: graph under construction, scope, block and region stacks."""

    graph: Graph
    identities: Mapping[sympy.Symbol, sympy.Expr] = field(default_factory=dict)
    unroll: Mapping[sympy.Symbol, int] | None = None
    batch: Shape = (B,)
    """The shape of the batch the caller gives: [B], or [B, C] for a multiple-choice model."""
    sharding: Transform | None = None
    """One GPU's share of a model spread over several (:mod:`symbert.tensor_parallel`); None on one GPU."""
    _scope: list[_Frame] = field(default_factory=list)
    _block: str | None = None
    _regions: list[str] = field(default_factory=list)
    _used: Counter[str] = field(default_factory=Counter)
    _calls: list[list[str]] = field(default_factory=list)
    _last: str = ""

    def path(self, leaf: str = "") -> str:
        parts = [f.name for f in self._scope if f.in_path] + ([leaf] if leaf else [])
        return "/".join(parts)

    def param_prefix(self, leaf: str) -> str:
        return ".".join([f.name for f in self._scope if f.in_param_name] + [leaf])

    def style(self, name: str) -> str | None:
        """The tensor-parallel style the plan gives the op ``name`` about to be recorded, if any."""
        return self.sharding.style(self.path(name)) if self.sharding else None

    def unique(self, name: str) -> str:
        self._used[name] += 1
        n = self._used[name]
        return name if n == 1 else f"{name}.{n - 1}"

    def same(self, a: sympy.Expr, b: sympy.Expr) -> bool:
        """Whether two sizes are equal under the model's identities (BERT: E = H)."""
        return sympy.expand(sympy.sympify(a).subs(self.identities) - sympy.sympify(b).subs(self.identities)) == 0

    def record(
        self,
        op: str,
        name: str,
        inputs: list[Tensor],
        outputs: list[tuple[Shape, str, Role, str | None]],
        params: list[tuple[str, Shape]] = (),
        attrs: Mapping[str, object] | None = None,
        trained: bool = True,
    ) -> list[Tensor]:
        """Append one node. ``outputs`` are (shape, dtype, role, base) with base naming a viewed input;
        ``params`` are (name, shape), a name with a dot being a full name (a tied parameter), and
        ``trained`` as :attr:`symbert.ir.Param.trained`."""
        node_name = self.unique(self.path(name))
        owns = [Param(p if "." in p else f"{self.param_prefix(name)}.{p}", shape, trained) for p, shape in params]
        grad = bool(owns) or any(t.requires_grad for t in inputs)
        made = [
            Tensor(
                name=f"{node_name}:{i}",
                shape=tuple(sympy.sympify(d) for d in shape),
                dtype=dtype,
                role=role,
                requires_grad=grad and role in (Role.ACTIVATION, Role.PARAMETER),
                producer=node_name,
                block=self._block,
                base=base,
            )
            for i, (shape, dtype, role, base) in enumerate(outputs)
        ]
        node = Node(
            name=node_name,
            op=op,
            scope=self.path(),
            inputs=tuple(t.name for t in inputs),
            outputs=tuple(t.name for t in made),
            params=tuple(owns),
            attrs=tuple(sorted((attrs or {}).items())),
            block=self._block,
            regions=tuple(self._regions),
        )
        self.graph.add_node(node, made)
        self._last = node_name
        return made


_active: contextvars.ContextVar[Tracer] = contextvars.ContextVar("symbert_tracer")


def active() -> Tracer:
    try:
        return _active.get()
    except LookupError:
        raise TraceError("symbert ops must be called inside symbert.trace()") from None


@contextmanager
def tracing(tracer: Tracer) -> Iterator[Tracer]:
    token = _active.set(tracer)
    try:
        yield tracer
    finally:
        _active.reset(token)


@contextmanager
def scope(name: str, *, in_param_name: bool = True, in_path: bool = True) -> Iterator[None]:
    """Name the nodes recorded inside ``name/...`` (and their parameters ``name.…``).

    ``in_param_name=False`` keeps ``name`` out of parameter names (a grouping Hugging Face does not
    have); ``in_path=False`` keeps it out of node names (the ``bert.`` prefix a task model adds).
    """
    t = active()
    t._scope.append(_Frame(name, in_param_name, in_path))
    try:
        yield
    finally:
        t._scope.pop()


@contextmanager
def region(name: str) -> Iterator[None]:
    """Tag the nodes recorded inside, so a policy can recompute or fuse them as a unit."""
    t = active()
    t._regions.append(name)
    try:
        yield
    finally:
        t._regions.pop()


@contextmanager
def call() -> Iterator[None]:
    """A module's forward being traced: what :func:`held` marks inside stays referenced by its Python
    locals until it returns, that is until the last op recorded inside has run (when that op ends a
    repeated block, in its last run; the block's tensors it holds, it holds from every run)."""
    t = active()
    t._calls.append([])
    try:
        yield
    finally:
        last = t.graph.node(t._last).block if t._last else None
        until = last if last is not None and t._block is None else t._last  # a block ends it: its last run
        for name in t._calls.pop():
            t.graph.held[name] = until


def held(*xs: Tensor | None) -> None:
    """``xs`` stay referenced by locals of the module call being traced (:func:`call`) until it returns,
    as Hugging Face's forward keeps ``qkv`` or the attention mask past their last use."""
    t = active()
    if not t._calls:
        raise TraceError("held() needs an enclosing call()")
    t._calls[-1].extend(x.name for x in xs if x is not None)


def pattern(kinds: tuple[tuple[str, tuple[str, ...], sympy.Expr], ...], count: sympy.Expr, layers: sympy.Expr) -> None:
    """The current scope's layers run interleaved: each of ``kinds`` is (name, the child scopes or blocks
    that trace it, its layers in one repeat), run in turn ``count`` times, ``layers`` in all (see :class:`Pattern`)."""
    t = active()
    resolved = tuple((name, tuple(t.path(child) for child in children), n) for name, children, n in kinds)
    t.graph.patterns[t.path()] = Pattern(resolved, count, layers)


def graph_input(name: str, shape: Shape, dtype: str, role: Role) -> Tensor:
    """A tensor the caller provides (input_ids, attention_mask, labels, …)."""
    return active().record("input", name, [], [(shape, dtype, role, None)])[0]


def param_name(leaf: str) -> str:
    """The full name a parameter ``leaf`` gets in the current scope (to tie another parameter to it)."""
    return active().param_prefix(leaf)


def buffer(name: str, shape: Shape, dtype: str) -> Tensor:
    """A non-trainable tensor the model owns (position ids); never counted as an activation."""
    return active().record("buffer", name, [], [(shape, dtype, Role.BUFFER, None)])[0]


def unused_param(leaf: str, shape: Shape, because: str) -> None:
    """A parameter ``leaf`` that the module of the current scope registers and its forward never reads,
    ``because`` of a config setting (``tie_word_embeddings=False``): it counts among the parameters and
    loads with the weights, but gets no gradient, so the optimizer keeps nothing for it and skips it."""
    t = active()
    t.record("unused", leaf, [], [], [(t.param_prefix(leaf), shape)], {"because": because}, trained=False)


def registers(children: tuple[str, ...] = (), buffers: tuple[tuple[str, Shape, str], ...] = ()) -> None:
    """What the module of the current scope registers in ``__init__`` beyond what its forward shows: its
    children in registration order (where the forward uses them in another) and its buffers, (name, shape,
    dtype) each. ``Module.to`` visits them in that order; the CUDA caching allocator sees them so."""
    t = active()
    t.graph.registered[t.param_prefix("").rstrip(".")] = Registered(children, buffers)


def graph_output(name: str, x: Tensor) -> None:
    """Mark ``x`` as a model output (its loss gradient flows back through the graph)."""
    active().record("output", name, [x], [])


def repeat(
    name: str,
    count: sympy.Expr,
    body: Callable[[Tensor], Tensor],
    x: Tensor,
    shape: Shape,
    *,
    shares_params: bool = False,
) -> Tensor:
    """Run ``body`` ``count`` times, each run on the previous run's output, under scope ``name``.

    The body is traced once and the block carries ``count`` symbolically, so tracing cost does not grow
    with it; when the tracer unrolls, ``count`` must evaluate to an integer and the body is traced per
    run under ``name/<i>``. ``shape`` is the shape every run reads and returns.
    """
    t = active()
    if t._block is not None:
        raise TraceError(f"repeat {name!r} is nested inside block {t._block!r}")
    if t.sharding:
        x, shape, count = t.sharding.enter_block(x, shape, count)
    if len(shape) != len(x.shape) or not all(t.same(a, b) for a, b in zip(shape, x.shape, strict=True)):
        raise TraceError(f"repeat {name!r} reads shape {list(shape)} but is given {list(x.shape)}")
    if t.unroll is not None:
        runs = sympy.sympify(count).subs(t.unroll)
        if not runs.is_Integer:
            raise TraceError(f"cannot unroll {name!r}: {count} has no value")
        y = x
        with scope(name):
            for i in range(int(runs)):
                with scope(str(i), in_param_name=not shares_params), region(f"{RUN}{t.path()}"):
                    y = body(y)
        return t.sharding.leave_block(y) if t.sharding else y
    carry = Tensor(
        name=f"{t.path(name)}:input",
        shape=tuple(sympy.sympify(d) for d in shape),
        dtype=x.dtype,
        role=x.role,
        requires_grad=x.requires_grad,
        producer=x.producer,
        block=t.path(name),
    )
    t.graph.tensors[carry.name] = carry
    t._block = t.path(name)
    try:
        with scope(name):
            y = body(carry)
    finally:
        t._block = None
    if len(y.shape) != len(shape) or not all(t.same(a, b) for a, b in zip(shape, y.shape, strict=True)):
        raise TraceError(f"repeat {name!r} returns shape {list(y.shape)}, not {list(shape)}")
    t.graph.blocks[t.path(name)] = Block(
        name=t.path(name),
        count=sympy.sympify(count),
        shares_params=shares_params,
        input=carry.name,
        source=x.name,
        output=y.name,
    )
    return t.sharding.leave_block(y) if t.sharding else y
