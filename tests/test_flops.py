"""Matmul FLOPs by hand (2·m·n·k, backward twice forward) and the non-matmul convention."""

from __future__ import annotations

import sympy

import symbert
from symbert.analysis.flops import flops
from symbert.symbols import A, B, E, H, I, L, seq_len

S = seq_len


def test_forward_matmuls_by_hand() -> None:
    # per layer: Q, K, V, output projections 4·2·BS·H·H; two feed-forward 2·2·BS·H·I; QKᵀ and P·V 2·2·B·A·S·S·(H/A)
    by_hand = L * (8 * B * S * H**2 + 4 * B * S * H * I + 4 * B * S**2 * H) + 2 * B * H**2
    assert sympy.expand(flops(symbert.trace())["forward"].total - by_hand) == 0


def test_backward_is_twice_forward_when_every_input_needs_a_gradient() -> None:
    f = flops(symbert.trace())
    assert sympy.expand(f["backward"].total - 2 * f["forward"].total) == 0


def test_non_matmul_convention() -> None:
    """Per output element: add 1, scale 1, softmax 5, dropout 2, layernorm 7, GELU 5, tanh 1."""
    per_layer = (
        A * B * S**2 * (1 + 1 + 5 + 2)  # scale, mask add, softmax, dropout
        + B * S * H * 2 * (2 + 1 + 7)  # two residual blocks: dropout, add, layernorm
        + 5 * B * S * I  # GELU
    )
    embeddings = B * S * H * (1 + 1 + 7 + 2)
    by_hand = L * per_layer + embeddings + B * H
    got = flops(symbert.trace())["non_matmul_forward"]
    assert sympy.expand(got.total.subs(E, H) - by_hand) == 0
