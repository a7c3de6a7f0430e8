"""Task heads and their losses, as Hugging Face's ``*For*`` classes put them on an encoder.

A :class:`Head` is one entry: the Hugging Face class it mirrors, whether its encoder keeps the pooler,
the batch it is given, and a function from the encoder's outputs to the loss. A family's module lists
its heads; the pieces they share (a dropout-and-classifier, the losses, Hugging Face's ``problem_type``
rules) are here. Labels are graph inputs named as the Hugging Face forward names them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import sympy

from symbert import ops as F
from symbert.ir import Role, Shape, Tensor, numel
from symbert.models.layers import dropout
from symbert.symbols import B, C, num_labels, seq_len, vocab_size
from symbert.tracer import active, call, graph_input, held, param_name, scope, unused_param

BARE = "model"
HEAD_NAMES = (
    BARE,
    "mlm",
    "pretraining",
    "next-sentence",
    "sequence-classification",
    "token-classification",
    "question-answering",
    "multiple-choice",
)
CHOICE_BATCH: Shape = (B, C)
"""The batch a multiple-choice model is given: B examples of C choices each."""
PROBLEM_TYPES = ("single_label_classification", "regression", "multi_label_classification")


@dataclass(frozen=True)
class Task:
    """What a config is trained for: the head, the number of labels, the problem type, the choices."""

    head: str = BARE
    num_labels: int = 2
    problem_type: str | None = None
    choices: int = 4

    @property
    def problem(self) -> str:
        """Hugging Face's rule when ``problem_type`` is unset: one label is a regression, more (with
        integer labels) a single-label classification."""
        return self.problem_type or ("regression" if self.num_labels == 1 else "single_label_classification")


@dataclass(frozen=True)
class Encoded:
    """What the encoder hands its head: outputs by name, the family's options, the base model's prefix,
    and whether the config sets ``problem_type`` (a head may run other code without it)."""

    outputs: Mapping[str, Tensor]
    options: Mapping[str, object]
    prefix: str
    problem_set: bool = True

    @property
    def sequence(self) -> Tensor:
        return self.outputs["last_hidden_state"]

    @property
    def pooled(self) -> Tensor:
        return self.outputs["pooler_output"]

    @property
    def word_embeddings(self) -> str:
        """The full name of the word-embedding table an LM head's decoder is tied to."""
        return f"{self.prefix}.embeddings.word_embeddings.weight"

    def decoder_weight(self, table: str | None = None) -> dict[str, str]:
        """An LM decoder's weight: the word embeddings (``table``, by default :attr:`word_embeddings`)
        unless the config unties it (``tie_word_embeddings`` false), when it is the decoder's own."""
        return {"weight": table or self.word_embeddings} if self.options.get("tie_word_embeddings", True) else {}


def lm_decoder(e: Encoded, x: Tensor) -> Tensor:
    """The decoder x → vocab_size of an LM head that registers a ``bias`` of its own beside it
    (BertLMPredictionHead, RobertaLMHead, AlbertMLMHead, DeBERTa's legacy head). Tied (the default), its
    weight is the word embeddings and its bias that ``bias``. Untied (``tie_word_embeddings`` false), the
    decoder has a weight and a bias of its own, and the head's ``bias`` stays registered, read by nothing."""
    tied = e.decoder_weight()
    if tied:
        return F.linear("decoder", x, vocab_size, tied={**tied, "bias": param_name("bias")})
    scores = F.linear("decoder", x, vocab_size)
    unused_param("bias", (vocab_size,), "tie_word_embeddings=False")
    return scores


@dataclass(frozen=True)
class Head:
    """One task head of a family: the Hugging Face class, and how it turns the encoder's outputs into a loss.

    ``build(encoded, problem)`` records the head and its loss and returns the scalar loss. ``pooler``
    says whether the encoder keeps its pooler (``add_pooling_layer``); ``batch`` is the shape of the
    batch the model is given; ``symbols`` are the sizes the head adds to the formulas. ``labels`` is the
    one label count Hugging Face's forward runs with where its class sizes a layer by ``num_labels``
    anyway (question answering's start and end: 2); a config with another is refused.
    """

    name: str
    architecture: str
    build: Callable[[Encoded, str], Tensor]
    pooler: bool = False
    batch: Shape = (B,)
    symbols: tuple[sympy.Symbol, ...] = ()
    labels: int | None = None


def encoder_options(head: Head | None, options: Mapping[str, object]) -> dict[str, object]:
    """A family's build options with the pooler the head asks for (where the family has one)."""
    if head is None or "pooler" not in options:
        return dict(options)
    return {**options, "pooler": head.pooler}


def labels(name: str, shape: Shape, dtype: str = "int64") -> Tensor:
    """Labels the caller passes to the forward, by their Hugging Face argument name."""
    return graph_input(name, shape, dtype, Role.INDEX)


def given(name: str) -> Tensor:
    """A tensor the encoder was given (``attention_mask``), by its Hugging Face argument name: a head that
    reads it too."""
    graph = active().graph
    return graph.tensor(graph.node(name).outputs[0])


def rows(x: Tensor) -> Tensor:
    """[..., n] → [N, n]: every leading dimension flattened, as ``view(-1, n)``."""
    return x if len(x.shape) == 2 else F.reshape(x, (numel(x.shape[:-1]), x.shape[-1]))


def flat(x: Tensor) -> Tensor:
    """Every dimension flattened, as ``view(-1)``."""
    return x if len(x.shape) == 1 else F.reshape(x, (x.numel,))


def cross_entropy(name: str, logits: Tensor, target: Tensor) -> Tensor:
    """CrossEntropyLoss over ``view(-1, classes)`` and ``view(-1)``: log_softmax (given the logits' dtype,
    ``cross_entropy_loss`` in aten/src/ATen/native/LossNLL.cpp), then nll_loss. The task model's forward
    keeps its logits in a local (and its output) until it returns, past the loss."""
    with scope("loss", in_param_name=False), scope(name, in_param_name=False), call():
        held(logits)
        return F.nll_loss(F.log_softmax(rows(logits), dtype_given=True), flat(target))


def classification_loss(logits: Tensor, problem: str) -> Tensor:
    """A sequence classifier's loss by problem type: cross-entropy on integer labels, mean squared error
    (regression) or binary cross-entropy on logits (multi-label) on float32 labels."""
    batch = logits.shape[:-1]
    if problem == "single_label_classification":
        return cross_entropy("classification", logits, labels("labels", batch))
    target = labels("labels", (*batch, num_labels), "float32")
    with scope("loss", in_param_name=False):
        if problem == "regression":
            return F.mse_loss(logits, target, name="regression")
        return F.bce_with_logits(logits, target, name="multi_label")


def classifier(x: Tensor, p: float, outputs: sympy.Expr = num_labels, name: str = "classifier") -> Tensor:
    """Dropout, then a linear classifier H → ``outputs``."""
    return F.linear(name, dropout(x, p), outputs)


def span_loss(logits: Tensor) -> Tensor:
    """Question answering: [rows, seq_len, 2] split into start and end logits, each a cross-entropy
    against its positions (clamped to the sequence); the loss is their mean."""
    which = ("start", "end")
    split = [F.narrow(logits, 2, i, 1, name=f"{w}_split") for i, w in enumerate(which)]
    ends = [
        F.contiguous(F.reshape(x, logits.shape[:2], name=f"{w}_squeeze"), name=f"{w}_logits")
        for w, x in zip(which, split, strict=True)
    ]
    positions = [F.clamp(labels(f"{w}_positions", logits.shape[:1]), name=f"{w}_clamp") for w in which]
    losses = [cross_entropy(w, x, p) for w, x, p in zip(which, ends, positions, strict=True)]
    with scope("loss", in_param_name=False):
        return F.scale(F.add(*losses, name="sum"), sympy.Rational(1, 2), name="mean")


def choice_loss(logits: Tensor) -> Tensor:
    """Multiple choice: one score per (example, choice), viewed as [B, C], against the right choice."""
    return cross_entropy("choice", F.reshape(logits, (B, C), name="choices"), labels("labels", (B,)))


def summed(*losses: Tensor) -> Tensor:
    """Pre-training's loss: the sum of its two losses."""
    with scope("loss", in_param_name=False):
        return F.add(*losses, name="sum")


def sequence_classification(pooled: Callable[[Encoded], Tensor], p: Callable[[Encoded], float]) -> Callable:
    """A head that classifies one vector per sequence (``pooled``) after dropout ``p``."""

    def build(e: Encoded, problem: str) -> Tensor:
        return classification_loss(classifier(pooled(e), p(e)), problem)

    return build


def sequence(e: Encoded) -> Tensor:
    """The encoder's last hidden state, what a per-token head reads by default."""
    return e.sequence


def token_classification(p: Callable[[Encoded], float], tokens: Callable[[Encoded], Tensor] = sequence) -> Callable:
    """Dropout, a classifier per token (of ``tokens``), cross-entropy against one label per token."""

    def build(e: Encoded, problem: str) -> Tensor:
        logits = classifier(tokens(e), p(e))
        return cross_entropy("classification", logits, labels("labels", (B, seq_len)))

    return build


def question_answering(
    p: Callable[[Encoded], float] = lambda e: 0.0,
    tokens: Callable[[Encoded], Tensor] = sequence,
    name: str = "qa_outputs",
) -> Callable:
    """(Dropout), a classifier ``name`` H → 2 on every token (of ``tokens``), the span loss."""

    def build(e: Encoded, problem: str) -> Tensor:
        return span_loss(classifier(tokens(e), p(e), 2, name=name))

    return build


def multiple_choice(pooled: Callable[[Encoded], Tensor], p: Callable[[Encoded], float]) -> Callable:
    """Dropout and a classifier H → 1 on each choice's pooled vector, then the choice loss."""

    def build(e: Encoded, problem: str) -> Tensor:
        return choice_loss(classifier(pooled(e), p(e), 1))

    return build


def by_name(*heads: Head) -> dict[str, Head]:
    """A family's heads keyed by name, in the order given."""
    return {h.name: h for h in heads}
