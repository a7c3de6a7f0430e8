"""torch.autocast as one dtype-propagation pass over the graph.

Under ``--precision amp`` the weights stay float32 and torch.autocast picks each op's precision from
per-device op lists (PyTorch's ``aten/src/ATen/autocast_mode.cpp``; CPU and CUDA differ). Each op
kind names its category once (:attr:`symbert.ops.OpDef.autocast`):

* ``lower``: run in the autocast dtype; float inputs of another dtype are cast first (linear, matmul);
* ``fp32``: run in float32; 16-bit inputs are cast first (the losses; layer_norm and pow on CUDA);
* ``fp32_out``: float32 output (softmax and log_softmax on CUDA take ``dtype=float32``): a float16
  input is read as is (``half_to_float`` kernels), a bfloat16 one converted to a float32 copy first;
* ``promote``: ordinary type promotion, the widest float input wins (add, mul);
* ``weights``: the output has the weights' dtype, float32 (embedding lookups), or that of the float
  tensor it is built for (the attention mask, which Hugging Face builds in the dtype of the
  embeddings' output: 16-bit after ELECTRA's projection);
* ``same``: the output keeps its input's dtype (GELU, dropout, tanh, views, layer_norm on CPU).

:func:`with_dtypes` returns a copy of the graph whose tensors carry concrete dtypes, with a ``cast`` node
before every op input autocast converts. A cast of an activation is a new tensor for each op that
reads it (autocast caches only casts of weights), which is what the op then keeps for backward.
Dropout masks and normalisation statistics follow the backend policy: on CPU the dropout noise has
its input's dtype and layer_norm keeps float32 mean and rstd (the float32 weights make it accumulate
in float32); on CUDA masks are bool and statistics float32.

Weights: a ``lower`` op casts its float32 parameters to the autocast dtype once per autocast region
(cached by parameter), and a linear layer keeps its weight's copy for the gradient of its input.
:func:`weight_copies` names them; the saved-tensor pass counts each parameter's copy once.
"""

from __future__ import annotations

from dataclasses import replace

from symbert.analysis.policy import MemoryOptions
from symbert.ir import ACT, MASK_DTYPE, STATS_DTYPE, Graph, Node, Param, Tensor
from symbert.ops import OPS

FLOATS = ("float32", "bfloat16", "float16")
CATEGORIES = ("lower", "fp32", "fp32_out", "promote", "weights", "same")

_typed: dict[tuple[int, str, str], tuple[Graph, Graph]] = {}


def category(op: str, device: str, node: Node | None = None) -> str:
    """How autocast on ``device`` treats op kind ``op``, or ``node`` where it says otherwise (its ``autocast``)."""
    override = dict(node.attr("autocast", ())).get(device) if node is not None else None
    kind = OPS[op].autocast
    return override or (kind if isinstance(kind, str) else kind[device])


def with_dtypes(graph: Graph, options: MemoryOptions) -> Graph:
    """The graph with every tensor's dtype as torch.autocast leaves it, casts inserted; without amp, the
    graph with its casts to the dtype their input already has made views (:func:`_same_dtype_casts`)."""
    device = options.autocast_device
    if device is None and not any(n.op == "cast" for n in graph.nodes):
        return graph
    key = (id(graph), device, options.activation_dtype)
    if key in _typed and _typed[key][0] is graph:
        return _typed[key][1]
    if device is None:
        out = _same_dtype_casts(graph, options)
    else:
        out = _autocast(graph, device, options.activation_dtype, options)
    _typed[key] = (graph, out)
    return out


def _empty_like(graph: Graph) -> Graph:
    """A graph with no nodes yet and everything else of ``graph``'s: its blocks, options, what modules' locals
    hold, what they register (the parameters' order) and their interleaving."""
    return Graph(
        graph.model,
        graph.head,
        blocks=dict(graph.blocks),
        options=dict(graph.options),
        held=dict(graph.held),
        registered=dict(graph.registered),
        patterns=dict(graph.patterns),
    )


def _same_dtype_casts(graph: Graph, options: MemoryOptions) -> Graph:
    """A cast the model records (Hugging Face's ``.to(dtype)``) to the dtype its input already has
    returns its input, as PyTorch's ``Tensor.to`` does: its output is a view. The graph itself when
    no cast is one."""
    same = {
        n.outputs[0]: n.inputs[0]
        for n in graph.nodes
        if n.op == "cast"
        and options.dtype_of(graph.tensor(n.inputs[0]).dtype) == options.dtype_of(graph.tensor(n.outputs[0]).dtype)
    }
    if not same:
        return graph
    out = _empty_like(graph)
    for node in graph.nodes:
        made = [replace(graph.tensor(t), base=same.get(t, graph.tensor(t).base)) for t in node.outputs]
        for name in node.inputs:
            if name not in out.tensors:  # a block's carried input
                out.tensors[name] = graph.tensor(name)
        out.add_node(node, made)
    return out


def _autocast(graph: Graph, device: str, low: str, options: MemoryOptions) -> Graph:
    out = _empty_like(graph)
    dtypes: dict[str, str] = {}
    for node in graph.nodes:
        kind = category(node.op, device, node)
        inputs = list(node.inputs)
        for name in inputs:
            if name not in out.tensors:  # a block's carried input: the dtype its first run is given
                block = next(b for b in graph.blocks.values() if b.input == name)
                dtypes[name] = dtypes[block.source]
                out.tensors[name] = replace(graph.tensor(name), dtype=dtypes[name])
        if kind in ("lower", "fp32", "fp32_out"):
            target = low if kind == "lower" else "float32"
            for i, name in enumerate(inputs):
                source = dtypes.get(name, graph.tensor(name).dtype)
                # softmax(x, dtype=float32) converts a copy first, except for float16 on CUDA, whose
                # kernels read half and write float (aten/src/ATen/native/SoftMax.cpp).
                half_to_float = kind == "fp32_out" and source == "float16" and device == "cuda"
                if source in FLOATS and source != target and not half_to_float:
                    inputs[i] = _cast(out, graph.tensor(name), target, node, i)
                    dtypes[inputs[i]] = target
        floats = [d for d in (dtypes[n] if n in dtypes else graph.tensor(n).dtype for n in inputs) if d in FLOATS]
        act = {
            "lower": low,
            "fp32": "float32",
            "fp32_out": "float32",
            "weights": floats[0] if floats else "float32",
            "promote": "float32" if "float32" in floats else (floats[0] if floats else low),
            "same": floats[0] if floats else low,
        }[kind]
        made = []
        for name in node.outputs:
            t = graph.tensor(name)
            if OPS[node.op].view or node.op in ("contiguous", "fold", "clamp"):
                dtype = dtypes.get(inputs[0], graph.tensor(inputs[0]).dtype)
            else:
                classes = {ACT: act, MASK_DTYPE: options.backend.mask or act, STATS_DTYPE: options.backend.stats}
                dtype = classes.get(t.dtype, t.dtype) or "float32"
            dtypes[name] = dtype
            source = inputs[0] if node.op == "cast" and dtypes.get(inputs[0]) == dtype else t.base
            made.append(replace(t, dtype=dtype, base=source))
        out.add_node(replace(node, inputs=tuple(inputs)), made)
    return out


def _cast(out: Graph, t: Tensor, dtype: str, reader: Node, index: int) -> str:
    """Record a cast of ``t`` to ``dtype`` in front of ``reader``'s input ``index``; its output's name."""
    name = f"{reader.name}/cast{index}"
    made = Tensor(f"{name}:0", t.shape, dtype, t.role, t.requires_grad, name, reader.block)
    attrs = (("dtype", dtype),)
    node = Node(name, "cast", reader.scope, (t.name,), (made.name,), (), attrs, reader.block, reader.regions)
    out.add_node(node, [made])
    return made.name


def weight_copies(graph: Graph, node: Node, options: MemoryOptions) -> list[Param]:
    """The 16-bit weight copies ``node`` keeps for backward under amp: a linear layer's weight, when its
    input needs a gradient (addmm keeps the weight to compute it). Biases are cast too, not kept."""
    device = options.autocast_device
    if device is None or category(node.op, device) != "lower" or not node.params:
        return []
    if not graph.tensor(node.inputs[0]).requires_grad:
        return []
    return [node.params[0]]


def cached_params(graph: Graph, node: Node, options: MemoryOptions) -> list[Param]:
    """The float32 parameters autocast casts for ``node`` (a ``lower`` op's weight and bias); each cast is
    cached until the autocast region ends."""
    device = options.autocast_device
    if device is None or category(node.op, device) != "lower":
        return []
    return list(node.params)


def promotion_copies(graph: Graph, node: Node, options: MemoryOptions) -> list[Tensor]:
    """The inputs a CPU kernel copies to the common dtype before it runs: TensorIterator on CPU promotes
    mixed float inputs by making temporaries (an add of a 16-bit and a float32 tensor copies the 16-bit
    one to float32 first); CUDA kernels cast as they read."""
    if options.autocast_device != "cpu" or category(node.op, "cpu") != "promote":
        return []
    out = graph.tensor(node.outputs[0]).dtype
    inputs = [graph.tensor(t) for t in node.inputs]
    return [t for t in inputs if t.dtype in FLOATS and t.dtype != out]
