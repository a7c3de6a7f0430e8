"""DistilBERT: BERT without token types or pooler, six layers, and no dropout after attention.

Scopes and parameter names follow Hugging Face's DistilBertModel.
"""

from __future__ import annotations

import symbert.models.heads as heads
from symbert import ops as F
from symbert.ir import Tensor
from symbert.models.bert import activation_components, embeddings, inputs, masked_lm_head, tensor_plan
from symbert.models.heads import Encoded, Head
from symbert.models.layers import ACTIVATIONS, attention, dropout, mask_bias, split_heads
from symbert.models.spec import Component, ModelSpec, Option
from symbert.symbols import A, C, E, H, I, L, num_labels, position_size, seq_len, vocab_size
from symbert.tracer import call, held, repeat, scope


def layer(x: Tensor, mask: Tensor | None, act: str, p: float, p_attention: float) -> Tensor:
    """TransformerBlock: attention → add → LayerNorm; lin1 → activation → lin2 → dropout → add → LayerNorm.
    Its locals keep its input, the attention weights and each LayerNorm's output until it returns, and
    the attention's and the feed-forward's outputs until the LayerNorm after them returns."""
    with call():
        with scope("attention"), call():
            q, k, v = (split_heads(F.linear(n, x, H)) for n in ("q_lin", "k_lin", "v_lin"))
            held(q, k, v)  # the attention's locals, past the products' copies of them
            context, weights = attention(q, k, v, mask, p_attention)
            out = F.linear("out_lin", context, H)
        with call():
            held(out)
            attended = F.layernorm("sa_layer_norm", F.add(out, x))
        held(x, weights, attended)
        with scope("ffn"):
            hidden = dropout(F.linear("lin2", ACTIVATIONS[act](F.linear("lin1", attended, I)), H), p)
        held(hidden)
        return F.layernorm("output_layer_norm", F.add(hidden, attended))


def build(
    padding: bool = True,
    activation: str = "gelu",
    dropout: float = 0.1,
    attention_dropout: float = 0.1,
    seq_classif_dropout: float = 0.2,
    qa_dropout: float = 0.1,
    tie_word_embeddings: bool = True,
) -> dict[str, Tensor]:
    """Trace DistilBertModel.forward(input_ids, attention_mask) in training mode."""
    input_ids, _, attention_mask = inputs(token_types=False)
    x = embeddings(input_ids, None, dropout, positions_from_ids=False, type_buffer=False)
    held(x)  # DistilBertModel's ``embeddings``, until it returns
    with scope("transformer"):
        mask = mask_bias(attention_mask, padding)
        x = repeat(
            "layer", L, lambda h: layer(h, mask, activation, dropout, attention_dropout), x, (x.shape[0], seq_len, H)
        )
    return {"last_hidden_state": x}


# ---- task heads (Hugging Face's DistilBertFor* classes)


def mlm_scores(e: Encoded) -> Tensor:
    """vocab_transform, activation, vocab_layer_norm, and vocab_projector tied to the word embeddings
    (its own weight where the config unties them)."""
    x = ACTIVATIONS[e.options["activation"]](F.linear("vocab_transform", e.sequence, H))
    x = F.layernorm("vocab_layer_norm", x)
    return F.linear("vocab_projector", x, vocab_size, tied=e.decoder_weight())


def first_token(e: Encoded) -> Tensor:
    """The first token's vector through pre_classifier and ReLU."""
    return F.relu(F.linear("pre_classifier", F.select(e.sequence, 1, 0), H))


HEADS = heads.by_name(
    Head("mlm", "DistilBertForMaskedLM", masked_lm_head(mlm_scores)),
    Head(
        "sequence-classification",
        "DistilBertForSequenceClassification",
        heads.sequence_classification(first_token, lambda e: e.options["seq_classif_dropout"]),
        symbols=(num_labels,),
    ),
    Head(
        "token-classification",
        "DistilBertForTokenClassification",
        heads.token_classification(lambda e: e.options["dropout"]),
        symbols=(num_labels,),
    ),
    Head(
        "question-answering",
        "DistilBertForQuestionAnswering",
        heads.question_answering(lambda e: e.options["qa_dropout"]),
        labels=2,
    ),
    Head(
        "multiple-choice",
        "DistilBertForMultipleChoice",
        heads.multiple_choice(first_token, lambda e: e.options["seq_classif_dropout"]),
        batch=heads.CHOICE_BATCH,
        symbols=(C,),
    ),
)

SPEC = ModelSpec(
    name="distilbert",
    build=build,
    options=(
        Option("padding", True),
        Option("activation", "gelu", tuple(ACTIVATIONS), from_config=True),
        Option("dropout", 0.1, from_config=True),
        Option("attention_dropout", 0.1, from_config=True),
        Option("seq_classif_dropout", 0.2, from_config=True),
        Option("qa_dropout", 0.1, from_config=True),
        Option("tie_word_embeddings", True, from_config=True),
    ),
    param_components=(
        Component("embeddings", "embeddings", role="embeddings"),
        Component("self-attention", "transformer/layer/attention", role="attention"),
        Component("layernorms", "transformer/layer", ops=("layernorm",), role="norms"),
        Component("feed-forward", "transformer/layer/ffn", role="MLP"),
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
    constraints=(("sinusoidal_pos_embds", False),),
    config_defaults={"pad_token_id": 0},
    architecture="DistilBertModel",
    heads=HEADS,
    prefix="distilbert",
    tensor_plan=tensor_plan(
        "transformer/layer",
        ("attention/q_lin", "attention/k_lin", "attention/v_lin", "ffn/lin1"),
        ("attention/out_lin", "ffn/lin2"),
        ("vocab_projector",),
    ),
)
