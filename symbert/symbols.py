"""The notation: sympy symbols named as the seed write-up names them."""

from __future__ import annotations

import sympy

_INT = {"integer": True, "positive": True}

B = sympy.Symbol("B", **_INT)
seq_len = sympy.Symbol("seq_len", **_INT)
L = sympy.Symbol("L", **_INT)
H = sympy.Symbol("H", **_INT)
E = sympy.Symbol("E", **_INT)
A = sympy.Symbol("A", **_INT)
I = sympy.Symbol("I", **_INT)  # noqa: E741 - the seed's name for the intermediate size
vocab_size = sympy.Symbol("vocab_size", **_INT)
type_size = sympy.Symbol("type_size", **_INT)
position_size = sympy.Symbol("position_size", **_INT)
position_buckets = sympy.Symbol("position_buckets", **_INT)  # DeBERTa's relative-position buckets
num_labels = sympy.Symbol("num_labels", **_INT)  # a classifier's outputs
C = sympy.Symbol("C", **_INT)  # a multiple-choice model's choices per example
window = sympy.Symbol("window", **_INT)  # a sliding-window attention's width (ModernBERT's local_attention)
global_every = sympy.Symbol("global_every", **_INT)  # one global-attention layer in this many (ModernBERT)
L_global = sympy.Symbol("L_global", **_INT)  # the layers that attend globally, ⌈L/global_every⌉ (ModernBERT)

ALL: tuple[sympy.Symbol, ...] = (
    *(B, seq_len, L, H, E, A, I, vocab_size, type_size, position_size, position_buckets, num_labels, C),
    *(window, global_every, L_global),
)
BY_NAME: dict[str, sympy.Symbol] = {s.name: s for s in ALL}

#: BERT's fixed relations: embedding size equals hidden size, intermediate size is four times it.
BERT_SUBSTITUTIONS: dict[sympy.Symbol, sympy.Expr] = {E: H, I: 4 * H}
