"""Scaled dot-product attention: which kernel PyTorch runs, and what each kernel keeps for backward.

``--attention sdpa`` is Hugging Face's default attention (``attn_implementation="sdpa"``): its
``sdpa_attention_forward`` hands Q, K and V ([B, A, seq_len, H/A] views of the projections, not made
contiguous) to ``torch.nn.functional.scaled_dot_product_attention`` with ``scale=(H/A)**-0.5``,
``is_causal=False`` and the training dropout, then transposes the output back and makes it contiguous.
Whether a mask is passed is the graph's structural option ``padding``: a batch without padding gets
none (``masking_utils`` skips an all-ones mask); a padded batch gets a bool mask [B, 1, seq_len,
seq_len], materialised, which ``scaled_dot_product_attention`` first converts to an additive bias in
the query dtype (``convert_boolean_attn_mask``), a new tensor per call. The model code marks that
whole call as the region :data:`~symbert.analysis.policy.ATTENTION_CALL`; under sdpa the region is one
fused op whose kept tensors :func:`kept` lists for the kernel :func:`choose_kernel` picks.
``--attention flash`` forces the flash kernel (as ``torch.nn.attention.sdpa_kernel(SDPBackend.FLASH_ATTENTION)``
would, but as a what-if it is modelled even where PyTorch could not run it: fp32, dropout on the CPU,
or a mask on CUDA, which it then ignores).

Kernel choice, from ``aten/src/ATen/native/transformers``:

* CPU (``sdp_utils_cpp.cpp``, ``select_sdp_backend_cpp``): flash, then math. The CPU flash kernel
  (``_scaled_dot_product_flash_attention_for_cpu``) needs dropout = 0 (``check_for_dropout``); it
  takes any float dtype and an attention mask. Training with dropout > 0 runs the math kernel.
  Measured with torch 2.13 on CPU: dropout 0.1 → math, dropout 0 → flash, in fp32 and bf16. With a
  mask the CPU flash kernel keeps the converted bias, [B, 1, seq_len, seq_len] in the query dtype, per
  call (measured); the math kernel adds it to the scores and keeps nothing more (measured).
* CUDA (``cuda/sdp_utils.cpp``, ``select_sdp_backend``, default order flash, memory-efficient, math;
  sm80 or newer assumed): flash for fp16/bf16 without a mask and head dim ≤ 256 (the composite pads
  the head dim to a multiple of 8); memory-efficient for fp32/fp16/bf16 with the head dim a multiple
  of 4 (fp32) or 8 (16-bit); math otherwise. A mask thus moves fp16/bf16 from flash to
  memory-efficient, which keeps its bias for backward: ``preprocess_mask`` (``attention.cpp``) pads
  the converted bias's last dim to a multiple of 8 (``mem_eff_alignment``; ``pad_bias`` then slices
  it back) unless its strides are already multiples of 8, then expands it over the heads as a view, so
  the kept storage is [B, 1, seq_len, 8·⌈seq_len/8⌉] in the query dtype. Modelled from the source,
  not measured. cuDNN attention, which newer builds may prefer on
  sm90/sm100 with a recent cuDNN, and flash's head-dim limits in training on sm86/sm89/sm120 are not
  modelled.

A head dim that is still symbolic (H/A) is taken to be a multiple of 8 and at most 256, as in every
released BERT-family checkpoint (64); give the sizes to decide it exactly.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace

import sympy

from symbert.analysis.policy import BYTES, MemoryOptions
from symbert.configs import ConfigError
from symbert.ir import Graph, Node, Role, Tensor, numel
from symbert.symbols import either, is_one

KERNELS = ("flash", "efficient", "math")

#: int64 philox seed and offset the CUDA fused kernels return and keep for backward (two 0-dim tensors).
PHILOX_BYTES = 16

#: The memory-efficient kernel allocates its logsumexp rounded up to this many query rows (kAlignLSE).
EFFICIENT_LSE_ALIGN = 32

#: preprocess_mask pads the memory-efficient kernel's attention bias's last dim to a multiple of this.
EFFICIENT_BIAS_ALIGN = 8

#: The CUDA flash composite pads the head dim to a multiple of this (pad_last_dim<8>).
FLASH_HEAD_ALIGN = 8
FLASH_MAX_HEAD_DIM = 256

SIXTEEN_BIT = ("bfloat16", "float16")


def _holds(condition: sympy.Basic | bool) -> bool:
    """A condition on sizes: its value when it is decided, else True (the common case, see the module)."""
    condition = sympy.sympify(condition)
    return bool(condition) if condition in (sympy.true, sympy.false) else True


def _multiple(x: sympy.Expr, n: int) -> bool:
    x = sympy.sympify(x)
    return bool(x % n == 0) if x.is_Integer else True


def choose_kernel(device: str, dtype: str, dropout: float, head_dim: sympy.Expr | int, masked: bool = False) -> str:
    """The kernel ``scaled_dot_product_attention`` runs in training (inputs that need gradients).

    ``device`` is ``cpu`` or ``cuda``; ``dtype`` the dtype of Q, K and V; ``masked`` whether an
    ``attn_mask`` is passed (Hugging Face passes none for a batch without padding).
    """
    if device == "cpu":
        return "flash" if dropout == 0 else "math"
    head_dim = sympy.sympify(head_dim)
    if dtype in SIXTEEN_BIT and not masked and _holds(head_dim <= FLASH_MAX_HEAD_DIM):
        return "flash"
    if _multiple(head_dim, 8 if dtype in SIXTEEN_BIT else 4):
        return "efficient"
    return "math"


@dataclass(frozen=True)
class Call:
    """One attention call as the region records it: Q, K, V [B, A, seq_len, H/A], its output (after the
    heads are transposed back and made contiguous, [B, seq_len, A, H/A]) and its dropout."""

    q: Tensor
    k: Tensor
    v: Tensor
    output: Tensor
    dropout: float
    scores: str
    """The node computing Q·Kᵀ."""
    mask: Tensor | None = None
    """The attention mask passed to the call ([B, 1, seq_len, seq_len]), None without padding."""
    present: sympy.Expr = sympy.S.One
    """The bracket of the sizes where the mask is built (ModernBERT's window mask: not for a short
    unpadded batch)."""

    @property
    def head_dim(self) -> sympy.Expr:
        return self.q.shape[-1]

    @property
    def rows(self) -> sympy.Expr:
        """B·A·seq_len: one logsumexp per query row and head."""
        return numel(self.q.shape[:-1])


def call_of(graph: Graph, nodes: list[Node]) -> Call:
    """Read Q, K, V, the output and the dropout off the nodes of an attention-call region."""
    inside = {n.name for n in nodes}
    matmuls = [n for n in nodes if n.op == "matmul"]
    scores, context = matmuls[0], matmuls[-1]

    def given(name: str) -> Tensor:
        """The tensor the call is given for an operand of an eager product: K before its transpose,
        an operand before the product's fold (the kernel reads them as given)."""
        t = graph.tensor(name)
        while t.producer in inside:
            t = graph.tensor(graph.node(t.producer).inputs[0])
        return t

    outputs = [t for n in nodes for t in n.outputs if any(c not in inside for c in graph.consumers(t))]
    dropout = next((float(n.attr("p")) for n in nodes if n.op == "dropout"), 0.0)
    q, k, v = given(scores.inputs[0]), given(scores.inputs[1]), given(context.inputs[1])
    masks = [graph.tensor(t) for n in nodes for t in n.inputs if graph.tensor(t).producer not in inside]
    mask = next((t for t in masks if is_mask_bias(graph, t)), None)
    present = graph.presence(mask) if mask is not None else sympy.S.One
    return Call(q, k, v, graph.tensor(outputs[0]), dropout, scores.name, mask, present)


def is_mask_bias(graph: Graph, t: Tensor) -> bool:
    """Whether ``t`` is the 4D attention mask Hugging Face builds from the padding mask."""
    return t.producer is not None and graph.node(t.producer).op == "mask_bias"


def mask_dtype(options: MemoryOptions) -> str | None:
    """The dtype of the 4D attention mask Hugging Face builds for ``options.attention``: bool for sdpa
    (``sdpa_mask``), None for eager (an additive float bias in the embeddings' dtype, the graph's)."""
    return None if options.attention == "eager" else "bool"


@dataclass(frozen=True)
class Kept:
    """One thing a kernel keeps: a graph tensor by name, or (``tensor`` None) a buffer of ``nbytes``.

    ``role`` is what a policy may ignore (Korthikanti et al. leave out statistics).
    """

    what: str
    tensor: str | None = None
    nbytes: sympy.Expr = sympy.S.Zero
    role: Role = Role.ACTIVATION


def kernel_for(call: Call, options: MemoryOptions, values: Mapping[sympy.Symbol, int] | None = None) -> str:
    """The kernel of ``call`` under ``options``: forced flash, or PyTorch's choice; for a mask built at
    some sizes only, where it is (:func:`kept` says what the call keeps at each)."""
    if options.attention == "flash":
        return "flash"
    head_dim = sympy.sympify(call.head_dim).subs(values or {})
    masked = call.mask is not None
    return choose_kernel(options.backend.device, options.activation_dtype, call.dropout, head_dim, masked)


def sides(call: Call) -> list[tuple[Call, sympy.Expr]]:
    """The call as it runs, with the bracket of the sizes where it runs so: given its mask where it is
    built and none elsewhere (``call.present``); one side when the mask is always built or never."""
    if call.mask is None or call.present == 1:
        return [(call, sympy.S.One)]
    return [(call, call.present), (replace(call, mask=None), 1 - call.present)]


def fused_share(call: Call, options: MemoryOptions, values: Mapping[sympy.Symbol, int] | None = None) -> sympy.Expr:
    """The bracket of the sizes where a fused kernel (not math) runs the call: its backward recomputes
    Q·Kᵀ (:mod:`symbert.analysis.flops`)."""
    return sympy.Add(*(share for side, share in sides(call) if kernel_for(side, options, values) != "math"))


def kept(
    call: Call, options: MemoryOptions, values: Mapping[sympy.Symbol, int] | None = None
) -> tuple[str, list[Kept]]:
    """The kernel and what it keeps for backward, per call (:func:`kept_by`); a mask built at some sizes
    only keeps, in brackets, what the call keeps with it there and without it elsewhere
    (:func:`sides`), which can be another kernel's (CUDA: flash without a mask, memory-efficient with
    one)."""
    runs = [(kept_by(side, options, values), share) for side, share in sides(call)]
    if len(runs) == 1:
        return runs[0][0]
    ((kernel, masked), _), ((other, bare), _) = runs
    tensors = [i for i in masked if i.tensor]
    if [i.tensor for i in tensors] != [i.tensor for i in bare if i.tensor]:  # one side keeps them, one not
        raise ConfigError(f"symbert cannot model the {kernel} and {other} kernels of a mask built at some sizes only")
    extra = [replace(i, nbytes=i.nbytes * share) for (_, items), share in runs for i in items if not i.tensor]
    return kernel if kernel == other else f"{kernel} ({other} where the mask is not built)", tensors + extra


def kept_by(
    call: Call, options: MemoryOptions, values: Mapping[sympy.Symbol, int] | None = None
) -> tuple[str, list[Kept]]:
    """The kernel and what it keeps for backward, per call, as the call is given its mask or none.

    * fused kernels (flash, memory-efficient; the CPU flash kernel): Q, K and V as given, the output,
      a float32 logsumexp [B, A, seq_len] (memory-efficient: seq_len rounded up to a multiple of 32)
      and, on CUDA, the philox seed and offset (two int64 scalars, returned and kept even without
      dropout). The output is allocated like Q ([B, seq_len, A, H/A] in memory), so transposing the
      heads back is already contiguous and the output projection keeps that same storage. A CUDA flash
      call whose head dim is not a multiple of 8 keeps padded copies of Q, K, V and its padded output
      instead, and the transposed-back output is then a fresh copy (kept by the projection, not here).
      With a mask, the CPU flash kernel keeps its bias converted to the query dtype, [B, 1, seq_len,
      seq_len], and the memory-efficient kernel the padded bias [B, 1, seq_len, 8·⌈seq_len/8⌉]; CUDA
      flash, forced (it takes no mask), keeps none.
    * math (``_scaled_dot_product_attention_math``): Q and K each scaled by √scale (new tensors, the
      matmul's operands), V as the matmul reads it (a copy), the softmax output, and with dropout the
      dropout's mask and output; 16-bit inputs are first converted to float32, so all of these are
      float32. Its output is transposed back by a copy, which the projection keeps.
    """
    kernel = kernel_for(call, options, values)
    act = BYTES[options.activation_dtype]
    statistics = Role.STATISTICS
    if kernel == "math":
        compute = 4 if options.activation_dtype in SIXTEEN_BIT else act
        mask = BYTES[options.backend.mask] if options.backend.mask else compute
        scores = numel((*call.q.shape[:-1], call.k.shape[-2]))
        items = [
            Kept("math: Q·√scale", nbytes=call.q.numel * compute),
            Kept("math: Kᵀ·√scale", nbytes=call.k.numel * compute),
            Kept("math: V for the matmul", nbytes=call.v.numel * compute),
            Kept("math: softmax output", nbytes=scores * compute),
        ]
        if call.dropout > 0:
            items += [
                Kept("math: dropout mask", nbytes=scores * mask),
                Kept("math: dropout output", nbytes=scores * compute),
            ]
        return kernel, items
    cuda = options.backend.device == "cuda"
    rows = call.rows
    if kernel == "efficient":
        length = call.q.shape[-2]
        padded = EFFICIENT_LSE_ALIGN * sympy.ceiling(length / EFFICIENT_LSE_ALIGN)
        rows = rows / length * padded
    head_dim = sympy.sympify(call.head_dim).subs(values or {})
    pad = cuda and kernel == "flash" and not _multiple(head_dim, FLASH_HEAD_ALIGN)
    items = []
    if pad:
        padded_dim = FLASH_HEAD_ALIGN * sympy.ceiling(head_dim / FLASH_HEAD_ALIGN)
        for name, t in (("Q", call.q), ("K", call.k), ("V", call.v), ("output", call.output)):
            items.append(Kept(f"{kernel}: {name} padded", nbytes=t.numel / call.head_dim * padded_dim * act))
    else:
        items += [Kept(f"{kernel}: {n}", tensor=t.name) for n, t in (("Q", call.q), ("K", call.k), ("V", call.v))]
        items.append(Kept(f"{kernel}: output", tensor=call.output.name))
    items.append(Kept(f"{kernel}: logsumexp (float32)", nbytes=rows * 4, role=statistics))
    if call.mask is not None and (kernel == "efficient" or not cuda):
        rows_, length = call.mask.shape[0], call.mask.shape[-1]
        if kernel == "efficient":
            width = EFFICIENT_BIAS_ALIGN * sympy.ceiling(length / EFFICIENT_BIAS_ALIGN)
            what = f"{kernel}: attention bias, last dim padded to a multiple of {EFFICIENT_BIAS_ALIGN}"
        else:
            width, what = length, f"{kernel}: attention mask as an additive bias"
        items.append(Kept(what, nbytes=rows_ * call.mask.shape[-2] * width * act))
    if cuda:
        items.append(
            Kept(f"{kernel}: philox seed and offset (int64)", nbytes=sympy.Integer(PHILOX_BYTES), role=statistics)
        )
    return kernel, items


def transients(
    call: Call, options: MemoryOptions, values: Mapping[sympy.Symbol, int] | None = None
) -> list[Kept]:
    """What the call holds at its highest point beyond what it keeps and its output, all freed when it
    returns; the CPU math kernel's (``_scaled_dot_product_attention_math``, measured with torch 2.13):

    * the mask converted to an additive bias in the query dtype, where one is passed;
    * Q scaled by √scale: Q as Hugging Face passes it (a transposed view of the projection) is not
      contiguous, so the product copies it and keeps the copy, and the scaled Q stays referenced until
      the kernel returns (unless Q is contiguous: one head or seq_len 1);
    * with 16-bit inputs, their float32 copies of Q, K and V, the attention weights converted back to
      the input dtype (the kernel returns them beside the output), and its float32 output before the
      cast to the input dtype.

    Other kernels: none (the CPU flash kernel's per-thread buffers are scratch the peak leaves out, see
    :mod:`symbert.validate.peak`; the CUDA kernels' are not modelled)."""
    if options.backend.device != "cpu" or kernel_for(call, options, values) != "math":
        return []
    act = BYTES[options.activation_dtype]
    sixteen = options.activation_dtype in SIXTEEN_BIT
    compute = 4 if sixteen else act
    contiguous = either(is_one(call.q.shape[1]), is_one(call.q.shape[2]))
    items = [Kept("math: Q·√scale, copied for the product", nbytes=call.q.numel * compute * (1 - contiguous))]
    if call.mask is not None:
        rows, length = call.mask.shape[0], call.mask.shape[-1]
        items.append(Kept("math: attention mask as an additive bias", nbytes=rows * call.mask.shape[-2] * length * act))
    if sixteen:
        scores = numel((*call.q.shape[:-1], call.k.shape[-2]))
        operands = (("Q", call.q), ("K", call.k), ("V", call.v))
        items += [Kept(f"math: {name} in float32", nbytes=t.numel * 4) for name, t in operands]
        items.append(Kept("math: attention weights returned in the input dtype", nbytes=scores * act))
        items.append(Kept("math: output in float32", nbytes=call.q.numel * 4))
    return items


def backward_transients(
    call: Call, options: MemoryOptions, values: Mapping[sympy.Symbol, int] | None = None
) -> list[Kept]:
    """The call's backward at its highest point, as changes to the replay's backward event, which holds
    the incoming gradient, what the call keeps, and Q's, K's and V's gradients in the input dtype: items
    with negative bytes are what that event counts and the kernel does not hold there. The CPU math
    kernel's (``_scaled_dot_product_attention_math``: its ops' own backward, measured with torch 2.13):

    the output's gradient is converted to the compute dtype (16-bit inputs) and copied contiguous for the
    product's backward, and the incoming gradient is freed; then the product with V makes V's gradient
    and the attention weights' gradient, both in the compute dtype. That is the highest point: each
    later step (dropout's, softmax's, the scores product's, the scalings', the casts back) frees more
    than it makes, and Q's and K's gradients, and V's in the input dtype, are not made yet. Under 16-bit
    autocast the items sum to the weights' gradient, 4·B·A·seq_len² bytes; in float32, to that less
    twice Q's bytes.

    Other kernels: none."""
    if options.backend.device != "cpu" or kernel_for(call, options, values) != "math":
        return []
    act = BYTES[options.activation_dtype]
    compute = 4 if options.activation_dtype in SIXTEEN_BIT else act
    scores = numel((*call.q.shape[:-1], call.k.shape[-2]))
    return [
        Kept("math backward: the attention weights' gradient", nbytes=scores * compute),
        Kept("math backward: V's gradient in the compute dtype", nbytes=call.v.numel * compute),
        Kept("math backward: the output's gradient, copied contiguous", nbytes=call.output.numel * compute),
        Kept("math backward: the incoming gradient, freed", nbytes=-call.output.numel * act),
        *(
            Kept(f"math backward: {name}'s gradient, not made yet", nbytes=-t.numel * act)
            for name, t in (("Q", call.q), ("K", call.k), ("V", call.v))
        ),
    ]
