"""The notation: sympy symbols named as the seed write-up names them."""

from __future__ import annotations

import functools

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


# The parallel degrees: tensor, pipeline, data, micro-batches per step, virtual stages per pipeline rank.
t = sympy.Symbol("t", **_INT)
p = sympy.Symbol("p", **_INT)
d = sympy.Symbol("d", **_INT)
m = sympy.Symbol("m", **_INT)
v = sympy.Symbol("v", **_INT)

DEGREES: tuple[sympy.Symbol, ...] = (t, p, d, m, v)

#: The CUDA caching allocator's granularity (``kMinBlockSize``), the rounding :class:`pad512` writes.
ROUND = 512

class below(sympy.Function):
    """The Iverson bracket [x < k] of a size x ≥ 1: 1 where it holds, else 0. PyTorch and Hugging Face
    keep some tensors differently at small sizes: at batch 1 a strided view folds without a copy
    (:func:`symbert.ops.fold`), and ModernBERT gets no window mask for a short unpadded batch."""

    is_integer = True
    is_nonnegative = True

    @classmethod
    def eval(cls, x: sympy.Expr, k: sympy.Expr) -> sympy.Expr | None:
        if x.is_Integer and k.is_Integer:
            return sympy.S.One if x < k else sympy.S.Zero
        if (x - k).is_nonnegative or (k.is_Integer and k <= 1):  # 4·B against 2: never below
            return sympy.S.Zero
        return None

    def _latex(self, printer: object) -> str:
        return rf"\left[{bracket(self, printer._print)}\right]"


def bracket(b: below, show: object = str) -> str:
    """``B = 1`` for [B < 2], ``seq_len < k`` otherwise, each size written by ``show``."""
    x, k = b.args
    return f"{show(x)} = 1" if k == 2 else f"{show(x)} < {show(k)}"


def is_one(x: sympy.Expr) -> sympy.Expr:
    """[x = 1] of a size x ≥ 1, that is [x < 2]."""
    return below(x, 2)


def either(a: sympy.Expr, b: sympy.Expr) -> sympy.Expr:
    """[p or q] of two brackets [p] and [q]."""
    return a + b - a * b


@functools.lru_cache(maxsize=4096)
def settled(expr: sympy.Expr) -> sympy.Expr:
    """``expr`` expanded, with each size x set to 1 in the terms a bracket [x = 1] multiplies (every
    factor of a product of sizes: [B·C = 1] sets B and C), and each bracket's powers as itself:
    [B = 1]·2·seq_len·H, not [B = 1]²·2·B·seq_len·H."""
    out = []
    for term in sympy.Add.make_args(sympy.expand(expr)):
        factors = sympy.Mul.make_args(term)
        brackets = {f.base if f.is_Pow else f for f in factors if (f.base if f.is_Pow else f).func is below}
        rest = sympy.Mul(*(f for f in factors if (f.base if f.is_Pow else f) not in brackets))
        sizes = (sympy.Mul.make_args(b.args[0]) for b in brackets if b.args[1] == 2)
        ones = {x: 1 for factors in sizes if all(x.is_Symbol for x in factors) for x in factors}
        out.append(rest.subs(ones) * sympy.Mul(*brackets))
    return sympy.Add(*out)


ALL: tuple[sympy.Symbol, ...] = (
    *(B, seq_len, L, H, E, A, I, vocab_size, type_size, position_size, position_buckets, num_labels, C),
    *(window, global_every, L_global),
)
BY_NAME: dict[str, sympy.Symbol] = {s.name: s for s in ALL}

#: BERT's fixed relations: embedding size equals hidden size, intermediate size is four times it.
BERT_SUBSTITUTIONS: dict[sympy.Symbol, sympy.Expr] = {E: H, I: 4 * H}


class pad512(sympy.Function):
    """The bytes the CUDA caching allocator adds to an allocation of ``x`` bytes: x rounded up to a
    multiple of 512, minus x. Integer coefficients of whole terms (products of sizes, no division) are
    reduced modulo 512, so it vanishes on its own when every term of ``x`` is a multiple of 512; a term
    divided by a size (a shard, seq_len/t) is left as it is."""

    is_integer = True
    is_nonnegative = True

    @classmethod
    def eval(cls, x: sympy.Expr) -> sympy.Expr | None:
        if x.is_Integer:
            return sympy.Integer(-int(x) % ROUND)
        terms = sympy.expand(x).as_coefficients_dict()
        if not all(c.is_Integer for c in terms.values()) or not all(map(_whole, terms)):
            return None
        reduced = sympy.Add(*(int(c) % ROUND * m for m, c in terms.items()))
        if reduced.is_Integer:
            return sympy.Integer(-int(reduced) % ROUND)
        return None if reduced == x else cls(reduced)


def _whole(term: sympy.Expr) -> bool:
    """Whether a product of sizes is an integer whatever their values: no size divides it."""
    return all(e.is_Integer and e >= 0 for e in term.as_powers_dict().values())


def polynomial(expr: sympy.Expr) -> sympy.Expr:
    """``expr`` with each ceiling of n/q (a size rounded up to a multiple, as the memory-efficient SDPA
    kernel rounds its logsumexp rows to 32) replaced by its bound n/q + (q − 1)/q, and each [x < k] by 1,
    so that it is a polynomial; exact where the rounded size is already a multiple of q and the
    brackets hold."""

    def bound(x: sympy.Expr) -> sympy.Expr:
        q = sympy.fraction(sympy.Rational(x.as_coeff_Mul()[0]))[1]
        return x + sympy.Rational(q - 1, q)

    return sympy.sympify(expr).replace(sympy.ceiling, bound).replace(below, lambda x, k: sympy.S.One)
