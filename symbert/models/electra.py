"""ELECTRA: BERT's encoder on embeddings of width E, projected to H when E ≠ H, and no pooler.

The discriminator (ElectraForPreTraining) scores every token as original or replaced; the generator's
masked-LM head maps H back to E and decodes with the word embeddings. Scopes and parameter names follow
Hugging Face's ElectraModel and ElectraFor* classes.
"""

from __future__ import annotations

from collections.abc import Mapping

import symbert.models.heads as heads
from symbert import ops as F
from symbert.ir import Tensor, numel
from symbert.models.bert import (
    FIELDS,
    PARAM_COMPONENTS,
    activation_components,
    embeddings,
    first_token_classification,
    inputs,
    layer,
    masked_lm_head,
    official,
    options,
    task_heads,
)
from symbert.models.heads import Encoded, Head
from symbert.models.layers import ACTIVATIONS, dropout, mask_bias
from symbert.models.spec import Component, ModelSpec, Option
from symbert.symbols import C, E, H, I, L, num_labels, seq_len, vocab_size
from symbert.tracer import held, repeat, scope


def projected(values: Mapping[str, int]) -> bool:
    """Whether ElectraModel has ``embeddings_project``: only when embedding_size ≠ hidden_size."""
    return values["embedding_size"] != values["hidden_size"]


def build(
    embeddings_project: bool = True,
    token_types: bool = True,
    padding: bool = True,
    hidden_act: str = "gelu",
    hidden_dropout_prob: float = 0.1,
    attention_probs_dropout_prob: float = 0.1,
    classifier_dropout: float | None = None,
    summary_activation: str = "gelu",
    summary_last_dropout: float = 0.1,
    tie_word_embeddings: bool = True,
) -> dict[str, Tensor]:
    """Trace ElectraModel.forward(input_ids, token_type_ids, attention_mask) in training mode: embeddings
    of width E and their projection to H, or (E = H, no projection) embeddings of width H."""
    input_ids, token_type_ids, attention_mask = inputs(token_types)
    width = E if embeddings_project else H
    x = embeddings(input_ids, token_type_ids, hidden_dropout_prob, positions_from_ids=False, width=width)
    if embeddings_project:
        x = F.linear("embeddings_project", x, H)
    held(x)  # ElectraModel's ``embedding_output`` (projected where it is), until it returns
    with scope("encoder"):
        mask = mask_bias(attention_mask, padding, like=x)
        body = lambda h: layer(h, mask, hidden_act, hidden_dropout_prob, attention_probs_dropout_prob)  # noqa: E731
        x = repeat("layer", L, body, x, (x.shape[0], seq_len, H))
    return {"last_hidden_state": x}


# ---- task heads (Hugging Face's ElectraFor* classes)


def generator_scores(e: Encoded) -> Tensor:
    """ElectraGeneratorPredictions (dense H → E, exact GELU, LayerNorm at width E), then generator_lm_head
    E → vocab_size, its weight the word embeddings (its own where the config unties them) and its bias
    its own."""
    with scope("generator_predictions"):
        x = F.layernorm("LayerNorm", F.gelu(F.linear("dense", e.sequence, E)))
    return F.linear("generator_lm_head", x, vocab_size, tied=e.decoder_weight())


def discriminator(e: Encoded, problem: str) -> Tensor:
    """ElectraDiscriminatorPredictions (dense, activation, dense_prediction to one logit per token), then
    binary cross-entropy over the tokens whose attention_mask is 1, which Hugging Face selects with a
    boolean index: the logits and labels of the active tokens, the labels made float.

    How many tokens are active is the data's business. A batch without padding has all B·seq_len; a
    padded one at least one padded token, and symbert counts the most a padded batch keeps, B·seq_len − 1
    (one padded token, the batch ``validate`` builds).
    """
    with scope("discriminator_predictions"):
        hidden = ACTIVATIONS[e.options["hidden_act"]](F.linear("dense", e.sequence, H))
        logits = F.reshape(F.linear("dense_prediction", hidden, 1), e.sequence.shape[:2], name="squeeze")
    labels = heads.labels("labels", e.sequence.shape[:2])
    tokens = numel(e.sequence.shape[:2])
    active = tokens - 1 if e.options["padding"] else tokens
    with scope("loss", in_param_name=False), scope("discriminator", in_param_name=False):
        logits, labels = F.mask_select(heads.given("attention_mask"), logits, labels, count=active, name="active")
        return F.bce_with_logits(logits, F.cast(labels, "float32", name="float"))


def summary(e: Encoded) -> Tensor:
    """ElectraSequenceSummary as ELECTRA configures it: the first token, a dense H → H, the summary
    activation and dropout."""
    with scope("sequence_summary"):
        x = F.linear("summary", F.select(e.sequence, 1, 0), H)
        return dropout(ACTIVATIONS[e.options["summary_activation"]](x), e.options["summary_last_dropout"])


HEADS = task_heads(
    "Electra",
    Head("mlm", "ElectraForMaskedLM", masked_lm_head(generator_scores)),
    Head("pretraining", "ElectraForPreTraining", discriminator),
    Head(
        "sequence-classification",
        "ElectraForSequenceClassification",
        first_token_classification(F.gelu),
        symbols=(num_labels,),
    ),
    Head(
        "multiple-choice",
        "ElectraForMultipleChoice",
        heads.multiple_choice(summary, lambda e: 0.0),
        batch=heads.CHOICE_BATCH,
        symbols=(C,),
    ),
)

PROJECTION = "embeddings_project"
SPEC = ModelSpec(
    name="electra",
    build=build,
    options=(
        Option("embeddings_project", True, decided_by=projected),
        *(o for o in options("gelu", 0.1) if o.name != "pooler"),
        Option("classifier_dropout", None, from_config=True, optional=True),
        Option("summary_activation", "gelu", tuple(ACTIVATIONS), from_config=True),
        Option("summary_last_dropout", 0.1, from_config=True),
        Option("tie_word_embeddings", True, from_config=True),
    ),
    param_components=(
        PARAM_COMPONENTS[0],
        Component("embedding projection", PROJECTION, role="embeddings"),
        *PARAM_COMPONENTS[1:],
    ),
    activation_components=activation_components(
        "encoder/layer", "encoder/layer/attention", Component("embedding projection", PROJECTION, role="embeddings")
    ),
    fields={**FIELDS, "embedding_size": E},
    divides=(("hidden_size", "num_attention_heads"),),
    substitutions={I: 4 * H},
    presets={
        "electra-small": official(12, 256, 4, embedding_size=128),
        "electra-base": official(12, 768, 12, embedding_size=768),
        "electra-large": official(24, 1024, 16, embedding_size=1024),
    },
    default_preset="electra-small",
    constraints=(
        ("summary_type", "first"),
        ("summary_use_proj", True),
        ("summary_first_dropout", 0.0),
        ("summary_proj_to_labels", False),
    ),
    config_defaults={"pad_token_id": 0},
    architecture="ElectraModel",
    heads=HEADS,
    prefix="electra",
)
