"""Building blocks the model files share: attention heads, the attention core, activations, dropout."""

from __future__ import annotations

import math
from collections.abc import Callable

import sympy

from symbert import ops as F
from symbert.ir import Tensor
from symbert.symbols import A, B, H, seq_len
from symbert.tracer import region


def dropout(x: Tensor, p: float) -> Tensor:
    """Training-mode dropout; with p = 0 PyTorch returns its input and keeps nothing."""
    return F.dropout(x, p) if p > 0 else x


def split_heads(x: Tensor) -> Tensor:
    """[B, seq_len, H] → [B, A, seq_len, H/A]."""
    return F.transpose(F.reshape(x, (B, seq_len, A, H / A)), 1, 2)


def merge_heads(x: Tensor) -> Tensor:
    """[B, A, seq_len, H/A] → [B, seq_len, H] (transpose, copy, view)."""
    return F.reshape(F.contiguous(F.transpose(x, 1, 2)), (B, seq_len, H))


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
