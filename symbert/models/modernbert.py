"""ModernBERT, as Hugging Face's ModernBertModel computes it.

Token embeddings, a LayerNorm and dropout; no position embeddings: rotary tables, one pair (cos, sin)
for the global layers' θ and one for the local layers', rotate Q and K in every layer. L pre-LN layers:
LayerNorm → fused QKV → rotary → attention → Wo → residual, LayerNorm → GeGLU MLP (Wi to 2I, GELU of
one half times the other, Wo) → residual; then a final LayerNorm. No linear biases, LayerNorms without
bias (the config's ``*_bias`` flags).

The layers are not all alike. Layer 0 attends globally and has no attention norm (an identity); of the
others, every ``global_attn_every_n_layers``-th attends globally, the rest over a sliding window of
``local_attention`` tokens: L_global = ⌈L/global_every⌉ global layers, L − L_global local ones. The
graph is layer 0, then the other global layers repeated L_global − 1 times, then the local layers
repeated L − L_global times; the order does not change what they keep or compute, and the graph records
the real one (:func:`~symbert.tracer.pattern`) for the diagrams. Eager and sdpa
attention still compute all seq_len² scores: the window lives in the mask, [B, 1, seq_len, seq_len],
which Hugging Face builds for the local layers even without padding (``create_bidirectional_sliding_
window_mask``), except for an unpadded batch shorter than ⌊local_attention/2⌋: the mask, and the
addition of it, then exist only where the bracket 1 − [seq_len < ⌊window/2⌋] says. The global layers
get the padding mask, none without padding.
"""

from __future__ import annotations

from collections.abc import Callable

import sympy

import symbert.models.bert as bert
import symbert.models.heads as heads
from symbert import ops as F
from symbert.ir import Role, Tensor
from symbert.models.bert import ENCODER_FIELDS
from symbert.models.heads import Encoded, Head
from symbert.models.layers import ACTIVATIONS, attention, dropout, mask_bias, split_heads, token_input
from symbert.models.spec import Component, ModelSpec, Option
from symbert.symbols import A, C, H, I, L, L_global, below, global_every, num_labels, seq_len, vocab_size, window
from symbert.tracer import call, held, pattern, repeat, scope

EPS = 1e-5


def layer(x: Tensor, mask: Tensor | None, rotary: tuple[Tensor, Tensor], o: dict, first: bool = False) -> Tensor:
    """One pre-LN layer; the first has no attention norm. The attention's locals keep the projection
    and the rotated Q and K until it returns, and the layer's keep the attention's output and weights until it does."""
    with call():
        normed = x if first else F.layernorm("attn_norm", x, EPS, bias=o["norm_bias"])
        with scope("attn"), call():
            qkv = F.linear("Wqkv", normed, 3 * H, bias=o["attention_bias"])
            q, k, v = (split_heads(F.narrow(qkv, 2, i * H, H)) for i in range(3))
            q, k = (F.rope(t, *rotary, name=f"rope_{n}") for t, n in ((q, "q"), (k, "k")))
            held(qkv, q, k)
            context, weights = attention(q, k, v, mask, o["attention_dropout"], fused_qkv=True)
            out = dropout(F.linear("Wo", context, H, bias=o["attention_bias"]), o["attention_dropout"])
        held(out, weights)
        x = F.add(x, out)
        normed = F.layernorm("mlp_norm", x, EPS, bias=o["norm_bias"])
        with scope("mlp"):
            wi = F.linear("Wi", normed, 2 * I, bias=o["mlp_bias"])
            hidden = F.mul(ACTIVATIONS[o["hidden_activation"]](F.narrow(wi, 2, 0, I)), F.narrow(wi, 2, I, I))
            return F.add(x, F.linear("Wo", dropout(hidden, o["mlp_dropout"]), H, bias=o["mlp_bias"]))


def build(
    padding: bool = True,
    hidden_activation: str = "gelu",
    classifier_activation: str = "gelu",
    embedding_dropout: float = 0.0,
    attention_dropout: float = 0.0,
    mlp_dropout: float = 0.0,
    classifier_dropout: float = 0.0,
    norm_bias: bool = False,
    attention_bias: bool = False,
    mlp_bias: bool = False,
    decoder_bias: bool = True,
    classifier_bias: bool = False,
    classifier_pooling: str = "cls",
    tie_word_embeddings: bool = True,
) -> dict[str, Tensor]:
    """Trace ModernBertModel.forward(input_ids, attention_mask) in training mode; ``padding`` False: a
    batch without padding, for which the global layers get no mask."""
    o = locals()
    input_ids, attention_mask = token_input("input_ids"), token_input("attention_mask", Role.MASK)
    with scope("embeddings"):
        x = F.embedding("tok_embeddings", input_ids, vocab_size, H)
        x = dropout(F.layernorm("norm", x, EPS, bias=norm_bias), embedding_dropout)
    with scope("masks", in_param_name=False):
        rows = (x.shape[0], 1, seq_len, seq_len)
        half = sympy.floor(window / 2)  # Hugging Face's sliding_window; an unpadded batch shorter gets no mask
        present = None if padding else 1 - below(seq_len, half)
        sliding = F.mask_bias(attention_mask, rows, name="sliding_window", window=half, present=present)
        masks = mask_bias(attention_mask, padding), sliding
    with scope("rotary_emb"):
        positions = F.positions((1, seq_len))
        tables = [F.rope_tables(positions, H / A, name=kind) for kind in ("global", "local")]
    held(sliding, positions)  # locals of the model's forward
    shape = (x.shape[0], seq_len, H)
    with scope("layers"):
        with scope("0", in_param_name=False):
            x = layer(x, masks[0], tables[0], o, first=True)
        x = repeat("global", L_global - 1, lambda h: layer(h, masks[0], tables[0], o), x, shape)
        x = repeat("local", L - L_global, lambda h: layer(h, masks[1], tables[1], o), x, shape)
        pattern((("global", ("0", "global"), sympy.S.One), ("local", ("local",), global_every - 1)), L_global, L)
    return {"last_hidden_state": F.layernorm("final_norm", x, EPS, bias=norm_bias)}


def prediction_head(x: Tensor, e: Encoded) -> Tensor:
    """ModernBertPredictionHead: dense, activation, LayerNorm."""
    with scope("head"):
        x = ACTIVATIONS[e.options["classifier_activation"]](F.linear("dense", x, H, bias=e.options["classifier_bias"]))
        return F.layernorm("norm", x, EPS, bias=e.options["norm_bias"])


def masked_lm(e: Encoded, problem: str) -> Tensor:
    """ModernBertForMaskedLM (dense prediction): the head, a decoder tied to the token embeddings (unless
    the config unties them) with its own bias, then Hugging Face's ``ForMaskedLMLoss``: the logits cast
    to float32 (a copy in a 16-bit model), cross-entropy over the vocabulary at every position."""
    tied = e.decoder_weight(f"{e.prefix}.embeddings.tok_embeddings.weight")
    x = prediction_head(e.sequence, e)
    logits = F.linear("decoder", x, vocab_size, bias=e.options["decoder_bias"], tied=tied)
    return bert.masked_lm(e, F.cast(logits, "float32", name="float"))


def classifier_p(e: Encoded) -> float:
    return e.options["classifier_dropout"]


def tokens(e: Encoded) -> Tensor:
    """The prediction head on every token (token classification, question answering)."""
    return prediction_head(e.sequence, e)


def first_token(x: Tensor, mask: Tensor) -> Tensor:
    """ModernBertForSequenceClassification's "cls": the first token, a view."""
    return F.select(x, 1, 0)


def first_kept(x: Tensor, mask: Tensor) -> Tensor:
    """ModernBertForMultipleChoice's "cls": each row's first token the attention mask keeps,
    ``x[arange(rows), mask.argmax(-1)]``, a copy whose backward keeps both int64 indices."""
    return F.index(x, F.positions(x.shape[:1], name="rows"), F.argmax(mask, name="cls_mask"), name="cls")


def pooled(cls: Callable[[Tensor, Tensor], Tensor]) -> Callable[[Encoded], Tensor]:
    """The sequence pooled as ``classifier_pooling`` says, through the prediction head: "cls" as ``cls``
    picks it, "mean" the mean of the tokens the attention mask (as rows) keeps."""

    def pool(e: Encoded) -> Tensor:
        mask = heads.rows(heads.given("attention_mask"))
        if e.options["classifier_pooling"] == "cls":
            return prediction_head(cls(e.sequence, mask), e)
        return prediction_head(F.masked_mean(e.sequence, mask, name="mean_pooling"), e)

    return pool


def read(data: dict) -> dict:
    """A config's ``layer_types`` (transformers ≥ 5 writes it) as ``global_attn_every_n_layers``: layer 0
    and every n-th attend globally, the others over the window; any other pattern is refused. A
    ``head_dim`` (the rotary tables' width) other than hidden_size/num_attention_heads is refused."""
    head_dim, hidden, heads = (
        data.get(k, d) for k, d in (("head_dim", None), ("hidden_size", 768), ("num_attention_heads", 12))
    )
    if head_dim is not None and not (isinstance(hidden, int) and isinstance(heads, int) and heads > 0):
        raise ValueError(f"head_dim={head_dim!r} needs integer hidden_size and num_attention_heads")
    if head_dim is not None and head_dim != hidden // heads:
        raise ValueError(f"symbert models ModernBERT with head_dim hidden_size/num_attention_heads, got {head_dim!r}")
    types = data.get("layer_types")
    if types is None:
        return data
    if not isinstance(types, list) or types[:1] != ["full_attention"]:
        raise ValueError("layer_types must list full_attention first, then a full_attention layer every n layers")
    full = [i for i, t in enumerate(types) if t == "full_attention"]
    every = full[1] if len(full) > 1 else len(types)
    pattern = ["sliding_attention" if i % every else "full_attention" for i in range(len(types))]
    if types != pattern:
        raise ValueError("symbert models layer_types as one full_attention layer every n, from layer 0")
    if data.get("global_attn_every_n_layers", every) != every:
        raise ValueError(
            f"global_attn_every_n_layers={data['global_attn_every_n_layers']!r} is not the layer_types' {every}"
        )
    if data.get("num_hidden_layers", len(types)) != len(types):
        raise ValueError(f"layer_types lists {len(types)} layers, num_hidden_layers is {data['num_hidden_layers']}")
    return {**data, "global_attn_every_n_layers": every, "num_hidden_layers": len(types)}


def check(values: dict) -> None:
    """An even head width (Hugging Face's rotary tables need one); two heads at least (eager attention's
    product copies V only when batch and heads cannot be viewed as one dimension, see
    :func:`~symbert.models.layers.attention_core`); one local layer at least: with none (one layer, or a
    global layer every layer) Hugging Face computes no local rotary tables, which the graph would count."""
    if values["hidden_size"] // values["num_attention_heads"] % 2:
        raise ValueError("ModernBERT's rotary embedding needs an even head width hidden_size/num_attention_heads")
    if values["num_attention_heads"] < 2:
        raise ValueError("symbert models ModernBERT with num_attention_heads at least 2 (one head keeps V in place)")
    if values["num_hidden_layers"] < 2 or values["global_attn_every_n_layers"] < 2:
        raise ValueError(
            "symbert models ModernBERT with a local layer: num_hidden_layers and global_attn_every_n_layers "
            f"must be at least 2, got {values['num_hidden_layers']} and {values['global_attn_every_n_layers']}"
        )


def released(layers: int, hidden: int, heads: int, intermediate: int) -> dict[str, object]:
    """A released ModernBERT config (answerdotai/ModernBERT-base, -large): 50368 tokens, 8192 positions,
    a global layer every 3, a local window of 128."""
    return {
        "vocab_size": 50368,
        "hidden_size": hidden,
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
        "intermediate_size": intermediate,
        "max_position_embeddings": 8192,
        "global_attn_every_n_layers": 3,
        "local_attention": 128,
    }


ATTENTION = tuple(Component("attention", f"layers/{kind}/attn", role="attention") for kind in ("0", "global", "local"))
MLP = tuple(Component("MLP", f"layers/{kind}/mlp", role="MLP") for kind in ("0", "global", "local"))
GELU = tuple(ACTIVATIONS)

SPEC = ModelSpec(
    name="modernbert",
    build=build,
    options=(
        Option("padding", True),
        Option("hidden_activation", "gelu", GELU, from_config=True),
        Option("classifier_activation", "gelu", GELU, from_config=True),
        *(Option(p, 0.0, from_config=True) for p in ("embedding_dropout", "attention_dropout", "mlp_dropout")),
        Option("classifier_dropout", 0.0, from_config=True),
        *(Option(b, False, from_config=True) for b in ("norm_bias", "attention_bias", "mlp_bias")),
        Option("decoder_bias", True, from_config=True),
        Option("classifier_bias", False, from_config=True),
        Option("classifier_pooling", "cls", ("cls", "mean"), from_config=True),
        Option("tie_word_embeddings", True, from_config=True),
    ),
    param_components=(
        Component("embeddings", "embeddings", role="embeddings"),
        Component("layernorms", "layers", ops=("layernorm",), role="norms"),
        *ATTENTION,
        *MLP,
        Component("final norm", "final_norm", role="norms"),
    ),
    activation_components=(
        Component("embeddings", "embeddings", role="embeddings"),
        Component("attention scores", "layers", region="attention_core", role="attention"),
        Component("layernorms", "layers", ops=("layernorm",), role="norms"),
        *(Component("rest of attention", c.scope, role="attention") for c in ATTENTION),
        *(Component("feed-forward", c.scope, role="MLP") for c in MLP),
        Component("final norm", "final_norm", role="norms"),
        Component("masks", "masks", role="attention"),
        Component("rotary tables", "rotary_emb", role="attention"),
    ),
    fields={**ENCODER_FIELDS, "global_attn_every_n_layers": global_every, "local_attention": window},
    divides=(("hidden_size", "num_attention_heads"),),
    derived={L_global: sympy.ceiling(L / global_every)},
    presets={
        "modernbert-base": released(22, 768, 12, 1152),
        "modernbert-large": released(28, 1024, 16, 2624),
    },
    default_preset="modernbert-base",
    constraints=(("sparse_prediction", False),),
    inert=(
        "initializer_cutoff_factor",
        "norm_eps",
        "cls_token_id",
        "sep_token_id",
        "rope_parameters",
        "deterministic_flash_attn",
        "sparse_pred_ignore_index",
    ),
    read_keys=("layer_types", "head_dim"),
    config_defaults={"pad_token_id": 50283},
    read=read,
    check=check,
    architecture="ModernBertModel",
    heads=heads.by_name(
        Head("mlm", "ModernBertForMaskedLM", masked_lm),
        Head(
            "sequence-classification",
            "ModernBertForSequenceClassification",
            heads.sequence_classification(pooled(first_token), classifier_p),
            symbols=(num_labels,),
        ),
        Head(
            "token-classification",
            "ModernBertForTokenClassification",
            heads.token_classification(classifier_p, tokens),
            symbols=(num_labels,),
        ),
        Head(
            "question-answering",
            "ModernBertForQuestionAnswering",
            heads.question_answering(classifier_p, tokens, name="classifier"),
            labels=2,
        ),
        Head(
            "multiple-choice",
            "ModernBertForMultipleChoice",
            heads.multiple_choice(pooled(first_kept), classifier_p),
            batch=heads.CHOICE_BATCH,
            symbols=(C,),
        ),
    ),
    prefix="model",
)
