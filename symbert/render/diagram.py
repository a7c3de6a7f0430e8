"""Architecture diagrams drawn from the traced graph by Graphviz's ``dot``, never from a hand-drawn copy.

A level groups the graph's nodes into drawn boxes by scope:

* ``overview`` collapses each top-level scope and each repeated block into one box, and a task model's
  head and loss into one box each;
* ``layer`` draws every op, except that the scope holding a region (BERT's attention core) is one box;
* ``ops`` draws every op.

Edges are the tensors flowing between boxes, labelled with their symbolic shapes. Outside the overview,
scopes are clusters and the repeated block is drawn once, in a cluster labelled with its count (× L).
Boxes can show their parameter formula (and its value, given a config), and heat mode colours each box
by its share of the parameters, activation memory or forward FLOPs. Looks are data in
:mod:`symbert.render.theme`.
"""

from __future__ import annotations

import html
import re
import unicodedata
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path

import graphviz
import sympy

from symbert.analysis.breakdown import TASK_COMPONENTS
from symbert.analysis.params import params as params_pass
from symbert.analysis.policy import MemoryOptions
from symbert.analysis.report import report
from symbert.api import trace
from symbert.configs import Config
from symbert.formula import human, quantity
from symbert.ir import Graph, Node, Role
from symbert.render.theme import KINDS, THEMES, Theme, kind_of

FORMATS = ("dot", "svg", "png", "pdf")
INSTALL_HINT = (
    "Graphviz's `dot` program draws diagrams and is not installed: `apt-get install graphviz` (Debian, Ubuntu), "
    "`brew install graphviz` (macOS), or see https://graphviz.org/download/"
)

#: The seed write-up's names for BERT's scopes and outputs, and plain names for some task-head parts; everything
#: else is labelled with its own name.
NAMES: dict[str, str] = {
    "embeddings": "Embedding Layer",
    "encoder/layer": "Transformer",
    "encoder/layer/attention/self": "Multi-head Attention",
    "encoder/embedding_hidden_mapping_in": "E → H projection",
    "last_hidden_state": "sequence_output",
    "pooler_output": "pooled_output",
    "head/cls/seq_relationship": "next-sentence classifier",
    "head/sop_classifier": "sentence-order classifier",
    "head/qa_outputs": "span classifier",
}

#: A task head's title, by head name; a head not listed is called by its name.
HEAD_TITLES: dict[str, str] = {
    "mlm": "MLM head",
    "pretraining": "pre-training heads",
    "next-sentence": "next-sentence head",
    "sequence-classification": "sequence classifier",
    "token-classification": "token classifier",
    "question-answering": "question-answering head",
    "multiple-choice": "choice classifier",
}

#: What each loss op computes, for the loss's title.
LOSSES: dict[str, str] = {
    "nll_loss": "cross-entropy",
    "mse_loss": "mean squared error",
    "bce_with_logits": "binary cross-entropy",
}

#: The scopes of a task model's head and of its loss.
HEAD, LOSS = (next(c.scope for c in TASK_COMPONENTS if c.name == name) for name in ("head", "loss"))

#: Heat modes: the report quantity each colours by, and how the legend names it.
HEATS: dict[str, tuple[str, str]] = {
    "activations": ("activation_bytes", "activation memory"),
    "params": ("params", "parameters"),
    "flops": ("flops_forward", "forward matmul FLOPs"),
}

#: Placeholder ops that stay boxes of their own at every level: the diagram's ends.
ENDPOINTS = frozenset({"input", "output"})


class DotNotFound(RuntimeError):
    """Graphviz's ``dot`` is not on PATH; the message says how to install it."""


class DotFailed(RuntimeError):
    """Graphviz's ``dot`` refused the source or failed to render it; the message is its first error line."""


@dataclass(frozen=True)
class Level:
    """How nodes group into boxes: by scope depth, by repeated block, or by the scopes holding regions.

    ``splits`` are scopes (or nodes) drawn as a box of their own, even of one node, where ``depth`` would merge
    them into their parent. ``unused`` draws ops that neither read nor feed anything (DeBERTa-v3's all-zero
    token types, which it makes and never reads); other levels leave them out.
    """

    name: str
    doc: str
    depth: int | None = None
    blocks: bool = False
    regions: bool = False
    splits: tuple[str, ...] = ()
    unused: bool = False

    def boxes_of(self, graph: Graph) -> dict[str, str]:
        """Each node's box: the scope it collapses into, or its own name."""
        collapsed = list(dict.fromkeys(n.scope for n in graph.nodes if n.regions)) if self.regions else []
        out = {}
        for node in graph.nodes:
            key = node.name
            if not self.unused and graph.nx.degree(node.name) == 0:
                continue
            if node.op in ENDPOINTS:
                pass
            elif self.blocks and (kind := _kind(graph, node)):
                key = kind[0]
            elif self.blocks and node.block:
                key = node.block
            elif self.depth and node.scope:
                top = "/".join(node.scope.split("/")[: self.depth])
                key = next((s for s in self.splits if _within(node.scope, s) or _within(node.name, s)), top)
            else:
                key = next((s for s in collapsed if _within(node.scope, s)), key)
            out[node.name] = key
        return out


LEVELS: dict[str, Level] = {
    level.name: level
    for level in (
        Level(
            "overview",
            "one box per top-level module and per repeated block",
            depth=1,
            blocks=True,
            splits=(LOSS, "encoder/embedding_hidden_mapping_in"),  # ALBERT's E → H projection, outside its layers
        ),
        Level("layer", "every op, the attention core's scope as one box", regions=True),
        Level("ops", "every op", unused=True),
    )
}


@dataclass(frozen=True)
class Box:
    """One drawn node: the graph nodes it stands for, its kind and labels, and the scope it sits in."""

    id: str
    nodes: tuple[Node, ...]
    kind: str
    title: str
    subtitle: str
    scope: str


@dataclass(frozen=True)
class Heat:
    """Each box's share of one quantity, evaluated at a config and shape."""

    name: str
    unit: str
    values: dict[str, int]
    total: int
    caption: tuple[str, ...]


@dataclass(frozen=True)
class Diagram:
    """A diagram's DOT source; ``dot`` renders it to SVG, PNG or PDF, and Jupyter shows it inline."""

    source: str

    def render(self, format: str = "svg") -> bytes:
        """The diagram in ``format`` (one of :data:`FORMATS`); DOT is the source itself."""
        if format not in FORMATS:
            raise ValueError(f"unknown format {format!r} (choose from {', '.join(FORMATS)})")
        if format == "dot":
            return self.source.encode()
        try:
            data = graphviz.pipe("dot", format, self.source.encode(), quiet=True)
        except graphviz.ExecutableNotFound:
            raise DotNotFound(INSTALL_HINT) from None
        except (graphviz.CalledProcessError, OSError) as exc:
            detail = getattr(exc, "stderr", None) or b""
            lines = (detail.decode(errors="replace") if isinstance(detail, bytes) else str(detail)).splitlines()
            reason = (lines or [str(exc)])[0]
            raise DotFailed(f"Graphviz's dot could not render the diagram as {format}: {reason}") from None
        return _undated(data) if format == "pdf" else data

    def save(self, path: str | Path, format: str | None = None) -> Path:
        """Write the diagram; the format defaults to the file's suffix."""
        from symbert.outputs import check_output, write_output

        path = check_output(path)
        return write_output(path, self.render(format or path.suffix.lstrip(".")))

    def __repr__(self) -> str:
        title = re.search(r'label="([^"]*)"', self.source)
        return f"<Diagram{': ' + title[1] if title else ''} ({self.source.count(chr(10))} lines of DOT)>"

    def _repr_svg_(self) -> str:
        return self.render("svg").decode()


#: cairo's PDF creation date (cairo before 1.17 ignores SOURCE_DATE_EPOCH).
_PDF_DATE = re.compile(rb"/CreationDate \(D:[0-9+\-Z']*\)")


def _undated(pdf: bytes) -> bytes:
    """``pdf`` with its creation date blanked (spaces of the same length, so every offset stays valid):
    the same diagram renders to the same bytes on every run, as the plots do."""
    return _PDF_DATE.sub(lambda m: b" " * len(m[0]), pdf)


def diagram(
    model: Config | Graph,
    level: str = "layer",
    *,
    theme: str = "seed",
    params: bool = False,
    heat: str | None = None,
    batch: int = 1,
    seq_len: int = 128,
    memory: MemoryOptions | None = None,
) -> Diagram:
    """Draw a traced graph (or a config's) at ``level``.

    ``params`` labels boxes with their parameter formula, and its value when ``model`` is a config. ``heat``
    (``activations``, ``params`` or ``flops``) colours boxes by their share of that quantity for the config
    at ``batch`` × ``seq_len``, activation memory under ``memory`` options.
    """
    for value, allowed, what in ((level, LEVELS, "level"), (theme, THEMES, "theme"), (heat or "params", HEATS, "heat")):
        if value not in allowed:
            raise ValueError(f"unknown {what} {value!r} (choose from {', '.join(allowed)})")
    config = model if isinstance(model, Config) else None
    graph = trace(config, layout=(memory or MemoryOptions()).layout) if config else model
    if heat and config is None:
        raise ValueError("heat mode needs a Config to evaluate at")
    names = _names(graph)
    boxes = _boxes(graph, LEVELS[level], names)
    heat_data = _heat(boxes, config, heat, batch, seq_len, memory) if heat else None
    formulas = _param_formulas(graph, boxes, config) if params else {}
    return Diagram(_dot(graph, boxes, LEVELS[level], THEMES[theme], names, config, formulas, heat_data).source)


def boxes(graph: Graph, level: str) -> list[Box]:
    """The boxes ``level`` draws, each with the graph nodes it stands for; its id is its ``<title>`` in the SVG."""
    return _boxes(graph, LEVELS[level], _names(graph))


def _names(graph: Graph) -> dict[str, str]:
    """Display names: the seed's, and a task model's head and loss, the loss named by what it computes."""
    losses = Counter(LOSSES[n.op] for n in graph.nodes if n.op in LOSSES)
    if not losses:
        return NAMES
    computes = ", ".join(name if count == 1 else f"{count} × {name}" for name, count in losses.items())
    return {**NAMES, HEAD: HEAD_TITLES.get(graph.head, f"{graph.head} head"), LOSS: f"loss ({computes})"}


def _kinds(graph: Graph) -> dict[str, tuple[str, tuple[str, ...], sympy.Expr]]:
    """Each kind of interleaved layer (:class:`~symbert.ir.Pattern`) by its overview box, ``<scope>/<kind> layers``
    (a name apart from the blocks that trace it, which other levels draw as traced)."""
    return {
        f"{scope}/{name} layers": (name, traced, n)
        for scope, p in graph.patterns.items()
        for name, traced, n in p.kinds
    }


def _kind(graph: Graph, node: Node) -> tuple[str, tuple[str, ...]] | None:
    """The interleaved kind's box ``node`` belongs to and the scopes that trace that kind, if any."""
    return next(((box, k[1]) for box, k in _kinds(graph).items() if any(_within(node.scope, s) for s in k[1])), None)


def _within(scope: str, prefix: str) -> bool:
    return scope == prefix or scope.startswith(prefix + "/")


def _leaf(name: str) -> str:
    """The last path part, less the ``.N`` the tracer appends to repeated names."""
    return re.sub(r"\.\d+$", "", name.rsplit("/", 1)[-1])


def _parent(path: str) -> str:
    return path.rsplit("/", 1)[0] if "/" in path else ""


def _repeats(graph: Graph, scope: str, title: str) -> str:
    """A title, with its block's count (× L) and whether the runs share weights if ``scope`` is a block; an
    interleaved kind's layers in one repeat, and its pattern's repeats and layers in all."""
    if scope in graph.patterns:
        p = graph.patterns[scope]
        return f"{title} × {human(p.count)}, {human(p.layers)} layers in all (the last repeat may stop early)"
    if scope in _kinds(graph):
        name, _, n = _kinds(graph)[scope]
        return f"{name} layer" + ("" if n == 1 else f" × {human(n)}")
    block = graph.blocks.get(scope)
    if block is None:
        return title
    return f"{title} × {human(block.count)}" + (", shared weights" if block.shares_params else "")


def _boxes(graph: Graph, level: Level, names: dict[str, str]) -> list[Box]:
    """The drawn boxes, in trace order of their first node, titled by ``names`` or their own names."""
    groups: dict[str, list[Node]] = {}
    for node_name, key in level.boxes_of(graph).items():
        groups.setdefault(key, []).append(graph.node(node_name))
    boxes = []
    for key, nodes in groups.items():
        if len(nodes) == 1 and key not in graph.blocks and key not in level.splits:
            node = nodes[0]
            title = names.get(node.name, _leaf(node.name))
            kind = kind_of(node)
            renamed = node.name in names
            subtitle = _leaf(node.name) if renamed else "" if kind == "io" or node.op == title else node.op
            scope = "" if node.op in ENDPOINTS else node.scope  # the model's inputs and outputs stand outside modules
            boxes.append(Box(node.name, (node,), kind, title, subtitle, scope))
        else:
            title = _repeats(graph, key, names.get(key, _leaf(key)))
            subtitle = ", ".join(_kinds(graph)[key][1]) if key in _kinds(graph) else key if key != title else ""
            boxes.append(Box(key, tuple(nodes), _group_kind(nodes), title, subtitle, _parent(key)))
    return boxes


def _group_kind(nodes: list[Node]) -> str:
    """A box of several nodes is a complex module, or the loss when it computes one."""
    return "loss" if any(kind_of(n) == "loss" for n in nodes) else "module"


def _param_formulas(graph: Graph, boxes: list[Box], config: Config | None) -> dict[str, str]:
    """Each box's parameters per copy (per layer inside a repeated block), with the value at ``config``."""
    per_node: dict[str, sympy.Expr] = {}
    for c in params_pass(graph).contributions:
        per_node[c.node] = per_node.get(c.node, sympy.S.Zero) + c.expr
    out = {}
    for box in boxes:
        kind = _kinds(graph).get(box.id)  # one layer of an interleaved kind: one run of the last scope tracing it
        nodes = [n for n in box.nodes if kind is None or _within(n.scope, kind[1][-1])]
        expr = sympy.expand(sympy.Add(*(per_node.get(n.name, sympy.S.Zero) for n in nodes)))
        if expr != 0:
            value = f" = {int(expr.subs(config.symbols())):,}" if config else ""
            out[box.id] = human(expr) + value
    return out


def _heat(boxes: list[Box], config: Config, which: str, batch: int, seq_len: int, memory: MemoryOptions | None) -> Heat:
    """Each box's amount of the heat quantity, from the same passes ``symbert report`` runs."""
    key, name = HEATS[which]
    r = report(config, batch, seq_len, memory)
    breakdown = r.breakdowns[key]
    box_of = {n.name: box.id for box in boxes for n in box.nodes}
    values: dict[str, int] = {}
    for c in breakdown.contributions:
        values[box_of[c.node]] = values.get(box_of[c.node], 0) + breakdown.evaluate(c.total, r.values)
    total = sum(values.values())
    caption = (
        f"fill: share of {name}",
        f"{config.name}, B={batch}, seq_len={seq_len}",
        *([r.options.describe()] if which == "activations" else []),
        f"{quantity(total, breakdown.unit)} in all",
    )
    return Heat(name, breakdown.unit, values, total, caption)


def _ramp(colors: tuple[str, ...], t: float) -> str:
    """The colour a fraction ``t`` of the way along a ramp of hex colours."""
    t = min(max(t, 0.0), 1.0) * (len(colors) - 1)
    i = min(int(t), len(colors) - 2)
    a, b = (tuple(int(c[k : k + 2], 16) for k in (1, 3, 5)) for c in colors[i : i + 2])
    return "#" + "".join(f"{round(x + (y - x) * (t - i)):02x}" for x, y in zip(a, b, strict=True))


def _dark(color: str) -> bool:
    r, g, b = (int(color[k : k + 2], 16) for k in (1, 3, 5))
    return 0.299 * r + 0.587 * g + 0.114 * b < 140


def _printable(text: str) -> str:
    """``text`` with line breaks and other control characters as spaces (labels are one line each)."""
    return "".join(" " if unicodedata.category(c) in ("Cc", "Cs") else c for c in text)


def _escape(text: str) -> str:
    """Text for a quoted DOT string: printable, backslashes doubled (DOT reads ``\\l``, ``\\N`` and ``\\"`` as
    escapes; the graphviz package escapes the quotes)."""
    return _printable(text).replace("\\", "\\\\")


def _html(text: str) -> str:
    """Text for an HTML-like label: printable, with ``<``, ``>``, ``&`` and quotes as entities."""
    return html.escape(_printable(text))


def _label(lines: list[tuple[str, int | None, bool]], muted: str | None) -> str:
    """An HTML-like label: (text, point size or None, bold) lines; small lines in the muted colour."""
    out = []
    for text, size, bold in lines:
        s = _html(text)
        s = f"<B>{s}</B>" if bold else s
        if size:
            color = f' COLOR="{muted}"' if muted else ""
            s = f'<FONT POINT-SIZE="{size}"{color}>{s}</FONT>'
        out.append(s)
    if len(out) == 1:
        return f"<{out[0]}>"
    # Table rows, unlike <BR/>, keep lines of different sizes from touching.
    rows = "".join(f"<TR><TD>{s}</TD></TR>" for s in out)
    return f'<<TABLE BORDER="0" CELLBORDER="0" CELLSPACING="0" CELLPADDING="0">{rows}</TABLE>>'


def _shape(graph: Graph, tensor: str) -> str:
    return "[" + ", ".join(human(d) for d in graph.tensor(tensor).shape) + "]"


def _tensor_id(tensor: str) -> str:
    """A tensor label's node id: the tensor's name, its ``:`` (a port separator in DOT) made ``#``."""
    return tensor.replace(":", "#")


def _box_attrs(box: Box, theme: Theme, formulas: dict[str, str], heat: Heat | None, peak: int) -> dict[str, str]:
    """A box's Graphviz attributes: its kind's style, and title, subtitle, formula and heat share as label."""
    attrs = theme.styles[box.kind].attrs()
    lines = [(box.title, None, box.kind == "module")]
    if box.subtitle:
        lines.append((box.subtitle, 9, False))
    if box.id in formulas:
        lines.append((formulas[box.id], 10, False))
    muted: str | None = theme.muted
    if heat and box.kind != "io":
        value = heat.values.get(box.id, 0)
        attrs["fillcolor"] = _ramp(theme.heat, value / peak) if value else "#ffffff"
        if _dark(attrs["fillcolor"]):
            attrs["fontcolor"], muted = "white", None
        if value:
            lines.append((f"{value / heat.total:.1%} · {quantity(value, heat.unit)}", 10, False))
    return {"label": _label(lines, muted), **attrs}


def _clusters(graph: Graph, boxes: list[Box], level: Level) -> list[str]:
    """Scopes drawn as clusters, in order of their first box: each holding two or more boxes, each block, and
    a task model's head and loss."""
    if level.depth is not None:
        return [s for s in graph.patterns if any(box.scope == s for box in boxes)]
    counts = Counter(box.scope for box in boxes)
    drawn = [s for s, n in counts.items() if s and n >= 2]
    drawn += [s for s in (*graph.blocks, HEAD, LOSS) if s not in drawn and any(_within(c, s) for c in counts)]
    return sorted(drawn, key=lambda s: next(i for i, box in enumerate(boxes) if _within(box.scope, s)))


Placed = dict[str, list[tuple[str, dict[str, str]]]]
Links = list[tuple[str, str, dict[str, str]]]


def _dot(
    graph: Graph,
    boxes: list[Box],
    level: Level,
    theme: Theme,
    names: dict[str, str],
    config: Config | None,
    formulas: dict[str, str],
    heat: Heat | None,
) -> graphviz.Digraph:
    """The DOT graph: boxes, tensor labels and cluster titles placed in their clusters, edges, the legend."""
    name = config.name if config else graph.model
    g = graphviz.Digraph(_escape(name))
    font = {"fontname": theme.font}
    title = _escape(f"{name} · {level.name} level: {level.doc}")
    g.attr("graph", rankdir="TB", nodesep="0.3", ranksep="0.3", labelloc="t", label=title, fontsize="16", **font)
    g.attr("node", fontsize="12", margin="0.12,0.05", height="0.35", **font)
    g.attr("edge", color=theme.muted, arrowsize="0.6")
    drawn = _clusters(graph, boxes, level)

    def home(scope: str) -> str:
        return max((s for s in drawn if _within(scope, s)), key=len, default="")

    # A cluster's title is a node on its top rank, so edges entering the cluster go round it, not through it.
    placed: Placed = {}
    for scope in drawn:
        block = scope in graph.blocks or scope in graph.patterns
        text = _repeats(graph, scope, names.get(scope, scope.removeprefix(home(_parent(scope)) + "/")))
        attrs = {"label": _label([(text, 14, block)], None), "shape": "plaintext"}
        placed[scope] = [(f"{scope}#title", {**attrs, "fontcolor": theme.ink if block else theme.muted})]
    peak = max(heat.values.values(), default=0) if heat else 0
    for box in boxes:
        placed.setdefault(home(box.scope), []).append((box.id, _box_attrs(box, theme, formulas, heat, peak)))
    links = _tensor_links(graph, boxes, theme, home, placed)
    links += _title_links(drawn, placed, links, home)

    def emit(target: graphviz.Digraph, scope: str) -> None:
        for item, attrs in placed.get(scope, []):
            target.node(item, **attrs)
        for child in drawn:
            if home(_parent(child)) == scope:
                block = child in graph.blocks or child in graph.patterns
                with target.subgraph(name=f"cluster_{child}") as sub:
                    sub.attr(
                        label="",
                        style="solid" if block else "rounded,dashed",
                        color=theme.ink if block else theme.cluster,
                        penwidth="1.5" if block else "1",
                    )
                    emit(sub, child)

    emit(g, "")
    for a, b, attrs in links:
        g.edge(a, b, **attrs)
    _legend(g, boxes, theme, heat, peak)
    return g


def _tensor_links(graph: Graph, boxes: list[Box], theme: Theme, home: Callable[[str], str], placed: Placed) -> Links:
    """Each tensor passing between boxes as a small label node on its edge, fanning out to its consumers.

    The label sits in its producer's cluster, or in its block's when a block reads it from outside.
    """
    by_id = {box.id: box for box in boxes}
    box_of = {n.name: box.id for box in boxes for n in box.nodes}
    fanout: dict[tuple[str, str], list[str]] = {}
    for u, v, t in graph.nx.edges(keys=True):
        src, dst = box_of[u], box_of[v]
        if src != dst and dst not in fanout.get((src, t), []):
            fanout.setdefault((src, t), []).append(dst)
    label = {"shape": "plaintext", "fontsize": "9", "fontcolor": theme.muted, "height": "0.2", "margin": "0.03"}
    links: Links = []
    for (src, t), dsts in fanout.items():
        tensor, node = graph.tensor(t), _tensor_id(t)
        scope = tensor.block if tensor.block and not _within(by_id[src].scope, tensor.block) else by_id[src].scope
        placed.setdefault(home(scope), []).append((node, {"label": _shape(graph, t), **label}))
        style = "dashed" if tensor.role == Role.MASK else "solid"
        links.append((src, node, {"arrowhead": "none", "style": style}))
        links.extend((node, dst, {"style": style}) for dst in dsts)
    return links


def _title_links(drawn: list[str], placed: Placed, links: Links, home: Callable[[str], str]) -> Links:
    """Invisible edges from each cluster's title to what nothing inside the cluster feeds: its own items and,
    for a task model's head and loss, the titles of the clusters in them entered only from outside them."""
    where = {item: scope for scope, items in placed.items() for item, _ in items}

    def inside(scope: str) -> set[str]:
        return {item for item, s in where.items() if _within(s, scope)}

    out: Links = []
    for scope in drawn:
        title, items = f"{scope}#title", inside(scope)
        fed = {b for a, b, _ in links if a in items} | {title}
        out.extend((title, item, {"style": "invis"}) for item, s in where.items() if s == scope and item not in fed)
        if scope not in (HEAD, LOSS):
            continue
        for child in (c for c in drawn if c != scope and home(_parent(c)) == scope):
            own = inside(child)
            if not any(a in items - own and b in own for a, b, _ in links):
                out.append((title, f"{child}#title", {"style": "invis"}))
    return out


def _legend(g: graphviz.Digraph, boxes: list[Box], theme: Theme, heat: Heat | None, peak: int) -> None:
    """A legend box: a sample of each kind drawn, naming its op kinds; what shading and edges mean; heat scale."""
    ops: dict[str, dict[str, None]] = {}
    for box in boxes:
        ops.setdefault(box.kind, {}).update(dict.fromkeys(n.op for n in box.nodes if kind_of(n) == box.kind))
    rows = []
    with g.subgraph(name="cluster_legend") as legend:
        legend.attr(label=_label([("Legend", None, True)], None), labeljust="l", style="rounded", color=theme.cluster)
        for kind, description in KINDS.items():
            if kind not in ops:
                continue
            sample = ", ".join(ops[kind]) or kind
            style = {**theme.styles[kind].attrs(), **({"fillcolor": "#ffffff"} if heat else {})}
            with legend.subgraph() as row:
                row.attr(rank="same")
                row.node(f"legend/{kind}", label=_label([(sample, 10, False)], None), **style)
                row.node(f"legend/{kind}/text", label=_label([(description, 10, False)], None), shape="plaintext")
                row.edge(f"legend/{kind}", f"legend/{kind}/text", style="invis")
            rows.append(f"legend/{kind}")
        notes = [heat.caption[0] if heat else theme.note, "edge labels: tensor shapes", "dashed edges: masks"]
        legend.node("legend/notes", label=_label([(n, 10, False) for n in notes], None), shape="plaintext")
        rows.append("legend/notes")
        if heat:
            legend.node("legend/heat", label=_heat_scale(theme, heat, peak), shape="plaintext")
            rows.append("legend/heat")
        for a, b in pairwise(rows):
            legend.edge(a, b, style="invis")


def _heat_scale(theme: Theme, heat: Heat, peak: int) -> str:
    """The heat colour scale: swatches from no share to the largest box's share, and what is measured."""
    steps = 5
    cells = []
    for i in range(steps):
        color = _ramp(theme.heat, i / (steps - 1))
        share = peak * i / (steps - 1) / heat.total if heat.total else 0.0
        ink = ' COLOR="white"' if _dark(color) else ""
        cells.append(f'<TD BGCOLOR="{color}" WIDTH="44"><FONT POINT-SIZE="9"{ink}>{share:.0%}</FONT></TD>')
    caption = "<BR/>".join(_html(line) for line in heat.caption[1:])
    return (
        '<<TABLE BORDER="0" CELLBORDER="1" CELLSPACING="0" CELLPADDING="3">'
        f'<TR><TD COLSPAN="{steps}" BORDER="0"><FONT POINT-SIZE="10">{caption}</FONT></TD></TR>'
        f"<TR>{''.join(cells)}</TR></TABLE>>"
    )
