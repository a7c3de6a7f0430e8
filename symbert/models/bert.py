"""BERT, written against the tracer the way the seed draws it (and RoBERTa, which differs in positions).

Embedding layer: word, position and token-type lookups, summed, layer-normalised, dropped out.
L post-LN transformer layers: multi-head self-attention, dropout, residual, layernorm, feed-forward,
dropout, residual, layernorm. Pooler: the first token through a dense layer and tanh.
Scopes and parameter names follow Hugging Face's BertModel.
"""

from __future__ import annotations

from dataclasses import replace
from functools import partial

from symbert import ops as F
from symbert.ir import Role, Tensor
from symbert.models.layers import ACTIVATIONS, attention_core, dropout, merge_heads, split_heads
from symbert.models.spec import Component, ModelSpec, Option
from symbert.symbols import A, B, E, H, I, L, position_size, seq_len, type_size, vocab_size
from symbert.tracer import buffer, graph_input, graph_output, repeat, scope


def inputs(token_types: bool) -> tuple[Tensor, Tensor | None, Tensor]:
    """input_ids, token_type_ids (None without token types) and attention_mask, each [B, seq_len]."""
    input_ids = graph_input("input_ids", (B, seq_len), "int64", Role.INDEX)
    token_type_ids = graph_input("token_type_ids", (B, seq_len), "int64", Role.INDEX) if token_types else None
    return input_ids, token_type_ids, graph_input("attention_mask", (B, seq_len), "int64", Role.MASK)


def embeddings(input_ids: Tensor, token_type_ids: Tensor | None, p: float, positions_from_ids: bool) -> Tensor:
    """Word + token-type + position lookups → sum → LayerNorm → dropout, each of width E."""
    with scope("embeddings"):
        if positions_from_ids:
            position_ids = F.positions((B, seq_len), input_ids)
        else:
            position_ids = buffer("position_ids", (1, seq_len), "int64")
        x = F.embedding("word_embeddings", input_ids, vocab_size, E)
        if token_type_ids is not None:
            x = F.add(x, F.embedding("token_type_embeddings", token_type_ids, type_size, E))
        x = F.add(x, F.embedding("position_embeddings", position_ids, position_size, E))
        return dropout(F.layernorm("LayerNorm", x), p)


def residual_block(name: str, x: Tensor, residual: Tensor, p: float) -> Tensor:
    """dense → dropout → add residual → LayerNorm, the post-LN pattern closing each sub-layer."""
    with scope(name):
        y = dropout(F.linear("dense", x, H), p)
        return F.layernorm("LayerNorm", F.add(y, residual))


def layer(x: Tensor, mask: Tensor, act: str, p: float, p_attention: float) -> Tensor:
    """One post-LN transformer layer."""
    with scope("attention"):
        with scope("self"):
            q, k, v = (split_heads(F.linear(n, x, H)) for n in ("query", "key", "value"))
            context = merge_heads(attention_core(q, k, v, mask, p_attention))
        x = residual_block("output", context, x, p)
    with scope("intermediate"):
        hidden = ACTIVATIONS[act](F.linear("dense", x, I))
    return residual_block("output", hidden, x, p)


def build(
    pooler: bool = True,
    token_types: bool = True,
    hidden_act: str = "gelu",
    hidden_dropout_prob: float = 0.1,
    attention_probs_dropout_prob: float = 0.1,
    positions_from_ids: bool = False,
) -> None:
    """Trace BertModel.forward(input_ids, token_type_ids, attention_mask) in training mode."""
    input_ids, token_type_ids, attention_mask = inputs(token_types)
    x = embeddings(input_ids, token_type_ids, hidden_dropout_prob, positions_from_ids)
    with scope("encoder"):
        mask = F.mask_bias(attention_mask, (B, 1, 1, seq_len))
        body = lambda h: layer(h, mask, hidden_act, hidden_dropout_prob, attention_probs_dropout_prob)  # noqa: E731
        x = repeat("layer", L, body, x, (B, seq_len, H))
    graph_output("last_hidden_state", x)
    if pooler:
        with scope("pooler"):
            graph_output("pooler_output", F.tanh(F.linear("dense", F.select(x, 1, 0), H)))


def official(layers: int, hidden: int, heads: int, **extra: object) -> dict[str, object]:
    """A config of Google's released BERT checkpoints: I = 4H, 30522 words, 512 positions, 2 types."""
    return {
        "vocab_size": 30522,
        "hidden_size": hidden,
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
        "intermediate_size": 4 * hidden,
        "max_position_embeddings": 512,
        "type_vocab_size": 2,
        **extra,
    }


FIELDS = {
    "vocab_size": vocab_size,
    "hidden_size": H,
    "num_hidden_layers": L,
    "num_attention_heads": A,
    "intermediate_size": I,
    "max_position_embeddings": position_size,
    "type_vocab_size": type_size,
}


def options(hidden_act: str, dropout: float) -> tuple[Option, ...]:
    """The options of BertConfig-style families, with the family's default activation and dropout."""
    return (
        Option("pooler", True),
        Option("token_types", True),
        Option("hidden_act", hidden_act, ("gelu", "gelu_new"), from_config=True),
        Option("hidden_dropout_prob", dropout, from_config=True),
        Option("attention_probs_dropout_prob", dropout, from_config=True),
    )


def activation_components(layer: str, attention: str, *extra: Component) -> tuple[Component, ...]:
    """Activation components of an encoder whose repeated layer is ``layer``: embeddings (then ``extra``),
    per layer the attention scores, layernorms, rest of attention, feed-forward; the pooler."""
    return (
        Component("embeddings", "embeddings"),
        *extra,
        Component("attention scores", layer, region="attention_core"),
        Component("layernorms", layer, ops=("layernorm",)),
        Component("rest of attention", attention),
        Component("feed-forward", layer),
        Component("pooler", "pooler"),
    )


PARAM_COMPONENTS = (
    Component("embeddings", "embeddings"),
    Component("self-attention", "encoder/layer/attention/self"),
    Component("layernorms", "encoder/layer", ops=("layernorm",)),
    Component("attention output", "encoder/layer/attention/output"),
    Component("intermediate", "encoder/layer/intermediate"),
    Component("output", "encoder/layer/output"),
    Component("pooler", "pooler"),
)

SPEC = ModelSpec(
    name="bert",
    build=build,
    options=options("gelu", 0.1),
    param_components=PARAM_COMPONENTS,
    activation_components=activation_components("encoder/layer", "encoder/layer/attention"),
    fields=FIELDS,
    divides=(("hidden_size", "num_attention_heads"),),
    derived={E: H},
    substitutions={E: H, I: 4 * H},
    presets={
        **{
            f"bert-L{layers}-H{hidden}": official(layers, hidden, hidden // 64)
            for layers in (2, 4, 6, 8, 10, 12)
            for hidden in (128, 256, 512, 768)
        },
        "bert-base": official(12, 768, 12),
        "bert-large": official(24, 1024, 16),
    },
    aliases={
        "bert-tiny": "bert-L2-H128",
        "bert-mini": "bert-L4-H256",
        "bert-small": "bert-L4-H512",
        "bert-medium": "bert-L8-H512",
    },
    default_preset="bert-base",
)

#: RoBERTa: BERT with position ids counted from the token ids, after the padding index and one more.
ROBERTA = replace(
    SPEC,
    name="roberta",
    build=partial(build, positions_from_ids=True),
    presets={
        "roberta-base": official(12, 768, 12, vocab_size=50265, max_position_embeddings=514, type_vocab_size=1),
        "roberta-large": official(24, 1024, 16, vocab_size=50265, max_position_embeddings=514, type_vocab_size=1),
    },
    aliases={},
    default_preset="roberta-base",
    position_offset=2,
)
