"""`symbert report` and `symbert validate` from the command line."""

from __future__ import annotations

import json

from click.testing import CliRunner
from conftest import hf, run_cli

from symbert import cli
from symbert.validate import compare


def test_report_json_contract() -> None:
    eager = ("--policy", "torch-cpu", "--attention", "eager")
    result = run_cli("report", "--preset", "bert-base", "--batch", "32", "--seq-len", "512", *eager, "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    keys = "config batch seq_len policy dtype params activation_bytes flops formulas components"
    assert set(data) >= set(keys.split())
    assert (data["batch"], data["seq_len"], data["policy"], data["dtype"]) == (32, 512, "torch-cpu", "float32")
    assert data["params"] == 109_482_240
    assert set(data["flops"]) == {"forward", "backward", "non_matmul_forward"}
    assert set(data["formulas"]) >= {"params", "activation_bytes", "flops_forward"}
    # by hand, bert-base fp32 at B=32, S=512: per layer 4·(10BSH + 3BAS² + 2BSI + 4BS), embeddings
    # 16BS + 8BSH + 8BS, pooler 4BSH + 4BH.
    b, s, h, a, i = 32, 512, 768, 12, 3072
    layer = 4 * (10 * b * s * h + 3 * b * a * s * s + 2 * b * s * i + 4 * b * s)
    assert data["activation_bytes"] == 12 * layer + 16 * b * s + 8 * b * s * h + 8 * b * s + 4 * b * s * h + 4 * b * h
    acts = [c for c in data["components"] if c["quantity"] == "activation_bytes"]
    assert sum(c["value"] for c in acts) == data["activation_bytes"]


def test_report_human_output() -> None:
    result = run_cli("report", "--preset", "bert-base", "--batch", "32", "--seq-len", "512")
    assert result.returncode == 0
    assert "attention scores" in result.stdout and "GiB" in result.stdout and "TFLOP" in result.stdout


def test_report_is_deterministic() -> None:
    args = ("report", "--preset", "bert-mini", "--json", "--policy", "megatron")
    assert run_cli(*args).stdout == run_cli(*args).stdout


def test_report_bad_values() -> None:
    for args, message in (
        (("--seq-len", "513"), "seq_len=513 exceeds the model's 512 positions"),
        (("--batch", "0"), "batch must be a positive integer"),
        (("--policy", "tpu"), "'tpu' is not one of"),
        (("--batch", "x"), "--batch must be a positive integer, got 'x'"),
    ):
        result = run_cli("report", *args)
        assert result.returncode == 2 and result.stderr.count("\n") == 1 and message in result.stderr, result.stderr


def test_validate_command_passes_on_bert_tiny() -> None:
    hf()
    result = run_cli("validate", "--preset", "bert-tiny", "--seq-len", "8", "--dtype", "bfloat16")
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count(" ok ") == 4


def test_validate_exits_1_on_mismatch(monkeypatch) -> None:
    monkeypatch.setattr(compare, "validate", lambda *a, **k: [compare.Check("params", 1, 2)])
    result = CliRunner().invoke(cli.cli, ["validate", "--preset", "bert-tiny"])
    assert result.exit_code == 1 and "MISMATCH" in result.output
