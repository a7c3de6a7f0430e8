"""Saved-tensor bytes: hand derivations, Korthikanti et al. 2022, and exact PyTorch measurements."""

from __future__ import annotations

import pytest
import sympy
from conftest import hf, random_bert_configs

import symbert
from symbert.analysis.activations import activations
from symbert.analysis.policy import MemoryOptions
from symbert.symbols import A, B, E, H, I, L, seq_len

S = seq_len


def per_layer(options: MemoryOptions, **trace_options: bool) -> sympy.Expr:
    breakdown = activations(symbert.trace(**trace_options), options)
    return sympy.expand(sum(c.per_layer for c in breakdown.components() if c.per_layer is not None))


def component(options: MemoryOptions, name: str, **trace_options: bool) -> sympy.Expr:
    breakdown = activations(symbert.trace(**trace_options), options)
    return next(c.total for c in breakdown.components() if c.name == name)


def same(a: sympy.Expr, b: sympy.Expr) -> bool:
    return sympy.simplify(a - b) == 0


def test_korthikanti_per_layer_identity() -> None:
    """Korthikanti et al. 2022, eq. (2): sbh(34 + 5as/h) bytes per layer."""
    ours = per_layer(MemoryOptions("megatron")).subs(I, 4 * H)
    assert same(ours, S * B * H * (34 + 5 * A * S / H))


def test_korthikanti_selective_recompute() -> None:
    assert same(per_layer(MemoryOptions("megatron", recompute="selective")).subs(I, 4 * H), 34 * S * B * H)


def test_korthikanti_full_recompute() -> None:
    assert same(per_layer(MemoryOptions("megatron", recompute="full")), 2 * S * B * H)


def test_torch_cpu_layer_by_hand() -> None:
    """fp32: layer input, Q, K, V, context copy, two dropout noises, two LN inputs, LN1 output: 10 of [B,S,H];
    softmax output, its dropout noise and output: 3 of [B,A,S,S]; GELU input and output: 2 of [B,S,I];
    mean and rstd of two layernorms: 4 of [B,S,1]."""
    by_hand = 4 * (10 * B * S * H + 3 * B * A * S**2 + 2 * B * S * I + 4 * B * S)
    assert same(per_layer(MemoryOptions()), by_hand)


def test_torch_cpu_embeddings_and_pooler_by_hand() -> None:
    # int64 word and token-type ids; LN input, its mean and rstd; dropout noise. Position ids are a buffer.
    assert same(component(MemoryOptions(), "embeddings"), 8 * B * S * 2 + 4 * B * S * E * 2 + 4 * B * S * 2)
    # The first-token slice keeps the whole last hidden state alive; tanh keeps its output.
    assert same(component(MemoryOptions(), "pooler"), 4 * B * S * H + 4 * B * H)


def test_bf16_halves_activations_not_indices() -> None:
    fp32 = activations(symbert.trace(), MemoryOptions()).total
    bf16 = activations(symbert.trace(), MemoryOptions(dtype="bfloat16")).total
    assert same(fp32 - 2 * bf16, -16 * B * S)  # the two int64 index tensors do not shrink


def test_torch_cuda_keeps_bool_masks_and_float32_statistics() -> None:
    by_hand = 9 * A * B * S**2 + 34 * B * S * H + 8 * B * S * I + 16 * B * S
    assert same(per_layer(MemoryOptions("torch-cuda")), by_hand)
    bf16 = 5 * A * B * S**2 + 18 * B * S * H + 4 * B * S * I + 16 * B * S
    assert same(per_layer(MemoryOptions("torch-cuda", "bfloat16")), bf16)


def test_flash_attention_keeps_no_quadratic_tensor() -> None:
    """On a batch without padding. With padding the CPU flash kernel also keeps the mask, converted to
    an fp32 bias [B, 1, S, S] (measured in tests/test_padding.py); CUDA flash takes no mask."""
    layer = per_layer(MemoryOptions(attention="flash"), padding=False)
    assert sympy.degree(layer, S) == 1
    # The kernel keeps Q, K, V (as eager's products do) and its output, which is the output projection's
    # input (eager keeps its contiguous copy instead), plus a float32 logsumexp [B, A, S]; softmax output,
    # dropout noise and dropout output (3 of [B, A, S, S]) go.
    eager = per_layer(MemoryOptions(), padding=False)
    assert same(eager - layer, 4 * (3 * B * A * S**2) - 4 * B * A * S)
    assert same(per_layer(MemoryOptions(attention="flash")) - layer, 4 * B * S**2)
    cuda = MemoryOptions("torch-cuda", attention="flash")
    assert same(per_layer(cuda) - per_layer(cuda, padding=False), 0)


def test_shared_input_and_total_are_consistent_over_l() -> None:
    breakdown = activations(symbert.trace(), MemoryOptions())
    total_per_layer = sympy.expand(breakdown.total).coeff(L)
    assert same(total_per_layer, per_layer(MemoryOptions()))


def test_no_pooler_drops_the_last_hidden_state() -> None:
    with_pooler = activations(symbert.trace(), MemoryOptions()).total
    without = activations(symbert.trace(pooler=False), MemoryOptions()).total
    assert same(with_pooler - without, 4 * B * S * H + 4 * B * H)


ODD = symbert.Config(
    "bert",
    {
        "vocab_size": 97,
        "hidden_size": 96,
        "num_hidden_layers": 2,
        "num_attention_heads": 3,
        "intermediate_size": 200,
        "max_position_embeddings": 20,
        "type_vocab_size": 2,
    },
    "h96-a3",
)
CASES = [
    (symbert.preset("bert-tiny"), 2, 9),
    (ODD, 3, 1),
    (ODD, 1, 20),
    (symbert.Config("bert", ODD.values, "h96-no-pooler", {"pooler": False}), 2, 7),
    *((c, 1 + i % 3, 1 + (5 * i) % c.values["max_position_embeddings"]) for i, c in enumerate(random_bert_configs(8))),
]


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize(("config", "batch", "length"), CASES, ids=lambda v: getattr(v, "name", str(v)))
def test_exact_against_pytorch(config: symbert.Config, batch: int, length: int, dtype: str) -> None:
    """Saved bytes, FLOPs and parameters equal what PyTorch measures on Hugging Face BertModel."""
    hf()
    from symbert.validate.compare import validate

    checks = validate(config, batch, length, dtype)
    assert [(c.quantity, c.predicted) for c in checks] == [(c.quantity, c.measured) for c in checks]
