"""DistilBERT: BERT without token types or pooler, six layers, and no dropout after attention.

Scopes and parameter names follow Hugging Face's DistilBertModel.
"""

from __future__ import annotations

from symbert import ops as F
from symbert.ir import Tensor
from symbert.models.bert import activation_components, embeddings, inputs
from symbert.models.layers import ACTIVATIONS, attention_core, dropout, merge_heads, split_heads
from symbert.models.spec import Component, ModelSpec, Option
from symbert.symbols import A, B, E, H, I, L, position_size, seq_len, vocab_size
from symbert.tracer import graph_output, repeat, scope


def layer(x: Tensor, mask: Tensor, act: str, p: float, p_attention: float) -> Tensor:
    """TransformerBlock: attention → add → LayerNorm; lin1 → activation → lin2 → dropout → add → LayerNorm."""
    with scope("attention"):
        q, k, v = (split_heads(F.linear(n, x, H)) for n in ("q_lin", "k_lin", "v_lin"))
        attended = F.linear("out_lin", merge_heads(attention_core(q, k, v, mask, p_attention)), H)
    attended = F.layernorm("sa_layer_norm", F.add(attended, x))
    with scope("ffn"):
        hidden = dropout(F.linear("lin2", ACTIVATIONS[act](F.linear("lin1", attended, I)), H), p)
    return F.layernorm("output_layer_norm", F.add(hidden, attended))


def build(activation: str = "gelu", dropout: float = 0.1, attention_dropout: float = 0.1) -> None:
    """Trace DistilBertModel.forward(input_ids, attention_mask) in training mode."""
    input_ids, _, attention_mask = inputs(token_types=False)
    x = embeddings(input_ids, None, dropout, positions_from_ids=False)
    with scope("transformer"):
        mask = F.mask_bias(attention_mask, (B, 1, 1, seq_len))
        x = repeat("layer", L, lambda h: layer(h, mask, activation, dropout, attention_dropout), x, (B, seq_len, H))
    graph_output("last_hidden_state", x)


SPEC = ModelSpec(
    name="distilbert",
    build=build,
    options=(
        Option("activation", "gelu", ("gelu", "gelu_new"), from_config=True),
        Option("dropout", 0.1, from_config=True),
        Option("attention_dropout", 0.1, from_config=True),
    ),
    param_components=(
        Component("embeddings", "embeddings"),
        Component("self-attention", "transformer/layer/attention"),
        Component("layernorms", "transformer/layer", ops=("layernorm",)),
        Component("feed-forward", "transformer/layer/ffn"),
    ),
    activation_components=activation_components("transformer/layer", "transformer/layer/attention"),
    fields={
        "vocab_size": vocab_size,
        "dim": H,
        "n_layers": L,
        "n_heads": A,
        "hidden_dim": I,
        "max_position_embeddings": position_size,
    },
    divides=(("dim", "n_heads"),),
    derived={E: H},
    substitutions={E: H, I: 4 * H},
    presets={
        "distilbert-base-uncased": {
            "vocab_size": 30522,
            "dim": 768,
            "n_layers": 6,
            "n_heads": 12,
            "hidden_dim": 3072,
            "max_position_embeddings": 512,
        }
    },
    default_preset="distilbert-base-uncased",
)
