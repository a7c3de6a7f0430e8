"""ALBERT: factorised embeddings (width E, projected to H) and one layer's parameters shared by all L.

Parameters stop growing with L while activations do not. Scopes and parameter names follow Hugging
Face's AlbertModel with one layer group of one layer (its released configurations).
"""

from __future__ import annotations

import symbert.models.heads as heads
from symbert import ops as F
from symbert.ir import Tensor
from symbert.models.bert import (
    FIELDS,
    TIED,
    activation_components,
    embeddings,
    inputs,
    masked_lm,
    masked_lm_head,
    options,
    task_heads,
    tensor_plan,
)
from symbert.models.heads import Encoded, Head
from symbert.models.layers import ACTIVATIONS, attention, dropout, mask_bias, split_heads
from symbert.models.spec import Component, ModelSpec, Option
from symbert.symbols import E, H, I, L, seq_len
from symbert.tracer import call, held, registers, repeat, scope


def layer(x: Tensor, mask: Tensor | None, act: str, p: float, p_attention: float) -> Tensor:
    """AlbertLayer: post-LN attention, then a feed-forward with no dropout before its residual. Its locals
    keep its input, the attention's output and weights, and the feed-forward's output until it returns;
    the attention's keep Q, K, V and its dropped-out output through its LayerNorm."""
    with scope("albert_layers"), call():
        registers(("full_layer_layer_norm", "attention", "ffn", "ffn_output"))
        with scope("attention"), call():
            q, k, v = (split_heads(F.linear(n, x, H)) for n in ("query", "key", "value"))
            context, weights = attention(q, k, v, mask, p_attention)
            out = dropout(F.linear("dense", context, H), p)
            held(q, k, v, out)
            attended = F.layernorm("LayerNorm", F.add(x, out))
        hidden = F.linear("ffn_output", ACTIVATIONS[act](F.linear("ffn", attended, I)), H)
        held(x, weights, attended, hidden)
        return F.layernorm("full_layer_layer_norm", F.add(hidden, attended))


def build(
    pooler: bool = True,
    token_types: bool = True,
    padding: bool = True,
    hidden_act: str = "gelu_new",
    hidden_dropout_prob: float = 0.0,
    attention_probs_dropout_prob: float = 0.0,
    classifier_dropout_prob: float = 0.1,
    tie_word_embeddings: bool = True,
) -> dict[str, Tensor]:
    """Trace AlbertModel.forward(input_ids, token_type_ids, attention_mask) in training mode."""
    input_ids, token_type_ids, attention_mask = inputs(token_types)
    x = embeddings(input_ids, token_type_ids, hidden_dropout_prob, positions_from_ids=False)
    held(x)  # AlbertModel's ``embedding_output``, until it returns
    with scope("encoder"):
        mask = mask_bias(attention_mask, padding)
        x = F.linear("embedding_hidden_mapping_in", x, H)
        body = lambda h: layer(h, mask, hidden_act, hidden_dropout_prob, attention_probs_dropout_prob)  # noqa: E731
        x = repeat("albert_layer_groups", L, body, x, (x.shape[0], seq_len, H), shares_params=True)
    if not pooler:
        return {"last_hidden_state": x}
    with scope("pooler", in_param_name=False):
        pooled = F.tanh(F.linear("pooler", F.select(x, 1, 0), H), name="pooler_activation")
        return {"last_hidden_state": x, "pooler_output": pooled}


# ---- task heads (Hugging Face's AlbertFor* classes)


def classifier_p(e: Encoded) -> float:
    return e.options["classifier_dropout_prob"]


def mlm_scores(e: Encoded) -> Tensor:
    """AlbertMLMHead: dense H → E, activation, LayerNorm at width E, and the decoder
    (:func:`~symbert.models.heads.lm_decoder`). The module registers its LayerNorm first."""
    with scope("predictions"):
        registers(("LayerNorm", "dense", "decoder"))
        x = F.layernorm("LayerNorm", ACTIVATIONS[e.options["hidden_act"]](F.linear("dense", e.sequence, E)))
        return heads.lm_decoder(e, x)


def pretraining(e: Encoded, problem: str) -> Tensor:
    """Masked LM plus sentence-order prediction (AlbertSOPHead: dropout, a classifier to two scores)."""
    scores = mlm_scores(e)
    with scope("sop_classifier"):
        order = heads.classifier(e.pooled, classifier_p(e), 2)
    order_loss = heads.cross_entropy("sentence_order", order, heads.labels("sentence_order_label", e.pooled.shape[:1]))
    return heads.summed(masked_lm(e, scores), order_loss)


HEADS = task_heads(
    "Albert",
    Head("mlm", "AlbertForMaskedLM", masked_lm_head(mlm_scores)),
    Head("pretraining", "AlbertForPreTraining", pretraining, pooler=True, labels=2),
    classifier_p=classifier_p,
)


def _config(hidden: int, layers: int, heads: int) -> dict[str, object]:
    return {
        "vocab_size": 30000,
        "embedding_size": 128,
        "hidden_size": hidden,
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
        "intermediate_size": 4 * hidden,
        "max_position_embeddings": 512,
        "type_vocab_size": 2,
    }


LAYER = "encoder/albert_layer_groups"
PROJECTION = "encoder/embedding_hidden_mapping_in"
SPEC = ModelSpec(
    name="albert",
    build=build,
    options=(*options("gelu_new", 0.0), Option("classifier_dropout_prob", 0.1, from_config=True), TIED),
    param_components=(
        Component("embeddings", "embeddings", role="embeddings"),
        Component("embedding projection", PROJECTION, role="embeddings"),
        Component("layernorms", LAYER, ops=("layernorm",), role="norms"),
        Component("attention", f"{LAYER}/albert_layers/attention", role="attention"),
        Component("feed-forward", LAYER, role="MLP"),
        Component("pooler", "pooler", role="pooler"),
    ),
    activation_components=activation_components(
        LAYER, f"{LAYER}/albert_layers/attention", Component("embedding projection", PROJECTION, role="embeddings")
    ),
    fields={**FIELDS, "embedding_size": E},
    divides=(("hidden_size", "num_attention_heads"),),
    substitutions={I: 4 * H},
    presets={"albert-base-v2": _config(768, 12, 12), "albert-large-v2": _config(1024, 24, 16)},
    default_preset="albert-base-v2",
    constraints=(("num_hidden_groups", 1), ("inner_group_num", 1)),
    # AlbertConfig's own defaults: albert-xxlarge's sizes
    config_defaults={
        **_config(4096, 12, 64),
        "vocab_size": 30000,
        "intermediate_size": 16384,
        "pad_token_id": 0,
    },
    architecture="AlbertModel",
    heads=HEADS,
    prefix="albert",
    tensor_plan=tensor_plan(
        f"{LAYER}/albert_layers",
        ("attention/query", "attention/key", "attention/value", "ffn"),
        ("attention/dense", "ffn_output"),
        ("predictions/decoder",),
    ),
)
