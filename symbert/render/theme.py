"""Diagram themes as data: which box kind an op is drawn as, and how each kind looks.

The default ``seed`` theme is the seed write-up's legend: complex modules are black rectangles, fully
connected layers and embedding variables blue rounded rectangles, layernorm blue rectangles, dropout
gray rounded rectangles and element-wise sums gray rectangles; gray shapes have no trainable
parameters. A task model's loss, which the write-up does not draw, is a gray octagon. ``mono`` draws
the same shapes in black on white and light gray, for print.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from symbert.ir import Node
from symbert.ops import OPS

#: Box kinds in legend order, with the legend's description of each.
KINDS: dict[str, str] = {
    "module": "complex module",
    "dense": "fully connected layer or embedding",
    "norm": "layernorm",
    "dropout": "dropout",
    "sum": "element-wise sum",
    "function": "other op without parameters",
    "view": "view of another tensor",
    "loss": "loss function",
    "communication": "collective over the tensor-parallel group",
    "io": "the model's inputs and outputs, and buffers",
}

#: Op kinds with a kind of their own; other ops are views if the op registry says so, else functions.
OP_KINDS: dict[str, str] = {
    "embedding": "dense",
    "linear": "dense",
    "layernorm": "norm",
    "dropout": "dropout",
    "add": "sum",
    "input": "io",
    "output": "io",
    "buffer": "io",
    "nll_loss": "loss",
    "mse_loss": "loss",
    "bce_with_logits": "loss",
}


def kind_of(node: Node) -> str:
    """The box kind a single op is drawn as."""
    if node.op in OP_KINDS:
        return OP_KINDS[node.op]
    if OPS[node.op].communication:
        return "communication"
    if node.params:
        return "dense"
    return "view" if OPS[node.op].view else "function"


@dataclass(frozen=True)
class Style:
    """Graphviz node attributes for one box kind."""

    shape: str
    style: str
    color: str
    fillcolor: str
    penwidth: str = "1"

    def attrs(self) -> dict[str, str]:
        return {
            "shape": self.shape,
            "style": self.style,
            "color": self.color,
            "fillcolor": self.fillcolor,
            "penwidth": self.penwidth,
        }


@dataclass(frozen=True)
class Theme:
    """A full look: box styles by kind, font, line colours, the heat colour ramp and the legend note."""

    name: str
    styles: Mapping[str, Style]
    note: str
    heat: tuple[str, ...]
    font: str = "Helvetica"
    ink: str = "black"
    muted: str = "#555555"
    cluster: str = "#9a9a9a"


_BLUE, _BLUE_FILL, _GRAY, _GRAY_FILL = "#1f5fbf", "#dce8fa", "#7f7f7f", "#ececec"
_MONO_FILL = "#e4e4e4"

THEMES: dict[str, Theme] = {
    t.name: t
    for t in (
        Theme(
            "seed",
            {
                "module": Style("box", "filled", "black", "white", "2"),
                "dense": Style("box", "rounded,filled", _BLUE, _BLUE_FILL),
                "norm": Style("box", "filled", _BLUE, _BLUE_FILL),
                "dropout": Style("box", "rounded,filled", _GRAY, _GRAY_FILL),
                "sum": Style("box", "filled", _GRAY, _GRAY_FILL),
                "function": Style("ellipse", "filled", _GRAY, _GRAY_FILL),
                "view": Style("ellipse", "dashed,filled", _GRAY, "white"),
                "loss": Style("octagon", "filled", _GRAY, _GRAY_FILL),
                "communication": Style("hexagon", "filled", "#b35900", "#fde3c8"),
                "io": Style("plaintext", "", "black", "white"),
            },
            "gray shapes have no trainable parameters",
            ("#fff7ec", "#fdd49e", "#fc8d59", "#d7301f", "#7f0000"),
        ),
        Theme(
            "mono",
            {
                "module": Style("box", "filled", "black", "white", "2"),
                "dense": Style("box", "rounded,filled", "black", "white"),
                "norm": Style("box", "filled", "black", "white"),
                "dropout": Style("box", "rounded,filled", "black", _MONO_FILL),
                "sum": Style("box", "filled", "black", _MONO_FILL),
                "function": Style("ellipse", "filled", "black", _MONO_FILL),
                "view": Style("ellipse", "dashed,filled", "black", "white"),
                "loss": Style("octagon", "filled", "black", _MONO_FILL),
                "communication": Style("hexagon", "bold,filled", "black", "white"),
                "io": Style("plaintext", "", "black", "white"),
            },
            "shaded shapes have no trainable parameters",
            ("#f7f7f7", "#cccccc", "#969696", "#525252", "#111111"),
            muted="#333333",
            cluster="#555555",
        ),
    )
}
