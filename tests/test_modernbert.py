"""ModernBERT against Hugging Face's ModernBertModel and its task classes: parameters, bytes autograd keeps
and FLOPs, on small odd configs (a window under seq_len, fewer layers than the global period), fp32 and
bf16, eager and sdpa, padded and not; the released configs' parameter counts; hand-worked formulas."""

from __future__ import annotations

import csv
import io
import json
from dataclasses import replace

import pytest
import sympy
from conftest import hf, hf_param_shapes, traced_param_shapes
from inprocess import invoke

import symbert
from symbert.analysis.activations import activations
from symbert.analysis.policy import MemoryOptions
from symbert.symbols import A, B, C, H, I, L, L_global, below, is_one, seq_len, vocab_size, window

#: Small configs: three heads of width 8 with a window of 4 under seq_len 7; four heads of width 6, a
#: global layer every 2; two layers with a global period of 3 (layer 1 local, no other global layer).
SMALL = {
    "odd": {"vocab_size": 37, "hidden_size": 24, "num_hidden_layers": 5, "num_attention_heads": 3,
            "intermediate_size": 19, "global_attn_every_n_layers": 3, "local_attention": 4},
    "period-2": {"vocab_size": 50, "hidden_size": 24, "num_hidden_layers": 4, "num_attention_heads": 4,
                 "intermediate_size": 7, "global_attn_every_n_layers": 2, "local_attention": 6},
    "short": {"vocab_size": 11, "hidden_size": 12, "num_hidden_layers": 2, "num_attention_heads": 2,
              "intermediate_size": 30, "global_attn_every_n_layers": 3, "local_attention": 2},
}  # fmt: skip


#: Heads pooled with classifier_pooling "mean" instead of "cls".
MEAN_POOLED = {"mean-pooled": "sequence-classification", "mean-pooled-choices": "multiple-choice"}


def small(name: str, head: str = "model", choices: int = 4, **options: object) -> symbert.Config:
    """A small config with a head (of :data:`MEAN_POOLED`, the head pooled by the mean)."""
    config = symbert.with_overrides(symbert.preset("modernbert-base"), [f"{k}={v}" for k, v in SMALL[name].items()])
    if head in MEAN_POOLED:
        head, options = MEAN_POOLED[head], {**options, "classifier_pooling": "mean"}
    config = replace(config, name=name, options={**config.options, **options})
    task = {"choices": choices} if head == "multiple-choice" else {}
    return symbert.with_task(config, head=head, **task)


def evaluate(expr: sympy.Expr, config: symbert.Config, batch: int, length: int) -> int:
    return int(sympy.sympify(expr).subs({**config.symbols(), B: batch, seq_len: length}))


@pytest.mark.parametrize(("name", "expected"), [("modernbert-base", 149_014_272), ("modernbert-large", 394_781_696)])
def test_released_configs_count_what_hugging_face_builds(name: str, expected: int) -> None:
    """The presets' counts, and Hugging Face's ModernBertModel built from the same config (meta device)."""
    config = symbert.preset(name)
    breakdown = symbert.params(symbert.trace(config))
    assert breakdown.evaluate(breakdown.total, config.symbols()) == expected
    transformers, torch = hf(), pytest.importorskip("torch")
    with torch.device("meta"):
        model = transformers.ModernBertModel(transformers.ModernBertConfig(**config.values))
    assert sum(p.numel() for p in model.parameters()) == expected


def test_parameter_formula_by_hand() -> None:
    """Per layer Wqkv 3H², Wo H², the GeGLU's Wi 2HI and Wo IH, two bias-free norms 2H; layer 0 has no
    attention norm; token embeddings V·H with their norm H, and the final norm H. No biases anywhere."""
    total = symbert.params(symbert.trace("modernbert")).total
    by_hand = L * (4 * H**2 + 3 * H * I + 2 * H) - H + vocab_size * H + H + H
    assert sympy.expand(total - by_hand) == 0


def test_scores_are_full_and_only_local_layers_keep_a_mask_without_padding() -> None:
    """Eager attention keeps the float32 softmax of all seq_len² scores in every layer, window or not;
    under sdpa without padding only the L − L_global local layers get a mask, whose converted bias the
    CPU flash kernel keeps ([B, 1, seq_len, seq_len] in float32)."""
    eager = activations(symbert.trace("modernbert"), MemoryOptions("torch-cpu"))
    scores = next(c for c in eager.components() if c.name == "attention scores")
    assert sympy.expand(scores.total).coeff(seq_len**2) == 4 * A * B * L
    sdpa = MemoryOptions("torch-cpu", attention="sdpa")
    unpadded = activations(symbert.trace("modernbert", padding=False), sdpa).total
    padded = activations(symbert.trace("modernbert", padding=True), sdpa).total
    short = below(seq_len, sympy.floor(window / 2))  # an unpadded batch this short gets no window mask
    assert sympy.expand(unpadded).coeff(seq_len**2) == sympy.expand(4 * B * (L - L_global) * (1 - short))
    assert sympy.expand(padded).coeff(seq_len**2) == 4 * B * L


@pytest.mark.parametrize(("attention", "dtype"), [("sdpa", "float32"), ("eager", "bfloat16"), ("sdpa", "bfloat16")])
def test_short_unpadded_batch_has_no_window_mask(attention: str, dtype: str) -> None:
    """Hugging Face builds no window mask for an unpadded batch shorter than ⌊local_attention/2⌋ (8
    here): saved bytes and FLOPs equal the real model's on both sides of it, at batch 1 and 2."""
    hf()
    from symbert.validate.compare import validate

    config = symbert.with_overrides(small("odd", padding=False), ["local_attention=16"])
    for batch, length in ((1, 7), (2, 7), (2, 8)):
        checks = validate(config, batch, length, dtype, attention=attention)
        assert [(c.quantity, c.predicted) for c in checks] == [(c.quantity, c.measured) for c in checks]


@pytest.mark.parametrize("policy", ["torch-cpu", "torch-cuda"])
def test_fit_steps_over_the_window_mask(policy: str) -> None:
    """The peak jumps where the window mask appears (seq_len = ⌊local_attention/2⌋ = 8): fit solves each
    side of it exactly, and the compiled sweep evaluates the bracket at every length (under torch-cuda
    with the allocator's rounding of an allocation that exists on one side only)."""
    from symbert.training.fit import fit
    from symbert.training.states import Training
    from symbert.training.step import step_memory
    from symbert.training.sweep import sweep

    config = symbert.with_overrides(small("odd", padding=False), ["local_attention=16"])
    training = Training(memory=MemoryOptions(policy, attention="sdpa"))
    sizes = config.symbols()
    memory = step_memory(symbert.trace(config), training, sizes)
    points = [(b, s) for b in (1, 2) for s in (6, 7, 8, 9)]
    peaks = {(b, s): memory.peak({**sizes, B: b, seq_len: s}).total for b, s in points}
    if policy == "torch-cpu":  # (under torch-cuda the workspaces and the update hold the peak here)
        assert peaks[2, 8] - peaks[2, 7] > peaks[2, 7] - peaks[2, 6]  # the local layers' masks, from 8 on
        for s in (7, 8):
            assert fit(config, training, peaks[2, s], batch=2).seq_len == s
    out = io.BytesIO()
    sweep([config], [training], [1, 2], [6, 7, 8, 9], ("peak",), out)
    assert [int(r["peak"]) for r in csv.DictReader(io.StringIO(out.getvalue().decode()))] == list(peaks.values())


CASES = [
    ("odd", "model", True, "float32", "eager"),
    ("odd", "model", False, "bfloat16", "eager"),
    ("odd", "model", False, "float32", "sdpa"),
    ("odd", "model", True, "bfloat16", "sdpa"),
    ("period-2", "mlm", False, "bfloat16", "eager"),
    ("period-2", "mlm", True, "float32", "sdpa"),
    ("period-2", "sequence-classification", True, "bfloat16", "eager"),
    ("short", "model", False, "float32", "eager"),
    ("short", "sequence-classification", False, "bfloat16", "sdpa"),
    ("short", "mean-pooled", True, "bfloat16", "eager"),
    ("odd", "token-classification", False, "bfloat16", "sdpa"),
    ("period-2", "mean-pooled", False, "float32", "sdpa"),
    ("odd", "question-answering", True, "float32", "eager"),
    ("short", "question-answering", False, "bfloat16", "sdpa"),
    ("period-2", "question-answering", True, "bfloat16", "sdpa"),
    ("period-2", "multiple-choice", True, "bfloat16", "eager"),
    ("odd", "multiple-choice", False, "float32", "sdpa"),
    ("short", "multiple-choice", True, "float32", "sdpa"),
    ("short", "mean-pooled-choices", True, "float32", "eager"),
    ("odd", "mean-pooled-choices", False, "bfloat16", "sdpa"),
]


@pytest.mark.parametrize(("name", "head", "padding", "dtype", "attention"), CASES, ids=str)
def test_exact_against_hugging_face(name: str, head: str, padding: bool, dtype: str, attention: str) -> None:
    """Parameters (every name and shape), bytes saved for backward and matmul FLOPs of forward and backward
    equal the real model's, batch 2 and seq_len 7 (over the window)."""
    hf()
    from symbert.validate.compare import validate
    from symbert.validate.hf import hugging_face

    config = small(name, head, padding=padding)
    checks = validate(config, 2, 7, dtype, attention=attention)
    assert [(c.quantity, c.predicted) for c in checks] == [(c.quantity, c.measured) for c in checks]
    model, _ = hugging_face(config, 1, 2, "float32")
    assert traced_param_shapes(config) == hf_param_shapes(model)


@pytest.mark.parametrize(("name", "head", "dtype"), [("odd", "model", "float32"), ("period-2", "mlm", "bfloat16")])
def test_batch_one_keeps_the_fused_projection(name: str, head: str, dtype: str) -> None:
    """At batch 1 eager attention's product reads V in place, so it keeps the whole fused QKV projection
    where at batch 2 it keeps a copy of V: saved bytes equal the real model's at both."""
    hf()
    from symbert.validate.compare import validate

    for batch in (1, 2):
        checks = validate(small(name, head), batch, 7, dtype)
        assert [(c.quantity, c.predicted) for c in checks] == [(c.quantity, c.measured) for c in checks]


def test_batch_one_term_by_hand() -> None:
    """Per layer, batch 1 keeps QKV (3·seq_len·H) instead of V's copy (seq_len·H): 2·seq_len·H·4 bytes
    more in float32, a bracket [B = 1] in the formula, in every command's formulas and values."""
    total = activations(symbert.trace("modernbert"), MemoryOptions()).total
    assert sympy.expand(total - total.subs(is_one(B), 0)) == 8 * seq_len * H * L * is_one(B)
    config = symbert.preset("modernbert-base")
    one, two = (symbert.report(config, b, 128, MemoryOptions()).value("activation_bytes") for b in (1, 2))
    by_hand = 8 * 128 * 768 * 22
    assert one == evaluate(total, config, 1, 128) == evaluate(total.subs(is_one(B), 0), config, 1, 128) + by_hand
    assert two == evaluate(total.subs(is_one(B), 0), config, 2, 128)
    eager = ("--policy", "torch-cpu", "--attention", "eager")
    assert "[B = 1]" in invoke("report", "--preset", "modernbert-base", *eager).stdout
    latex = invoke("latex", "--preset", "modernbert-base", "--notation", "megatron", *eager).stdout
    assert r"\left[b = 1\right]" in latex


@pytest.mark.parametrize("head", ["model", "multiple-choice"])
def test_sweep_and_fit_at_batch_one(head: str) -> None:
    """The compiled sweep and fit's solver evaluate the bracket at each batch: the sweep equals the
    replayed peak at batch 1 and 2, and a budget of exactly the batch-1 peak fits batch 1 and no more;
    with one choice per example the bracket [B·C = 1] is [B = 1]."""
    from symbert.training.fit import fit
    from symbert.training.states import Training
    from symbert.training.step import step_memory
    from symbert.training.sweep import sweep

    config, training = small("odd", head, choices=1), Training()
    sizes = config.symbols()
    memory = step_memory(symbert.trace(config), training, sizes)
    peaks = [memory.peak({**sizes, B: b, seq_len: 7}).total for b in (1, 2)]
    out = io.BytesIO()
    sweep([config], [training], [1, 2], [7], ("peak", "activation_bytes"), out)
    rows = list(csv.DictReader(io.StringIO(out.getvalue().decode())))
    assert [int(r["peak"]) for r in rows] == peaks
    saved = [symbert.report(config, b, 7, training.memory).value("activation_bytes") for b in (1, 2)]
    assert [int(r["activation_bytes"]) for r in rows] == saved
    assert fit(config, training, peaks[0], length=7).batch == 1
    assert fit(config, training, peaks[0] - 1, length=7).batch is None


def test_head_parameters_by_hand() -> None:
    """Both heads put ModernBertPredictionHead (dense H², bias-free by default, and a norm weight H) before
    a classifier with its bias: H → 2 for the answer span's start and end, H → 1 per choice."""
    total = {
        h: symbert.params(symbert.trace(small("odd", h))).total
        for h in ("model", "question-answering", "multiple-choice")
    }
    assert sympy.expand(total["question-answering"] - total["model"]) == H**2 + H + 2 * H + 2
    assert sympy.expand(total["multiple-choice"] - total["model"]) == H**2 + H + H + 1


def test_choice_pooling_keeps_two_indices_per_row() -> None:
    """ModernBertForMultipleChoice pools "cls" as x[arange(rows), mask.argmax(-1)], a copy whose backward
    keeps both int64 indices: 16 bytes a row, then the prediction head's dense and GELU inputs, its
    LayerNorm's input, mean and rstd, and the classifier's input, over B·C rows in float32."""
    saved = activations(symbert.trace(small("odd", "multiple-choice")), MemoryOptions())
    head = next(c for c in saved.components() if c.name == "head")
    assert sympy.expand(head.total - (16 * B * C + 4 * 4 * B * C * H + 8 * B * C)) == 0


def test_choices_fold_the_batch_into_b_c_rows() -> None:
    """The encoder runs on B·C rows, so eager attention reads V in place (keeping the fused projection,
    8·seq_len·H·L bytes more in float32) exactly when B·C = 1: at one choice and batch 1, never with three
    choices. Saved bytes equal the real model's at (C, B) = (1, 1), (1, 2) and (3, 1)."""
    hf()
    from symbert.validate.compare import validate

    total = activations(symbert.trace(small("odd", "multiple-choice")), MemoryOptions()).total
    assert sympy.expand(total - total.subs(is_one(B * C), 0)) == 8 * seq_len * H * L * is_one(B * C)
    assert not total.subs(C, 3).has(is_one) and total.subs(C, 1).has(is_one(B))
    for choices, batch in ((1, 1), (1, 2), (3, 1)):
        checks = validate(small("odd", "multiple-choice", choices=choices), batch, 7, "float32")
        assert [(c.quantity, c.predicted) for c in checks] == [(c.quantity, c.measured) for c in checks]


@pytest.mark.parametrize(("head", "attention"), [("model", "eager"), ("mlm", "sdpa")])
def test_exact_under_cpu_autocast(head: str, attention: str) -> None:
    hf()
    from symbert.validate.compare import validate

    checks = validate(small("odd", head), 2, 7, "bfloat16", attention=attention, amp=True)
    assert [(c.quantity, c.predicted) for c in checks] == [(c.quantity, c.measured) for c in checks]


@pytest.mark.parametrize("head", ["mlm", "question-answering", "multiple-choice"])
def test_dropouts_and_biases_exact(head: str) -> None:
    """Every dropout on (attention, its output, MLP, embeddings, classifier) and every bias flag flipped."""
    hf()
    from symbert.validate.compare import validate

    flags = ["attention_dropout=0.1", "mlp_dropout=0.1", "embedding_dropout=0.1", "classifier_dropout=0.1"]
    flags += ["norm_bias=true", "attention_bias=true", "mlp_bias=true", "decoder_bias=false", "classifier_bias=true"]
    config = symbert.with_overrides(small("period-2", head), flags)
    checks = validate(config, 2, 7, "float32")
    assert [(c.quantity, c.predicted) for c in checks] == [(c.quantity, c.measured) for c in checks]


def test_unrolled_layers_give_the_same_numbers() -> None:
    """Layer 0, the global layers and the local ones traced one by one: the same totals."""
    config = small("odd")
    options = MemoryOptions("torch-cpu", "bfloat16", "sdpa")
    for quantity in (symbert.params, lambda g: activations(g, options)):
        folded, unrolled = quantity(symbert.trace(config)), quantity(symbert.trace(config, unroll=True))
        assert evaluate(folded.total, config, 3, 11) == evaluate(unrolled.total, config, 3, 11)


def test_layer_types_read_as_a_global_period(tmp_path) -> None:
    """transformers 5 writes layer_types instead of global_attn_every_n_layers; any other pattern is refused."""
    types = ["full_attention", "sliding_attention", "full_attention", "sliding_attention"]
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"model_type": "modernbert", "num_hidden_layers": 4, "layer_types": types}))
    assert symbert.from_file(path).values["global_attn_every_n_layers"] == 2
    path.write_text(json.dumps({"model_type": "modernbert", "num_hidden_layers": 4, "layer_types": types[::-1]}))
    result = invoke("params", "--config", str(path))
    assert result.refused and "layer_types" in result.stderr


@pytest.mark.parametrize(
    ("flag", "message"),
    [
        ("num_hidden_layers=1", "a local layer"),
        ("global_attn_every_n_layers=1", "a local layer"),
        ("num_attention_heads=1", "num_attention_heads"),
        ("num_attention_heads=256", "even head width"),
    ],
)
def test_configs_symbert_does_not_model_get_one_line(flag: str, message: str) -> None:
    result = invoke("params", "--preset", "modernbert-base", "--set", flag)
    assert result.refused and message in result.stderr


@pytest.mark.parametrize(
    "command",
    [
        ("compare", "bert-base", "modernbert-base"),
        ("latex", "modernbert-base", "modernbert-large"),
        ("diagram", "--preset", "modernbert-large", "--level", "layer", "--format", "dot"),
        ("fit", "--preset", "modernbert-base", "--seq-len", "1024", "--gpu", "h100"),
        ("sweep", "--preset", "modernbert-base", "--batch", "1,4", "--seq-len", "128,8192"),
        ("report", "--preset", "modernbert-large", "--head", "mlm", "--attention", "sdpa", "--json"),
        ("params", "--preset", "modernbert-base", "--head", "question-answering"),
        ("latex", "modernbert-base", "--head", "multiple-choice"),
        ("diagram", "--preset", "modernbert-base", "--head", "question-answering", "--format", "dot"),
        ("fit", "--preset", "modernbert-base", "--head", "multiple-choice", "--seq-len", "512", "--gpu", "h100"),
        ("sweep", "--preset", "modernbert-base", "--head", "multiple-choice", "--choices", "1", "--batch", "1,2"),
        ("report", "--preset", "modernbert-base", "--head", "question-answering", "--attention", "sdpa"),
    ],
    ids=lambda c: c[0],
)
def test_every_command_runs(command: tuple[str, ...]) -> None:
    result = invoke(*command)
    assert result.code == 0, result.stderr
    assert result.stdout


@pytest.mark.parametrize("head", ["model", "question-answering", "multiple-choice"])
def test_validate_command_on_a_small_config(head: str) -> None:
    hf()
    flags = [a for k, v in SMALL["odd"].items() for a in ("--set", f"{k}={v}")]
    result = invoke("validate", "--preset", "modernbert-base", *flags, "--head", head, "--batch", "2", "--seq-len", "7")
    assert result.code == 0, result.stdout + result.stderr
    assert "mismatch" not in result.stdout.lower()


def test_cuda_kernel_of_a_mask_not_always_built() -> None:
    """CUDA bf16 with a head width of 6: a local layer's call with its window mask runs the math kernel
    (memory-efficient needs a multiple of 8), without it flash, whose backward recomputes Q·Kᵀ
    (2·B·H·seq_len² per layer, by hand); the global layers, never masked here, always run flash."""
    from symbert.analysis.activations import attention_kernels
    from symbert.analysis.flops import flops

    config = symbert.with_overrides(small("short", padding=False), ["hidden_size=12", "local_attention=128"])
    graph = symbert.trace(config)
    options = MemoryOptions("torch-cuda", "bfloat16", "sdpa")
    backward = sympy.expand(flops(graph, options, config.symbols())["backward"].total)
    short = below(seq_len, sympy.floor(window / 2))
    assert backward.coeff(seq_len**2) == sympy.expand(8 * B * H * L + 2 * B * H * (L_global + (L - L_global) * short))
    kernels = attention_kernels(graph, options, config.symbols())
    assert kernels == ("flash", "math (flash where the mask is not built)")
