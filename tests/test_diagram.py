"""Architecture diagrams: their structure, read back from the real ``dot``'s JSON layout, and their files."""

from __future__ import annotations

import html
import json
import os
import re
import runpy
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import click
import graphviz
import pytest
from conftest import run_cli

from symbert import Diagram, MemoryOptions, diagram, preset, report, resolve, trace
from symbert.formula import human, quantity
from symbert.ir import Node
from symbert.ops import OPS
from symbert.render.diagram import FORMATS, HEATS, LEVELS
from symbert.render.theme import KINDS, THEMES, kind_of

pytestmark = pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz's dot is not installed: make system-deps")

ROOT = Path(__file__).resolve().parent.parent
BASE = preset("bert-base")


@dataclass
class Layout:
    """A diagram as the real ``dot`` lays it out: node labels and attributes, clusters, visible edges."""

    labels: dict[str, str]
    attrs: dict[str, dict[str, str]]
    clusters: dict[str, set[str]]
    edges: list[tuple[str, str]]

    def boxes(self) -> list[str]:
        """Drawn boxes: neither tensor labels, cluster titles nor legend entries."""
        return [n for n in self.labels if "#" not in n and not n.startswith("legend/")]

    def flow(self, src: str, dst: str) -> str:
        """The shape on the edge from box ``src`` to box ``dst``, through its tensor label."""
        shapes = [self.labels[t] for a, t in self.edges if a == src and "#" in t and (t, dst) in self.edges]
        assert len(shapes) == 1, f"{src} -> {dst}: {shapes}"
        return shapes[0]


def layout(d: Diagram) -> Layout:
    data = json.loads(graphviz.pipe("dot", "json", d.source.encode()))
    count = data["_subgraph_cnt"]
    objects = data["objects"]
    names = {o["_gvid"]: o["name"] for o in objects[count:]}

    def text(label: str) -> str:
        return " ".join(html.unescape(re.sub(r"<[^>]*>", " ", label)).split())

    return Layout(
        labels={o["name"]: text(o["label"]) for o in objects[count:]},
        attrs={o["name"]: o for o in objects[count:]},
        clusters={o["name"]: {names[i] for i in o.get("nodes", [])} for o in objects[:count]},
        edges=[(names[e["tail"]], names[e["head"]]) for e in data.get("edges", []) if e.get("style") != "invis"],
    )


def test_overview_reads_at_a_glance() -> None:
    lay = layout(diagram(BASE, "overview", params=True))
    assert len(lay.boxes()) <= 15
    assert lay.labels["embeddings"].startswith("Embedding Layer")
    assert lay.labels["encoder/layer"] == "Transformer × L encoder/layer 4·H² + 2·H·I + 9·H + I = 7,087,872"
    assert lay.labels["last_hidden_state"].startswith("sequence_output")
    assert lay.labels["pooler_output"].startswith("pooled_output")
    assert lay.flow("input_ids", "embeddings") == "[B, seq_len]"
    assert lay.flow("embeddings", "encoder/layer") == "[B, seq_len, H]"
    # The encoder's own ops, Hugging Face's mask preprocessing and the 4D mask, are one box at its level.
    assert lay.labels["encoder"] == "encoder"
    assert lay.flow("encoder", "encoder/layer") == "[B, 1, seq_len, seq_len]"
    assert lay.flow("encoder/layer", "last_hidden_state") == "[B, seq_len, H]"
    assert lay.flow("encoder/layer", "pooler") == "[B, seq_len, H]"
    assert lay.flow("pooler", "pooler_output") == "[B, H]"
    module = lay.attrs["encoder/layer"]
    assert (module["shape"], module["color"], module["penwidth"], module["style"]) == ("box", "black", "2", "filled")
    assert [n for n in lay.clusters if n.startswith("cluster")] == ["cluster_legend"]


def test_layer_level_draws_one_layer_in_a_cluster_labelled_times_l() -> None:
    graph = trace(BASE)
    lay = layout(diagram(BASE, "layer"))
    attention = "encoder/layer/attention/self"
    expected = {n.name for n in graph.nodes if n.block and not n.scope.startswith(attention)} | {attention}
    assert {n for n in lay.clusters["cluster_encoder/layer"] if "#" not in n} == expected
    assert lay.labels["encoder/layer#title"] == "Transformer × L"
    assert lay.labels[attention] == f"Multi-head Attention {attention}"
    assert {n.name for n in graph.nodes if n.scope == "embeddings"} <= lay.clusters["cluster_embeddings"]
    # The residual: the layer's input feeds attention and the add after it.
    assert lay.flow("embeddings/dropout", attention) == "[B, seq_len, H]"
    assert lay.flow("embeddings/dropout", "encoder/layer/attention/output/add") == "[B, seq_len, H]"
    assert lay.flow("encoder/layer/intermediate/dense", "encoder/layer/intermediate/gelu") == "[B, seq_len, I]"
    styles = {kind: lay.attrs[name] for kind, name in (("dropout", "embeddings/dropout"), ("sum", "embeddings/add"))}
    styles["norm"] = lay.attrs["embeddings/LayerNorm"]
    styles["dense"] = lay.attrs["embeddings/word_embeddings"]
    for kind, attrs in styles.items():
        style = THEMES["seed"].styles[kind]
        assert (attrs["shape"], attrs["style"], attrs["color"]) == (style.shape, style.style, style.color)


def test_op_level_draws_every_node_edge_and_op_kind() -> None:
    graph = trace(BASE)
    lay = layout(diagram(BASE, "ops"))
    assert set(lay.boxes()) == {n.name for n in graph.nodes}
    for u, v, t in graph.nx.edges(keys=True):
        assert lay.flow(u, v) == "[" + ", ".join(human(d) for d in graph.tensor(t).shape) + "]"
    samples = [lay.labels[n] for n in lay.clusters["cluster_legend"] if n.count("/") == 1 and n != "legend/notes"]
    assert sorted(kind for s in samples for kind in s.split(", ")) == graph.op_kinds()
    assert lay.labels["encoder/layer/attention/self/scores"] == "scores matmul"


def test_legend_shows_each_kind_drawn_and_what_gray_means() -> None:
    lay = layout(diagram(BASE, "overview"))
    legend = lay.clusters["cluster_legend"]
    assert {"legend/module", "legend/io"} <= legend
    assert "legend/dense" not in legend and "legend/function" not in legend  # no op drawn alone
    assert lay.labels["legend/module/text"] == KINDS["module"]
    assert "gray shapes have no trainable parameters" in lay.labels["legend/notes"]
    assert "legend/function" in layout(diagram(BASE, "layer")).clusters["cluster_legend"]


def test_levels_follow_the_traced_graph() -> None:
    no_pooler = layout(diagram(resolve("bert-base", None, pooler=False), "overview"))
    assert "pooler" not in no_pooler.boxes()
    assert no_pooler.labels["encoder/layer"].startswith("Transformer × L")
    distil = layout(diagram(preset("distilbert-base-uncased"), "overview"))
    assert distil.labels["transformer/layer"].startswith("layer × L")
    albert = layout(diagram(preset("albert-base-v2"), "layer"))
    block = next(n for n in albert.labels if n.endswith("#title") and "× L" in albert.labels[n])
    assert albert.labels[block] == "albert_layer_groups × L, shared weights"


def test_parameter_formulas_and_values() -> None:
    with_values = layout(diagram(BASE, "layer", params=True))
    assert with_values.labels["encoder/layer/intermediate/dense"] == "dense linear H·I + I = 2,362,368"
    symbolic = layout(diagram(trace("bert"), "layer", params=True))
    assert symbolic.labels["encoder/layer/intermediate/dense"] == "dense linear H·I + I"
    assert symbolic.labels["embeddings/word_embeddings"] == "word_embeddings embedding E·vocab_size"
    assert "·" not in layout(diagram(BASE, "layer")).labels["encoder/layer/intermediate/dense"]


def test_activation_heat_finds_the_seq_len_squared_tensors() -> None:
    graph = trace(BASE)
    lay = layout(diagram(BASE, "ops", heat="activations", seq_len=512))
    shares = {}
    for name in lay.boxes():
        match = re.search(r"([\d.]+)% · ", lay.labels[name])
        if match:
            shares[name] = float(match.group(1))
    assert sum(shares.values()) == pytest.approx(100, abs=1)
    top = max(shares, key=shares.get)
    assert "attention_core" in graph.node(top).regions
    assert lay.attrs[top]["fillcolor"] == THEMES["seed"].heat[-1]
    total = report(BASE, 1, 512, MemoryOptions()).value("activation_bytes")  # the diagram's setup
    assert f"{quantity(total, 'bytes')} in all" in lay.labels["legend/heat"]
    assert "fill: share of activation memory" in lay.labels["legend/notes"]


@pytest.mark.parametrize("heat", ["params", "flops"])
def test_other_heats_share_their_whole_total(heat: str) -> None:
    lay = layout(diagram(BASE, "layer", heat=heat, theme="mono"))
    shares = [float(m.group(1)) for n in lay.boxes() if (m := re.search(r"([\d.]+)% · ", lay.labels[n]))]
    assert sum(shares) == pytest.approx(100, abs=1)


def test_mono_theme_is_gray_only() -> None:
    source = diagram(BASE, "ops", theme="mono", heat="activations").source
    colors = set(re.findall(r'(?:color|fillcolor|fontcolor|BGCOLOR|COLOR)="?(#[0-9a-f]{6}|[a-z]+)', source))
    assert colors
    for color in colors - {"black", "white"}:
        assert color[1:3] == color[3:5] == color[5:7], color


def test_every_op_kind_has_a_style_in_every_theme() -> None:
    for theme in THEMES.values():
        assert set(theme.styles) == set(KINDS)
    for kind in OPS:
        assert kind_of(Node("x", kind, "", (), ())) in KINDS


@pytest.mark.parametrize("level", list(LEVELS))
def test_every_level_renders_to_svg_png_and_pdf(level: str) -> None:
    d = diagram(BASE, level, params=True)
    assert b"<svg" in d.render("svg")
    assert d.render("png").startswith(b"\x89PNG")
    assert d.render("pdf").startswith(b"%PDF")
    assert d.render("dot") == d.source.encode()
    assert "<svg" in d._repr_svg_()


def test_api_rejects_what_it_cannot_draw() -> None:
    with pytest.raises(ValueError, match="unknown level"):
        diagram(BASE, "modules")
    with pytest.raises(ValueError, match="needs a Config"):
        diagram(trace("bert"), heat="flops")


def test_cli_choices_are_the_api_names() -> None:
    from symbert.cli import diagram as command

    choices = {p.name: tuple(p.type.choices) for p in command.params if isinstance(p.type, click.Choice)}
    assert choices["level"] == tuple(LEVELS)
    assert choices["fmt"] == FORMATS
    assert choices["theme"] == tuple(THEMES)
    assert choices["heat"] == tuple(HEATS)


def test_cli_dot_is_byte_identical_across_runs() -> None:
    first = run_cli("diagram", "--level", "ops", "--params", "--heat", "activations")
    assert first.returncode == 0, first.stderr
    assert first.stdout.startswith('digraph "bert-base" {')
    assert run_cli("diagram", "--level", "ops", "--params", "--heat", "activations").stdout == first.stdout


def test_cli_writes_the_format_its_file_names(tmp_path: Path) -> None:
    for fmt, magic in (("svg", b"<?xml"), ("png", b"\x89PNG"), ("pdf", b"%PDF"), ("dot", b"digraph")):
        out = tmp_path / f"d.{fmt}"
        result = run_cli("diagram", "--preset", "bert-tiny", "--level", "overview", "-o", str(out))
        assert result.returncode == 0, result.stderr
        assert out.read_bytes().startswith(magic)
    result = run_cli("diagram", "-o", str(tmp_path / "d.txt"))
    assert result.returncode == 2
    assert result.stderr.strip() == (
        f"symbert: error: cannot tell the format from '{tmp_path / 'd.txt'}'; give --format (dot, svg, png, pdf)"
    )


def test_cli_without_dot_says_how_to_install_it(tmp_path: Path) -> None:
    env = {**os.environ, "PATH": str(tmp_path)}
    command = [sys.executable, "-m", "symbert", "diagram", "--format"]
    result = subprocess.run([*command, "svg"], capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 2
    assert len(result.stderr.splitlines()) == 1
    assert "apt-get install graphviz" in result.stderr and "Traceback" not in result.stderr
    dot_only = subprocess.run([*command, "dot"], capture_output=True, text=True, env=env, timeout=120)
    assert dot_only.returncode == 0 and dot_only.stdout.startswith("digraph")


def _generator(svg: bytes) -> bytes:
    """The Graphviz version an SVG names in its header."""
    return re.search(rb"Generated by graphviz version [^\n]*", svg).group(0)


def test_gallery_is_up_to_date(tmp_path: Path) -> None:
    runpy.run_path(str(ROOT / "scripts" / "make_docs.py"))["build"](tmp_path)
    docs = ROOT / "docs"
    fresh = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.is_file())
    kept = {p.relative_to(docs) for p in (docs / "diagrams").iterdir()} | {Path("gallery.md")}
    assert set(fresh) == kept, "docs/diagrams is stale: run make docs"
    for name in fresh:
        new, old = (tmp_path / name).read_bytes(), (docs / name).read_bytes()
        if name.suffix == ".svg" and _generator(new) != _generator(old):
            continue  # another Graphviz version lays out differently; the DOT beside it is compared byte for byte
        assert new == old, f"docs/{name} is stale: run make docs"


def test_albert_projection_is_its_own_labelled_box() -> None:
    """ALBERT's Linear(E, H) between the embeddings and the shared layers: 128·768 + 768 parameters (albert-base)."""
    lay = layout(diagram(preset("albert-base-v2"), "overview", params=True))
    projection = "encoder/embedding_hidden_mapping_in"
    assert lay.labels[projection] == f"E → H projection {projection} E·H + H = 99,072"
    assert lay.flow("embeddings", projection) == "[B, seq_len, E]"
    assert lay.flow(projection, "encoder/albert_layer_groups") == "[B, seq_len, H]"


def test_deberta_draws_its_unread_token_types_only_at_the_op_level() -> None:
    """DeBERTa-v3 (no token-type embeddings) makes all-zero token types and never reads them."""
    model = preset("deberta-v3-base")
    for level in ("overview", "layer"):
        lay = layout(diagram(model, level))
        assert "token_type_ids" not in lay.boxes()
        linked = {n for edge in lay.edges for n in edge}
        assert [box for box in lay.boxes() if box not in linked] == []
    assert "token_type_ids" in layout(diagram(model, "ops")).boxes()


@pytest.mark.parametrize("name", ["modernbert-base", "modernbert-large"])
def test_modernbert_overview_draws_the_interleaved_pattern_once(name: str) -> None:
    """The repeat drawn (a global layer, then global_every − 1 local ones, L_global times, L layers in all)
    spells out Hugging Face's own layer_types; each layer box holds one layer's parameters
    (ModernBERT-base by hand: Wqkv 768·2304, Wo 768², Wi 768·2304, Wo 1152·768, two norms 768 = 5,015,040)."""
    transformers = pytest.importorskip("transformers")
    config = preset(name)
    values = config.symbols()
    p = trace(config).patterns["layers"]
    drawn = [
        kind for _ in range(int(p.count.subs(values))) for kind, _, n in p.kinds for _ in range(int(n.subs(values)))
    ]
    drawn = drawn[: int(p.layers.subs(values))]
    names = {"global": "full_attention", "local": "sliding_attention"}
    assert [names[k] for k in drawn] == transformers.ModernBertConfig(**config.values).layer_types
    lay = layout(diagram(config, "overview", params=True))
    glob, local = "layers/global layers", "layers/local layers"
    assert lay.clusters["cluster_layers"] >= {glob, local}
    title = "layers × L_global, L layers in all (the last repeat may stop early)"
    assert lay.labels["layers#title"] == title
    assert lay.labels[glob].startswith("global layer layers/0, layers/global 4·H² + 3·H·I + 2·H = ")
    assert lay.labels[local].startswith("local layer × global_every - 1 layers/local 4·H² + 3·H·I + 2·H")
    assert lay.flow(glob, local) == "[B, seq_len, H]"
    assert not {"layers", "layers/global", "layers/local"} & set(lay.boxes())
    if name == "modernbert-base":
        assert lay.labels[glob].endswith("= 5,015,040")
    # the layer level draws the blocks as traced, each with its own count
    traced = layout(diagram(config, "layer"))
    assert traced.labels["layers/global#title"] == "layers/global × L_global - 1"
    assert traced.labels["layers/local#title"] == "layers/local × L - L_global"
