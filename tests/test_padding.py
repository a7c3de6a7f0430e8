"""The structural option ``padding``: whether the batch has padding, so that Hugging Face builds and passes
an attention mask. Checked against PyTorch on CPU (saved_tensors_hooks, FlopCounterMode, the
profiler's peak) padded and unpadded, and worked by hand."""

from __future__ import annotations

import pytest
import sympy
from conftest import H96_L3, hf, random_configs, run_cli

import symbert
from symbert.analysis.activations import activations
from symbert.analysis.autocast import with_dtypes
from symbert.analysis.flops import flops
from symbert.analysis.policy import MemoryOptions
from symbert.configs import with_task
from symbert.models import MODELS
from symbert.symbols import A, B, L, seq_len

S = seq_len
ODD = symbert.Config("bert", {**H96_L3, "num_hidden_layers": 2, "max_position_embeddings": 20}, "h96-a3")


def config_with(config: symbert.Config, **options: object) -> symbert.Config:
    name = "-".join([config.name, *(f"{k}={v}" for k, v in options.items())])
    return symbert.Config(config.model, config.values, name, {**config.options, **options})


# ---- the graph


@pytest.mark.parametrize("model", [m for m, spec in MODELS.items() if spec.option("padding")])
def test_every_family_takes_the_option(model: str) -> None:
    """Padded: one padding mask_bias [B, 1, seq_len, seq_len] (as masking_utils builds it) and an add to the
    scores in each layer; without padding neither, though the caller still passes attention_mask. A
    sliding-window mask (ModernBERT's local layers) is built either way, with its adds."""
    for head in ("model", *MODELS[model].heads):
        task = symbert.Task(head)
        padded, full = symbert.trace(model, task=task), symbert.trace(model, task=task, padding=False)
        windows = {n.name for n in padded.nodes if n.op == "mask_bias" and n.attr("window") is not None}
        masks = [n for n in padded.nodes if n.op == "mask_bias" and n.name not in windows]
        assert len(masks) == 1 and [n.name.rsplit("/", 1)[-1] for n in padded.nodes if "add_mask" in n.name]
        batch = padded.tensor(masks[0].inputs[0]).shape[0]
        assert padded.tensor(masks[0].outputs[0]).shape == (batch, 1, S, S)
        adds = [n for n in full.nodes if "add_mask" in n.name and full.tensor(n.inputs[1]).producer not in windows]
        assert not [n for n in full.nodes if n.op == "mask_bias" and n.name not in windows] + adds
        assert any(n.name.endswith("attention_mask") for n in full.nodes)


def test_cli_flag_and_description() -> None:
    out = run_cli("report", "--preset", "bert-tiny", "--no-padding", "--attention", "sdpa")
    assert out.returncode == 0, out.stderr
    assert "without padding" in out.stdout
    out = run_cli("report", "--preset", "distilbert-base-uncased", "--no-padding", "--head", "mlm")
    assert out.returncode == 0, out.stderr


def test_non_matmul_flops_count_the_mask_add() -> None:
    """Eager adds the mask to the scores only when there is one: B·A·seq_len² per layer."""
    padded = flops(symbert.trace())["non_matmul_forward"].total
    full = flops(symbert.trace(padding=False))["non_matmul_forward"].total
    assert sympy.expand(padded - full - L * B * A * S**2) == 0


def test_cpu_autocast_softmax_dtype_follows_padding() -> None:
    """CPU autocast lists neither softmax nor add: the float32 mask promotes the bf16 scores, so softmax
    runs in float32 with padding, in bf16 without."""
    cpu = MemoryOptions("torch-cpu", "bfloat16", amp=True)
    for padding, dtype in ((True, "float32"), (False, "bfloat16")):
        graph = with_dtypes(symbert.trace(padding=padding), cpu)
        node = graph.node("encoder/layer/attention/self/softmax")
        assert graph.tensor(node.outputs[0]).dtype == dtype


# ---- what the kernels keep, by hand (bert-tiny, B=2, seq_len=9, attention dropout 0: the CPU flash kernel)


@pytest.mark.parametrize(("dtype", "size"), [("float32", 4), ("bfloat16", 2)])
def test_cpu_flash_keeps_the_mask_per_layer(dtype: str, size: int) -> None:
    """Measured on torch 2.13: ScaledDotProductFlashAttentionForCpuBackward0 keeps ``_saved_attn_mask``,
    [2, 1, 9, 9] in the query dtype, in each of the 2 layers: 2 × 2·9·9·size (fp32 361,744 → 363,040,
    bf16 181,160 → 181,808). Eager keeps no mask either way."""
    tiny = config_with(symbert.preset("bert-tiny"), attention_probs_dropout_prob=0.0)
    values = {**tiny.symbols(), B: 2, S: 9}

    def total(config: symbert.Config, attention: str) -> int:
        options = MemoryOptions("torch-cpu", dtype, attention)
        breakdown = activations(symbert.trace(config), options, config.symbols())
        return breakdown.evaluate(breakdown.total, values)

    full = config_with(tiny, padding=False)
    assert total(tiny, "sdpa") - total(full, "sdpa") == 2 * 2 * 9 * 9 * size
    assert total(tiny, "eager") == total(full, "eager")
    assert total(full, "sdpa") == {"float32": 361_744, "bfloat16": 181_160}[dtype]


# ---- exact against PyTorch on CPU, padded and unpadded

#: attention, attention dropout: eager, the math kernel (dropout on) and the CPU flash kernel (off).
KERNELS = [("eager", 0.1), ("sdpa", 0.1), ("sdpa", 0.0)]
SHAPES = [(3, 1), (2, 9)]


@pytest.mark.parametrize("padding", [True, False])
@pytest.mark.parametrize(("attention", "p"), KERNELS)
@pytest.mark.parametrize("head", [None, "mlm", "sequence-classification"])
def test_exact_against_pytorch(padding: bool, attention: str, p: float, head: str | None) -> None:
    """H=96, A=3, two layers, seq_len 1 and 9, fp32 and bf16, bare and with a head and its loss."""
    hf()
    from symbert.validate.compare import validate
    from symbert.validate.hf import padded

    config = config_with(ODD, padding=padding, attention_probs_dropout_prob=p)
    if head is not None:
        config = with_task(config, head=head)
    assert padded(config) is padding
    for dtype in ("float32", "bfloat16"):
        for batch, length in SHAPES:
            checks = validate(config, batch, length, dtype, attention=attention)
            assert [(c.quantity, c.predicted) for c in checks] == [(c.quantity, c.measured) for c in checks]


@pytest.mark.parametrize("padding", [True, False])
@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
@pytest.mark.parametrize(("attention", "p"), KERNELS)
def test_exact_under_cpu_autocast(padding: bool, dtype: str, attention: str, p: float) -> None:
    """torch.autocast("cpu", dtype) over a float32 model, bare and with the masked-LM head."""
    hf()
    from symbert.validate.compare import validate

    config = config_with(ODD, padding=padding, attention_probs_dropout_prob=p)
    for c in (config, with_task(config, head="mlm")):
        for batch, length in SHAPES:
            checks = validate(c, batch, length, dtype, attention=attention, amp=True)
            assert [(k.quantity, k.predicted) for k in checks] == [(k.quantity, k.measured) for k in checks]


@pytest.mark.parametrize("model", ["albert", "roberta", "distilbert"])
def test_other_families_without_padding(model: str) -> None:
    hf()
    from symbert.validate.compare import validate

    for config in random_configs(model, 2, seed=5):
        full = config_with(config, padding=False)
        for attention in ("eager", "sdpa"):
            checks = validate(full, 2, 5, "float32", attention=attention)
            assert [(c.quantity, c.predicted) for c in checks] == [(c.quantity, c.measured) for c in checks]


@pytest.mark.parametrize("padding", [True, False])
@pytest.mark.parametrize(("attention", "p"), KERNELS)
def test_peak_against_pytorch(padding: bool, attention: str, p: float) -> None:
    """Two real CPU steps under torch.profiler. Padded, Hugging Face holds the 4D mask (float32 for eager,
    bool for sdpa) until the encoder's forward returns, and the CPU flash kernel keeps its converted bias."""
    hf()
    from symbert.validate.peak import check_peak

    config = config_with(symbert.Config("bert", H96_L3, "h96-a3-l3"), padding=padding, attention_probs_dropout_prob=p)
    check = check_peak(config, 3, 20, "momentum", attention=attention)
    assert abs(check.error) <= 1e-4, f"predicted {check.predicted:,}, measured {check.measured.tensors:,}"


def test_padded_eager_forward_holds_the_float_mask() -> None:
    """The forward's peak (end of forward, seq_len 256, B=4, H=96): padded minus unpadded is the float32
    mask [4, 1, 256, 256] Hugging Face holds to the end, 1,048,576 bytes (measured with the profiler:
    47,768,312 → 48,816,888)."""
    from symbert.training.states import Training
    from symbert.training.step import phases, step_memory

    config = symbert.Config("bert", {**H96_L3, "max_position_embeddings": 256}, "h96", {})
    values = {**config.symbols(), B: 4, S: 256}

    def forward_peak(padding: bool) -> int:
        c = config_with(config, padding=padding)
        memory = step_memory(symbert.trace(c), Training("sgd", "fp32", MemoryOptions("torch-cpu")), values)
        return next(p.peak.total for p in phases(memory.timeline(values)) if p.name == "forward")

    assert forward_peak(True) - forward_peak(False) == 4 * 256 * 256 * 4


def test_forced_flash_keeps_the_mask_on_cpu_only() -> None:
    """The CPU flash kernel takes a mask (as measured above), so forcing it keeps the bias; CUDA flash
    takes none, so forced there it keeps no bias. bert-tiny, B=2, seq_len=9, fp32, dropout 0.1 (which
    sdpa would run as math on CPU): 2 layers × 2·9·9·4 = 1,296 bytes on CPU, 0 on CUDA."""
    tiny = symbert.preset("bert-tiny")
    values = {**tiny.symbols(), B: 2, S: 9}

    def total(config: symbert.Config, policy: str) -> int:
        breakdown = activations(symbert.trace(config), MemoryOptions(policy, "float32", "flash"), config.symbols())
        return breakdown.evaluate(breakdown.total, values)

    full = config_with(tiny, padding=False)
    assert total(tiny, "torch-cpu") - total(full, "torch-cpu") == 1_296
    assert total(tiny, "torch-cuda") == total(full, "torch-cuda")
