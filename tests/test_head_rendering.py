"""Task heads in the renderers: diagrams, LaTeX, tables, explain and compare, with values worked by hand.

bert-base: H = 768, L = 12, A = 12, I = 3072, vocab_size = 30522, type_size = 2, position_size = 512;
bare, it has 109,482,240 parameters, 590,592 of them (H² + H) in the pooler.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
import sympy
from click.testing import CliRunner
from test_diagram import Layout, layout

from symbert import diagram, preset
from symbert.analysis.compare import compare
from symbert.analysis.explain import explain
from symbert.analysis.report import report
from symbert.cli import cli
from symbert.configs import ConfigError, with_task
from symbert.models import MODELS
from symbert.render import latex, tables
from symbert.render.theme import KINDS, THEMES

pytestmark = pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz's dot is not installed: make system-deps")

BASE = preset("bert-base")
PRESETS = {
    "bert": "bert-base",
    "roberta": "roberta-base",
    "albert": "albert-base-v2",
    "distilbert": "distilbert-base-uncased",
}


def head(name: str, **settings: object) -> object:
    return with_task(BASE, head=name, **settings)


def y(lay: Layout, node: str) -> float:
    """A node's height on the page: dot's y grows upward."""
    return float(lay.attrs[node]["pos"].split(",")[1])


def run(*args: str) -> str:
    result = CliRunner().invoke(cli, list(args))
    assert result.exit_code == 0, (args, result.output, result.exception)
    return result.output


# ---- diagrams


def test_mlm_overview_draws_head_and_loss_under_the_encoder() -> None:
    lay = layout(diagram(head("mlm"), "overview", params=True))
    # transform dense H² + H, its LayerNorm 2H, the decoder's own bias vocab_size; the decoder's weight is the
    # word embeddings, counted there: 589,824 + 2,304 + 30,522.
    assert lay.labels["head"] == "MLM head head H² + 3·H + vocab_size = 622,650"
    assert lay.labels["head/loss"] == "loss (cross-entropy) head/loss"
    assert "pooler" not in lay.boxes()
    assert lay.flow("encoder/layer", "head") == "[B, seq_len, H]"
    assert lay.flow("head", "head/loss") == "[B, seq_len, vocab_size]"
    assert lay.flow("head/labels", "head/loss") == "[B, seq_len]"
    assert lay.flow("head/loss", "loss") == "[]"
    assert y(lay, "loss") < y(lay, "head/loss") < y(lay, "head") < y(lay, "encoder/layer")
    loss, style = lay.attrs["head/loss"], THEMES["seed"].styles["loss"]
    assert (loss["shape"], loss["style"], loss["fillcolor"]) == (style.shape, style.style, style.fillcolor)
    module = lay.attrs["head"]
    assert (module["shape"], module["penwidth"]) == ("box", "2")


def test_legend_names_the_loss_only_when_drawn() -> None:
    lay = layout(diagram(head("mlm"), "overview"))
    assert lay.labels["legend/loss"] == "nll_loss"
    assert lay.labels["legend/loss/text"] == KINDS["loss"]
    assert "legend/loss" not in layout(diagram(BASE, "overview")).labels


def test_pretraining_overview_reads_pooler_and_sequence() -> None:
    lay = layout(diagram(head("pretraining"), "overview", params=True))
    # MLM head H² + 3·H + vocab_size, seq_relationship 2·H + 2: 589,824 + 3,840 + 30,522 + 2.
    assert lay.labels["head"] == "pre-training heads head H² + 5·H + vocab_size + 2 = 624,188"
    assert lay.labels["head/loss"] == "loss (2 × cross-entropy) head/loss"
    assert lay.flow("pooler", "head") == "[B, H]"
    assert lay.flow("encoder/layer", "head") == "[B, seq_len, H]"
    scores = [lay.labels[t] for a, t in lay.edges if a == "head" and (t, "head/loss") in lay.edges]
    assert sorted(scores) == ["[B, 2]", "[B, seq_len, vocab_size]"]
    assert lay.flow("head/next_sentence_label", "head/loss") == "[B]"


def test_multiple_choice_overview_flattens_choices() -> None:
    lay = layout(diagram(head("multiple-choice"), "overview", params=True))
    assert lay.flow("input_ids", "input_ids_rows") == "[B, C, seq_len]"
    assert lay.flow("input_ids_rows", "embeddings") == "[B·C, seq_len]"
    assert lay.flow("pooler", "head") == "[B·C, H]"
    assert lay.labels["head"] == "choice classifier head H + 1 = 769"
    assert lay.flow("head", "head/loss") == "[B, C]"
    assert lay.flow("head/labels", "head/loss") == "[B]"


def test_question_answering_layer_level_names_the_span_classifier() -> None:
    overview = layout(diagram(head("question-answering"), "overview", params=True))
    assert overview.labels["head"] == "question-answering head head 2·H + 2 = 1,538"
    lay = layout(diagram(head("question-answering"), "layer"))
    assert lay.labels["head/qa_outputs"] == "span classifier qa_outputs"
    assert lay.labels["head#title"] == "question-answering head"
    assert lay.labels["head/loss#title"] == "loss (2 × cross-entropy)"
    assert lay.flow("head/qa_outputs", "head/start_split") == "[B, seq_len, 2]"


@pytest.mark.parametrize("level", ["layer", "ops"])
def test_head_and_loss_are_clusters_with_the_labels_outside(level: str) -> None:
    lay = layout(diagram(head("mlm"), level))
    assert lay.labels["head#title"] == "MLM head"
    assert lay.labels["head/loss#title"] == "loss (cross-entropy)"
    assert {"head/cls/predictions/decoder", "head/loss/masked_lm/nll_loss"} <= lay.clusters["cluster_head"]
    assert "head/loss/masked_lm/nll_loss" in lay.clusters["cluster_head/loss"]
    assert "head/cls/predictions/decoder" not in lay.clusters["cluster_head/loss"]
    assert "head/labels" not in lay.clusters["cluster_head"]
    assert lay.attrs["head/loss/masked_lm/nll_loss"]["shape"] == THEMES["seed"].styles["loss"].shape
    assert y(lay, "head#title") > y(lay, "head/cls/predictions/decoder")
    assert y(lay, "head/loss#title") > y(lay, "head/loss/masked_lm/nll_loss")


def test_ops_level_draws_every_head_node() -> None:
    from symbert.api import trace

    config = head("pretraining")
    graph = trace(config)
    lay = layout(diagram(config, "ops"))
    assert set(lay.boxes()) == {n.name for n in graph.nodes}
    samples = [lay.labels[n] for n in lay.clusters["cluster_legend"] if n.count("/") == 1 and n != "legend/notes"]
    assert sorted(kind for s in samples for kind in s.split(", ")) == graph.op_kinds()


@pytest.mark.parametrize(
    ("problem", "num_labels", "loss"),
    [
        ("single_label_classification", 3, "cross-entropy"),
        ("regression", 1, "mean squared error"),
        ("multi_label_classification", 3, "binary cross-entropy"),
    ],
)
def test_loss_is_named_by_what_it_computes(problem: str, num_labels: int, loss: str) -> None:
    config = head("sequence-classification", problem_type=problem, num_labels=num_labels)
    lay = layout(diagram(config, "overview", params=True))
    assert lay.labels["head/loss"] == f"loss ({loss}) head/loss"
    # The classifier: a weight [num_labels, H] and a bias [num_labels].
    assert (
        lay.labels["head"] == f"sequence classifier head H·num_labels + num_labels = {768 * num_labels + num_labels:,}"
    )


def test_loss_heat_by_hand() -> None:
    lay = layout(diagram(head("mlm"), "overview", heat="activations", seq_len=128))
    # log_softmax keeps its float32 output [B·seq_len, vocab_size]; nll_loss keeps that, the int64 targets
    # [B·seq_len] and a float32 scalar: 4·128·30522 + 8·128 + 4 = 15,628,292 bytes.
    assert lay.labels["head/loss"].endswith("· 14.90 MiB")
    shares = [float(m.group(1)) for n in lay.boxes() if (m := re.search(r"([\d.]+)% · ", lay.labels[n]))]
    assert sum(shares) == pytest.approx(100, abs=1)


@pytest.mark.parametrize("model", ["albert", "distilbert"])
def test_other_families_draw_their_mlm_head(model: str) -> None:
    config = with_task(preset(PRESETS[model]), head="mlm")
    lay = layout(diagram(config, "overview", params=True, theme="mono"))
    # ALBERT: dense H → E (H·E + E), LayerNorm 2E, decoder bias; DistilBERT: as BERT's.
    formula = {"albert": "E·H + 3·E + vocab_size = 128,688", "distilbert": "H² + 3·H + vocab_size = 622,650"}
    assert lay.labels["head"] == f"MLM head head {formula[model]}"
    assert lay.labels["head/loss"] == "loss (cross-entropy) head/loss"


def test_head_diagrams_are_deterministic() -> None:
    config = head("pretraining")
    first = diagram(config, "ops", params=True, heat="flops").source
    assert diagram(config, "ops", params=True, heat="flops").source == first


# ---- LaTeX, tables, explain


def test_num_labels_in_both_notations_and_renamed() -> None:
    b = report(head("sequence-classification"), 1, 128).breakdowns["params"]
    seed = [line.rstrip(" \\") for line in latex.align(b).splitlines()]
    assert r"N_{\text{head}} &= H \mathit{num}_{\mathrm{labels}} + \mathit{num}_{\mathrm{labels}}" in seed
    assert r"N_{\text{head}} &= h K + K" in latex.align(b, latex.notation("megatron"))
    renamed = latex.align(b, latex.notation("megatron", ["num_labels=n_{cls}"]))
    assert r"N_{\text{head}} &= h n_{\mathrm{cls}} + n_{\mathrm{cls}}" in renamed


def test_choices_in_both_notations_and_renamed() -> None:
    out = run("latex", "bert-base", "--head", "multiple-choice", "--choices", "5", "-q", "activation_bytes")
    # The loss keeps log-probabilities [B, C] in float32, the targets [B] in int64 and a float32 scalar.
    assert r"M_{\text{loss}} &= 4 B C + 8 B + 4" in out
    assert r"\mathit{seq}_{\mathrm{len}} = 128,\ C = 5)" in out
    megatron = run(
        "latex", "bert-base", "--head", "multiple-choice", "-q", "activation_bytes", "--notation", "megatron"
    )
    assert r"M_{\text{loss}} &= 4 b c + 8 b + 4" in megatron
    assert r"s = 128,\ c = 4)" in megatron
    renamed = run("latex", "bert-base", "--head", "multiple-choice", "-q", "activation_bytes", "--rename", "C=n_{ch}")
    assert r"M_{\text{loss}} &= 4 B n_{\mathrm{ch}} + 8 B + 4" in renamed


def test_unknown_rename_lists_the_head_symbols() -> None:
    with pytest.raises(ConfigError, match=r"B, C, H, .*, num_labels, type_size, position_size"):
        latex.notation("seed", ["labels=k"])


def test_component_table_has_head_and_loss() -> None:
    r = report(head("mlm"), 1, 128)
    rows = {row[0]: row for row in tables.component_table([r], "activation_bytes").rows}
    assert list(rows)[-3:] == ["head", "loss", "total"]
    assert rows["loss"][2] == 4 * 128 * 30522 + 8 * 128 + 4
    params = {row[0]: row[2] for row in tables.component_table([r], "params").rows}
    assert params["head"] == 768**2 + 3 * 768 + 30522
    assert params["total"] == 109_482_240 - 590_592 + 622_650


def test_configs_with_other_heads_have_other_formulas() -> None:
    key = latex.structure_key
    assert key(head("mlm")) != key(head("token-classification"))
    assert key(head("sequence-classification", num_labels=3)) != key(head("sequence-classification", num_labels=1))
    assert key(head("sequence-classification", num_labels=3)) == key(head("sequence-classification", num_labels=5))


@pytest.mark.parametrize("name", ["mlm", "pretraining", "question-answering", "multiple-choice"])
@pytest.mark.parametrize("quantity", ["params", "activation_bytes", "flops_forward", "non_matmul_forward"])
def test_explain_parts_sum_to_the_total(name: str, quantity: str) -> None:
    b = report(head(name), 2, 64).breakdowns[quantity]
    terms = explain(b)
    assert sympy.expand(sum(p.coefficient * t.monomial for t in terms for p in t.parts) - b.substituted(b.total)) == 0


def test_explain_counts_the_tied_decoder_once() -> None:
    terms = {t.expr: t for t in explain(report(head("mlm"), 1, 128).breakdowns["params"])}
    word = sympy.Symbol("H", integer=True, positive=True) * sympy.Symbol("vocab_size", integer=True, positive=True)
    assert [p.contribution.node for p in terms[word].parts] == ["embeddings/word_embeddings"]
    bias = sympy.Symbol("vocab_size", integer=True, positive=True)
    assert [(p.contribution.node, p.contribution.what) for p in terms[bias].parts] == [
        ("head/cls/predictions/decoder", "cls.predictions.bias")
    ]


# ---- compare


def test_compare_one_head_on_both_sides() -> None:
    c = compare([head("mlm"), head("mlm")], 1, 128)
    params = next(q for q in c.quantities if q.key == "params")
    assert params.sides[0].value == params.sides[1].value == 109_482_240 - 590_592 + 622_650
    assert params.value_ratio(1) == 1
    out = run("compare", "bert-base", "bert-base", "--head", "mlm")
    assert "109,514,298" in out


def test_compare_two_heads_keeps_model_order(tmp_path: Path) -> None:
    base = {"model_type": "bert", **BASE.values}
    (tmp_path / "mlm.json").write_text(json.dumps({**base, "architectures": ["BertForMaskedLM"]}))
    cls = {**base, "architectures": ["BertForSequenceClassification"], "num_labels": 3}
    (tmp_path / "cls.json").write_text(json.dumps(cls))
    out = json.loads(run("compare", str(tmp_path / "mlm.json"), str(tmp_path / "cls.json"), "--json"))
    params = out["quantities"]["params"]
    # The classifier: 3·768 + 3 = 2,307, with the pooler kept.
    assert params["configs"][1]["value"] == 109_482_240 + 2_307
    assert params["against_first"][0]["difference"] == 2_307 - (622_650 - 590_592)
    c = compare([with_task(BASE, head="mlm"), with_task(BASE, head="sequence-classification", num_labels=3)], 1, 128)
    roles = next(q for q in c.quantities if q.key == "activation_bytes").roles
    assert roles.index("pooler") < roles.index("head") < roles.index("loss")


# ---- every command, every head, every family


@pytest.mark.parametrize(("model", "name"), [(m, h) for m in PRESETS for h in MODELS[m].heads], ids=lambda v: str(v))
def test_every_command_takes_every_head(model: str, name: str) -> None:
    p = PRESETS[model]
    dot = run("diagram", "--preset", p, "--head", name, "--level", "overview", "--heat", "activations")
    assert '"head/loss" [label=<' in dot
    assert '"head#title"' in run("diagram", "--preset", p, "--head", name, "--level", "ops", "--params")
    equations = run("latex", p, "--head", name, "--notation", "megatron")
    assert r"N_{\text{head}}" in equations and r"M_{\text{loss}}" in equations
    for quantity, last in (("params", ["head", "total"]), ("activation_bytes", ["loss", "total"])):
        table = run("table", p, "--head", name, "-q", quantity, "--format", "csv")
        assert [line.split(",")[0] for line in table.splitlines()][-2:] == last
    assert "head/" in run("explain", "flops_forward", "--preset", p, "--head", name)
    side = json.loads(run("compare", p, p, "--head", name, "--json"))["quantities"]["params"]["configs"][0]
    assert side["components"]["head"] > 0 and side["roles"]["head"] == side["components"]["head"]
