"""Building blocks the model files share: attention heads, the attention core, activations, dropout."""

from __future__ import annotations

import math
from collections.abc import Callable

import sympy

from symbert import ops as F
from symbert.ir import ACT, Role, Tensor, numel
from symbert.symbols import A, H, either, is_one, seq_len
from symbert.tracer import active, graph_input, held, region


def token_input(name: str, role: Role = Role.INDEX) -> Tensor:
    """An int64 tensor with one entry per token, [*batch, seq_len], as [rows, seq_len].

    The batch is [B] for most models; a multiple-choice model is given [B, C, seq_len] and runs its
    encoder on B·C rows, as Hugging Face's ``view(-1, seq_len)`` does.
    """
    batch = active().batch
    x = graph_input(name, (*batch, seq_len), "int64", role)
    return x if len(batch) == 1 else F.reshape(x, (numel(batch), seq_len), name=f"{name}_rows")


def mask_bias(attention_mask: Tensor, padding: bool = True, like: Tensor | None = None) -> Tensor | None:
    """The 4D mask Hugging Face builds from the padding mask (``masking_utils.create_bidirectional_mask``),
    [rows, 1, seq_len, seq_len], materialised: eager attention gets an additive float bias (0 or the
    dtype's minimum, in the dtype of ``like``, the embeddings' output, where it can differ from the
    float32 weights' under autocast), sdpa a bool mask (its size is the analysis's business, see
    :func:`symbert.analysis.sdpa.mask_bytes`). Without padding (``padding`` False) Hugging Face drops an
    all-ones mask and passes None: no bias, nothing added to the scores. Either way it first checks the
    padding mask (:func:`symbert.ops.padding_mask`)."""
    F.padding_mask(attention_mask)
    if not padding:
        return None
    mask = F.mask_bias(attention_mask, (attention_mask.shape[0], 1, seq_len, seq_len), like)
    held(mask)  # the model's forward keeps it in a local until it returns
    return mask


def dropout(x: Tensor, p: float) -> Tensor:
    """Training-mode dropout; with p = 0 PyTorch returns its input and keeps nothing."""
    return F.dropout(x, p) if p > 0 else x


def split_heads(x: Tensor) -> Tensor:
    """[B, seq_len, H] → [B, A, seq_len, H/A]; as Hugging Face's ``view(..., -1, head_dim)``, the heads
    are the width over H/A, so a tensor-parallel shard [B, seq_len, H/t] gives A/t heads. The gradient an
    eager product hands back is laid out heads first, so the view's backward copies it unless seq_len or
    the heads are 1."""
    head_dim = H / A
    heads = x.shape[-1] / head_dim
    copy = 1 - either(is_one(seq_len), is_one(heads))
    return F.transpose(F.reshape(x, (*x.shape[:-1], heads, head_dim), grad_copy_when=copy), 1, 2)


def merge_heads(x: Tensor) -> Tensor:
    """[B, A, seq_len, H/A] → [B, seq_len, H] (transpose, copy, view)."""
    return _merged(F.contiguous(F.transpose(x, 1, 2)))


def _merged(x: Tensor) -> Tensor:
    """[B, seq_len, heads, H/A] → [B, seq_len, heads·H/A], a view (Hugging Face's ``reshape(..., -1)``)."""
    return F.reshape(x, (*x.shape[:-2], x.shape[-2] * x.shape[-1]))


def attention(
    q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None, p: float, fused_qkv: bool = False
) -> tuple[Tensor, Tensor]:
    """Hugging Face's attention call, Q, K, V [B, A, seq_len, H/A] → [B, seq_len, H]: the core, then the
    heads transposed back and made contiguous (one region, which sdpa runs as one kernel), merged by a view.
    Also the attention weights it returns beside the output (eager attention's dropped-out probabilities),
    which every layer's forward holds in a local (``attention_output, _ = self.attention(...)``)."""
    with region("attention"):
        context, weights = attention_core(q, k, v, mask, p, fused_qkv)
        context = F.contiguous(F.transpose(context, 1, 2))
    return _merged(context), weights


def attention_core(
    q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None, p: float, fused_qkv: bool = False
) -> tuple[Tensor, Tensor]:
    """softmax(Q·Kᵀ / sqrt(H/A) + mask) with dropout, times V: Hugging Face's eager attention, and the
    dropped-out probabilities it returns as the attention weights.

    ``fused_qkv``: the newer eager attention of models with one QKV projection and rotary positions
    (ModernBERT). Its softmax runs in float32 and is cast back to Q's dtype (``softmax(...,
    dtype=torch.float32).to(query.dtype)``, a copy only where the dtypes differ).

    The products fold their operands' batch (:func:`symbert.ops.fold`), ``torch.matmul``'s
    ``reshape``: Q and K, laid out [rows, seq_len, heads, H/A] as their projections (or the rotation)
    made them, are copied unless rows or seq_len is 1, as is V from its own projection; V, a strided
    view of a fused projection, is copied unless rows is 1, when the product keeps the whole projection.
    The copies are what the products keep for backward, so a module that holds its Q, K and V in
    locals holds both until it returns."""
    with region("attention_core"):
        one = either(is_one(q.shape[0]), is_one(seq_len))  # Q and K laid out [rows, seq_len, heads, H/A]
        q, k = F.fold(q, one, name="query_fold"), F.fold(k, one, name="key_fold")
        scores = F.scale(F.matmul(q, F.transpose(k, 2, 3), name="scores"), 1 / sympy.sqrt(H / A))
        if mask is not None:
            present = active().graph.presence(mask)  # a mask not always built
            scores = F.add(scores, mask, name="add_mask", view_when=None if present == 1 else 1 - present)
        probs = F.cast(F.softmax(scores, dtype="float32"), ACT) if fused_qkv else F.softmax(scores)
        weights = dropout(probs, p)
        v = F.fold(v, is_one(v.shape[0]) if fused_qkv else one, name="value_fold")
        # The heads go back behind the positions (:func:`attention`): the product's gradient comes back laid out
        # [rows, seq_len, heads, H/A], which its batch fold copies unless rows, seq_len or the heads are 1.
        copy = 1 - either(one, is_one(v.shape[1]))
        return F.matmul(weights, v, name="context", grad_copy_when=copy), weights


def gelu_tanh(x: Tensor) -> Tensor:
    """GELU's tanh approximation (Hugging Face ``gelu_new``), op by op as PyTorch records it:
    0.5·x·(1 + tanh(sqrt(2/π)·(x + 0.044715·x³)))."""
    inner = F.add(x, F.scale(F.pow(x, 3.0), 0.044715))
    return F.mul(F.scale(x, 0.5), F.shift(F.tanh(F.scale(inner, math.sqrt(2 / math.pi))), 1.0))


def quick_gelu(x: Tensor) -> Tensor:
    """Hugging Face's ``quick_gelu``, x·sigmoid(1.702·x)."""
    return F.mul(x, F.sigmoid(F.scale(x, 1.702)))


#: Hugging Face's activations (``ACT2FN``) by config name, as the ops PyTorch records for each: what
#: each keeps for backward decides the bytes saved (matrix-product FLOPs do not change). Others are
#: refused by name.
ACTIVATIONS: dict[str, Callable[[Tensor], Tensor]] = {
    "gelu": F.gelu,
    "gelu_new": gelu_tanh,
    "gelu_pytorch_tanh": lambda x: F.gelu(x, name="gelu_tanh"),  # one kernel, keeping its input like GELU
    "relu": F.relu,
    "silu": F.silu,
    "swish": F.silu,
    "tanh": F.tanh,
    "sigmoid": F.sigmoid,
    "quick_gelu": quick_gelu,
    "mish": F.mish,
    "linear": lambda x: x,
}
