"""compare: exact ratios, limits, dominant terms and crossovers, against published counts, Hugging Face
models built on the meta device and hand algebra; any number of configs, of any families, lined up by role."""

from __future__ import annotations

import json
import math
from functools import lru_cache

import pytest
import sympy
from click.testing import CliRunner
from conftest import hf, run_cli
from inprocess import invoke

import symbert
from symbert import cli
from symbert.analysis.compare import compare
from symbert.analysis.explain import explain, negative_notes
from symbert.analysis.policy import MemoryOptions
from symbert.analysis.report import report
from symbert.symbols import A, B, H, L, seq_len

BASE, LARGE = symbert.preset("bert-base"), symbert.preset("bert-large")
MEGATRON = MemoryOptions("megatron")
FAMILIES = ("bert-base", "modernbert-base", "deberta-v3-base")
#: A ModernBERT small enough to count by hand: 100 words, H = 16, I = 24, 4 layers (a global one every 3).
TINY_MODERN = {
    "vocab_size": 100,
    "hidden_size": 16,
    "num_hidden_layers": 4,
    "num_attention_heads": 2,
    "intermediate_size": 24,
    "max_position_embeddings": 64,
    "global_attn_every_n_layers": 3,
    "local_attention": 8,
}


@lru_cache
def quantities(options: MemoryOptions = MEGATRON, batch: int = 1, length: int = 128) -> dict:
    return {q.key: q for q in compare([BASE, LARGE], batch, length, options).quantities}


@lru_cache
def across() -> dict:
    return {q.key: q for q in compare([symbert.preset(n) for n in FAMILIES], 1, 128).quantities}


def test_parameter_ratio_is_exact() -> None:
    q = quantities()["params"]
    assert (q.sides[0].value, q.sides[1].value) == (109_482_240, 335_141_888)  # published counts
    assert q.value_ratio(1) == sympy.Rational(335_141_888, 109_482_240)
    assert q.ratio(1) == q.value_ratio(1) and q.difference(1) == 335_141_888 - 109_482_240


def test_crossover_per_layer_is_korthikanti_algebra() -> None:
    """Per layer sbh(34 + 5as/h): attention scores keep 5as²b + 6sbh (Q, K, V and softmax, mask, dropout
    output), the rest 28sbh; they are equal at s = 22h/(5a): 281.6 for both (h/a = 64)."""
    q = quantities()["activation_bytes"]
    for side in q.sides:
        layer = next(c for c in side.crossovers if c.scope == "per layer")
        assert layer.general == (22 * H / (5 * A),)
        assert layer.value == (sympy.Rational(1408, 5),)


def test_crossover_for_the_whole_model() -> None:
    """Adding embeddings (3sbh + 16sb) and pooler (2sbh + 2bh): 5aL·s² − (22hL + 5h + 16)·s − 2h = 0."""
    q = quantities()["activation_bytes"]
    for side, (h, a, layers) in zip(q.sides, ((768, 12, 12), (1024, 16, 24)), strict=True):
        qa, qb, qc = 5 * a * layers, -(22 * h * layers + 5 * h + 16), -2 * h
        root = (-qb + math.sqrt(qb * qb - 4 * qa * qc)) / (2 * qa)
        model = next(c for c in side.crossovers if c.scope == "model")
        assert len(model.value) == 1 and math.isclose(float(model.value[0]), root, rel_tol=1e-12)
        general = model.general[0].subs({H: h, A: a, L: layers})
        assert math.isclose(float(general), root, rel_tol=1e-12)


def test_flops_crossover_is_six_h() -> None:
    """Per layer the attention matmuls cost 4bs²h and the projections and MLP 24bsh²: equal at s = 6h."""
    q = quantities()["flops_forward"]
    layer = next(c for c in q.sides[0].crossovers if c.scope == "per layer")
    assert layer.general == (6 * H,) and layer.value == (6 * 768,)


def test_limits_and_dominant_terms() -> None:
    q = quantities()["activation_bytes"]
    # as seq_len → ∞ only 5·a·L·s²·b survives: 5·16·24 / (5·12·12)
    assert q.ratio_limit(1) == sympy.Rational(5 * 16 * 24, 5 * 12 * 12)
    dominant = {d.symbol: d for d in q.sides[0].dominant}
    assert dominant[seq_len].terms == 5 * A * B * L * seq_len**2
    assert dominant[seq_len].components == ("attention scores",) and dominant[seq_len].roles == ("attention",)
    assert sympy.degree(dominant[H].terms, H) == 1
    assert {d.symbol for d in quantities()["params"].sides[0].dominant} == {H}  # parameters do not grow with seq_len


def test_totals_across_families_are_hugging_faces() -> None:
    """The three configs' parameter totals are those of the models Hugging Face builds (meta device) from
    the released configs' sizes; bert-base's is also the published 109,482,240."""
    transformers = hf()
    import torch

    with torch.device("meta"):
        models = (
            transformers.BertModel(transformers.BertConfig(), add_pooling_layer=True),
            transformers.ModernBertModel(transformers.ModernBertConfig()),
            transformers.DebertaV2Model(transformers.DebertaV2Config(**DEBERTA_V3_BASE)),
        )
    counted = [sum(p.numel() for p in m.parameters()) for m in models]
    params = across()["params"]
    assert [s.value for s in params.sides] == counted
    assert counted[0] == 109_482_240
    for side in params.sides:
        assert sum(side.roles.values()) == side.value == sum(side.components.values())


#: microsoft/deberta-v3-base's config.json, the keys that decide its parameters.
DEBERTA_V3_BASE = {
    "vocab_size": 128100,
    "hidden_size": 768,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "intermediate_size": 3072,
    "max_position_embeddings": 512,
    "type_vocab_size": 0,
    "relative_attention": True,
    "max_relative_positions": -1,
    "position_buckets": 256,
    "norm_rel_ebd": "layer_norm",
    "share_att_key": True,
    "pos_att_type": ["p2c", "c2p"],
    "position_biased_input": False,
}


def test_roles_by_hand_for_bert_tiny() -> None:
    """bert-tiny (L = 2, H = 128, I = 512, 30,522 words, 512 positions, 2 types), worked by hand."""
    c = compare([symbert.preset("bert-tiny"), symbert.preset("bert-mini")], 1, 8)
    tiny = next(q for q in c.quantities if q.key == "params").sides[0]
    h, i, layers = 128, 512, 2
    assert tiny.roles == {
        "embeddings": h * (30522 + 512 + 2) + 2 * h,  # three tables and a layernorm
        "attention": layers * 4 * (h * h + h),  # Q, K, V and the output dense
        "MLP": layers * ((h * i + i) + (i * h + h)),
        "norms": layers * 2 * 2 * h,  # two layernorms a layer
        "pooler": h * h + h,
    }
    assert sum(tiny.roles.values()) == 4_385_920  # published
    assert tiny.role_components["attention"] == ("self-attention", "attention output")
    assert tiny.role_components["MLP"] == ("intermediate", "output")


def test_roles_by_hand_for_a_tiny_modernbert() -> None:
    """ModernBERT without biases: 100·16 word embeddings and a norm; per layer Wqkv (3H·H) and Wo (H·H), Wi
    (H·2I) and Wo (I·H); a norm before attention in every layer but the first, one before the MLP in each,
    and the final norm: 2·H·L norms in all."""
    modern = symbert.Config("modernbert", {**symbert.preset("modernbert-base").values, **TINY_MODERN}, "tiny")
    c = compare([symbert.preset("bert-tiny"), modern], 1, 8)
    side = next(q for q in c.quantities if q.key == "params").sides[1]
    v, h, i, layers = 100, 16, 24, 4
    assert side.roles == {
        "embeddings": v * h + h,
        "attention": layers * 4 * h * h,
        "MLP": layers * 3 * h * i,
        "norms": 2 * h * layers,
    }
    assert side.role_components["norms"] == ("layernorms", "final norm")
    transformers = hf()
    import torch

    with torch.device("meta"):
        tokens = dict.fromkeys(("pad_token_id", "bos_token_id", "eos_token_id", "cls_token_id", "sep_token_id"), 0)
        model = transformers.ModernBertModel(transformers.ModernBertConfig(**TINY_MODERN, **tokens))
    assert side.value == sum(p.numel() for p in model.parameters())


def test_dominant_terms_follow_one_rule() -> None:
    """As H → ∞ every config's I grows at its own ratio: bert-base and deberta-v3-base I = 4H, so
    4H² of attention + 8H² of MLP a layer; modernbert-base I = 1152/768·H = 3H/2, so 4H² + 3·H·(3H/2)."""
    params = across()["params"]
    terms = [next(d for d in s.dominant if d.symbol == H).terms for s in params.sides]
    assert terms == [12 * H**2 * L + H**2, sympy.Rational(17, 2) * H**2 * L, 12 * H**2 * L]
    modern = next(d for d in params.sides[1].dominant if d.symbol == H)
    assert modern.roles == ("attention", "MLP")
    assert params.sides[1].scaling == {symbert.symbols.I: sympy.Rational(3, 2) * H}


def test_cli_takes_three_families_in_text_markdown_latex_and_json() -> None:
    args = ("compare", *FAMILIES)
    text = invoke(*args)
    assert text.code == 0, text.stderr
    assert "I = 3·H/2 (modernbert-base)" in text.stdout and "E = H, I = 4·H (bert-base, deberta-v3-base)" in text.stdout
    assert "self-attention 21,261,312" not in text.stdout
    latex = invoke(*args, "--format", "latex")
    assert latex.code == 0 and latex.stdout == invoke(*args, "--format", "latex").stdout  # deterministic
    assert r"E and I grow with H at each config's own ratio" in latex.stdout and r"\begin{tabular}" in latex.stdout
    data = json.loads(invoke(*args, "--json").stdout)
    assert [c["name"] for c in data["configs"]] == list(FAMILIES)
    params = data["quantities"]["params"]
    attention = [side["roles"]["attention"] for side in params["configs"]]
    # bert-base: 12 layers of 4·(768² + 768); modernbert-base: 22 of 4·768² (no biases)
    assert attention[:2] == [12 * 4 * (768**2 + 768), 22 * 4 * 768**2]
    assert [r["name"] for r in params["against_first"]] == ["modernbert-base", "deberta-v3-base"]
    assert params["against_first"][0]["ratio"] == str(sympy.Rational(149_014_272, 109_482_240))


def test_one_config_is_refused() -> None:
    result = invoke("compare", "--preset", "bert-tiny")
    assert result.refused and "compare needs two or more configs, got 1" in result.stderr


def test_cli_states_ratio_and_crossovers() -> None:
    result = run_cli("compare", "bert-base", "bert-large", "--policy", "megatron", "--attention", "eager")
    assert result.returncode == 0, result.stderr
    assert "3.06115" in result.stdout
    assert "22·H/(5·A)" in result.stdout and "281.6" in result.stdout
    assert "286.963" in result.stdout and "284.279" in result.stdout  # whole-model crossovers, base and large


def test_cli_json_is_stable_and_takes_config_files(tmp_path) -> None:
    megatron = ("--policy", "megatron", "--attention", "eager")
    args = ("compare", "bert-base", "bert-large", "--json", *megatron, "--seq-len", "512", "-b", "8")
    first, second = run_cli(*args, env={"PYTHONHASHSEED": "1"}), run_cli(*args, env={"PYTHONHASHSEED": "2"})
    assert first.returncode == 0 and first.stdout == second.stdout
    data = json.loads(first.stdout)
    params = data["quantities"]["params"]["against_first"][0]
    assert params["ratio"] == "1309148/427665" and params["difference"] == 225_659_648
    crossover = data["quantities"]["activation_bytes"]["configs"][0]["crossover"]["per layer"]
    assert crossover == {"general": ["22*H/(5*A)"], "seq_len": ["1408/5"], "decimal": [281.6]}
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"model_type": "bert", "hidden_size": 256, "num_attention_heads": 4}))
    result = CliRunner().invoke(cli.cli, ["compare", "bert-base", str(config), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["configs"][1]["hidden_size"] == 256


@pytest.mark.parametrize("fmt", ["csv", "markdown"])
def test_table_lines_up_families_by_role(fmt: str) -> None:
    out = invoke("table", "bert-tiny", "modernbert-base", "--format", fmt)
    assert out.code == 0, out.stderr
    if fmt == "csv":
        rows = {row.split(",")[0]: row for row in out.stdout.splitlines()}
        assert list(rows)[:1] == ["role"] and "total" in rows
        assert rows["pooler"].endswith(",16512,0,0")  # H² + H for bert-tiny; modernbert has none
        assert ",51904512" in rows["attention"]  # 22 layers of 4·768²


def test_explain_says_why_a_part_is_negative() -> None:
    """ModernBERT's norms by hand: an attention norm in every layer but the first and an MLP norm in each,
    (2·L − 1)·H, plus the embeddings' and the final norm: 2·H·L + H. The global layers run L_global − 1 times
    (layer 0 is traced apart), so their two norms each give −H to the H term, which the text explains."""
    modern = symbert.Config("modernbert", {**symbert.preset("modernbert-base").values, **TINY_MODERN}, "tiny")
    b = report(modern, 1, 8).breakdowns["params"]
    terms = {t.monomial: t for t in explain(b)}
    norms = sum(t.expr for t in explain(b) if t.monomial in (H * L, H))
    assert norms == 2 * H * L + H
    negative = sorted(p.contribution.node for p in terms[H].parts if p.coefficient == -1)
    assert negative == ["layers/global/attn_norm", "layers/global/mlp_norm"]
    (note,) = negative_notes(explain(b))
    assert "layers/global/attn_norm, layers/global/mlp_norm" in note and "run L_global - 1 times" in note
    assert "corrects an overcount" in note
    assert negative_notes(explain(report(symbert.preset("bert-tiny"), 1, 8).breakdowns["params"])) == ()
    out = invoke("explain", "params", "--preset", "modernbert-base", "--format", "markdown")
    assert out.code == 0 and "\nNegative parts at layers/global/attn_norm, layers/global/mlp_norm" in out.stdout
