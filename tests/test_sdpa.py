"""--attention sdpa: the kernel PyTorch picks and what it keeps, measured on CPU and worked by hand for CUDA."""

from __future__ import annotations

import pytest
import sympy
from conftest import H96_L3, has_sdpa, hf, random_bert_configs, random_configs
from test_heads import CASES as HEAD_CASES

import symbert
from symbert.analysis.activations import activations
from symbert.analysis.policy import MemoryOptions
from symbert.analysis.report import report
from symbert.analysis.sdpa import choose_kernel
from symbert.symbols import B, H, I, seq_len

S = seq_len


def unpadded(config: symbert.Config) -> symbert.Config:
    """The config on a batch without padding: Hugging Face passes no attention mask."""
    return symbert.Config(config.model, config.values, f"{config.name}-unpadded", {**config.options, "padding": False})


def layer_bytes(config: symbert.Config, options: MemoryOptions, batch: int, length: int) -> int:
    """Bytes one encoder layer keeps, at a config's sizes."""
    breakdown = activations(symbert.trace(config), options, config.symbols())
    per_layer = sum(c.per_layer for c in breakdown.components() if c.per_layer is not None)
    return breakdown.evaluate(per_layer, {**config.symbols(), B: batch, S: length})


# ---- kernel choice, read off aten/src/ATen/native/transformers/sdp_utils_cpp.cpp and cuda/sdp_utils.cpp


@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "float16"])
def test_cpu_runs_flash_only_without_dropout(dtype: str) -> None:
    # use_flash_attention_cpp: check_for_dropout rejects dropout_p > 0; math is the fallback.
    assert choose_kernel("cpu", dtype, 0.1, 64) == "math"
    assert choose_kernel("cpu", dtype, 0.0, 64) == "flash"
    assert choose_kernel("cpu", dtype, 0.0, 64, masked=True) == "flash"  # check_attn_mask_shape accepts a mask


@pytest.mark.parametrize(
    ("dtype", "head_dim", "masked", "kernel"),
    [
        ("bfloat16", 64, False, "flash"),
        ("float16", 64, False, "flash"),
        ("bfloat16", 30, False, "flash"),  # the composite pads the head dim to 32
        ("bfloat16", 256, False, "flash"),
        ("bfloat16", 264, False, "efficient"),  # flash takes head dims up to 256
        ("bfloat16", 258, False, "math"),  # efficient needs a multiple of 8 in 16-bit
        ("bfloat16", 64, True, "efficient"),  # flash takes no attn_mask
        ("float32", 64, False, "efficient"),  # flash is 16-bit only
        ("float32", 30, False, "math"),  # efficient needs a multiple of 4 in fp32
        ("float32", sympy.Symbol("d", positive=True, integer=True), False, "efficient"),  # symbolic: a multiple of 8
    ],
)
def test_cuda_kernel_choice(dtype: str, head_dim: int, masked: bool, kernel: str) -> None:
    assert choose_kernel("cuda", dtype, 0.1, head_dim, masked) == kernel


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize(
    ("p", "node"), [(0.1, "SafeSoftmaxBackward0"), (0.0, "ScaledDotProductFlashAttentionForCpuBackward0")]
)
def test_cpu_kernel_choice_is_what_torch_runs(dtype: str, p: float, node: str) -> None:
    """The autograd nodes of a real Hugging Face sdpa layer name the kernel: the math kernel's softmax, or
    the CPU flash kernel's backward."""
    hf()
    from symbert.validate import hf as build
    from symbert.validate import measure

    config = {**H96_L3, "num_hidden_layers": 1, "attention_probs_dropout_prob": p}
    model = build.build_model("bert", config, dtype, attention="sdpa")
    records = measure.saved_tensor_records(model, build.make_inputs("bert", config, 2, 5))
    assert node in {r.node for r in records}
    assert choose_kernel("cpu", dtype, p, 32) == ("math" if p else "flash")


@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("p", [0.0, 0.1])
def test_cpu_kernel_choice_with_and_without_a_mask(p: float, dtype: str, masked: bool) -> None:
    """scaled_dot_product_attention itself, on inputs that need gradients: the CPU flash kernel's backward
    node, or the math kernel's last op (its matmul's view; in 16-bit, the conversion back)."""
    torch = pytest.importorskip("torch", reason="the validate extra (torch) is not installed")
    q = torch.randn(2, 3, 5, 8, requires_grad=True).to(getattr(torch, dtype))
    mask = torch.ones(2, 1, 5, 5, dtype=torch.bool) if masked else None
    out = torch.nn.functional.scaled_dot_product_attention(q, q, q, attn_mask=mask, dropout_p=p)
    ran = "flash" if type(out.grad_fn).__name__ == "ScaledDotProductFlashAttentionForCpuBackward0" else "math"
    assert choose_kernel("cpu", dtype, p, 8, masked) == ran


# ---- exact against PyTorch on CPU (saved bytes, FLOPs as FlopCounterMode counts them, parameters)

ODD = symbert.Config("bert", {**H96_L3, "num_hidden_layers": 2, "max_position_embeddings": 20}, "h96-a3")
NO_DROPOUT = {"attention_probs_dropout_prob": 0.0}
CASES = [
    (symbert.preset("bert-tiny"), 2, 9),
    (ODD, 3, 1),
    (ODD, 1, 20),
    (symbert.Config("bert", ODD.values, "h96-no-dropout", NO_DROPOUT), 2, 7),
    (symbert.Config("bert", ODD.values, "h96-no-dropout-s1", NO_DROPOUT), 3, 1),
    (symbert.Config("bert", ODD.values, "h96-no-pooler-no-dropout", {"pooler": False, **NO_DROPOUT}), 2, 5),
    *(
        (
            c if i % 2 else symbert.Config("bert", c.values, f"{c.name}-no-dropout", {**c.options, **NO_DROPOUT}),
            1 + i % 3,
            1 + (3 * i) % 8,
        )
        for i, c in enumerate(random_bert_configs(4, seed=11))
    ),
]


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize(("config", "batch", "length"), CASES, ids=lambda v: getattr(v, "name", str(v)))
def test_exact_against_pytorch_sdpa(config: symbert.Config, batch: int, length: int, dtype: str) -> None:
    """Hugging Face BertModel with attn_implementation="sdpa": dropout on takes the math kernel (float32
    inside, whatever the model's dtype), dropout off the CPU flash kernel."""
    hf()
    from symbert.validate.compare import validate

    checks = validate(config, batch, length, dtype, attention="sdpa")
    assert [(c.quantity, c.predicted) for c in checks] == [(c.quantity, c.measured) for c in checks]


def test_cpu_math_kernel_by_hand() -> None:
    """Math kernel, bf16 model, dropout 0.1, B=2, S=5, H=96, A=3 (measured with saved_tensors_hooks on
    torch 2.13): in float32, Q·√scale, Kᵀ·√scale and V's copy (3 × 2·5·96·4 = 11520), the softmax
    output, the dropout noise and the dropout output (3 × 2·3·5·5·4 = 1800); the output projection
    keeps the bf16 copy made when the heads are transposed back (2·5·96·2 = 1920). Eager keeps the
    same tensors in bf16: 5760 + 900 + 1920."""
    cpu_bf16 = MemoryOptions("torch-cpu", "bfloat16")
    sdpa = layer_bytes(ODD, MemoryOptions("torch-cpu", "bfloat16", "sdpa"), 2, 5)
    eager = layer_bytes(ODD, cpu_bf16, 2, 5)
    assert sdpa - eager == (11520 + 1800 + 1920) - (5760 + 900 + 1920)


# ---- CUDA kernels, modelled from the PyTorch source and worked by hand


def test_bert_base_flash_layer_by_hand() -> None:
    """bert-base, B=1, seq_len=128, bf16 under torch-cuda: flash. Per layer, with [128, 768] bf16 =
    196,608 bytes and [128, 3072] bf16 = 786,432 bytes:
    layer input (the Q, K, V projections' input), Q, K, V, the flash output (which is also the output
    projection's input: merging heads is a view), layernorm 1's input and output, layernorm 2's input:
    8 × 196,608 = 1,572,864; GELU input and output: 2 × 786,432 = 1,572,864; two bool dropout masks:
    2 × 98,304 = 196,608; float32 mean and rstd of two layernorms: 4 × 512 = 2,048; the float32
    logsumexp [1, 12, 128]: 6,144; the philox seed and offset: 16. Total 3,350,544, on a batch without
    padding. With padding the mask moves the call to the memory-efficient kernel, which keeps the same
    tensors (its logsumexp rows, 128, are already a multiple of 32) and the bf16 bias [1, 1, 128, 128]
    (128 is a multiple of 8: not padded): 32,768 more."""
    base = symbert.preset("bert-base")
    bf16 = MemoryOptions("torch-cuda", "bfloat16", "sdpa")
    assert layer_bytes(unpadded(base), bf16, 1, 128) == 3_350_544
    assert layer_bytes(base, bf16, 1, 128) == 3_350_544 + 32_768
    # Eager keeps the softmax output, its bool mask and the dropout output instead of the logsumexp
    # and the philox state: 12·128² · (2 + 1 + 2) = 983,040.
    eager = layer_bytes(unpadded(base), MemoryOptions("torch-cuda", "bfloat16"), 1, 128)
    assert eager - 3_350_544 == 983_040 - 6_144 - 16


def test_bert_base_memory_efficient_layer_by_hand() -> None:
    """fp32 under torch-cuda takes the memory-efficient kernel, whose logsumexp rows are rounded up to a
    multiple of 32: seq_len 100 → [1, 12, 128] float32 = 6,144 bytes. With [100, 768] fp32 = 307,200:
    8 × 307,200 (as for flash) + GELU input and output 2 × 1,228,800 + bool masks 2 × 76,800 + float32
    statistics 4 × 400 + 6,144 + 16 = 5,076,560 without padding. With padding it also keeps the fp32
    bias, its last dim padded from 100 to 104 (a multiple of 8): 100·104·4 = 41,600."""
    base = symbert.preset("bert-base")
    fp32 = MemoryOptions("torch-cuda", "float32", "sdpa")
    assert layer_bytes(unpadded(base), fp32, 1, 100) == 5_076_560
    assert layer_bytes(base, fp32, 1, 100) == 5_076_560 + 41_600


def test_flash_pads_a_head_dim_off_multiples_of_eight() -> None:
    """H=120, A=4: head dim 30, padded to 32 before the flash kernel (pad_last_dim<8>). B=1, seq_len=10,
    bf16, torch-cuda, I=480. The kernel keeps padded copies of Q, K, V and its padded output
    (4 × 4·10·32·2 = 10,240) and the logsumexp (4·4·10 = 160) and philox state (16); its output is laid
    out like the padded Q, so transposing the heads back copies, and the output projection keeps that
    copy (2·10·120 = 2,400). With the layer input, layernorm 1's input and output and layernorm 2's
    input (4 × 2,400), GELU input and output (2 × 9,600), bool masks (2 × 1,200) and float32 statistics
    (4 × 40): 44,176. Without padding: a mask would rule flash out."""
    config = symbert.Config(
        "bert",
        {**H96_L3, "hidden_size": 120, "num_attention_heads": 4, "intermediate_size": 480},
        "h120-a4",
        {"padding": False},
    )
    assert layer_bytes(config, MemoryOptions("torch-cuda", "bfloat16", "sdpa"), 1, 10) == 44_176


def test_megatron_sdpa_is_korthikanti_with_flash() -> None:
    """Korthikanti et al. leave out statistics (the logsumexp, the philox state): flash keeps what
    selective recomputation keeps, 34·s·b·h per layer (on a batch without padding, as their pre-training
    batches are; a mask would add the memory-efficient kernel's bias)."""
    breakdown = activations(symbert.trace(padding=False), MemoryOptions("megatron", attention="sdpa"))
    per_layer = sum(c.per_layer for c in breakdown.components() if c.per_layer is not None)
    assert sympy.simplify(per_layer.subs(I, 4 * H) - 34 * S * B * H) == 0


def test_fused_kernel_flops_count_five_products_backward() -> None:
    """FlopCounterMode's SDPA backward formula is five products of 2·B·A·S²·(H/A) (Q·Kᵀ recomputed, dV,
    dP, dQ, dK), eager's four: bert-base, B=1, seq_len=128: 12 layers × 2·128²·768 = 301,989,888 more.
    Forward is the same two products."""
    base = symbert.preset("bert-base")
    sdpa = report(base, 1, 128, MemoryOptions("torch-cuda", "bfloat16", "sdpa"))
    eager = report(base, 1, 128, MemoryOptions("torch-cuda", "bfloat16"))
    assert sdpa.value("flops_forward") == eager.value("flops_forward")
    assert sdpa.value("flops_backward") - eager.value("flops_backward") == 301_989_888


def test_flash_forces_the_flash_kernel() -> None:
    """--attention flash keeps what the flash kernel keeps even where PyTorch would pick another kernel
    (fp32 on CUDA: no padding of the logsumexp; with padding, no bias either: flash takes no mask)."""
    base = symbert.preset("bert-base")
    flash = layer_bytes(unpadded(base), MemoryOptions("torch-cuda", "float32", "flash"), 1, 100)
    sdpa = MemoryOptions("torch-cuda", "float32", "sdpa")
    assert layer_bytes(unpadded(base), sdpa, 1, 100) - flash == 4 * 12 * 28
    assert layer_bytes(base, MemoryOptions("torch-cuda", "float32", "flash"), 1, 100) == flash
    assert layer_bytes(base, sdpa, 1, 100) - flash == 4 * 12 * 28 + 100 * 104 * 4


# ---- the training-step peak (torch.profiler over two real CPU steps)


@pytest.mark.parametrize(("batch", "length", "optimizer"), [(3, 20, "momentum"), (4, 256, "sgd")])
@pytest.mark.parametrize("p", [0.1, 0.0])
def test_peak_against_pytorch_sdpa(p: float, batch: int, length: int, optimizer: str) -> None:
    """The replay runs an SDPA call as one fused op keeping what its kernel keeps; the peak of two real
    steps of a Hugging Face sdpa model agrees to the byte, at seq_len 256 too, where the math kernel's
    seq_len² tensors are most of the peak."""
    hf()
    from symbert.validate.peak import check_peak

    values = {**H96_L3, "max_position_embeddings": 256}
    config = symbert.Config("bert", values, "h96-a3-l3", {"attention_probs_dropout_prob": p})
    check = check_peak(config, batch, length, optimizer, attention="sdpa")
    assert check.predicted == check.measured.tensors, f"predicted {check.predicted:,}"
    where = check.measured.where
    assert check.predicted_where.startswith(f"step {where.step} {where.name}")


# ---- the other families, and task models with their losses

#: Each family's attention dropout option (ALBERT's is 0 by default: the CPU flash kernel).
ATTENTION_DROPOUT = {
    "albert": "attention_probs_dropout_prob",
    "distilbert": "attention_dropout",
    "roberta": "attention_probs_dropout_prob",
}
FAMILIES = [
    c if i % 2 else symbert.Config(c.model, c.values, f"{c.name}-p0", {**c.options, ATTENTION_DROPOUT[c.model]: 0.0})
    for i, c in enumerate(config for model in ATTENTION_DROPOUT for config in random_configs(model, 2, 3))
]


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("config", FAMILIES, ids=lambda c: c.name)
def test_other_families_exact_against_pytorch_sdpa(config: symbert.Config, dtype: str) -> None:
    hf()
    from symbert.validate.compare import validate

    checks = validate(config, 2, 6, dtype, attention="sdpa")
    assert [(c.quantity, c.predicted) for c in checks] == [(c.quantity, c.measured) for c in checks]


@pytest.mark.parametrize("config", [c for c in HEAD_CASES if has_sdpa(c)], ids=lambda c: c.name)
def test_task_models_exact_against_pytorch_sdpa(config: symbert.Config) -> None:
    """Every head of every family, called with labels, the loss included (fp32)."""
    hf()
    from symbert.validate.compare import validate

    checks = validate(config, 3, min(6, config.max_length), "float32", attention="sdpa")
    assert [(c.quantity, c.predicted) for c in checks] == [(c.quantity, c.measured) for c in checks]


def test_selective_recompute_leaves_a_fused_call_alone() -> None:
    """The kernel keeps no seq_len² tensor, so recomputing the core would keep nothing less; full
    recomputation still keeps only each layer's input."""
    graph = symbert.trace()
    for dtype in ("float32", "bfloat16"):
        sdpa = activations(graph, MemoryOptions("torch-cuda", dtype, "sdpa")).total
        selective = activations(graph, MemoryOptions("torch-cuda", dtype, "sdpa", "selective")).total
        assert sympy.expand(sdpa - selective) == 0
    full = activations(graph, MemoryOptions("torch-cuda", attention="sdpa", recompute="full")).total
    assert full == activations(graph, MemoryOptions("torch-cuda", recompute="full")).total


def test_a_config_decides_the_kernel() -> None:
    """A head dim of 30 (H=120, A=4) in fp32 on CUDA is no multiple of 4: math, as the report says; in
    bf16 flash without padding, and with padding (a mask: no flash) math too (no multiple of 8)."""
    config = symbert.Config(
        "bert", {**H96_L3, "hidden_size": 120, "num_attention_heads": 4, "intermediate_size": 480}, "h120-a4"
    )
    assert report(config, 1, 8, MemoryOptions("torch-cuda", "float32", "sdpa")).kernels == ("math",)
    assert report(unpadded(config), 1, 8, MemoryOptions("torch-cuda", "bfloat16", "sdpa")).kernels == ("flash",)
    assert report(config, 1, 8, MemoryOptions("torch-cuda", "bfloat16", "sdpa")).kernels == ("math",)
    assert report(config, 1, 8, MemoryOptions("torch-cpu", "float32", "sdpa")).kernels == ("math",)
    assert report(config, 1, 8, MemoryOptions("torch-cpu")).kernels == ()


@pytest.mark.parametrize(("length", "amp"), [(64, "bfloat16"), (48, "bfloat16"), (64, "float16"), (128, None)])
def test_peak_inside_the_math_kernels_backward(length: int, amp: str | None) -> None:
    """Small models whose step peaks inside the CPU math kernel's backward (one layer, four heads of
    width 8, batch 1), exact: there it holds the attention weights' gradient and V's, both in the compute
    dtype (float32), and the output's gradient copied contiguous for the product's backward, and has freed
    the incoming gradient; Q's and K's gradients come later. Under 16-bit autocast that is 4·A·seq_len²
    bytes above the event the replay records with the three input gradients made; the replay without it
    was 18,880 bytes low at seq_len 64 (4,672 at 48), and 36,736 in float32 at 128."""
    hf()
    from test_peak import H32_A4

    from symbert.validate.peak import check_peak

    check = check_peak(H32_A4, 1, length, "adamw", attention="sdpa", amp=amp)
    assert check.predicted == check.measured.tensors, f"predicted {check.predicted:,} at {check.predicted_where}"
    assert check.predicted_where.startswith(f"step {check.measured.where.step} backward: encoder/layer/attention")


@pytest.mark.parametrize(("dtype", "above_start"), [("bfloat16", 1792), ("float32", 1536)])
def test_math_kernel_backward_peak_by_hand(dtype: str, above_start: int) -> None:
    """B=2, A=2, seq_len 8, head dim 4, dropout 0.1, read off torch.profiler's trace of one call's backward
    (torch 2.13). bf16 under autocast: the output's gradient to float32 (+512), the incoming bf16 one freed
    (−256), copied contiguous (+512, the float32 one freed −512), then the product with V makes V's
    gradient (+512) and the weights' (+1024): 1792 bytes above where the backward starts. float32: the
    contiguous copy (+512), the incoming one freed (−512), V's (+512) and the weights' (+1024): 1536.
    The replay's event holds the three input gradients (3 × 256 in bf16, 3 × 512 in float32)."""
    from symbert.analysis.sdpa import Call, backward_transients
    from symbert.ir import Role, Tensor

    def tensor(name: str, shape: tuple[int, ...]) -> Tensor:
        return Tensor(name, shape, dtype, Role.ACTIVATION, True, name)

    q, k, v = (tensor(n, (2, 2, 8, 4)) for n in "qkv")
    call = Call(q, k, v, tensor("output", (2, 8, 2, 4)), 0.1, "scores")
    amp = dtype != "float32"
    options = MemoryOptions("torch-cpu", dtype, "sdpa", amp=amp)
    grads = 3 * 2 * 2 * 8 * 4 * (2 if amp else 4)
    assert sum(int(k.nbytes) for k in backward_transients(call, options)) + grads == above_start
