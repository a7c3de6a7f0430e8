"""DeBERTa-v2/v3: BERT's post-LN encoder with disentangled attention over bucketed relative positions.

Embeddings: word lookups (plus absolute positions with ``position_biased_input``), LayerNorm, times the
padding mask, dropout. The encoder normalises one table of 2·position_buckets relative-position
embeddings and builds the relative position of every query–key pair once (log buckets). Each layer's
attention adds to the content scores Q·Kᵀ two position terms: content→position (queries against the
projected position table, gathered at each pair's bucket) and position→content (keys against it,
gathered and transposed), all scaled by √(3·d); the scores are filled with the dtype's minimum where the
mask is 0 before the softmax. Scopes, parameter names and the op order follow Hugging Face's
``DebertaV2Model`` (``modeling_deberta_v2.py``).
"""

from __future__ import annotations

import sympy

import symbert.models.heads as heads
from symbert import ops as F
from symbert.ir import Role, Tensor
from symbert.models.bert import ENCODER_FIELDS, TIED, masked_lm_head, residual_block
from symbert.models.heads import Encoded, Head
from symbert.models.layers import ACTIVATIONS, dropout, token_input
from symbert.models.spec import Component, ModelSpec, Option
from symbert.symbols import (
    A,
    C,
    E,
    H,
    I,
    L,
    either,
    is_one,
    num_labels,
    position_buckets,
    position_size,
    seq_len,
    vocab_size,
)
from symbert.tracer import TraceError, active, buffer, call, held, param_name, region, registers, repeat, scope

#: The regions of the content scores (``--recompute selective`` recomputes it) and of the position terms.
ATTENTION_CORE, POSITION_SCORES = "attention_core", "position_scores"
#: The position terms every supported config has: pos_att_type p2c and c2p (the scale is √(3·d)).
SCALE_FACTOR = 3


def embeddings(input_ids: Tensor, mask: Tensor, p: float, position_biased_input: bool) -> Tensor:
    """DebertaV2Embeddings: word (+ position) lookups → LayerNorm → × the padding mask → dropout; the
    lookups stay referenced until it returns."""
    with scope("embeddings"), call():
        registers(buffers=(("position_ids", (1, position_size), "int64"),))
        x = F.embedding("word_embeddings", input_ids, vocab_size, E)
        if position_biased_input:
            position_ids = buffer("position_ids", (1, seq_len), "int64")
            positions = F.embedding("position_embeddings", position_ids, position_size, E)
            held(x, positions)
            x = F.add(x, positions)
        x = F.layernorm("LayerNorm", x)
        padding = F.mask_bias(mask, (*mask.shape, 1), name="mask")
        x = F.mul(x, padding, name="mask_multiply")
        return dropout(x, p)


def heads_of(x: Tensor) -> Tensor:
    """transpose_for_scores: [rows, n, H] → [rows·A, n, H/A] (view, permute, contiguous copy, view)."""
    rows, n = x.shape[0], x.shape[1]
    split = F.transpose(F.reshape(x, (rows, n, A, H / A)), 1, 2)
    return F.reshape(contiguous(split, n), (rows * A, n, H / A))


def contiguous(x: Tensor, n: sympy.Expr) -> Tensor:
    """``.contiguous()`` of heads permuted between [rows, n, A, H/A] and [rows, A, n, H/A]: a copy, except
    with one head or n = 1, where the permutation is already contiguous and PyTorch returns the tensor."""
    return F.fold(x, either(is_one(A), is_one(n)), name="contiguous")


def scaled(x: Tensor, name: str) -> Tensor:
    """x divided by the 0-dim tensor √(d·3), which the division keeps for backward."""
    return F.mul(x, F.constant(name=f"{name}_scale"), name=name)


def position_projection(name: str, table: Tensor, rows: sympy.Expr) -> Tensor:
    """The relative-position table [1, 2k, H] projected by ``name``, split into heads and repeated for
    every row of the batch: [rows·A, 2k, H/A]."""
    projected = heads_of(F.linear(name, table, H))
    return F.tile(projected, (rows * A, 2 * position_buckets, H / A), name=f"{name}_repeat")


def position_scores(x: Tensor, table: Tensor, index: Tensor, name: str) -> Tensor:
    """x·tableᵀ over the 2k buckets, then each pair's bucket gathered: [rows·A, seq_len, seq_len]."""
    scores = F.matmul(x, F.transpose(table, 1, 2), name=f"{name}_scores")
    return F.gather(scores, F.expand(index, (*scores.shape[:2], seq_len), name=f"{name}_index"), name=name)


def self_attention(
    x: Tensor, mask: Tensor, relative_pos: Tensor, rel_embeddings: Tensor, share_att_key: bool, p: float, p_att: float
) -> Tensor:
    """DisentangledSelfAttention with c2p and p2c terms, [rows, seq_len, H] → [rows, seq_len, H]. Its
    locals keep the dropped-out position table, the position bias, the mask's bool copy and the filled
    scores until it returns."""
    rows = x.shape[0]
    with scope("self"), call():
        q, k, v = (heads_of(F.linear(n, x, H)) for n in ("query_proj", "key_proj", "value_proj"))
        k_scaled = scaled(F.transpose(k, 1, 2), "key_scaled")
        with region(ATTENTION_CORE):
            scores = F.matmul(q, k_scaled, name="scores")
        with region(POSITION_SCORES):
            table = dropout(rel_embeddings, p)
            held(table)
            bias = position_bias(q, k, relative_pos, table, share_att_key)
        with region(ATTENTION_CORE):
            scores = F.reshape(F.add(scores, bias, name="add_position"), (rows, A, seq_len, seq_len))
        as_bool = F.cast(mask, "bool", name="mask_bool")
        filled = F.invert_mask(as_bool)
        with region(ATTENTION_CORE):
            scores = F.masked_fill(scores, filled, name="fill_mask")
            held(bias, as_bool, scores)
            probs = F.reshape(dropout(F.softmax(scores), p_att), (rows * A, seq_len, seq_len))
            context = F.matmul(probs, v, name="context")
        context = F.transpose(F.reshape(context, (rows, A, seq_len, H / A)), 1, 2)
        return F.reshape(contiguous(context, seq_len), (rows, seq_len, H))


def position_bias(q: Tensor, k: Tensor, relative_pos: Tensor, rel_embeddings: Tensor, share_att_key: bool) -> Tensor:
    """disentangled_attention_bias: the content→position scores (queries against the projected position
    keys, at each pair's bucket) plus the position→content ones (keys against the position queries,
    transposed), each scaled and summed into the first in place: [rows·A, seq_len, seq_len]. Its locals
    keep both gathered scores until it returns."""
    rows = q.shape[0] / A
    with call():
        table = F.reshape(rel_embeddings, (1, 2 * position_buckets, H), name="rel_table")
        if share_att_key:
            pos_query = position_projection("query_proj", table, rows)
            pos_key = position_projection("key_proj", table, rows)
        else:
            pos_key = position_projection("pos_key_proj", table, rows)
            pos_query = position_projection("pos_query_proj", table, rows)
        c2p = position_scores(q, pos_key, F.clamp(relative_pos, name="c2p_pos"), "c2p")
        bias = F.shift(scaled(c2p, "c2p_scaled"), 0.0, name="score")
        p2c = position_scores(k, pos_query, F.clamp(relative_pos, name="p2c_pos"), "p2c")
        held(c2p, p2c)
        return F.add(bias, scaled(F.transpose(p2c, 1, 2), "p2c_scaled"), name="score_add", inplace=True)


def layer(
    x: Tensor,
    mask: Tensor,
    relative_pos: Tensor,
    rel_embeddings: Tensor,
    options: dict[str, object],
) -> Tensor:
    """DebertaV2Layer: disentangled attention, then BERT's post-LN output blocks; its locals keep the
    attention's output until it returns (under autocast no product keeps that float32 tensor)."""
    p, act = options["hidden_dropout_prob"], options["hidden_act"]
    with call():
        with scope("attention"):
            p_att, share = options["attention_probs_dropout_prob"], options["share_att_key"]
            context = self_attention(x, mask, relative_pos, rel_embeddings, share, p, p_att)
            x = residual_block("output", context, x, p)
        held(x)
        with scope("intermediate"):
            hidden = ACTIVATIONS[act](F.linear("dense", x, I))
        return residual_block("output", hidden, x, p)


def conv_layer(x: Tensor, residual: Tensor, mask: Tensor, p: float, kernel: int, groups: int, act: str) -> Tensor:
    """ConvLayer, on the first layer's output (``residual``) and the embeddings' (``x``): the embeddings
    permuted to [rows, H, seq_len] and copied, a Conv1d over the sequence (same length: an odd kernel,
    padding (kernel − 1)/2), permuted back and copied, filled with 0 in place where the mask is 0 (the bool
    of 1 − mask, expanded), dropout, ``conv_act``, plus the residual, LayerNorm, times the mask made
    float. Its locals keep the filled output until the activation's is made, and the bool mask, the
    activation's output, the sum and the LayerNorm's until it returns."""
    rows = x.shape[0]
    with scope("conv"), call():
        channels = F.fold(F.transpose(x, 1, 2), is_one(seq_len), name="contiguous")
        out = F.conv1d("conv", channels, H, kernel, (kernel - 1) // 2, groups)
        out = F.fold(F.transpose(out, 1, 2), is_one(seq_len), name="contiguous_out")
        flipped = F.mask_bias(mask, mask.shape, name="rsub", dtype="int64")
        rmask = F.cast(flipped, "bool", name="rmask")
        filled = F.expand(F.reshape(rmask, (rows, seq_len, 1)), out.shape, name="rmask_expand")
        out = F.masked_fill(out, filled, name="fill_mask", inplace=True)
        with call():
            held(out)  # ``out = act(dropout(out))``: the filled output goes at the assignment
            out = ACTIVATIONS[act](dropout(out, p))
        total = F.add(residual, out, name="add_residual")
        normed = F.layernorm("LayerNorm", total)
        held(rmask, out, total, normed)
        return F.mul(normed, F.mask_bias(mask, (*mask.shape, 1), name="mask"), name="mask_multiply")


def build(
    hidden_act: str = "gelu",
    hidden_dropout_prob: float = 0.1,
    attention_probs_dropout_prob: float = 0.1,
    position_biased_input: bool = False,
    share_att_key: bool = True,
    norm_rel_ebd: str = "layer_norm",
    legacy: bool = True,
    cls_dropout: float | None = None,
    pooler_dropout: float = 0.0,
    pooler_hidden_act: str = "gelu",
    conv_kernel_size: int = 0,
    conv_groups: int = 1,
    conv_act: str = "tanh",
    tie_word_embeddings: bool = True,
) -> dict[str, Tensor]:
    """Trace DebertaV2Model.forward(input_ids, attention_mask) in training mode. Hugging Face always
    applies the mask (an all-ones one included), so there is no ``padding`` option. With
    ``conv_kernel_size`` > 0 the first layer's output goes through :func:`conv_layer`, and the encoder's
    tuple of layer outputs holds the convolution's output instead: the graph is that first layer
    (``layer/0``), the convolution, then the other L − 1 layers repeated (``layer/rest``)."""
    options = dict(locals())
    input_ids = token_input("input_ids")
    attention_mask = token_input("attention_mask", Role.MASK)
    rows = attention_mask.shape[0]
    held(F.zeros((rows, seq_len), name="token_type_ids"))
    x = embeddings(input_ids, attention_mask, hidden_dropout_prob, position_biased_input)
    held(x)
    shape = (rows, seq_len, H)
    with scope("encoder"), call():
        # DebertaV2Encoder's order; the layers run last
        registers(("layer", "rel_embeddings", "LayerNorm", "conv"))
        mask = F.mask_bias(attention_mask, (rows, 1, seq_len, seq_len), name="attention_mask", dtype="int64")
        relative_pos = F.positions((1, seq_len, seq_len), name="relative_pos")
        rel_embeddings = F.parameter("rel_embeddings", (2 * position_buckets, H))
        if norm_rel_ebd == "layer_norm":
            rel_embeddings = F.layernorm("LayerNorm", rel_embeddings)
        held(mask, relative_pos, rel_embeddings)

        def body(h: Tensor) -> Tensor:
            out = layer(h, mask, relative_pos, rel_embeddings, options)
            held(out)  # in the tuple of every layer's output
            return out

        if conv_kernel_size <= 0:
            return {"last_hidden_state": repeat("layer", L, body, x, shape)}
        if active().sharding is not None and active().sharding.pipeline:
            raise TraceError("deberta-v2's convolution follows the first layer only: --pipeline-parallel 1 only")
        with scope("layer"), scope("0"):
            first = layer(x, mask, relative_pos, rel_embeddings, options)
        x = conv_layer(x, first, attention_mask, hidden_dropout_prob, conv_kernel_size, conv_groups, conv_act)
        held(x)  # in the tuple of layer outputs, for the first layer's
        with scope("layer"):
            x = repeat("rest", L - 1, body, x, shape)
    return {"last_hidden_state": x}


# ---- task heads (Hugging Face's DebertaV2For* classes)


def classifier_p(e: Encoded) -> float:
    """``cls_dropout``, or the hidden dropout when it is unset."""
    p = e.options["cls_dropout"]
    return e.options["hidden_dropout_prob"] if p is None else p


def context_pooler(e: Encoded) -> Tensor:
    """ContextPooler: the first token, dropout, dense, activation (``pooler_hidden_act``)."""
    with scope("pooler"):
        x = dropout(F.select(e.sequence, 1, 0), e.options["pooler_dropout"])
        return ACTIVATIONS[e.options["pooler_hidden_act"]](F.linear("dense", x, H))


def lm_scores(e: Encoded) -> Tensor:
    """The masked-LM head: dense, activation, LayerNorm, and scores over the vocabulary against the word
    embeddings plus the head's own bias. ``legacy`` (Hugging Face's default): ``cls.predictions``, a
    transform of width E and a decoder (:func:`~symbert.models.heads.lm_decoder`); otherwise
    ``lm_predictions.lm_head``, which reads the word embeddings whatever ``tie_word_embeddings`` says."""
    if e.options["legacy"]:
        with scope("cls"), scope("predictions"):
            with scope("transform"):
                x = transform(e, E)
            return heads.lm_decoder(e, x)
    with scope("lm_predictions"), scope("lm_head"):
        x = transform(e, H)
        return F.linear("scores", x, vocab_size, tied={"weight": e.word_embeddings, "bias": param_name("bias")})


def transform(e: Encoded, width: sympy.Expr) -> Tensor:
    """dense H → ``width``, the activation, LayerNorm."""
    return F.layernorm("LayerNorm", ACTIVATIONS[e.options["hidden_act"]](F.linear("dense", e.sequence, width)))


def sequence_classification(e: Encoded, problem: str) -> Tensor:
    """The context pooler, dropout and classifier, then the problem type's loss. With ``problem_type``
    unset, DebertaV2ForSequenceClassification's own older code: several labels, :func:`labeled_loss`; one,
    the mean squared error of the logits made the labels' float32 (a copy in a 16-bit model)."""
    logits = heads.classifier(context_pooler(e), classifier_p(e))
    if not e.problem_set and problem == "single_label_classification":
        return labeled_loss(logits)
    if not e.problem_set and problem == "regression":
        logits = F.cast(logits, "float32", name="to_labels_dtype")
    return heads.classification_loss(logits, problem)


def labeled_loss(logits: Tensor) -> Tensor:
    """Cross-entropy over the rows whose label is at least 0 (every row of a batch symbert models): their
    index ([rows, 1], ``nonzero``), the logits gathered at it expanded to every label (a copy whose backward
    keeps the logits and the index), the labels gathered at it, then cross-entropy of the rows made float32
    (a copy in a 16-bit model)."""
    batch = logits.shape[:1]
    labels = heads.labels("labels", batch)
    with scope("loss", in_param_name=False), scope("labeled", in_param_name=False):
        index = F.positions((*batch, 1), labels, name="label_index")
        rows = F.gather(logits, F.expand(index, logits.shape, name="label_index_expand"), name="labeled_logits")
        target = F.gather(labels, F.reshape(index, batch, name="label_index_view"), name="labeled_labels")
        rows = F.cast(rows, "float32", name="float")
    return heads.cross_entropy("classification", rows, target)


HEADS = heads.by_name(
    Head("mlm", "DebertaV2ForMaskedLM", masked_lm_head(lm_scores)),
    Head(
        "sequence-classification",
        "DebertaV2ForSequenceClassification",
        sequence_classification,
        symbols=(num_labels,),
    ),
    Head(
        "token-classification",
        "DebertaV2ForTokenClassification",
        heads.token_classification(lambda e: e.options["hidden_dropout_prob"]),
        symbols=(num_labels,),
    ),
    Head("question-answering", "DebertaV2ForQuestionAnswering", heads.question_answering(), labels=2),
    Head(
        "multiple-choice",
        "DebertaV2ForMultipleChoice",
        heads.multiple_choice(context_pooler, classifier_p),
        batch=heads.CHOICE_BATCH,
        symbols=(C,),
    ),
)


def v3(layers: int, hidden: int, heads: int) -> dict[str, object]:
    """A config of Microsoft's released DeBERTa-v3 checkpoints: I = 4H, 128,100 words, 256 position
    buckets (so 512 rows of relative embeddings), no token types, no absolute positions."""
    return {
        "vocab_size": 128100,
        "hidden_size": hidden,
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
        "intermediate_size": 4 * hidden,
        "max_position_embeddings": 512,
        "position_buckets": 256,
    }


#: DebertaV2Config's own defaults, and the model's fallbacks for the keys the class does not set
#: (``getattr(config, "share_att_key", False)``): without ``position_buckets`` there are no buckets (-1).
CONFIG_DEFAULTS = {
    "vocab_size": 128100,
    "hidden_size": 1536,
    "num_hidden_layers": 24,
    "num_attention_heads": 24,
    "intermediate_size": 6144,
    "max_position_embeddings": 512,
    "position_buckets": -1,
    "pad_token_id": 0,
    "relative_attention": False,
    "pos_att_type": None,
    "position_biased_input": True,
    "share_att_key": False,
    "norm_rel_ebd": "none",
}
#: The position terms symbert models, as Hugging Face stores ``pos_att_type``.
POS_ATT_TYPE = ["p2c", "c2p"]


def read(data: dict) -> dict:
    """``pos_att_type`` as Hugging Face reads it (a list, or a string split at "|", lower-cased), in any
    order, as :data:`POS_ATT_TYPE` when it names both terms; ``tie_word_embeddings`` left out where it
    changes nothing (``legacy`` false); the widths Hugging Face reads besides
    ``hidden_size`` (``embedding_size``, ``attention_head_size``, ``pooler_hidden_size``) checked to be
    the ones symbert models."""
    terms = data.get("pos_att_type")
    if isinstance(terms, str):
        terms = [t.strip() for t in terms.lower().split("|")]
    if isinstance(terms, list) and set(terms) == set(POS_ATT_TYPE):
        data = {**data, "pos_att_type": POS_ATT_TYPE}
    if data.get("legacy") is False:  # the newer LM head scores against the word embeddings themselves
        data = {k: v for k, v in data.items() if k != "tie_word_embeddings"}
    hidden = data.get("hidden_size", CONFIG_DEFAULTS["hidden_size"])
    heads = data.get("num_attention_heads", CONFIG_DEFAULTS["num_attention_heads"])
    widths = {"embedding_size": ("hidden_size", hidden), "pooler_hidden_size": ("hidden_size", hidden)}
    if isinstance(hidden, int) and isinstance(heads, int) and heads > 0:
        widths["attention_head_size"] = ("hidden_size/num_attention_heads", hidden // heads)
    for key, (name, width) in widths.items():
        if data.get(key, width) != width:
            raise ValueError(f"symbert models {key} equal to {name} ({width!r}), got {data[key]!r}")
    return data


def check(values: dict) -> None:
    """With a convolution: an odd kernel (an even one makes Conv1d's output one token short, which
    ConvLayer cannot mask), groups that divide hidden_size (Conv1d's rule), and two layers at least (the
    step replay does not model a repeated block that runs no time, here the layers after the first)."""
    kernel, groups, hidden = values["conv_kernel_size"], values["conv_groups"], values["hidden_size"]
    if kernel <= 0:
        return
    if kernel % 2 == 0:
        raise ValueError(f"conv_kernel_size={kernel}: Hugging Face's ConvLayer runs with an odd kernel only")
    if values["num_hidden_layers"] < 2:
        raise ValueError(f"conv_kernel_size={kernel}: symbert models the convolution with num_hidden_layers ≥ 2")
    if groups < 1 or hidden % groups:
        raise ValueError(f"conv_groups={groups} must be a positive divisor of hidden_size={hidden} (Conv1d's rule)")


LAYER = "encoder/layer"
#: Where the layers' ops are: the repeated layers, and with a convolution the first layer and the others.
LAYERS = (LAYER, f"{LAYER}/0", f"{LAYER}/rest")


def in_layers(name: str, scope: str, role: str) -> tuple[Component, ...]:
    """The component ``name`` (of ``role``) for the ops at ``scope`` under each of :data:`LAYERS`."""
    return tuple(Component(name, f"{layers}/{scope}", role=role) for layers in LAYERS)


SPEC = ModelSpec(
    name="deberta-v2",
    build=build,
    attention=("eager",),  # DebertaV2PreTrainedModel has no _supports_sdpa
    options=(
        Option("hidden_act", "gelu", tuple(ACTIVATIONS), from_config=True),
        Option("hidden_dropout_prob", 0.1, from_config=True),
        Option("attention_probs_dropout_prob", 0.1, from_config=True),
        Option("position_biased_input", False, from_config=True),
        Option("share_att_key", True, from_config=True),
        Option("norm_rel_ebd", "layer_norm", ("layer_norm", "none"), from_config=True),
        Option("legacy", True, from_config=True),
        Option("cls_dropout", None, from_config=True, optional=True),
        Option("pooler_dropout", 0.0, from_config=True),
        Option("pooler_hidden_act", "gelu", tuple(ACTIVATIONS), from_config=True),
        Option("conv_kernel_size", 0, from_config=True),
        Option("conv_groups", 1, from_config=True),
        Option("conv_act", "tanh", tuple(ACTIVATIONS), from_config=True),
        TIED,
    ),
    param_components=(
        Component("embeddings", "embeddings", role="embeddings"),
        Component("relative positions", "encoder/rel_embeddings", role="attention"),
        Component("relative positions", "encoder/LayerNorm", role="attention"),
        *in_layers("self-attention", "attention/self", "attention"),
        Component("layernorms", LAYER, ops=("layernorm",), role="norms"),
        *in_layers("attention output", "attention/output", "attention"),
        *in_layers("intermediate", "intermediate", "MLP"),
        *in_layers("output", "output", "MLP"),
        Component("convolution", "encoder/conv", role="other"),
    ),
    activation_components=(
        Component("embeddings", "embeddings", role="embeddings"),
        Component("relative positions", "encoder/LayerNorm", role="attention"),
        Component("position scores", LAYER, region=POSITION_SCORES, role="attention"),
        Component("attention scores", LAYER, region=ATTENTION_CORE, role="attention"),
        Component("layernorms", LAYER, ops=("layernorm",), role="norms"),
        *in_layers("rest of attention", "attention", "attention"),
        Component("feed-forward", LAYER, role="MLP"),
        Component("convolution", "encoder/conv", role="other"),
    ),
    fields={**ENCODER_FIELDS, "position_buckets": position_buckets},
    divides=(("hidden_size", "num_attention_heads"),),
    derived={E: H},
    substitutions={E: H, I: 4 * H},
    presets={
        "deberta-v3-xsmall": v3(12, 384, 6),
        "deberta-v3-small": v3(6, 768, 12),
        "deberta-v3-base": v3(12, 768, 12),
        "deberta-v3-large": v3(24, 1024, 16),
    },
    default_preset="deberta-v3-base",
    constraints=(
        ("relative_attention", True),
        ("pos_att_type", POS_ATT_TYPE),
        ("type_vocab_size", 0),
    ),
    read=read,
    check=check,
    read_keys=("embedding_size", "attention_head_size", "pooler_hidden_size"),
    # with log buckets (position_buckets > 0) max_relative_positions shapes only the bucketing
    inert=("max_relative_positions",),
    config_defaults=CONFIG_DEFAULTS,
    architecture="DebertaV2Model",
    heads=HEADS,
    prefix="deberta",
)
