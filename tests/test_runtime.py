"""The CUDA runtime in the training-step peak: workspaces, 512-byte rounding, reserved memory, --gpu.

No GPU was at hand: every figure here is worked by hand from PyTorch's source
(CUDACachingAllocator.cpp, CublasHandlePool.cpp); the measurement on a GPU skips without one.
"""

from __future__ import annotations

import json

import pytest
import sympy
from conftest import run_cli

import symbert
from symbert.analysis.policy import MemoryOptions
from symbert.configs import resolve
from symbert.gpus import GPUS
from symbert.symbols import B, pad512, seq_len
from symbert.training.fit import fit
from symbert.training.runtime import cuda_runtime, parse_workspace_config, reserved_estimate
from symbert.training.states import Training
from symbert.training.step import step_memory

KIB, MIB, GIB = 2**10, 2**20, 2**30
DEFAULT_WORKSPACE = 4096 * KIB * 2 + 16 * KIB * 8  # ":4096:2:16:8", 8 MiB + 128 KiB
SM90_WORKSPACE = 32 * MIB
#: bert-tiny: 128·(30522 + 512 + 2 + 2) embeddings and their layernorm, 2 layers of 4·(128² + 128)
#: attention, 2·2·128 layernorm, 2·128·512 + 512 + 128 feed-forward, and a 128² + 128 pooler.
TINY_PARAMS = 128 * 31038 + 2 * (4 * (128 * 128 + 128) + 4 * 128 + 2 * 128 * 512 + 512 + 128) + 128 * 128 + 128


@pytest.mark.parametrize(
    ("text", "nbytes"),
    [(":4096:2:16:8", 8 * MIB + 128 * KIB), (":4096:8", 32 * MIB), (":16:8", 128 * KIB), (" :1024:1 ", MIB),
     (":4096:2:16:8:1024:1", 9 * MIB + 128 * KIB)],
)  # fmt: skip
def test_workspace_config(text: str, nbytes: int) -> None:
    assert parse_workspace_config(text) == nbytes


@pytest.mark.parametrize("text", ["", "4096:8", ":4096", ":4096:8:", ":a:b", ":4096:8 :16:8", ":-1:2", "4096"])
def test_workspace_config_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="CUBLAS_WORKSPACE_CONFIG"):
        parse_workspace_config(text)


def test_workspaces_per_architecture() -> None:
    """sm90 (H100, H200) gets 32 MiB per cuBLAS handle, other GPUs PyTorch's default config; two handles
    (forward thread, autograd's backward thread) and one 1 MiB cuBLASLt workspace, capped at the cuBLAS one."""
    for key, each in (("h100", SM90_WORKSPACE), ("h200", SM90_WORKSPACE), ("a100-80gb", DEFAULT_WORKSPACE),
                      ("t4", DEFAULT_WORKSPACE), (None, DEFAULT_WORKSPACE)):  # fmt: skip
        runtime = cuda_runtime(key)
        assert [(w.phase, w.nbytes) for w in runtime.workspaces] == [
            ("forward", each),
            ("forward", MIB),
            ("backward", each),
        ]
    assert cuda_runtime("h100", ":1024:2").workspace_bytes == 2 * 2 * MIB + MIB
    assert cuda_runtime("h100", ":16:8").workspace_bytes == 2 * 128 * KIB + 128 * KIB
    assert Training(memory=MemoryOptions("torch-cpu"), gpu="h100").runtime is None


def test_gpu_table() -> None:
    assert GPUS["h100"].capability == (9, 0) and GPUS["a100-40gb"].memory == 40960 * MIB
    assert {"h100", "h200", "a100-40gb", "a100-80gb", "v100-16gb", "v100-32gb", "t4", "l4", "a10g"} <= set(GPUS)
    assert {"rtx3090", "rtx4090"} <= set(GPUS)
    with pytest.raises(ValueError, match="known: h100"):
        Training(memory=MemoryOptions("torch-cuda"), gpu="x100")


def test_pad512() -> None:
    assert [pad512(n) for n in (1, 8, 511, 512, 513, 3072, 12)] == [511, 504, 1, 0, 511, 0, 500]
    assert pad512(3072 * B * seq_len) == 0 and pad512(1024 * B + 512) == 0
    odd = pad512(4 * B * seq_len)
    assert odd != 0 and odd.subs({B: 3, seq_len: 5}) == 512 - 60
    assert pad512(516 * B).subs(B, 1) == 508  # 516 ≡ 4 (mod 512)


def test_reserved_estimate_by_hand() -> None:
    """512 B and 1 MiB share a 2 MiB small segment; 1 MiB + 512 B takes a 20 MiB segment; 12 MiB + 512 B
    is rounded up to 14 MiB."""
    assert reserved_estimate([512, MIB, MIB + 512, 12 * MIB + 512]) == 2 * MIB + 20 * MIB + 14 * MIB
    assert reserved_estimate([]) == 0


#: The embeddings' two registered [1, 512] int64 buffers (position and token type ids), on the GPU with the
#: parameters: the real H100 measurements count them (tests/test_oom.py: bert-tiny's optimizer phases are
#: exact with them, 8,192 bytes short without; tests/test_allocator_stream.py: bert-base's loading requests).
BUFFERS = 2 * 8 * 512


def _cuda(gpu: str | None = "h100", **kwargs) -> Training:
    return Training("adamw", "fp32", MemoryOptions("torch-cuda"), gpu, **kwargs)


def test_fit_at_a_tiny_shape_adds_the_workspaces() -> None:
    """bert-tiny at batch 1, seq_len 1 peaks at the first foreach AdamW update: 20 bytes per parameter
    (every tensor has a dimension of 128 or 512, so no rounding), the three int64 inputs of 8 bytes each
    rounded up to 512, and on an H100 2 × 32 MiB of cuBLAS workspaces and the 1 MiB cuBLASLt one, and the
    embeddings' registered buffers (:data:`BUFFERS`)."""
    result = fit(symbert.preset("bert-tiny"), _cuda(), None, batch=1, length=1)
    assert TINY_PARAMS == 4385920
    buffers = BUFFERS
    assert result.peak.total == 20 * TINY_PARAMS + buffers + 3 * 512 + 2 * SM90_WORKSPACE + MIB
    assert result.peak.bytes["runtime"] == 3 * 504 + 2 * SM90_WORKSPACE + MIB
    assert (result.peak.step, result.peak.phase) == (1, "optimizer")


def test_odd_sized_tensors_are_rounded_each() -> None:
    """A 3-label classifier: its bias (12 bytes) is rounded to 512 in each of the five tensors the
    update holds for it (weight, gradient, two moments, the foreach temporary); the label (one int64)
    joins the three inputs, each rounded to 512. The 3 × 128 weight is 1536 bytes, a multiple of 512."""
    config = resolve("bert-tiny", None, (), {"head": "sequence-classification", "num_labels": 3})
    result = fit(config, _cuda("a100-80gb"), None, batch=1, length=1)
    parameters = TINY_PARAMS + 3 * 128
    assert result.peak.total == 20 * parameters + BUFFERS + 5 * 512 + 4 * 512 + 2 * DEFAULT_WORKSPACE + MIB


def test_workspaces_come_at_the_first_matmul_of_each_thread() -> None:
    """Forward: at the first query projection (the embeddings are lookups), the forward thread's cuBLAS
    workspace and the cuBLASLt one; backward: at the pooler's dense layer, the first matmul autograd's
    thread runs, its own cuBLAS workspace. Nothing of the workspaces is freed afterwards. The only other
    rounding: Hugging Face's mask preprocessing, the [B, seq_len] bool padding mask (256 bytes) and whether it
    is all ones (1 byte), each in a 512-byte block until the next op (the 4D mask) runs; the bare model's
    loss, the caller's, made when the forward returns, and the gradient backward seeds it with at its start,
    4 bytes each in a 512-byte block, both freed when backward ends."""
    config = symbert.preset("bert-tiny")
    values = {**config.symbols(), B: 2, seq_len: 128}  # every tensor a multiple of 512 bytes
    memory = step_memory(symbert.trace(config), _cuda(), values, full=True)
    points = [p for p in memory.timeline(values) if p.step == 1]
    runtime = [p.bytes["runtime"] for p in points]
    jumps = [(p.phase, p.label, b - a) for p, a, b in zip(points[1:], runtime[:-1], runtime[1:], strict=True) if b != a]
    preprocessing = (512 - 2 * 128) + (512 - 1)
    assert jumps == [
        ("forward", "encoder/padding_mask", preprocessing),
        ("forward", "encoder/mask_bias", -preprocessing),
        ("forward", "encoder/layer/attention/self/query", SM90_WORKSPACE + MIB),
        ("forward", "end of forward", 512 - 4),
        ("backward", "gradient of pooler_output", 512 - 4),
        ("backward", "pooler/dense", SM90_WORKSPACE),
        ("backward", "end of backward", -2 * (512 - 4)),
    ]
    assert runtime[0] == 0 and runtime[-1] == 2 * SM90_WORKSPACE + MIB


def test_cuda_fit_answer_is_the_largest_that_fits_with_rounding() -> None:
    """seq_len 13 makes layernorm statistics and the inputs odd-sized: the closed form's root is stepped
    down to the largest batch whose exact (rounded) peak fits, checked against a full replay."""
    config, training = symbert.preset("bert-tiny"), _cuda("t4")
    budget = 300 * MIB
    result = fit(config, training, budget, length=13)
    memory = step_memory(symbert.trace(config), training, config.symbols(), full=True)
    at = lambda b: memory.peak({**config.symbols(), B: b, seq_len: 13}).total  # noqa: E731
    assert at(result.batch) <= budget < at(result.batch + 1)
    assert result.peak.total == at(result.batch) and result.headroom == budget - at(result.batch)
    assert sympy.sympify(result.formula).has(pad512)
    assert result.reserved >= result.peak.total


def test_cli_gpu_sets_the_budget_and_reports_reserved() -> None:
    """--gpu alone: the cap is the card's memory less the CUDA context (symbert.gpus.CUDA_CONTEXT); the answer
    is the caching allocator's simulation, whose reserved peak stays within the cap. --gpu-memory is the cap."""
    from symbert.gpus import CUDA_CONTEXT

    result = run_cli("fit", "--preset", "bert-tiny", "--gpu", "T4", "--seq-len", "128", "--json")
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["gpu_memory"] == 15360 * MIB - CUDA_CONTEXT and doc["gpu"] == "t4"
    assert (doc["card"], doc["cuda_context"]) == (15360 * MIB, CUDA_CONTEXT) and "34323" in doc["cuda_context_source"]
    assert doc["allocated"] == doc["memory"]
    at = doc["allocator"]["at"]
    assert at["allocated"] <= at["reserved"] == doc["gpu_memory"] - doc["headroom"] and doc["headroom"] >= 0
    assert "2 × (8 MiB + 128 KiB)" in doc["runtime"]
    given = run_cli("fit", "--preset", "bert-tiny", "--gpu", "t4", "--gpu-memory", "1GiB", "-s", "128", "--json")
    assert json.loads(given.stdout)["gpu_memory"] == GIB
    text = run_cli("fit", "--preset", "bert-tiny", "--gpu", "h100", "--seq-len", "128").stdout
    assert "h100: cuBLAS workspaces 2 × 32 MiB" in text and "reserved peak" in text and "CUDA context" in text


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [(("--gpu", "x100"), {}, "unknown GPU 'x100' (known: h100, h200,"),
     (("--gpu", "h100"), {"CUBLAS_WORKSPACE_CONFIG": ":4096"}, "cannot read CUBLAS_WORKSPACE_CONFIG")],
)  # fmt: skip
def test_cli_gpu_errors_are_one_line(args: tuple[str, ...], env: dict[str, str], message: str, monkeypatch) -> None:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    for command in ("fit", "timeline"):
        result = run_cli(command, "--preset", "bert-tiny", "-s", "8", *args)
        assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1
        assert message in result.stderr


def test_cublas_workspace_config_is_honoured(monkeypatch) -> None:
    args = ("fit", "--preset", "bert-tiny", "--gpu", "h100", "-b", "1", "-s", "128", "--json")
    plain = json.loads(run_cli(*args).stdout)
    monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # 32 MiB: what sm90 takes anyway
    assert json.loads(run_cli(*args).stdout)["memory"] == plain["memory"]
    monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", ":16:8")  # 128 KiB per handle; cuBLASLt capped to it
    small = json.loads(run_cli(*args).stdout)
    assert plain["memory"] - small["memory"] == (2 * SM90_WORKSPACE + MIB) - 3 * 128 * KIB
    monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", "garbage")
    cpu = run_cli("fit", "--preset", "bert-tiny", "--policy", "torch-cpu", "-b", "1", "-s", "8")
    assert cpu.returncode == 0, cpu.stderr  # the CPU policy has no cuBLAS


def test_headers_state_the_setup() -> None:
    for command in (("timeline", "-b", "1"), ("fit", "-b", "1", "--gpu-memory", "1GiB")):
        out = run_cli(*command, "--preset", "bert-tiny", "-s", "8", "--gpu", "a10g").stdout
        assert "torch-cuda, float32, sdpa attention" in out and "fp32 precision" in out and "a10g" in out
        assert out.splitlines()[1].count("adamw-fused (fused)") == 1
    cpu = run_cli("timeline", "--preset", "bert-tiny", "-s", "8", "--policy", "torch-cpu").stdout
    assert "no device runtime" in cpu


def _cuda_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


@pytest.mark.skipif(_cuda_available(), reason="checks the message given where no CUDA device is present")
def test_validate_cuda_without_a_device_is_one_line() -> None:
    result = run_cli("validate", "--preset", "bert-tiny", "--device", "cuda")
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1
    assert "no CUDA device" in result.stderr or "validate extra" in result.stderr


def test_validate_device_is_checked_before_torch() -> None:
    result = run_cli("validate", "--preset", "bert-tiny", "--device", "tpu")
    assert result.returncode == 2 and "tpu" in result.stderr


@pytest.mark.skipif(not _cuda_available(), reason="needs a CUDA device; CI has none")
def test_cuda_peak_within_half_a_percent() -> None:
    from symbert.validate.peak import check_peak

    check = check_peak(symbert.preset("bert-tiny"), 4, 64, "adamw", "cuda")
    assert abs(check.error) <= 0.005, check
    assert check.measured.reserved is not None and check.predicted_reserved is not None


def test_sweep_compiles_the_rounding() -> None:
    """At seq_len 13 the layernorm statistics (4·B·13 bytes) and the int64 inputs (8·B·13) are odd-sized:
    the compiled peak keeps their rounding and agrees with the full replay; the CSV names the GPU."""
    import csv
    import io

    from symbert.training.sweep import sweep

    config, training = symbert.preset("bert-tiny"), _cuda("l4")
    out = io.BytesIO()
    sweep([config], [training], [1, 2, 3, 7], [13, 64], ("peak",), out)
    rows = list(csv.DictReader(io.StringIO(out.getvalue().decode())))
    memory = step_memory(symbert.trace(config), training, config.symbols(), full=True)
    for row in rows:
        values = {**config.symbols(), B: int(row["batch"]), seq_len: int(row["seq_len"])}
        assert int(row["peak"]) == memory.peak(values).total and row["gpu"] == "l4"
