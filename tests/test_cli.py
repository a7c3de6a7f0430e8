"""The command line as a user runs it."""

from __future__ import annotations

import json

from conftest import run_cli


def test_params_json_reports_bert_base() -> None:
    result = run_cli("params", "--preset", "bert-base", "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["params"] == 109_482_240
    assert (
        data["formula_substituted"] == "12*H**2*L + H**2 + 13*H*L + H*position_size + H*type_size + H*vocab_size + 3*H"
    )
    assert sum(c["params"] for c in data["components"]) == 109_482_240


def test_params_human_output_shows_both_forms_and_value() -> None:
    result = run_cli("params", "--preset", "bert-large", "--by-component")
    assert result.returncode == 0
    assert "335,141,888" in result.stdout
    assert "with E = H, I = 4·H: 12·H²·L" in result.stdout
    assert "self-attention" in result.stdout and "3·H² + 3·H" in result.stdout


def test_json_is_byte_identical_across_runs() -> None:
    assert run_cli("params", "--json").stdout == run_cli("params", "--json").stdout


def test_graph_table_lists_every_op_kind() -> None:
    result = run_cli("graph", "--preset", "bert-tiny")
    assert result.returncode == 0
    for kind in ("embedding", "linear", "matmul", "softmax", "dropout", "layernorm", "gelu", "tanh", "select"):
        assert f" {kind} " in result.stdout
    assert "encoder/layer/attention/self/scores" in result.stdout
    assert "[B, A, seq_len, seq_len]" in result.stdout
    assert "weight[vocab_size, E]" in result.stdout


def test_no_pooler_flag() -> None:
    with_pooler = json.loads(run_cli("params", "--json").stdout)["params"]
    without = json.loads(run_cli("params", "--json", "--no-pooler").stdout)["params"]
    assert with_pooler - without == 768 * 768 + 768
