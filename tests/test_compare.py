"""compare: exact ratios, limits, dominant terms and crossovers, against published counts and hand algebra."""

from __future__ import annotations

import json
import math
from functools import lru_cache

import sympy
from click.testing import CliRunner
from conftest import run_cli

import symbert
from symbert import cli
from symbert.analysis.compare import compare
from symbert.analysis.policy import MemoryOptions
from symbert.symbols import A, B, H, L, seq_len

BASE, LARGE = symbert.preset("bert-base"), symbert.preset("bert-large")
MEGATRON = MemoryOptions("megatron")


@lru_cache
def quantities(options: MemoryOptions = MEGATRON, batch: int = 1, length: int = 128) -> dict:
    return {q.key: q for q in compare(BASE, LARGE, batch, length, options).quantities}


def test_parameter_ratio_is_exact() -> None:
    q = quantities()["params"]
    assert (q.x.value, q.y.value) == (109_482_240, 335_141_888)  # published counts
    assert q.value_ratio == sympy.Rational(335_141_888, 109_482_240)
    assert q.ratio == q.value_ratio and q.difference == 335_141_888 - 109_482_240


def test_crossover_per_layer_is_korthikanti_algebra() -> None:
    """Per layer sbh(34 + 5as/h): attention scores keep 5as²b + 6sbh (Q, K, V and softmax, mask, dropout
    output), the rest 28sbh; they are equal at s = 22h/(5a): 281.6 for both (h/a = 64)."""
    q = quantities()["activation_bytes"]
    for side in (q.x, q.y):
        layer = next(c for c in side.crossovers if c.scope == "per layer")
        assert layer.general == (22 * H / (5 * A),)
        assert layer.value == (sympy.Rational(1408, 5),)


def test_crossover_for_the_whole_model() -> None:
    """Adding embeddings (3sbh + 16sb) and pooler (2sbh + 2bh): 5aL·s² − (22hL + 5h + 16)·s − 2h = 0."""
    q = quantities()["activation_bytes"]
    for side, (h, a, layers) in ((q.x, (768, 12, 12)), (q.y, (1024, 16, 24))):
        qa, qb, qc = 5 * a * layers, -(22 * h * layers + 5 * h + 16), -2 * h
        root = (-qb + math.sqrt(qb * qb - 4 * qa * qc)) / (2 * qa)
        model = next(c for c in side.crossovers if c.scope == "model")
        assert len(model.value) == 1 and math.isclose(float(model.value[0]), root, rel_tol=1e-12)
        general = model.general[0].subs({H: h, A: a, L: layers})
        assert math.isclose(float(general), root, rel_tol=1e-12)


def test_flops_crossover_is_six_h() -> None:
    """Per layer the attention matmuls cost 4bs²h and the projections and MLP 24bsh²: equal at s = 6h."""
    q = quantities()["flops_forward"]
    layer = next(c for c in q.x.crossovers if c.scope == "per layer")
    assert layer.general == (6 * H,) and layer.value == (6 * 768,)


def test_limits_and_dominant_terms() -> None:
    q = quantities()["activation_bytes"]
    # as seq_len → ∞ only 5·a·L·s²·b survives: 5·16·24 / (5·12·12)
    assert q.ratio_limit == sympy.Rational(5 * 16 * 24, 5 * 12 * 12)
    dominant = {d.symbol: d for d in q.x.dominant}
    assert dominant[seq_len].terms == 5 * A * B * L * seq_len**2
    assert dominant[seq_len].components == ("attention scores",)
    assert sympy.degree(dominant[H].terms, H) == 1
    assert {d.symbol for d in quantities()["params"].x.dominant} == {H}  # parameters do not grow with seq_len


def test_cli_states_ratio_and_crossovers() -> None:
    result = run_cli("compare", "bert-base", "bert-large", "--policy", "megatron", "--attention", "eager")
    assert result.returncode == 0, result.stderr
    ratio = sympy.Rational(335_141_888, 109_482_240)
    assert f"{ratio.p}/{ratio.q}" in result.stdout and "3.06115" in result.stdout
    assert "22·H/(5·A)" in result.stdout and "281.6" in result.stdout
    assert "286.963" in result.stdout and "284.279" in result.stdout  # whole-model crossovers, base and large


def test_cli_json_is_stable_and_takes_config_files(tmp_path) -> None:
    megatron = ("--policy", "megatron", "--attention", "eager")
    args = ("compare", "bert-base", "bert-large", "--json", *megatron, "--seq-len", "512", "-b", "8")
    first, second = run_cli(*args), run_cli(*args)
    assert first.returncode == 0 and first.stdout == second.stdout
    data = json.loads(first.stdout)
    params = data["quantities"]["params"]
    assert params["ratio"] == "1309148/427665" and params["difference"] == 225_659_648
    crossover = data["quantities"]["activation_bytes"]["x"]["crossover"]["per layer"]
    assert crossover == {"general": ["22*H/(5*A)"], "seq_len": ["1408/5"], "decimal": [281.6]}
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"model_type": "bert", "hidden_size": 256, "num_attention_heads": 4}))
    result = CliRunner().invoke(cli.cli, ["compare", "bert-base", str(config), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["y"]["hidden_size"] == 256
