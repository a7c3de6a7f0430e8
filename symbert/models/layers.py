"""Building blocks the model files share: attention heads, the attention core, activations, dropout."""

from __future__ import annotations

import math
from collections.abc import Callable

import sympy

from symbert import ops as F
from symbert.ir import Role, Tensor, numel
from symbert.symbols import A, H, seq_len
from symbert.tracer import active, graph_input, region


def token_input(name: str, role: Role = Role.INDEX) -> Tensor:
    """An int64 tensor with one entry per token, [*batch, seq_len], as [rows, seq_len].

    The batch is [B] for most models; a multiple-choice model is given [B, C, seq_len] and runs its
    encoder on B·C rows, as Hugging Face's ``view(-1, seq_len)`` does.
    """
    batch = active().batch
    x = graph_input(name, (*batch, seq_len), "int64", role)
    return x if len(batch) == 1 else F.reshape(x, (numel(batch), seq_len), name=f"{name}_rows")


def mask_bias(attention_mask: Tensor, padding: bool = True) -> Tensor | None:
    """The 4D mask Hugging Face builds from the padding mask (``masking_utils.create_bidirectional_mask``),
    [rows, 1, seq_len, seq_len], materialised: eager attention gets an additive float bias (0 or the
    dtype's minimum, in the embeddings' dtype), sdpa a bool mask (its size is the analysis's business,
    see :func:`symbert.analysis.sdpa.mask_bytes`). Without padding (``padding`` False) Hugging Face
    drops an all-ones mask and passes None: no bias, nothing added to the scores."""
    if not padding:
        return None
    return F.mask_bias(attention_mask, (attention_mask.shape[0], 1, seq_len, seq_len))


def dropout(x: Tensor, p: float) -> Tensor:
    """Training-mode dropout; with p = 0 PyTorch returns its input and keeps nothing."""
    return F.dropout(x, p) if p > 0 else x


def split_heads(x: Tensor) -> Tensor:
    """[B, seq_len, H] → [B, A, seq_len, H/A]; as Hugging Face's ``view(..., -1, head_dim)``, the heads
    are the width over H/A, so a tensor-parallel shard [B, seq_len, H/t] gives A/t heads."""
    head_dim = H / A
    return F.transpose(F.reshape(x, (*x.shape[:-1], x.shape[-1] / head_dim, head_dim)), 1, 2)


def merge_heads(x: Tensor) -> Tensor:
    """[B, A, seq_len, H/A] → [B, seq_len, H] (transpose, copy, view)."""
    return _merged(F.contiguous(F.transpose(x, 1, 2)))


def _merged(x: Tensor) -> Tensor:
    """[B, seq_len, heads, H/A] → [B, seq_len, heads·H/A], a view (Hugging Face's ``reshape(..., -1)``)."""
    return F.reshape(x, (*x.shape[:-2], x.shape[-2] * x.shape[-1]))


def attention(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None, p: float) -> Tensor:
    """Hugging Face's attention call, Q, K, V [B, A, seq_len, H/A] → [B, seq_len, H]: the core, then the
    heads transposed back and made contiguous (one region, which sdpa runs as one kernel), merged by a view."""
    with region("attention"):
        context = F.contiguous(F.transpose(attention_core(q, k, v, mask, p), 1, 2))
    return _merged(context)


def attention_core(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None, p: float) -> Tensor:
    """softmax(Q·Kᵀ / sqrt(H/A) + mask) with dropout, times V: Hugging Face's eager attention."""
    with region("attention_core"):
        scores = F.scale(F.matmul(q, F.transpose(k, 2, 3), name="scores"), 1 / sympy.sqrt(H / A))
        if mask is not None:
            scores = F.add(scores, mask, name="add_mask")
        return F.matmul(dropout(F.softmax(scores), p), v, name="context")


def gelu_tanh(x: Tensor) -> Tensor:
    """GELU's tanh approximation (Hugging Face ``gelu_new``), op by op as PyTorch records it:
    0.5·x·(1 + tanh(sqrt(2/π)·(x + 0.044715·x³)))."""
    inner = F.add(x, F.scale(F.pow(x, 3.0), 0.044715))
    return F.mul(F.scale(x, 0.5), F.shift(F.tanh(F.scale(inner, math.sqrt(2 / math.pi))), 1.0))


ACTIVATIONS: dict[str, Callable[[Tensor], Tensor]] = {"gelu": F.gelu, "gelu_new": gelu_tanh}
