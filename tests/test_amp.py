"""torch.autocast (--precision amp): hand-worked layers from PyTorch's autocast op lists, exact bytes
measured under CPU autocast on Hugging Face models, model states, and the training-step peak."""

from __future__ import annotations

import pytest
import sympy
from conftest import H96_L3, hf, random_bert_configs, random_configs, run_cli

import symbert
from symbert.analysis.activations import activations
from symbert.analysis.autocast import with_dtypes
from symbert.analysis.params import params
from symbert.analysis.policy import MemoryOptions
from symbert.configs import with_task
from symbert.symbols import A, B, H, I, L, seq_len, vocab_size
from symbert.training.states import Training, model_states

S = seq_len


def per_layer(options: MemoryOptions) -> sympy.Expr:
    breakdown = activations(symbert.trace(), options)
    return sympy.expand(sum(c.per_layer for c in breakdown.components() if c.per_layer is not None))


def same(a: sympy.Expr, b: sympy.Expr) -> bool:
    return sympy.simplify(a - b) == 0


def test_cpu_autocast_layer_by_hand() -> None:
    """CPU lists: linear and bmm in bf16, softmax and layer_norm not listed, so they keep their input's dtype.

    Q, K, V each cast the fp32 layer input (6 BSH) and keep a bf16 copy of their weight (6 H²); scores
    keep q and k (4 BSH); the fp32 mask promotes the scores, so softmax keeps an fp32 output and
    dropout an fp32 noise (8 BAS²), and the context bmm a bf16 cast of the probabilities (2 BAS²) and v
    (2 BSH); the output dense keeps the bf16 context (2 BSH) and its weight (2 H²); its dropout a bf16
    noise (2 BSH); the residual add promotes, so layernorm keeps an fp32 input and fp32 mean and rstd
    (4 BSH + 8 BS). Feed-forward: a cast of the layernorm output (2 BSH), two weights (4 HI), GELU's
    bf16 input (2 BSI), the output dense's bf16 input (2 BSI), a bf16 noise (2 BSH), layernorm again."""
    by_hand = 10 * B * A * S**2 + 28 * B * S * H + 4 * B * S * I + 8 * H**2 + 4 * H * I + 16 * B * S
    assert same(per_layer(MemoryOptions("torch-cpu", "bfloat16", amp=True)), by_hand)


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_cuda_autocast_layer_by_hand(dtype: str) -> None:
    """CUDA lists (modelled from autocast_mode.cpp): softmax gives fp32 (fp32_set_opt_dtype), layer_norm
    runs in fp32, dropout keeps a bool mask. As on CPU but the attention core keeps an fp32 softmax
    output, a 1-byte mask and a 16-bit cast of the probabilities (7 BAS²), and each dropout after a
    dense layer a 1-byte mask (2 BSH instead of 4)."""
    by_hand = 7 * B * A * S**2 + 26 * B * S * H + 4 * B * S * I + 8 * H**2 + 4 * H * I + 16 * B * S
    assert same(per_layer(MemoryOptions("torch-cuda", dtype, amp=True)), by_hand)


def test_dtypes_follow_the_op_lists() -> None:
    """A few tensors' dtypes, device by device: the same graph, different lists."""

    def dtype_of(options: MemoryOptions, node: str, output: int = 0) -> str:
        graph = with_dtypes(symbert.trace(with_task(symbert.preset("bert-tiny"), head="mlm")), options)
        return graph.tensor(graph.node(node).outputs[output]).dtype

    cpu, cuda = MemoryOptions("torch-cpu", "bfloat16", amp=True), MemoryOptions("torch-cuda", "float16", amp=True)
    transform_ln = "head/cls/predictions/transform/LayerNorm"
    assert dtype_of(cpu, "embeddings/word_embeddings") == dtype_of(cuda, "embeddings/word_embeddings") == "float32"
    assert dtype_of(cpu, "encoder/layer/attention/self/query") == "bfloat16"
    assert dtype_of(cuda, "encoder/layer/attention/self/query") == "float16"
    assert dtype_of(cpu, "encoder/layer/attention/output/add") == "float32"  # 16-bit + fp32 residual
    assert (dtype_of(cpu, transform_ln), dtype_of(cpu, transform_ln, 1)) == ("bfloat16", "float32")
    assert dtype_of(cuda, transform_ln) == "float32"
    assert dtype_of(cuda, "encoder/layer/attention/self/dropout", 1) == "bool"
    assert dtype_of(cpu, "head/loss/masked_lm/log_softmax") == "float32"


def test_tied_decoder_weight_copy_counts_once() -> None:
    """Masked LM: every linear keeps a 16-bit copy of its weight; the decoder's is the word-embedding
    table, which the lookup (not in the lists) never casts: one copy of V·H (E = H), no pooler."""
    graph = symbert.trace(with_task(symbert.preset("bert-base"), head="mlm"))
    copies = [c for c in activations(graph, MemoryOptions("torch-cpu", "bfloat16", amp=True)).contributions]
    total = sympy.expand(sum(c.total for c in copies if "weight copy" in c.what))
    assert same(total, 2 * (L * (4 * H**2 + 2 * H * I) + H**2 + vocab_size * H))


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_model_states_stay_float32(dtype: str) -> None:
    """amp: fp32 weights and gradients, AdamW's two fp32 moments; fp16 adds GradScaler's fp32 scale and
    int32 growth tracker (8 bytes)."""
    graph = symbert.trace()
    p = params(graph).total
    states = model_states(graph, Training("adamw", "amp", MemoryOptions("torch-cuda", dtype)))
    scaler = 8 if dtype == "float16" else 0
    assert [sympy.expand(states[k] - v) for k, v in (("weights", 4 * p), ("gradients", 4 * p))] == [0, 0]
    assert sympy.expand(states["optimizer"] - 8 * p - scaler) == 0


def test_amp_needs_a_16_bit_dtype_and_a_torch_policy() -> None:
    with pytest.raises(ValueError, match="16-bit"):
        Training("adamw", "amp", MemoryOptions("torch-cuda", "float32"))
    with pytest.raises(ValueError, match="torch-cpu or torch-cuda"):
        Training("adamw", "amp", MemoryOptions("megatron"))
    assert Training("adamw", "amp").memory.dtype == "bfloat16"


def test_report_takes_precision() -> None:
    out = run_cli("report", "--preset", "bert-tiny", "--precision", "amp", "--dtype", "float16")
    assert out.returncode == 0, out.stderr
    assert "autocast float16 over float32 weights" in out.stdout


ODD = symbert.Config("bert", {**H96_L3, "num_hidden_layers": 2, "max_position_embeddings": 20}, "h96-a3")
CASES = [
    (ODD, None, 3, 1, "bfloat16"),
    (ODD, "mlm", 1, 20, "bfloat16"),
    (ODD, "sequence-classification", 2, 7, "float16"),
    (symbert.Config("bert", ODD.values, "h96-no-pooler", {"pooler": False}), None, 2, 7, "float16"),
    *(
        (c, h, 1 + i % 3, 1 + (5 * i) % c.values["max_position_embeddings"], d)
        for i, (c, h, d) in enumerate(
            zip(
                random_bert_configs(4),
                (None, "mlm", None, "mlm"),
                ("bfloat16", "float16", "float16", "bfloat16"),
                strict=True,
            )
        )
    ),
]


@pytest.mark.parametrize(
    ("config", "head", "batch", "length", "dtype"), CASES, ids=lambda v: getattr(v, "name", str(v))
)
def test_saved_bytes_exact_under_cpu_autocast(
    config: symbert.Config, head: str | None, batch: int, length: int, dtype: str
) -> None:
    """Saved bytes equal what PyTorch keeps for a float32 Hugging Face model run under
    torch.autocast("cpu", dtype) in train mode, with a task head and its loss or bare."""
    hf()
    from symbert.validate.compare import validate

    if head is not None and (head != "mlm" or config.options.get("pooler", True)):
        config = with_task(config, head=head)
    checks = validate(config, batch, length, dtype, amp=True)
    assert [(c.quantity, c.predicted) for c in checks] == [(c.quantity, c.measured) for c in checks]


H96_S128 = symbert.Config("bert", {**H96_L3, "max_position_embeddings": 128}, "h96-a3-l3-s128")


@pytest.mark.parametrize(
    ("config", "head", "batch", "length", "optimizer", "dtype", "attention"),
    [
        (symbert.preset("bert-tiny"), None, 4, 128, "sgd", "float16", "eager"),
        (symbert.Config("bert", H96_L3, "h96-a3-l3"), None, 3, 20, "momentum", "float16", "eager"),
        (symbert.Config("bert", H96_L3, "h96-a3-l3"), None, 3, 20, "momentum", "bfloat16", "eager"),
        (H96_S128, None, 2, 128, "adamw", "bfloat16", "eager"),
        (H96_S128, "sequence-classification", 2, 128, "adamw", "bfloat16", "eager"),
        (H96_S128, None, 2, 128, "adamw", "bfloat16", "sdpa"),
        (H96_S128, None, 3, 64, "adamw", "float16", "sdpa"),
    ],
    ids=lambda v: getattr(v, "name", v),
)
def test_peak_under_cpu_autocast(
    config: symbert.Config, head: str | None, batch: int, length: int, optimizer: str, dtype: str, attention: str
) -> None:
    """The peak of two training steps' tensors under CPU autocast (fp16 with a GradScaler) equals
    torch.profiler's to the byte, on any CPU. At seq_len 128 it falls in the forward, at a layer's last
    LayerNorm, where BertLayer's locals still hold the float32 attention weights its eager attention
    returns (4·A·B·seq_len² bytes), the layer's input and the attention's output, and BertModel's the
    embeddings: none of them kept for backward under autocast, whose products keep 16-bit copies. Under
    sdpa (the math kernel, as dropout is on) it falls inside the attention call, at its float32 output's
    cast, while the kernel holds the float32 copies of Q, K and V, the scaled Q, the converted mask and
    the attention weights converted back to 16 bits (:func:`symbert.analysis.sdpa.transients`).

    What the measurement leaves out, and symbert too, is the scratch oneDNN's 16-bit matrix products
    take and free within the call (:data:`symbert.validate.peak.GEMM_OPS`): none on AVX2, for bf16 on
    AVX-512 BF16, for both on AMX; its size depends on the instruction set and the thread count."""
    hf()
    from symbert.validate.peak import check_peak

    if head is not None:
        config = with_task(config, head=head)
    check = check_peak(config, batch, length, optimizer, attention=attention, amp=dtype)
    assert check.predicted == check.measured.tensors, (
        f"predicted {check.predicted:,} at {check.predicted_where}, measured {check.measured.tensors:,} "
        f"in step {check.measured.where.step} {check.measured.where.name}"
    )
    assert check.predicted_where.startswith(f"step {check.measured.where.step} {check.measured.where.name}")


@pytest.mark.parametrize("family", ["albert", "roberta", "distilbert"])
def test_other_families_exact_under_cpu_autocast(family: str) -> None:
    """ALBERT (one weight copy for the shared layer, factorised embeddings, gelu_new), RoBERTa and
    DistilBERT, each with its masked-LM head, under CPU bf16 autocast."""
    hf()
    from symbert.validate.compare import validate

    config = with_task(random_configs(family, 2, seed=1)[1], head="mlm")
    checks = validate(config, 2, 6, "bfloat16", amp=True)
    assert [(c.quantity, c.predicted) for c in checks] == [(c.quantity, c.measured) for c in checks]


def test_validate_command_under_autocast() -> None:
    """validate under CPU autocast checks saved bytes, FLOPs and the training-step peak of tensors (exact),
    and shows the peak with kernels' scratch beside it."""
    hf()
    out = run_cli("validate", "--preset", "bert-tiny", "--head", "mlm", "--precision", "amp", "--dtype", "bfloat16")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "autocast bfloat16" in out.stdout and "MISMATCH" not in out.stdout
    assert "peak_tensors" in out.stdout and "peak_with_kernel_scratch" in out.stdout


@pytest.mark.parametrize("options", [MemoryOptions("torch-cuda", "bfloat16"), MemoryOptions("torch-cpu", "float16")])
def test_three_replayed_runs_stand_for_every_run_phase_by_phase(options: MemoryOptions) -> None:
    """Symbolic in L, every phase peaks where the replay of all six layers does: in the forward the
    layers not replayed hold what they keep and their cached bias copies until autocast exits."""
    from symbert.training.step import phases, step_memory

    config = symbert.with_overrides(symbert.preset("bert-mini"), ["num_hidden_layers=6"])
    values = {**config.symbols(), B: 2, S: 16}
    training, graph = Training("adamw", "amp", options), symbert.trace(config)

    def summary(memory) -> list[tuple[int, str, int]]:
        return [(p.step, p.name, p.peak.total) for p in phases(memory.timeline(values))]

    assert summary(step_memory(graph, training)) == summary(step_memory(graph, training, values, full=True))


def test_cross_entropy_keeps_the_logits_dtype_on_cuda() -> None:
    """cross_entropy calls log_softmax with the logits' dtype (aten/src/ATen/native/LossNLL.cpp). CUDA's autocast
    sets log_softmax's dtype only where none is given (fp32_set_opt_dtype), so the log-probabilities keep the
    16-bit dtype and nll_loss, on the float32 list, reads a float32 copy of them; the H100's saved bytes of a
    masked LM agree (tests/test_oom.py). CPU's autocast runs log_softmax itself in float32."""
    graph = symbert.trace(with_task(symbert.preset("bert-tiny"), head="mlm"))

    def loss(policy: str, dtype: str) -> list[tuple[str, str]]:
        resolved = with_dtypes(graph, MemoryOptions(policy, dtype, amp=True))
        nodes = [n for n in resolved.nodes if n.op in ("cast", "log_softmax") and "loss" in n.name]
        return [(n.name.rsplit("masked_lm/")[1], resolved.tensor(n.outputs[0]).dtype) for n in nodes]

    for dtype in ("bfloat16", "float16"):
        assert loss("torch-cuda", dtype) == [("log_softmax", dtype), ("nll_loss/cast0", "float32")]
    assert loss("torch-cpu", "bfloat16") == [("log_softmax/cast0", "float32"), ("log_softmax", "float32")]
