"""The op set: one registered entry per op kind, and the function model code calls to record it.

Each entry states, once, what the analyses need to know about the op:

* ``saves``: which of its tensors PyTorch autograd keeps for backward (``in0`` is the first input,
  ``out1`` the second output); ``in1 for in0`` keeps ``in1`` only when ``in0`` needs a gradient (a
  product keeps each operand for the other's gradient); ``number`` the Python number it multiplies by,
  which autograd keeps as an 8-byte 0-dim tensor that ``saved_tensors_hooks`` never see (counted in
  host memory, not as saved bytes). Their dtypes and whether some are ignored is the backend policy's call.
* ``flops_per_element``: the non-matmul cost convention, operations per output element.
* ``matmul``: for matrix products (and convolutions), the (batch, m, k, n) of the product and, per
  operand, the products of that size its gradient takes (0 where it needs none, 1 for a matrix
  product's operand), from which forward (2·batch·m·k·n) and backward FLOPs follow.
* ``view``: the output shares its input's storage.

What depends on the sizes is a node's, as brackets ([x < k], :class:`symbert.symbols.below`): a node
with the attribute ``view_when`` is a view of its first input where it holds and a copy, or its op,
elsewhere (:func:`fold`; an added mask that is not there); one with ``present`` exists only where it
holds (a mask Hugging Face does not build). The analyses count each where it holds
(:func:`symbert.analysis.sizes.folded`, :meth:`symbert.ir.Graph.presence`).
A node with the attribute ``grad_copy_when`` (a bracket) gets the gradient of its output back in
another layout where it holds (transposed: the heads before the positions) and its backward first
copies it into its own (``reshape``'s backward, and ``torch.matmul``'s of its output's batch fold,
cannot view it), unless a fused attention kernel made that gradient (it makes it in the layout of its
operands).
* ``grad_passes_through``: backward hands the incoming gradient to an input of the same size instead
  of allocating one (every view, copies, additions of same-shape tensors).
* ``autocast``: how torch.autocast treats the op, per device (``cpu``, ``cuda``), from the op lists
  in PyTorch's ``aten/src/ATen/autocast_mode.cpp``; one string where both devices agree. A node's
  ``autocast`` attribute, (device, category) pairs, overrides it where the call differs. The
  categories are resolved by :mod:`symbert.analysis.autocast`.
* ``communication``: a collective over the tensor-parallel group (:mod:`symbert.tensor_parallel`); it keeps
  nothing and costs no FLOPs, and diagrams draw it apart.
* ``storage``: for an op whose output lives in a larger storage than its shape, the elements of that
  storage (``mse_loss`` reduces into the buffer of its elementwise errors: a 0-dim loss that holds
  one float per input element).
* ``column_sums``: the sums over rows its backward runs, as (rows, columns): a linear layer's bias
  gradient is its output gradient summed over the rows (autograd sums addmm's broadcast bias back to its
  shape). CUDA's reduction kernel may stage such a sum in scratch memory of its own
  (:func:`symbert.training.runtime.column_sum_scratch`).
* ``placeholder``: computes nothing; ``graph_input`` and ``graph_output`` mark the tensors the caller
  provides and receives. The tracer records these (:mod:`symbert.tracer`).

The recording function computes output shapes and declares parameters. Adding an op is adding one
function here.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import sympy

from symbert.ir import ACT, MASK_DTYPE, STATS_DTYPE, Graph, Node, Role, Shape, Tensor, numel
from symbert.tracer import TraceError, active

MatmulDims = tuple[sympy.Expr, sympy.Expr, sympy.Expr, sympy.Expr, tuple[int, ...]]


@dataclass(frozen=True)
class OpDef:
    """What the analyses know about one op kind."""

    kind: str
    doc: str
    saves: tuple[str, ...] = ()
    flops_per_element: int = 0
    matmul: Callable[[Node, Graph], MatmulDims] | None = None
    view: bool = False
    grad_passes_through: bool = False
    autocast: str | Mapping[str, str] = "same"
    communication: bool = False
    placeholder: bool = False
    graph_input: bool = False
    graph_output: bool = False
    #: The order CUDA's kernel allocates the outputs in, where it is not theirs (dropout: the mask first).
    cuda_order: tuple[int, ...] = ()
    #: Temporaries its CUDA backward kernel allocates after the input's gradient and frees before it returns, each
    #: the size of the named tensor (softmax: ``grad * output``, aten/src/ATen/native/cuda/SoftMax.cu).
    cuda_backward_temps: tuple[str, ...] = ()
    #: The order its backward makes the inputs' gradients in, where it is not theirs (a product: the second
    #: operand's first, as autograd's generated ``BmmBackward0`` computes them).
    grad_order: tuple[int, ...] = ()
    storage: Callable[[Node], sympy.Expr] | None = None
    column_sums: Callable[[Node, Graph], list[tuple[sympy.Expr, sympy.Expr]]] | None = None


OPS: dict[str, OpDef] = {}


def _op(
    kind: str,
    *,
    saves: tuple[str, ...] = (),
    flops_per_element: int = 0,
    matmul: Callable[[Node, Graph], MatmulDims] | None = None,
    view: bool = False,
    grad_passes_through: bool = False,
    autocast: str | Mapping[str, str] = "same",
    communication: bool = False,
    cuda_order: tuple[int, ...] = (),
    grad_order: tuple[int, ...] = (),
    cuda_backward_temps: tuple[str, ...] = (),
    storage: Callable[[Node], sympy.Expr] | None = None,
    column_sums: Callable[[Node, Graph], list[tuple[sympy.Expr, sympy.Expr]]] | None = None,
) -> Callable[[Callable[..., object]], Callable[..., object]]:
    def register(fn: Callable[..., object]) -> Callable[..., object]:
        doc = (fn.__doc__ or kind).strip().splitlines()[0]
        passes = grad_passes_through or view  # a view's backward is a view of the incoming gradient
        OPS[kind] = OpDef(
            kind,
            doc,
            saves,
            flops_per_element,
            matmul,
            view,
            grad_passes_through=passes,
            autocast=autocast,
            communication=communication,
            cuda_order=cuda_order,
            grad_order=grad_order,
            cuda_backward_temps=cuda_backward_temps,
            storage=storage,
            column_sums=column_sums,
        )
        return fn

    return register


def tensor_of(node: Node, name: str) -> str:
    """The tensor an entry names on ``node``: ``in0`` its first input, ``out1`` its second output, …"""
    return (node.inputs if name.startswith("in") else node.outputs)[int(name[-1])]


# Placeholders are recorded by symbert.tracer; they are registered here so every kind has an entry.
OPS["input"] = OpDef("input", "A tensor the caller provides.", placeholder=True, graph_input=True)
OPS["buffer"] = OpDef("buffer", "A non-trainable tensor the model owns.", placeholder=True)
OPS["unused"] = OpDef("unused", "A parameter the model registers and no op reads.", placeholder=True)
OPS["output"] = OpDef("output", "A model output.", placeholder=True, graph_output=True)


def _check(cond: bool, message: str) -> None:
    if not cond:
        raise TraceError(message)


def _elementwise(kind: str, name: str, x: Tensor) -> Tensor:
    """Record a one-input elementwise op: its output is shaped like ``x``, in the activations' dtype."""
    return active().record(kind, name, [x], [(x.shape, ACT, Role.ACTIVATION, None)])[0]


def _broadcast(a: Shape, b: Shape) -> Shape:
    t = active()
    n = max(len(a), len(b))
    a = (1,) * (n - len(a)) + tuple(a)
    b = (1,) * (n - len(b)) + tuple(b)
    out = []
    for x, y in zip(a, b, strict=True):
        _check(x == 1 or y == 1 or t.same(x, y), f"cannot broadcast {list(a)} with {list(b)}")
        out.append(y if x == 1 else x)
    return tuple(out)


def _linear_dims(node: Node, graph: Graph) -> MatmulDims:
    x = graph.tensor(node.inputs[0])
    k, n = node.attr("in_features"), node.attr("out_features")
    return sympy.Integer(1), numel(x.shape) / x.shape[-1], k, n, (x.requires_grad, True)


def _bias_sum(node: Node, graph: Graph) -> list[tuple[sympy.Expr, sympy.Expr]]:
    """A linear layer's bias gradient (its second parameter): its output gradient summed over the rows."""
    if len(node.params) < 2:
        return []
    x = graph.tensor(node.inputs[0])
    return [(numel(x.shape) / x.shape[-1], node.attr("out_features"))]


def _matmul_dims(node: Node, graph: Graph) -> MatmulDims:
    a, b = (graph.tensor(t) for t in node.inputs)
    return numel(a.shape[:-2]), a.shape[-2], a.shape[-1], b.shape[-1], (a.requires_grad, b.requires_grad)


@_op("embedding", saves=("in0",), autocast="weights")
def embedding(name: str, ids: Tensor, num_embeddings: sympy.Expr, dim: sympy.Expr) -> Tensor:
    """Embedding lookup: rows of a [num_embeddings, dim] table picked by an index tensor. Split by the
    ``vocab`` style, the node records the whole table's row count (``whole_rows``): an engine may hold
    the gradient of the whole table (:class:`symbert.training.zero.Engine`)."""
    _check(ids.role in (Role.INDEX, Role.BUFFER), f"{name}: embedding indices must be an index tensor")
    t = active()
    style = t.style(name)
    attrs = {"whole_rows": num_embeddings} if style == "vocab" else None
    ids, num_embeddings = t.sharding.before(style, ids, num_embeddings) if style else (ids, num_embeddings)
    params = [("weight", (num_embeddings, dim))]
    out = t.record("embedding", name, [ids], [((*ids.shape, dim), ACT, Role.ACTIVATION, None)], params, attrs)[0]
    return t.sharding.after(style, out) if style else out


@_op("linear", saves=("in0",), matmul=_linear_dims, autocast="lower", column_sums=_bias_sum)
def linear(
    name: str,
    x: Tensor,
    out_features: sympy.Expr,
    bias: bool = True,
    in_out: bool = False,
    tied: Mapping[str, str] | None = None,
) -> Tensor:
    """Fully connected layer x·Wᵀ + b over the last dimension.

    ``in_out`` stores the weight as [in, out] (GPT-2's Conv1D); ``tied`` maps ``weight`` or ``bias`` to the
    full name of another parameter it is (a tied LM head), which then counts once.
    """
    t = active()
    style = t.style(name)
    x, out_features = t.sharding.before(style, x, out_features) if style else (x, out_features)
    k = x.shape[-1]
    weight = (k, out_features) if in_out else (out_features, k)
    tied = tied or {}
    params = [(tied.get("weight", "weight"), weight)] + ([(tied.get("bias", "bias"), (out_features,))] if bias else [])
    out = ((*x.shape[:-1], out_features), ACT, Role.ACTIVATION, None)
    y = t.record("linear", name, [x], [out], params, {"in_features": k, "out_features": out_features})[0]
    return t.sharding.after(style, y) if style else y


@_op("matmul", saves=("in0", "in1"), matmul=_matmul_dims, autocast="lower", grad_order=(1, 0))
def matmul(a: Tensor, b: Tensor, name: str = "matmul", grad_copy_when: sympy.Expr | None = None) -> Tensor:
    """Batched matrix product [..., m, k] @ [..., k, n]; ``grad_copy_when``: see the module's notes."""
    t = active()
    _check(t.same(a.shape[-1], b.shape[-2]), f"{name}: cannot multiply {list(a.shape)} by {list(b.shape)}")
    batch = _broadcast(a.shape[:-2], b.shape[:-2])
    attrs = {} if grad_copy_when is None else {"grad_copy_when": grad_copy_when}
    out = [((*batch, a.shape[-2], b.shape[-1]), ACT, Role.ACTIVATION, None)]
    return t.record("matmul", name, [a, b], out, attrs=attrs)[0]


def _conv_dims(node: Node, graph: Graph) -> MatmulDims:
    """A convolution as torch.utils.flop_counter counts it: forward, per output position, a product over
    the kernel and one group's input channels for every output channel; backward, the input's gradient as
    much, and the weight's ``groups`` times as much (the counter's ``conv_backward_flop`` counts the
    weight's gradient over every input channel)."""
    x, out = graph.tensor(node.inputs[0]), graph.tensor(node.outputs[0])
    _, width, kernel = node.params[0].shape
    groups = node.attr("groups")
    return sympy.Integer(1), out.shape[0] * out.shape[2], width * kernel, out.shape[1], (int(x.requires_grad), groups)


@_op("conv1d", saves=("in0",), matmul=_conv_dims, autocast="lower")
def conv1d(name: str, x: Tensor, out_channels: sympy.Expr, kernel_size: int, padding: int, groups: int = 1) -> Tensor:
    """``nn.Conv1d`` with a bias, stride 1: [N, in, n] → [N, out, n + 2·padding − kernel_size + 1], each
    of ``groups`` groups of output channels reading its own group of input channels, the weight
    [out, ⌊in/groups⌋, kernel_size] (the caller checks that groups divides in: the floor keeps every size
    a polynomial with integer coefficients). Backward keeps the input and the weight, whichever needs a
    gradient (one formula computes both: ``convolution`` in derivatives.yaml)."""
    t = active()
    _check(len(x.shape) == 3, f"{name}: conv1d expects [N, channels, length], got {list(x.shape)}")
    width = sympy.floor(x.shape[1] / groups)
    length = x.shape[2] + 2 * padding - kernel_size + 1
    params = [("weight", (out_channels, width, kernel_size)), ("bias", (out_channels,))]
    attrs = {"kernel_size": kernel_size, "padding": padding, "groups": groups}
    out = ((x.shape[0], out_channels, length), ACT, Role.ACTIVATION, None)
    return t.record("conv1d", name, [x], [out], params, attrs)[0]


@_op("add", flops_per_element=1, grad_passes_through=True, autocast="promote")
def add(a: Tensor, b: Tensor, name: str = "add", view_when: sympy.Expr | None = None, inplace: bool = False) -> Tensor:
    """Element-wise sum with broadcasting (residual connections, embedding sums, attention mask);
    ``view_when``: the sizes where ``b`` is not there, and the sum is ``a`` itself; ``inplace``:
    ``a += b``, the sum written into ``a``'s storage (a's shape)."""
    attrs = {} if view_when is None else {"view_when": view_when}
    shape = a.shape if inplace else _broadcast(a.shape, b.shape)
    out = (shape, ACT, Role.ACTIVATION, a.name if inplace else None)
    return active().record("add", name, [a, b], [out], attrs=attrs)[0]


@_op("mul", saves=("in1 for in0", "in0 for in1"), flops_per_element=1, autocast="promote")
def mul(a: Tensor, b: Tensor, name: str = "mul") -> Tensor:
    """Element-wise product (or quotient) of two tensors, with broadcasting; each operand is kept for the
    other's gradient, so a product with a constant or a mask keeps only that."""
    return active().record("mul", name, [a, b], [(_broadcast(a.shape, b.shape), ACT, Role.ACTIVATION, None)])[0]


@_op("pow", saves=("in0",), flops_per_element=1, autocast={"cpu": "same", "cuda": "fp32"})
def pow(x: Tensor, exponent: float, name: str = "pow") -> Tensor:
    """Element-wise power by a constant exponent."""
    return active().record("pow", name, [x], [(x.shape, ACT, Role.ACTIVATION, None)], attrs={"exponent": exponent})[0]


@_op("shift", flops_per_element=1)
def shift(x: Tensor, constant: float, name: str = "shift") -> Tensor:
    """Addition of a constant."""
    return active().record("shift", name, [x], [(x.shape, ACT, Role.ACTIVATION, None)], attrs={"constant": constant})[0]


@_op("scale", saves=("number for in0",), flops_per_element=1)
def scale(x: Tensor, factor: sympy.Expr, name: str = "scale") -> Tensor:
    """Multiplication by a constant."""
    return active().record("scale", name, [x], [(x.shape, ACT, Role.ACTIVATION, None)], attrs={"factor": factor})[0]


@_op(
    "softmax",
    saves=("out0",),
    flops_per_element=5,
    autocast={"cpu": "same", "cuda": "fp32_out"},
    cuda_backward_temps=("out0",),
)
def softmax(x: Tensor, name: str = "softmax", dtype: str = ACT) -> Tensor:
    """Softmax over the last dimension (max, subtract, exp, sum, divide).

    ``dtype`` is the output's: ``float32`` for ``softmax(x, dtype=torch.float32)``, whatever x's dtype.
    """
    return active().record("softmax", name, [x], [(x.shape, dtype, Role.ACTIVATION, None)])[0]


@_op("dropout", saves=("out1",), flops_per_element=2, cuda_order=(1, 0))
def dropout(x: Tensor, p: float, name: str = "dropout") -> Tensor:
    """Training-mode dropout; its mask is an explicit second output (draw the mask, multiply). On CUDA,
    ``native_dropout`` allocates the mask before the output (aten/src/ATen/native/cuda/Dropout.cu)."""
    outs = [(x.shape, ACT, Role.ACTIVATION, None), (x.shape, MASK_DTYPE, Role.MASK, None)]
    return active().record("dropout", name, [x], outs, attrs={"p": p})[0]


@_op("layernorm", saves=("in0", "out1", "out2"), flops_per_element=7, autocast={"cpu": "same", "cuda": "fp32"})
def layernorm(name: str, x: Tensor, eps: float = 1e-12, bias: bool = True) -> Tensor:
    """Layer normalisation over the last dimension; mean and rstd are explicit outputs.

    Per element: sum for the mean, subtract, square and sum for the variance, scale by rstd, affine
    multiply and add. ``bias`` False: a weight only (``nn.LayerNorm(bias=False)``).
    """
    t = active()
    style = t.style(name)
    x, _ = t.sharding.before(style, x, x.shape[-1]) if style else (x, None)
    stats = (*x.shape[:-1], 1)
    outs = [
        (x.shape, ACT, Role.ACTIVATION, None),
        (stats, STATS_DTYPE, Role.STATISTICS, None),
        (stats, STATS_DTYPE, Role.STATISTICS, None),
    ]
    dim = x.shape[-1]
    params = [("weight", (dim,))] + ([("bias", (dim,))] if bias else [])
    return t.record("layernorm", name, [x], outs, params, {"eps": eps})[0]


@_op("gelu", saves=("in0",), flops_per_element=5)
def gelu(x: Tensor, name: str = "gelu") -> Tensor:
    """Exact GELU, x·½·(1 + erf(x/√2))."""
    return _elementwise("gelu", name, x)


@_op("tanh", saves=("out0",), flops_per_element=1)
def tanh(x: Tensor, name: str = "tanh") -> Tensor:
    """Hyperbolic tangent."""
    return _elementwise("tanh", name, x)


@_op("reshape", view=True)
def reshape(x: Tensor, shape: Shape, name: str = "reshape", grad_copy_when: sympy.Expr | None = None) -> Tensor:
    """View with a new shape of the same number of elements; ``grad_copy_when``: see the module's notes."""
    t = active()
    _check(t.same(numel(shape), x.numel), f"{name}: cannot view {list(x.shape)} as {list(shape)}")
    attrs = {} if grad_copy_when is None else {"grad_copy_when": grad_copy_when}
    return t.record("reshape", name, [x], [(shape, x.dtype, x.role, x.name)], attrs=attrs)[0]


@_op("transpose", view=True)
def transpose(x: Tensor, dim0: int, dim1: int, name: str = "transpose") -> Tensor:
    """View with two dimensions swapped."""
    shape = list(x.shape)
    shape[dim0], shape[dim1] = shape[dim1], shape[dim0]
    return active().record(
        "transpose", name, [x], [(tuple(shape), x.dtype, x.role, x.name)], attrs={"dims": (dim0, dim1)}
    )[0]


@_op("narrow", view=True)
def narrow(x: Tensor, dim: int, start: sympy.Expr, length: sympy.Expr, name: str = "narrow") -> Tensor:
    """View of ``length`` entries from ``start`` along a dimension (splitting a fused QKV projection)."""
    shape = list(x.shape)
    shape[dim] = length
    attrs = {"dim": dim, "start": start}
    return active().record("narrow", name, [x], [(tuple(shape), x.dtype, x.role, x.name)], attrs=attrs)[0]


@_op("select", view=True)
def select(x: Tensor, dim: int, index: int, name: str = "select") -> Tensor:
    """View of one index along a dimension (the pooler's first token)."""
    shape = x.shape[:dim] + x.shape[dim + 1 :]
    return active().record("select", name, [x], [(shape, x.dtype, x.role, x.name)], attrs={"dim": dim, "index": index})[
        0
    ]


@_op("contiguous", grad_passes_through=True)
def contiguous(x: Tensor, name: str = "contiguous") -> Tensor:
    """Copy into a fresh row-major tensor (after a transpose)."""
    return active().record("contiguous", name, [x], [(x.shape, x.dtype, x.role, None)])[0]


@_op("fold", grad_passes_through=True)
def fold(x: Tensor, view_when: sympy.Expr, name: str = "fold") -> Tensor:
    """torch.matmul folding the batch of a [rows, heads, n, d] operand into rows·heads: a view where its
    strides allow, else a copy. ``view_when`` is the bracket of the sizes where they allow it: for a
    third of a fused QKV projection [rows = 1] (heads ≥ 2), for a tensor laid out [rows, n, heads, d]
    [rows = 1 or n = 1]. Likewise ``.contiguous()`` of permuted heads, a view with one head or n = 1."""
    return active().record("fold", name, [x], [(x.shape, x.dtype, x.role, None)], attrs={"view_when": view_when})[0]


@_op("cast")
def cast(x: Tensor, dtype: str, name: str = "cast") -> Tensor:
    """A copy in another dtype: ``.float()`` or ``Tensor.to(dtype)`` in model code, and what torch.autocast
    inserts before an op it runs in another precision (:mod:`symbert.analysis.autocast` adds those when
    resolving dtypes). To the dtype its input already has it is no copy: the analyses make it a view.
    """
    return active().record("cast", name, [x], [(x.shape, dtype, x.role, None)], attrs={"dtype": dtype})[0]


@_op("clamp")
def clamp(x: Tensor, name: str = "clamp") -> Tensor:
    """A copy of an index tensor with its values clamped to a range (answer positions past the sequence)."""
    return active().record("clamp", name, [x], [(x.shape, x.dtype, x.role, None)])[0]


@_op("mask_select", saves=("out0",), flops_per_element=1)
def mask_select(mask: Tensor, *xs: Tensor, count: sympy.Expr, name: str = "mask_select") -> list[Tensor]:
    """``x[mask == 1]`` for each x of the 0/1 mask's shape: its entries where the mask is 1, [count] (a
    number the data decides: the caller states it). The comparison's bool tensor is the first output,
    shared by the selections, and backward keeps it (IndexBackward scatters the gradient through it);
    one comparison per mask entry."""
    t = active()
    for x in xs:
        same = len(x.shape) == len(mask.shape) and all(t.same(a, b) for a, b in zip(x.shape, mask.shape, strict=True))
        _check(same, f"{name}: cannot select {list(x.shape)} with a mask {list(mask.shape)}")
    outs = [(mask.shape, "bool", Role.MASK, None), *(((count,), x.dtype, x.role, None) for x in xs)]
    return t.record("mask_select", name, [mask, *xs], outs, attrs={"elements": mask.numel})[1:]


@_op("relu", saves=("out0",), flops_per_element=1)
def relu(x: Tensor, name: str = "relu") -> Tensor:
    """max(x, 0)."""
    return _elementwise("relu", name, x)


@_op("silu", saves=("in0",), flops_per_element=5)
def silu(x: Tensor, name: str = "silu") -> Tensor:
    """SiLU (swish), x·sigmoid(x)."""
    return _elementwise("silu", name, x)


@_op("sigmoid", saves=("out0",), flops_per_element=4)
def sigmoid(x: Tensor, name: str = "sigmoid") -> Tensor:
    """The logistic function 1/(1 + e⁻ˣ)."""
    return _elementwise("sigmoid", name, x)


@_op("mish", saves=("in0",), flops_per_element=6)
def mish(x: Tensor, name: str = "mish") -> Tensor:
    """Mish, x·tanh(softplus(x))."""
    return _elementwise("mish", name, x)


@_op("zeros")
def zeros(shape: Shape, name: str = "zeros") -> Tensor:
    """An int64 tensor of zeros made at run time (DeBERTa's token type ids when the caller gives none)."""
    return active().record("zeros", name, [], [(shape, "int64", Role.INDEX, None)])[0]


@_op("positions")
def positions(shape: Shape, source: Tensor | None = None, name: str = "position_ids") -> Tensor:
    """Position indices computed at run time: an arange, or counted from the token ids (RoBERTa)."""
    return active().record("positions", name, [source] if source else [], [(shape, "int64", Role.INDEX, None)])[0]


@_op("padding_mask")
def padding_mask(attention_mask: Tensor, name: str = "padding_mask") -> Tensor:
    """Hugging Face's mask preprocessing (``masking_utils``): the 0/1 padding mask as bool
    (``_preprocess_mask_arguments``: ``attention_mask.to(torch.bool)``), and whether it is all ones
    (``_ignore_bidirectional_mask_sdpa``: ``padding_mask.all()``, a 0-dim bool), which decides whether the
    4D mask is built at all. Neither needs a gradient."""
    outs = [(attention_mask.shape, "bool", Role.MASK, None), ((), "bool", Role.MASK, None)]
    return active().record("padding_mask", name, [attention_mask], outs)[0]


@_op("mask_bias", autocast="weights")
def mask_bias(
    mask: Tensor,
    shape: Shape,
    like: Tensor | None = None,
    name: str = "mask_bias",
    window: sympy.Expr | None = None,
    dtype: str = ACT,
    present: sympy.Expr | None = None,
) -> Tensor:
    """Turn a 0/1 padding mask into an additive bias (0 or the dtype's minimum) of ``shape``, in the dtype
    of ``like`` (the embeddings' output it is built for), else of the float32 weights; with ``window``,
    also masking every pair of positions further apart than it (a sliding-window mask). With ``dtype``
    given, the 0/1 values in that dtype instead (DeBERTa's). ``present``: the sizes where it is built."""
    inputs = [mask] if like is None else [mask, like]
    attrs = {k: v for k, v in (("window", window), ("present", present)) if v is not None}
    return active().record("mask_bias", name, inputs, [(shape, dtype, Role.MASK, None)], attrs=attrs)[0]


@_op("rope_tables", autocast="weights")
def rope_tables(positions: Tensor, dim: sympy.Expr, name: str = "rotary_emb") -> tuple[Tensor, Tensor]:
    """Rotary position tables cos and sin, [1, seq_len, dim], from the positions and the inverse
    frequencies (a buffer), computed without gradient in the hidden states' dtype."""
    shape = (*positions.shape, dim)
    outs = [(shape, ACT, Role.ACTIVATION, None), (shape, ACT, Role.ACTIVATION, None)]
    cos, sin = active().record("rope_tables", name, [positions], outs)
    return cos, sin


@_op("rope", saves=("in1", "in2"), flops_per_element=3)
def rope(x: Tensor, cos: Tensor, sin: Tensor, name: str = "rope") -> Tensor:
    """Rotary position embedding x·cos + rotate_half(x)·sin, the tables broadcast over batch and heads
    (two products and a sum per element); the products keep cos and sin for x's gradient."""
    return active().record("rope", name, [x, cos, sin], [(x.shape, ACT, Role.ACTIVATION, None)])[0]


@_op("masked_mean", saves=("in1", "out1"), flops_per_element=2)
def masked_mean(x: Tensor, mask: Tensor, name: str = "masked_mean") -> Tensor:
    """Mean over the sequence of the tokens a 0/1 mask keeps, (x·mask).sum(1) / mask.sum(1), [rows,
    seq_len, H] → [rows, H]. Its second output is the count of kept tokens per row ([rows, 1], the mask's
    dtype); backward keeps the mask (the product's) and the counts (the division's). A multiply and an
    add per input element."""
    outs = [((x.shape[0], x.shape[-1]), ACT, Role.ACTIVATION, None), ((x.shape[0], 1), mask.dtype, Role.INDEX, None)]
    return active().record("masked_mean", name, [x, mask], outs, attrs={"elements": x.numel})[0]


@_op("log_softmax", saves=("out0",), flops_per_element=5, autocast={"cpu": "fp32", "cuda": "fp32_out"})
def log_softmax(x: Tensor, name: str = "log_softmax", dtype_given: bool = False) -> Tensor:
    """Log-softmax over the last dimension (max, subtract, exp, sum, log), in its input's dtype.

    ``dtype_given``: called with its input's dtype as ``dtype``, as ``cross_entropy`` calls it. CUDA's
    autocast leaves a given dtype as it is (``fp32_set_opt_dtype``): the op runs in its input's dtype
    there (the node's ``autocast`` attribute)."""
    attrs = {"autocast": (("cuda", "same"),)} if dtype_given else None
    return active().record("log_softmax", name, [x], [(x.shape, x.dtype, Role.ACTIVATION, None)], attrs=attrs)[0]


@_op("nll_loss", saves=("in0", "in1", "out1"), flops_per_element=1, autocast="fp32")
def nll_loss(log_probs: Tensor, target: Tensor, name: str = "nll_loss") -> Tensor:
    """Mean negative log-likelihood of the target classes, [N, classes] and [N] → a scalar.

    Its outputs have the input's dtype; the second is the total weight (the count of targets not
    ignored), a scalar that backward keeps with the log-probabilities and the targets. One operation per target.
    """
    t = active()
    _check(len(log_probs.shape) == 2 and len(target.shape) == 1, f"{name}: expects [N, classes] and [N]")
    _check(t.same(log_probs.shape[0], target.shape[0]), f"{name}: {target.shape[0]} targets, {log_probs.shape[0]} rows")
    outs = [((), log_probs.dtype, Role.ACTIVATION, None), ((), log_probs.dtype, Role.STATISTICS, None)]
    return t.record("nll_loss", name, [log_probs, target], outs, attrs={"elements": target.numel})[0]


def _pointwise_loss(kind: str, name: str, x: Tensor, target: Tensor) -> Tensor:
    t = active()
    _check(len(x.shape) == len(target.shape), f"{name}: input {list(x.shape)} and target {list(target.shape)}")
    _check(all(t.same(a, b) for a, b in zip(x.shape, target.shape, strict=True)), f"{name}: shapes differ")
    dtype = target.dtype if target.dtype == "float32" else ACT  # a float32 target promotes the loss
    return t.record(kind, name, [x, target], [((), dtype, Role.ACTIVATION, None)], attrs={"elements": x.numel})[0]


@_op("mse_loss", saves=("in0", "in1"), flops_per_element=3, autocast="fp32", storage=lambda n: n.attr("elements"))
def mse_loss(x: Tensor, target: Tensor, name: str = "mse_loss") -> Tensor:
    """Mean squared error (subtract, square, sum per element); backward keeps input and target."""
    return _pointwise_loss("mse_loss", name, x, target)


@_op("bce_with_logits", saves=("in0", "in1"), flops_per_element=6, autocast="fp32")
def bce_with_logits(x: Tensor, target: Tensor, name: str = "bce_with_logits") -> Tensor:
    """Mean binary cross-entropy on logits (a stable log-sigmoid per element); backward keeps input and target."""
    return _pointwise_loss("bce_with_logits", name, x, target)


# ---- collectives over the tensor-parallel group (inserted by symbert.tensor_parallel's plan, not by model code)


def _resized(kind: str, name: str, x: Tensor, dim: int, parts: sympy.Expr, factor: sympy.Expr) -> Tensor:
    """Record a collective whose output is ``x`` with dimension ``dim`` scaled by ``factor``."""
    shape = list(x.shape)
    shape[dim] = shape[dim] * factor
    attrs = {"dim": dim, "parts": parts}
    return active().record(kind, name, [x], [(tuple(shape), x.dtype, x.role, None)], attrs=attrs)[0]


@_op("all_reduce", grad_passes_through=True, communication=True)
def all_reduce(x: Tensor, name: str = "all_reduce") -> Tensor:
    """Sum over the tensor-parallel ranks after a row-parallel linear, into a new tensor as DTensor's
    functional collectives give it (Megatron-LM reduces in place); backward passes the gradient through."""
    return active().record("all_reduce", name, [x], [(x.shape, x.dtype, x.role, None)])[0]


@_op("all_gather", communication=True)
def all_gather(x: Tensor, dim: int, parts: sympy.Expr, name: str = "all_gather") -> Tensor:
    """Concatenate the ranks' shards along ``dim`` into a new tensor (before a column-parallel linear
    under sequence parallelism); backward reduce-scatters the gradient."""
    return _resized("all_gather", name, x, dim, parts, parts)


@_op("reduce_scatter", communication=True)
def reduce_scatter(x: Tensor, dim: int, parts: sympy.Expr, name: str = "reduce_scatter") -> Tensor:
    """Sum over the ranks and keep this rank's shard along ``dim`` (after a row-parallel linear under
    sequence parallelism); backward all-gathers the gradient."""
    return _resized("reduce_scatter", name, x, dim, parts, sympy.S.One / parts)


@_op("split", communication=True)
def split(x: Tensor, dim: int, parts: sympy.Expr, name: str = "split") -> Tensor:
    """This rank's shard along ``dim``, copied (Megatron's scatter to the sequence-parallel region; no
    traffic forward); backward all-gathers the gradient."""
    return _resized("split", name, x, dim, parts, sympy.S.One / parts)


@_op("expand", view=True)
def expand(x: Tensor, shape: Shape, name: str = "expand") -> Tensor:
    """View broadcast to a larger ``shape`` (size-1 dimensions repeated without copying)."""
    _check(len(_broadcast(x.shape, shape)) == len(shape), f"{name}: cannot expand {list(x.shape)} to {list(shape)}")
    return active().record("expand", name, [x], [(tuple(shape), x.dtype, x.role, x.name)])[0]


@_op("tile")
def tile(x: Tensor, shape: Shape, name: str = "tile") -> Tensor:
    """``Tensor.repeat``: a new tensor of ``shape`` holding copies of ``x`` along its leading dimension."""
    t = active()
    _check(t.same(sympy.expand(numel(shape) / x.numel * x.shape[0]), shape[0]), f"{name}: cannot tile {list(x.shape)}")
    return t.record("tile", name, [x], [(tuple(shape), x.dtype, x.role, None)])[0]


@_op("gather", saves=("in0", "in1"))
def gather(x: Tensor, index: Tensor, name: str = "gather") -> Tensor:
    """Entries of ``x`` picked along the last dimension by an int64 index of the output's shape; backward
    keeps both (DeBERTa's relative-position scores)."""
    _check(index.role in (Role.INDEX, Role.BUFFER), f"{name}: gather indices must be an index tensor")
    return active().record("gather", name, [x, index], [(index.shape, x.dtype, Role.ACTIVATION, None)])[0]


@_op("argmax")
def argmax(x: Tensor, name: str = "argmax") -> Tensor:
    """The int64 index of the largest entry along the last dimension (of a 0/1 mask: the first 1); no
    gradient."""
    return active().record("argmax", name, [x], [(x.shape[:-1], "int64", Role.INDEX, None)])[0]


@_op("index", saves=("in1", "in2"))
def index(x: Tensor, rows: Tensor, cols: Tensor, name: str = "index") -> Tensor:
    """``x[rows, cols]``: one entry of the second dimension per row, picked by two int64 index tensors
    [n], copied into [n, ...]; backward keeps both indices (it scatters the gradient through them)."""
    t = active()
    _check(rows.role == cols.role == Role.INDEX, f"{name}: indices must be index tensors")
    _check(t.same(rows.shape[0], x.shape[0]) and t.same(cols.shape[0], x.shape[0]), f"{name}: one index per row")
    return t.record("index", name, [x, rows, cols], [((x.shape[0], *x.shape[2:]), x.dtype, x.role, None)])[0]


@_op("invert_mask")
def invert_mask(mask: Tensor, name: str = "invert_mask") -> Tensor:
    """``~mask``: a bool tensor, true where a 0/1 mask is 0 (the scores to fill)."""
    return active().record("invert_mask", name, [mask], [(mask.shape, "bool", Role.MASK, None)])[0]


@_op("masked_fill", saves=("in1",), flops_per_element=1)
def masked_fill(x: Tensor, mask: Tensor, name: str = "masked_fill", inplace: bool = False) -> Tensor:
    """A copy of ``x`` with the entries where a bool mask (broadcast) is true set to a constant; backward
    keeps the mask. ``inplace``: ``x.masked_fill_(mask, value)``, written into ``x``'s storage."""
    shape = x.shape if inplace else _broadcast(x.shape, mask.shape)
    out = (shape, ACT, Role.ACTIVATION, x.name if inplace else None)
    return active().record("masked_fill", name, [x, mask], [out])[0]


@_op("constant")
def constant(name: str = "constant") -> Tensor:
    """A 0-dim tensor computed at run time in the activations' dtype (DeBERTa's √(d·factor) scale);
    it needs no gradient."""
    return active().record("constant", name, [], [((), ACT, Role.ACTIVATION, None)])[0]


@_op("parameter", autocast="weights")
def parameter(name: str, shape: Shape) -> Tensor:
    """A parameter read as a tensor (DeBERTa's relative-position table): the model's own storage,
    not an activation."""
    return active().record("parameter", name, [], [(tuple(shape), ACT, Role.PARAMETER, None)], [("weight", shape)])[0]
