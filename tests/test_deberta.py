"""DeBERTa-v2/v3: preset counts, Hugging Face parity (parameters, saved bytes, FLOPs), heads, commands."""

from __future__ import annotations

import json
import random

import pytest
import sympy
from conftest import hf, hf_param_shapes, traced_param_shapes
from inprocess import invoke

import symbert
from symbert.analysis.activations import activations
from symbert.analysis.flops import flops
from symbert.analysis.policy import MemoryOptions
from symbert.configs import Config, validated, with_task
from symbert.models import MODELS
from symbert.symbols import A, B, H, position_buckets, seq_len

SPEC = MODELS["deberta-v2"]


def hf_config(config: Config) -> dict[str, object]:
    """The Hugging Face config dict of ``config``: the fixed settings, the sizes, the config options."""
    options = {o.name: config.structure()[o.name] for o in SPEC.options if o.from_config}
    return {**dict(SPEC.constraints), **config.values, **options}


def count(config: Config) -> int:
    p = symbert.params(symbert.trace(config))
    return p.evaluate(p.total, config.symbols())


def random_configs(n: int, seed: int) -> list[Config]:
    """Small DeBERTa configs with odd sizes and each structural option both ways."""
    rng = random.Random(seed)
    configs = []
    for i in range(n):
        heads = rng.randint(1, 4)
        values = {
            "vocab_size": rng.randint(5, 90),
            "hidden_size": heads * rng.choice((2, 5, 8, 12)),
            "num_hidden_layers": rng.randint(1, 3),
            "num_attention_heads": heads,
            "intermediate_size": rng.randint(3, 50),
            "max_position_embeddings": rng.randint(8, 30),
            "position_buckets": rng.randint(2, 12),
        }
        dropout = rng.choice((0.0, 0.1))
        options = {
            "share_att_key": i % 2 == 0,
            "position_biased_input": i % 3 == 1,
            "norm_rel_ebd": "none" if i % 4 == 3 else "layer_norm",
            "hidden_act": rng.choice(("gelu", "gelu_new")),
            "hidden_dropout_prob": dropout,
            "attention_probs_dropout_prob": dropout,
        }
        configs.append(validated(Config("deberta-v2", values, f"deberta-random-{i}", options)))
    return configs


CASES = random_configs(4, seed=3)


@pytest.mark.parametrize("name", list(SPEC.presets))
def test_preset_counts_equal_hugging_face(name: str) -> None:
    transformers = hf()
    import torch

    config = symbert.preset(name)
    with torch.device("meta"):
        model = transformers.DebertaV2Model(transformers.DebertaV2Config(**hf_config(config)))
    assert count(config) == sum(p.numel() for p in model.parameters())


def test_base_count_by_hand() -> None:
    """deberta-v3-base: 128,100 × 768 word embeddings and their LayerNorm, 512 × 768 relative embeddings and
    their LayerNorm, and 12 BERT-base layers of 7,087,872 parameters each."""
    assert count(symbert.preset("deberta-v3-base")) == 128_100 * 768 + 2 * 768 + 512 * 768 + 2 * 768 + 12 * 7_087_872


@pytest.mark.parametrize("config", CASES, ids=lambda c: c.name)
def test_parameters_match_hugging_face(config: Config) -> None:
    transformers = hf()
    model = transformers.DebertaV2Model(transformers.DebertaV2Config(**hf_config(config)))
    assert traced_param_shapes(config) == hf_param_shapes(model)
    assert count(config) == sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("config", CASES, ids=lambda c: c.name)
def test_saved_bytes_and_flops_exact_against_pytorch(config: Config, dtype: str) -> None:
    hf()
    from symbert.validate.compare import validate

    checks = validate(config, 2, min(7, config.max_length), dtype)
    assert [(c.quantity, c.predicted) for c in checks] == [(c.quantity, c.measured) for c in checks]


HEADS = [
    ("mlm", {}, "bfloat16"),
    ("mlm", {"legacy": False}, "float32"),
    ("sequence-classification", {"cls_dropout": 0.2, "pooler_dropout": 0.1}, "float32"),
    ("sequence-classification", {}, "bfloat16"),
    ("token-classification", {}, "float32"),
    ("question-answering", {}, "float32"),
    ("multiple-choice", {}, "float32"),
]


@pytest.mark.parametrize(("head", "options", "dtype"), HEADS, ids=lambda h: str(h))
def test_heads_exact_against_pytorch(head: str, options: dict[str, object], dtype: str) -> None:
    hf()
    from symbert.validate.compare import validate

    base = CASES[1]
    config = with_task(validated(Config("deberta-v2", base.values, base.name, {**base.options, **options})), head=head)
    checks = validate(config, 2, 5, dtype)
    assert [(c.quantity, c.predicted) for c in checks] == [(c.quantity, c.measured) for c in checks]


def test_autocast_exact_against_pytorch() -> None:
    hf()
    from symbert.validate.compare import validate

    checks = validate(with_task(CASES[0], head="mlm"), 2, 6, "bfloat16", amp=True)
    assert all(c.ok for c in checks), checks


def test_training_step_peak_against_pytorch() -> None:
    """Two real CPU training steps of DebertaV2ForMaskedLM under torch.profiler, peaking in backward: off by
    a few scalars at most."""
    hf()
    from symbert.validate.peak import check_peak

    sizes = {"hidden_size": 48, "num_attention_heads": 3, "intermediate_size": 100, "num_hidden_layers": 2}
    config = with_task(validated(Config("deberta-v2", {**CASES[0].values, **sizes}, "h48", {})), head="mlm")
    check = check_peak(config, 2, 8, "adamw")
    assert abs(check.predicted - check.measured.tensors) <= 8, (
        f"predicted {check.predicted:,}, measured {check.measured.tensors:,}"
    )
    assert check.predicted_where.startswith(f"step {check.measured.where.step} {check.measured.where.name}")


def forward_peaking(sizes: dict[str, int], options: dict[str, object], head: str | None) -> Config:
    """A config narrow enough for the forward pass to hold the peak: 50 words, 64 positions."""
    values = {"vocab_size": 50, "max_position_embeddings": 64, "num_hidden_layers": 2, **sizes}
    config = validated(Config("deberta-v2", values, "narrow", options))
    return with_task(config, head=head) if head else config


FORWARD_PEAKS = [
    # the last layer's output LayerNorm, with its dropped-out operand, the relative positions and mask held
    (
        {"hidden_size": 32, "num_attention_heads": 2, "intermediate_size": 64, "position_buckets": 8},
        {},
        None,
        2,
        64,
        None,
    ),
    # one head, batch 1: permuted heads are contiguous already, never copied
    (
        {"hidden_size": 8, "num_attention_heads": 1, "intermediate_size": 16, "position_buckets": 16},
        {},
        None,
        1,
        96,
        None,
    ),
    # four layers (one not replayed), separate position projections, absolute positions, no dropout
    (
        {
            "hidden_size": 16,
            "num_attention_heads": 2,
            "intermediate_size": 32,
            "position_buckets": 8,
            "num_hidden_layers": 4,
        },
        {"share_att_key": False, "position_biased_input": True, "norm_rel_ebd": "none", "hidden_dropout_prob": 0.0},
        None,
        2,
        64,
        None,
    ),
    # a task model, peaking inside the last layer's attention
    (
        {"hidden_size": 16, "num_attention_heads": 2, "intermediate_size": 32, "position_buckets": 16},
        {},
        "mlm",
        2,
        96,
        None,
    ),
    # bf16 autocast: no product keeps the float32 layer outputs, which the encoder's tuple holds
    (
        {"hidden_size": 32, "num_attention_heads": 2, "intermediate_size": 64, "position_buckets": 8},
        {},
        None,
        2,
        64,
        "bfloat16",
    ),
    # the same in four layers, one not replayed, with the masked-LM head
    (
        {
            "hidden_size": 32,
            "num_attention_heads": 2,
            "intermediate_size": 64,
            "position_buckets": 8,
            "num_hidden_layers": 4,
        },
        {},
        "mlm",
        2,
        64,
        "bfloat16",
    ),
]


@pytest.mark.parametrize(
    ("sizes", "options", "head", "batch", "length", "amp"), FORWARD_PEAKS, ids=range(len(FORWARD_PEAKS))
)
def test_forward_peak_exact_against_pytorch(
    sizes: dict[str, int], options: dict[str, object], head: str | None, batch: int, length: int, amp: str | None
) -> None:
    """Where the forward pass holds the peak, it is what torch.profiler measures, to the byte: Hugging
    Face's locals keep the position bias, the filled scores, both gathered scores, the mask's bool copy,
    the relative positions, every layer's output and the token type ids until their modules return,
    and the p2c term is added in place. (Under bf16 autocast, a peak inside the attention is not exact:
    the bf16 gather's and matrix products' scratch is not modelled.)"""
    hf()
    from symbert.validate.peak import check_peak

    check = check_peak(forward_peaking(sizes, options, head), batch, length, "adamw", amp=amp)
    assert check.measured.where.name == "forward"
    measured = check.measured.tensors
    assert check.predicted == measured, f"predicted {check.predicted:,}, measured {measured:,}"
    assert check.predicted_where.startswith(f"step {check.measured.where.step} forward")


def test_position_scores_by_hand() -> None:
    """Per layer in float32, the position terms keep: the c2p and p2c scores before the gather, [B·A,
    seq_len, 2k] each; the position keys and queries repeated over the batch, [B·A, 2k, H/A] each; the
    key heads (the p2c product's operand); the dropped-out relative table and its dropout noise, [2k, H]
    each; the two gather indices, int64 [1, seq_len, seq_len]; and the two 0-dim scales they divide by."""
    k = position_buckets
    by_hand = 2 * 4 * B * A * seq_len * 2 * k + 2 * 4 * B * 2 * k * H + 4 * B * seq_len * H
    by_hand += 2 * 4 * 2 * k * H + 2 * 8 * seq_len**2 + 2 * 4
    breakdown = activations(symbert.trace("deberta-v2"), MemoryOptions())
    layer = next(c.per_layer for c in breakdown.components() if c.name == "position scores")
    assert sympy.expand(layer - by_hand) == 0


def test_position_products_cost_by_hand() -> None:
    """Forward per layer, the position terms: the shared query and key projections of the 2k-row table,
    2·2k·H² each, and the c2p and p2c products, 2·(B·A)·seq_len·(H/A)·2k each."""
    f = flops(symbert.trace("deberta-v2"), MemoryOptions())["forward"]
    layer = next(c.per_layer for c in f.components() if c.name == "position scores")
    k = position_buckets
    assert sympy.expand(layer - 2 * 2 * (2 * k) * H**2 - 2 * 2 * B * seq_len * H * 2 * k) == 0


def test_unrolled_equals_repeated() -> None:
    config = CASES[2]
    values = {**config.symbols(), B: 2, seq_len: 5}
    for graph_of in (symbert.params, lambda g: activations(g, MemoryOptions()), lambda g: flops(g)["backward"]):
        repeated, unrolled = (graph_of(symbert.trace(config, unroll=u)) for u in (False, True))
        assert repeated.evaluate(repeated.total, values) == unrolled.evaluate(unrolled.total, values)


def test_released_config_file_reads_like_the_preset(tmp_path) -> None:
    released = {
        "model_type": "deberta-v2",
        "attention_probs_dropout_prob": 0.1,
        "hidden_act": "gelu",
        "hidden_dropout_prob": 0.1,
        "hidden_size": 384,
        "intermediate_size": 1536,
        "layer_norm_eps": 1e-7,
        "max_position_embeddings": 512,
        "max_relative_positions": -1,
        "norm_rel_ebd": "layer_norm",
        "num_attention_heads": 6,
        "num_hidden_layers": 12,
        "pooler_dropout": 0,
        "pooler_hidden_act": "gelu",
        "pooler_hidden_size": 384,
        "pos_att_type": "p2c|c2p",
        "position_biased_input": False,
        "position_buckets": 256,
        "relative_attention": True,
        "share_att_key": True,
        "type_vocab_size": 0,
        "vocab_size": 128100,
    }
    path = tmp_path / "config.json"
    path.write_text(json.dumps(released))
    assert count(symbert.from_file(path)) == count(symbert.preset("deberta-v3-xsmall"))
    refused = (
        ("relative_attention", False),
        ("type_vocab_size", 2),
        ("conv_kernel_size", 4),  # an even kernel: Conv1d's output is one token short, ConvLayer fails
        ("conv_groups", 5),  # 5 does not divide 384: Conv1d refuses it
        ("conv_act", "gelu_10"),
        ("conv_groups", 1.5),
    )
    for key, value in refused:
        path.write_text(json.dumps({**released, "conv_kernel_size": 3, key: value}))
        result = invoke("params", "--config", str(path))
        assert result.refused and key in result.stderr and result.stderr.count("\n") == 1, (key, result.stderr)


def test_sdpa_is_refused_in_one_line() -> None:
    result = invoke("report", "--preset", "deberta-v3-xsmall", "--attention", "sdpa")
    assert result.refused and "eager attention only" in result.stderr


COMMANDS = {
    "diagram": ["diagram", "--level", "overview", "--preset", "deberta-v3-small"],
    "latex": ["latex", "deberta-v3-small"],
    "compare": ["compare", "bert-base", "deberta-v3-base", "--json"],
    "fit": ["fit", "--preset", "deberta-v3-small", "--gpu-memory", "16GiB", "--seq-len", "128", "--json"],
    "sweep": ["sweep", "deberta-v3-xsmall", "deberta-v3-base", "--batch", "1,2", "--seq-len", "64"],
}


@pytest.mark.parametrize("command", COMMANDS)
def test_commands_work(command: str) -> None:
    result = invoke(*COMMANDS[command])
    assert result.code == 0, result.stderr
    assert "deberta-v3" in result.stdout


SMALL = {"num_hidden_layers": 1, "vocab_size": 500, "hidden_size": 66, "intermediate_size": 96, "position_buckets": 8}


def test_validate_command() -> None:
    hf()
    sizes = [f"--set={key}={value}" for key, value in SMALL.items()]
    shape = ["--batch", "2", "--seq-len", "9"]
    result = invoke("validate", "--preset", "deberta-v3-xsmall", "--head", "sequence-classification", *shape, *sizes)
    assert result.code == 0, result.stdout + result.stderr
    assert result.stdout.count(" ok ") == 5


# ---- DeBERTa-v2's convolution (ConvLayer): conv_kernel_size, conv_groups, conv_act

CONV = {
    "vocab_size": 61,
    "hidden_size": 24,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "intermediate_size": 30,
    "max_position_embeddings": 20,
    "position_buckets": 6,
}
CONV_OPTIONS = [
    {"conv_kernel_size": 3},
    {"conv_kernel_size": 3, "conv_groups": 2, "conv_act": "gelu"},
    {"conv_kernel_size": 5, "conv_groups": 4, "hidden_dropout_prob": 0.0, "num_hidden_layers": 3},
]


def conv_config(options: dict[str, object], head: str | None = None) -> Config:
    sizes = {k: v for k, v in options.items() if k in CONV}
    options = {k: v for k, v in options.items() if k not in CONV}
    config = validated(Config("deberta-v2", {**CONV, **sizes}, "conv", options))
    return with_task(config, head=head) if head else config


@pytest.mark.parametrize("options", CONV_OPTIONS, ids=str)
def test_conv_parameters_match_hugging_face(options: dict[str, object]) -> None:
    """The first layer's output goes through ConvLayer: a Conv1d of H·H·k/groups weights and H biases,
    and its LayerNorm; every name and shape as Hugging Face has them."""
    transformers = hf()
    config = conv_config(options)
    model = transformers.DebertaV2Model(transformers.DebertaV2Config(**config.hugging_face()))
    assert model.encoder.conv is not None
    assert traced_param_shapes(config) == hf_param_shapes(model)
    assert count(config) == sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize(("dtype", "amp"), [("float32", None), ("bfloat16", None), ("bfloat16", "bfloat16")])
@pytest.mark.parametrize("options", CONV_OPTIONS, ids=str)
def test_conv_saved_bytes_and_flops_exact_against_pytorch(options: dict[str, object], dtype: str, amp: str) -> None:
    """Against the real model's saved_tensors_hooks and flop_counter: the convolution keeps its input (the
    embeddings' permuted copy; under autocast its bfloat16 copy and the weight's), the bool mask of the
    in-place fill, dropout's mask, what the activation keeps, the LayerNorm's input and statistics and the
    float mask of the last product; the flop counter counts the convolution 2·B·seq_len·H·(H/groups)·k
    forward, and backward as much again for the input's gradient and groups times as much for the
    weight's. (At seq_len 1 the permuted copies are views and the fill in place makes a CopySlices node,
    whose saved mask the hooks see but the measurement cannot reach, so the lengths here are longer.)"""
    hf()
    from symbert.validate.compare import validate

    for head, batch, length in ((None, 2, 7), ("mlm", 1, 5)):
        checks = validate(conv_config(options, head), batch, length, dtype, amp=amp)
        assert [(c.quantity, c.predicted) for c in checks] == [(c.quantity, c.measured) for c in checks]


FLOPS = ("forward", "backward")


def test_conv_flops_by_hand() -> None:
    """Groups 2, kernel 3, B = 2, seq_len 7, H = 24: forward 2·2·7·24·12·3 = 24,192 FLOPs; backward the
    input's gradient as much and the weight's twice as much (as torch.utils.flop_counter counts it)."""
    config = conv_config(CONV_OPTIONS[1])
    values = {**config.symbols(), B: 2, seq_len: 7}
    with_conv, without = (flops(symbert.trace(c)) for c in (config, conv_config({})))
    forward, backward = (with_conv[k].evaluate(with_conv[k].total - without[k].total, values) for k in FLOPS)
    assert (forward, backward) == (24_192, 3 * 24_192)


CONV_PEAKS = [
    # a masked-LM step, peaking in the optimizer's update
    ({"conv_kernel_size": 3, "hidden_size": 48, "num_attention_heads": 3, "intermediate_size": 100}, "mlm", 8, None),
    # narrow and long: the forward holds the peak, in the last layer, with the convolution's tensors kept
    (
        {"conv_kernel_size": 3, "conv_groups": 2, "conv_act": "gelu", "hidden_size": 32, "intermediate_size": 64},
        None,
        64,
        None,
    ),
    (
        {"conv_kernel_size": 5, "conv_groups": 4, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 3},
        None,
        64,
        "bfloat16",
    ),
]


@pytest.mark.parametrize(("options", "head", "length", "amp"), CONV_PEAKS, ids=range(len(CONV_PEAKS)))
def test_conv_step_peak_exact_against_pytorch(
    options: dict[str, object], head: str | None, length: int, amp: str | None
) -> None:
    """Two real CPU AdamW steps under torch.profiler: the peak is symbert's to the byte, and where."""
    hf()
    from symbert.validate.peak import check_peak

    config = conv_config({"max_position_embeddings": 64, **options}, head)
    check = check_peak(config, 2, length, "adamw", amp=amp)
    measured = check.measured.tensors
    assert check.predicted == measured, f"predicted {check.predicted:,}, measured {measured:,}"
    assert check.predicted_where.startswith(f"step {check.measured.where.step} {check.measured.where.name}")


#: microsoft/deberta-v2-xlarge's config.json (xxlarge: 48 layers, the same width).
DEBERTA_V2_XLARGE = {
    "model_type": "deberta-v2",
    "attention_head_size": 64,
    "attention_probs_dropout_prob": 0.1,
    "conv_act": "gelu",
    "conv_kernel_size": 3,
    "hidden_act": "gelu",
    "hidden_dropout_prob": 0.1,
    "hidden_size": 1536,
    "initializer_range": 0.02,
    "intermediate_size": 6144,
    "layer_norm_eps": 1e-7,
    "max_position_embeddings": 512,
    "max_relative_positions": -1,
    "norm_rel_ebd": "layer_norm",
    "num_attention_heads": 24,
    "num_hidden_layers": 24,
    "pooler_dropout": 0,
    "pooler_hidden_act": "gelu",
    "pooler_hidden_size": 1536,
    "pos_att_type": "p2c|c2p",
    "position_biased_input": False,
    "position_buckets": 256,
    "relative_attention": True,
    "share_att_key": True,
    "type_vocab_size": 0,
    "vocab_size": 128100,
}


@pytest.mark.parametrize("layers", [24, 48], ids=["xlarge", "xxlarge"])
def test_deberta_v2_xlarge_count_equals_the_meta_device_model(tmp_path, layers: int) -> None:
    """deberta-v2-xlarge and -xxlarge read from their config files, counted as Hugging Face builds them
    on the meta device: the convolution adds 1536·1536·3 + 1536 weights and its LayerNorm's 2·1536."""
    transformers = hf()
    import torch

    (tmp_path / "config.json").write_text(json.dumps({**DEBERTA_V2_XLARGE, "num_hidden_layers": layers}))
    config = symbert.from_file(tmp_path)
    with torch.device("meta"):
        model = transformers.DebertaV2Model(transformers.AutoConfig.from_pretrained(tmp_path))
    assert model.encoder.conv is not None
    assert count(config) == sum(p.numel() for p in model.parameters())
    (tmp_path / "config.json").write_text(
        json.dumps({**DEBERTA_V2_XLARGE, "num_hidden_layers": layers, "conv_kernel_size": 0})
    )
    assert count(config) - count(symbert.from_file(tmp_path)) == 1536 * 1536 * 3 + 1536 + 2 * 1536
