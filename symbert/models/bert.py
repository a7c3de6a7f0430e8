"""BERT, written against the tracer the way the seed draws it.

Embedding layer: word, position and token-type lookups, summed, layer-normalised, dropped out.
L post-LN transformer layers: multi-head self-attention, dropout, residual, layernorm, feed-forward,
dropout, residual, layernorm. Pooler: the first token through a dense layer and tanh.
Scopes and parameter names follow Hugging Face's BertModel.
"""

from __future__ import annotations

import sympy

from symbert import ops as F
from symbert.ir import Role, Tensor
from symbert.models.spec import Component, ModelSpec
from symbert.symbols import A, B, E, H, I, L, position_size, seq_len, type_size, vocab_size
from symbert.tracer import buffer, graph_input, graph_output, region, repeat, scope

DROPOUT = 0.1


def embeddings(input_ids: Tensor, token_type_ids: Tensor | None) -> Tensor:
    """Word + token-type + position lookups → sum → LayerNorm → dropout, each of width E."""
    with scope("embeddings"):
        x = F.embedding("word_embeddings", input_ids, vocab_size, E)
        if token_type_ids is not None:
            x = F.add(x, F.embedding("token_type_embeddings", token_type_ids, type_size, E))
        position_ids = buffer("position_ids", (1, seq_len), "int64")
        x = F.add(x, F.embedding("position_embeddings", position_ids, position_size, E))
        x = F.layernorm("LayerNorm", x)
        return F.dropout(x, DROPOUT)


def split_heads(x: Tensor) -> Tensor:
    """[B, seq_len, H] → [B, A, seq_len, H/A]."""
    return F.transpose(F.reshape(x, (B, seq_len, A, H / A)), 1, 2)


def merge_heads(x: Tensor) -> Tensor:
    """[B, A, seq_len, H/A] → [B, seq_len, H] (transpose, copy, view)."""
    return F.reshape(F.contiguous(F.transpose(x, 1, 2)), (B, seq_len, H))


def attention_core(q: Tensor, k: Tensor, v: Tensor, mask: Tensor) -> Tensor:
    """softmax(Q·Kᵀ / sqrt(H/A) + mask) with dropout, times V."""
    with region("attention_core"):
        scores = F.matmul(q, F.transpose(k, 2, 3), name="scores")
        scores = F.add(F.scale(scores, 1 / sympy.sqrt(H / A)), mask, name="add_mask")
        probs = F.dropout(F.softmax(scores), DROPOUT)
        return F.matmul(probs, v, name="context")


def residual_block(name: str, x: Tensor, residual: Tensor) -> Tensor:
    """dense → dropout → add residual → LayerNorm, the post-LN pattern closing each sub-layer."""
    with scope(name):
        y = F.dropout(F.linear("dense", x, H), DROPOUT)
        return F.layernorm("LayerNorm", F.add(y, residual))


def layer(x: Tensor, mask: Tensor) -> Tensor:
    """One post-LN transformer layer."""
    with scope("attention"):
        with scope("self"):
            q, k, v = (split_heads(F.linear(n, x, H)) for n in ("query", "key", "value"))
            context = merge_heads(attention_core(q, k, v, mask))
        x = residual_block("output", context, x)
    with scope("intermediate"):
        hidden = F.gelu(F.linear("dense", x, I))
    return residual_block("output", hidden, x)


def build(pooler: bool = True, token_types: bool = True) -> None:
    """Trace BertModel.forward(input_ids, token_type_ids, attention_mask) in training mode."""
    input_ids = graph_input("input_ids", (B, seq_len), "int64", Role.INDEX)
    token_type_ids = graph_input("token_type_ids", (B, seq_len), "int64", Role.INDEX) if token_types else None
    attention_mask = graph_input("attention_mask", (B, seq_len), "int64", Role.MASK)
    x = embeddings(input_ids, token_type_ids)
    with scope("encoder"):
        mask = F.mask_bias(attention_mask, (B, 1, 1, seq_len))
        x = repeat("layer", L, lambda h: layer(h, mask), x, (B, seq_len, H))
    graph_output("last_hidden_state", x)
    if pooler:
        with scope("pooler"):
            graph_output("pooler_output", F.tanh(F.linear("dense", F.select(x, 1, 0), H)))


def _official(layers: int, hidden: int, heads: int) -> dict[str, int]:
    """A config of Google's released BERT checkpoints: I = 4H, 30522 words, 512 positions, 2 types."""
    return {
        "vocab_size": 30522,
        "hidden_size": hidden,
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
        "intermediate_size": 4 * hidden,
        "max_position_embeddings": 512,
        "type_vocab_size": 2,
    }


SPEC = ModelSpec(
    name="bert",
    build=build,
    options={"pooler": True, "token_types": True},
    param_components=(
        Component("embeddings", "embeddings"),
        Component("self-attention", "encoder/layer/attention/self"),
        Component("layernorms", "encoder/layer", ops=("layernorm",)),
        Component("attention output", "encoder/layer/attention/output"),
        Component("intermediate", "encoder/layer/intermediate"),
        Component("output", "encoder/layer/output"),
        Component("pooler", "pooler"),
    ),
    activation_components=(
        Component("embeddings", "embeddings"),
        Component("attention scores", "encoder/layer", region="attention_core"),
        Component("layernorms", "encoder/layer", ops=("layernorm",)),
        Component("rest of attention", "encoder/layer/attention"),
        Component("feed-forward", "encoder/layer"),
        Component("pooler", "pooler"),
    ),
    fields={
        "vocab_size": vocab_size,
        "hidden_size": H,
        "num_hidden_layers": L,
        "num_attention_heads": A,
        "intermediate_size": I,
        "max_position_embeddings": position_size,
        "type_vocab_size": type_size,
    },
    divides=(("hidden_size", "num_attention_heads"),),
    derived={E: H},
    substitutions={E: H, I: 4 * H},
    presets={
        **{
            f"bert-L{layers}-H{hidden}": _official(layers, hidden, hidden // 64)
            for layers in (2, 4, 6, 8, 10, 12)
            for hidden in (128, 256, 512, 768)
        },
        "bert-base": _official(12, 768, 12),
        "bert-large": _official(24, 1024, 16),
    },
    aliases={
        "bert-tiny": "bert-L2-H128",
        "bert-mini": "bert-L4-H256",
        "bert-small": "bert-L4-H512",
        "bert-medium": "bert-L8-H512",
    },
)
