"""BERT, written against the tracer the way the seed draws it (and RoBERTa, which differs in positions).

Embedding layer: word, position and token-type lookups, summed, layer-normalised, dropped out.
L post-LN transformer layers: multi-head self-attention, dropout, residual, layernorm, feed-forward,
dropout, residual, layernorm. Pooler: the first token through a dense layer and tanh.
Scopes and parameter names follow Hugging Face's BertModel.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from functools import partial

import sympy

import symbert.models.heads as heads
from symbert import ops as F
from symbert.ir import Role, Tensor
from symbert.models.heads import HEAD_NAMES, Encoded, Head
from symbert.models.layers import (
    ACTIVATIONS,
    attention,
    dropout,
    mask_bias,
    split_heads,
    token_input,
)
from symbert.models.spec import Component, ModelSpec, Option
from symbert.symbols import A, C, E, H, I, L, num_labels, position_size, seq_len, type_size, vocab_size
from symbert.tracer import buffer, call, held, registers, repeat, scope


def inputs(token_types: bool) -> tuple[Tensor, Tensor | None, Tensor]:
    """input_ids, token_type_ids (None without token types) and attention_mask, each [B, seq_len]."""
    input_ids = token_input("input_ids")
    token_type_ids = token_input("token_type_ids") if token_types else None
    return input_ids, token_type_ids, token_input("attention_mask", Role.MASK)


#: The embeddings' children in the order Hugging Face registers them (the forward looks up token types first);
#: RoBERTa's, which count positions from the token ids, register their position table last.
EMBEDDINGS = ("word_embeddings", "position_embeddings", "token_type_embeddings", "LayerNorm")
ROBERTA_EMBEDDINGS = ("word_embeddings", "token_type_embeddings", "LayerNorm", "position_embeddings")


def embeddings(
    input_ids: Tensor,
    token_type_ids: Tensor | None,
    p: float,
    positions_from_ids: bool,
    width: sympy.Expr = E,
    type_buffer: bool = True,
) -> Tensor:
    """Word + token-type + position lookups → sum → LayerNorm → dropout, each of ``width`` (E). The module
    registers [1, max_position_embeddings] int64 position ids and, with ``type_buffer``, token type ids."""
    with scope("embeddings"):
        ids = ("position_ids", "token_type_ids") if type_buffer else ("position_ids",)
        children = ROBERTA_EMBEDDINGS if positions_from_ids else EMBEDDINGS
        registers(children, tuple((name, (1, position_size), "int64") for name in ids))
        if positions_from_ids:
            position_ids = F.positions(input_ids.shape, input_ids)
        else:
            position_ids = buffer("position_ids", (1, seq_len), "int64")
        x = F.embedding("word_embeddings", input_ids, vocab_size, width)
        if token_type_ids is not None:
            x = F.add(x, F.embedding("token_type_embeddings", token_type_ids, type_size, width))
        x = F.add(x, F.embedding("position_embeddings", position_ids, position_size, width))
        return dropout(F.layernorm("LayerNorm", x), p)


def residual_block(name: str, x: Tensor, residual: Tensor, p: float) -> Tensor:
    """dense → dropout → add residual → LayerNorm, the post-LN pattern closing each sub-layer. Hugging
    Face's ``LayerNorm(hidden_states + input_tensor)`` keeps the dropped-out sum's operand until it returns."""
    with scope(name), call():
        y = dropout(F.linear("dense", x, H), p)
        held(y)
        return F.layernorm("LayerNorm", F.add(y, residual))


def layer(x: Tensor, mask: Tensor | None, act: str, p: float, p_attention: float) -> Tensor:
    """One post-LN transformer layer. BertLayer's locals keep its input, the attention's output and the
    attention weights (``self_attention_output, _ = self.attention(...)``) until it returns."""
    with call():
        with scope("attention"):
            with scope("self"), call():
                q, k, v = (split_heads(F.linear(n, x, H)) for n in ("query", "key", "value"))
                held(q, k, v)  # BertSelfAttention's locals, past the products' copies of them
                context, weights = attention(q, k, v, mask, p_attention)
            attended = residual_block("output", context, x, p)
        held(x, attended, weights)
        with scope("intermediate"):
            hidden = ACTIVATIONS[act](F.linear("dense", attended, I))
        return residual_block("output", hidden, attended, p)


def build(
    pooler: bool = True,
    token_types: bool = True,
    padding: bool = True,
    hidden_act: str = "gelu",
    hidden_dropout_prob: float = 0.1,
    attention_probs_dropout_prob: float = 0.1,
    classifier_dropout: float | None = None,
    positions_from_ids: bool = False,
    tie_word_embeddings: bool = True,
) -> dict[str, Tensor]:
    """Trace BertModel.forward(input_ids, token_type_ids, attention_mask) in training mode; ``padding``
    False: a batch without padding, whose all-ones mask Hugging Face drops."""
    input_ids, token_type_ids, attention_mask = inputs(token_types)
    x = embeddings(input_ids, token_type_ids, hidden_dropout_prob, positions_from_ids)
    held(x)  # BertModel's ``embedding_output``, until it returns
    with scope("encoder"):
        mask = mask_bias(attention_mask, padding)
        body = lambda h: layer(h, mask, hidden_act, hidden_dropout_prob, attention_probs_dropout_prob)  # noqa: E731
        x = repeat("layer", L, body, x, (x.shape[0], seq_len, H))
    if not pooler:
        return {"last_hidden_state": x}
    with scope("pooler"):
        return {"last_hidden_state": x, "pooler_output": F.tanh(F.linear("dense", F.select(x, 1, 0), H))}


# ---- task heads (Hugging Face's BertFor* classes)


def classifier_p(e: Encoded) -> float:
    """The classifier's dropout: ``classifier_dropout``, or the hidden dropout when it is unset."""
    p = e.options["classifier_dropout"]
    return e.options["hidden_dropout_prob"] if p is None else p


def pooled(e: Encoded) -> Tensor:
    return e.pooled


def lm_scores(e: Encoded) -> Tensor:
    """BertLMPredictionHead: transform (dense, activation, LayerNorm), then a decoder to the vocabulary
    whose weight is the word embeddings and whose bias is the head's own (:func:`~symbert.models.heads.lm_decoder`)."""
    with scope("cls"), scope("predictions"):
        with scope("transform"):
            x = ACTIVATIONS[e.options["hidden_act"]](F.linear("dense", e.sequence, H))
            x = F.layernorm("LayerNorm", x)
        return heads.lm_decoder(e, x)


def next_sentence_scores(e: Encoded) -> Tensor:
    """seq_relationship: the pooled vector to two scores (is the second segment the next one)."""
    with scope("cls"):
        return F.linear("seq_relationship", e.pooled, 2)


def masked_lm(e: Encoded, scores: Tensor) -> Tensor:
    """Cross-entropy of the scores over the vocabulary at every position against the labels."""
    return heads.cross_entropy("masked_lm", scores, heads.labels("labels", e.sequence.shape[:2]))


def masked_lm_head(scores: Callable[[Encoded], Tensor]) -> Callable[[Encoded, str], Tensor]:
    """A masked-LM head whose prediction head is ``scores``."""
    return lambda e, problem: masked_lm(e, scores(e))


def next_sentence(e: Encoded, problem: str) -> Tensor:
    scores = next_sentence_scores(e)
    return heads.cross_entropy("next_sentence", scores, heads.labels("labels", e.pooled.shape[:1]))


def pretraining(e: Encoded, problem: str) -> Tensor:
    """Both prediction heads, then the masked-LM loss plus the next-sentence loss."""
    scores, is_next = lm_scores(e), next_sentence_scores(e)
    next_loss = heads.cross_entropy("next_sentence", is_next, heads.labels("next_sentence_label", e.pooled.shape[:1]))
    return heads.summed(masked_lm(e, scores), next_loss)


def task_heads(family: str, *own: Head, classifier_p: Callable[[Encoded], float] = classifier_p) -> dict[str, Head]:
    """A BERT-style family's heads, in the order of ``HEAD_NAMES``: its ``own`` (masked LM, pre-training,
    and any that replaces one of BERT's of the same name), and BERT's sequence classification on the
    pooler, token classification, question answering and multiple choice on the pooler, with the
    family's classifier dropout."""
    bert = heads.by_name(
        Head(
            "sequence-classification",
            f"{family}ForSequenceClassification",
            heads.sequence_classification(pooled, classifier_p),
            pooler=True,
            symbols=(num_labels,),
        ),
        Head(
            "token-classification",
            f"{family}ForTokenClassification",
            heads.token_classification(classifier_p),
            symbols=(num_labels,),
        ),
        Head("question-answering", f"{family}ForQuestionAnswering", heads.question_answering(), labels=2),
        Head(
            "multiple-choice",
            f"{family}ForMultipleChoice",
            heads.multiple_choice(pooled, classifier_p),
            pooler=True,
            batch=heads.CHOICE_BATCH,
            symbols=(C,),
        ),
    )
    chosen = {**bert, **heads.by_name(*own)}
    return {name: chosen[name] for name in HEAD_NAMES if name in chosen}


HEADS = task_heads(
    "Bert",
    Head("mlm", "BertForMaskedLM", masked_lm_head(lm_scores)),
    Head("pretraining", "BertForPreTraining", pretraining, pooler=True),
    Head("next-sentence", "BertForNextSentencePrediction", next_sentence, pooler=True),
)


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


#: The config keys every BERT-style encoder has (Hugging Face's names), and BERT's with token types.
ENCODER_FIELDS = {
    "vocab_size": vocab_size,
    "hidden_size": H,
    "num_hidden_layers": L,
    "num_attention_heads": A,
    "intermediate_size": I,
    "max_position_embeddings": position_size,
}
FIELDS = {**ENCODER_FIELDS, "type_vocab_size": type_size}


def options(hidden_act: str, dropout: float) -> tuple[Option, ...]:
    """The options of BertConfig-style families, with the family's default activation and dropout."""
    return (
        Option("pooler", True),
        Option("token_types", True),
        Option("padding", True),
        Option("hidden_act", hidden_act, tuple(ACTIVATIONS), from_config=True),
        Option("hidden_dropout_prob", dropout, from_config=True),
        Option("attention_probs_dropout_prob", dropout, from_config=True),
    )


def activation_components(layer: str, attention: str, *extra: Component) -> tuple[Component, ...]:
    """Activation components of an encoder whose repeated layer is ``layer``: embeddings (then ``extra``),
    per layer the attention scores, layernorms, rest of attention, feed-forward; the pooler."""
    return (
        Component("embeddings", "embeddings", role="embeddings"),
        *extra,
        Component("attention scores", layer, region="attention_core", role="attention"),
        Component("layernorms", layer, ops=("layernorm",), role="norms"),
        Component("rest of attention", attention, role="attention"),
        Component("feed-forward", layer, role="MLP"),
        Component("pooler", "pooler", role="pooler"),
    )


#: Whether the LM head's decoder is tied to the word embeddings (:func:`symbert.models.heads.lm_decoder`).
TIED = Option("tie_word_embeddings", True, from_config=True)

PARAM_COMPONENTS = (
    Component("embeddings", "embeddings", role="embeddings"),
    Component("self-attention", "encoder/layer/attention/self", role="attention"),
    Component("layernorms", "encoder/layer", ops=("layernorm",), role="norms"),
    Component("attention output", "encoder/layer/attention/output", role="attention"),
    Component("intermediate", "encoder/layer/intermediate", role="MLP"),
    Component("output", "encoder/layer/output", role="MLP"),
    Component("pooler", "pooler", role="pooler"),
)


def tensor_plan(
    layer: str, colwise: tuple[str, ...], rowwise: tuple[str, ...], decoders: tuple[str, ...]
) -> dict[str, str]:
    """Megatron-LM's tensor-parallel plan for a BERT-style encoder whose repeated layer is ``layer``: the
    word embeddings split by vocabulary, sequence parallelism from the embeddings' LayerNorm on, the
    ``colwise`` linears (Q, K, V, the intermediate dense) split by outputs and the ``rowwise`` ones (the
    attention output and output dense) by inputs, and the LM decoders (tied to the word embeddings)
    split by vocabulary like them."""
    return {
        "embeddings/word_embeddings": "vocab",
        "embeddings/LayerNorm": "sequence",
        **{f"{layer}/{name}": "colwise" for name in colwise},
        **{f"{layer}/{name}": "rowwise" for name in rowwise},
        **{f"head/{name}": "colwise" for name in decoders},
    }


SPEC = ModelSpec(
    name="bert",
    build=build,
    options=(*options("gelu", 0.1), Option("classifier_dropout", None, from_config=True, optional=True), TIED),
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
        # Megatron-LM's BERT models (Shoeybi et al. 2019, table 4): BERT's vocabulary and positions, I = 4H.
        "bert-1.3b": official(24, 2048, 32),
        "bert-3.9b": official(48, 2560, 40),
    },
    aliases={
        "bert-tiny": "bert-L2-H128",
        "bert-mini": "bert-L4-H256",
        "bert-small": "bert-L4-H512",
        "bert-medium": "bert-L8-H512",
    },
    default_preset="bert-base",
    config_defaults={"pad_token_id": 0},
    architecture="BertModel",
    heads=HEADS,
    prefix="bert",
    tensor_plan=tensor_plan(
        "encoder/layer",
        ("attention/self/query", "attention/self/key", "attention/self/value", "intermediate/dense"),
        ("attention/output/dense", "output/dense"),
        ("cls/predictions/decoder", "lm_head/decoder"),
    ),
)


#: RoBERTa: BERT with position ids counted from the token ids, after the padding index and one more.
def roberta_lm_scores(e: Encoded) -> Tensor:
    """RobertaLMHead: dense, exact GELU, layer_norm, and the decoder (:func:`~symbert.models.heads.lm_decoder`)."""
    with scope("lm_head"):
        x = F.layernorm("layer_norm", F.gelu(F.linear("dense", e.sequence, H)))
        return heads.lm_decoder(e, x)


def first_token_classification(activation: Callable[[Tensor], Tensor]) -> Callable[[Encoded, str], Tensor]:
    """A classification head on the first token (RobertaClassificationHead with ``activation`` tanh):
    dropout, dense, the activation, dropout, out_proj, then the problem type's loss."""

    def build(e: Encoded, problem: str) -> Tensor:
        p = classifier_p(e)
        with scope("classifier"):
            x = activation(F.linear("dense", dropout(F.select(e.sequence, 1, 0), p), H))
            logits = heads.classifier(x, p, name="out_proj")
        return heads.classification_loss(logits, problem)

    return build


ROBERTA = replace(
    SPEC,
    name="roberta",
    build=partial(build, positions_from_ids=True),
    architecture="RobertaModel",
    heads=task_heads(
        "Roberta",
        Head("mlm", "RobertaForMaskedLM", masked_lm_head(roberta_lm_scores)),
        Head(
            "sequence-classification",
            "RobertaForSequenceClassification",
            first_token_classification(F.tanh),
            symbols=(num_labels,),
        ),
    ),
    prefix="roberta",
    presets={
        "roberta-base": official(12, 768, 12, vocab_size=50265, max_position_embeddings=514, type_vocab_size=1),
        "roberta-large": official(24, 1024, 16, vocab_size=50265, max_position_embeddings=514, type_vocab_size=1),
    },
    aliases={},
    default_preset="roberta-base",
    position_offset=2,
    # RobertaConfig's own defaults, not roberta-base's
    config_defaults={"vocab_size": 50265, "max_position_embeddings": 512, "type_vocab_size": 2, "pad_token_id": 1},
)
