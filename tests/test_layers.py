"""The package's floors: every import of a symbert module, inside functions and under TYPE_CHECKING too, points
down or sideways, and no import closes a circle.

No exception is needed for validate/'s optional torch imports (not symbert's) or for cli.py's imports inside
functions (for start-up speed): cli is on top, so everything it imports is below it."""

from __future__ import annotations

import ast
from pathlib import Path

import networkx as nx
from conftest import ROOT

PACKAGE = ROOT / "symbert"

#: The floors, lowest first: a module may import from its own floor and the floors below it.
FLOORS: tuple[tuple[str, ...], ...] = (
    ("symbols", "formula", "quantities", "gpus", "versions", "display", "defaults", "parallel"),  # notation
    ("ir", "tracer", "ops", "tensor_parallel"),  # the IR, and what traces into it
    ("models",),
    ("configs", "api", "outputs"),
    ("analysis",),
    ("training",),
    ("render", "validate"),
    ("public",),  # the Python API, one function per command
    ("cli",),
    ("__init__", "__main__"),  # the package itself
)


def modules() -> dict[str, Path]:
    """Every module of the package by dotted name (a package by its own name)."""
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def imports(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    """The symbert modules ``name`` imports anywhere in its file: ``from P import x`` imports the module P.x
    where there is one, else P."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = package.split(".")[: len(package.split(".")) - node.level + 1] if node.level else []
            source = ".".join([*base, node.module] if node.module else base)
            found |= {f"{source}.{a.name}" if f"{source}.{a.name}" in known else source for a in node.names}
    return {m for m in found if m in known and m != name}


def floor(name: str) -> int:
    """The floor of module ``name``: its first part below the package picks it."""
    parts = name.split(".")
    key = "__init__" if parts == ["symbert"] else parts[1]
    matches = [i for i, names in enumerate(FLOORS) if key in names]
    assert matches, f"{name} is on no floor: add it to FLOORS"
    return matches[0]


def graph() -> nx.DiGraph:
    known = modules()
    g = nx.DiGraph()
    g.add_nodes_from(known)
    g.add_edges_from((name, target) for name, path in known.items() for target in imports(name, path, known))
    return g


def test_the_graph_sees_imports_inside_functions_and_type_checking() -> None:
    known = modules()
    assert {"symbert", "symbert.ops", "symbert.render.notebook", "symbert.analysis.breakdown"} <= set(known)
    notebook = imports("symbert.render.notebook", known["symbert.render.notebook"], known)
    assert "symbert.render.tables" in notebook  # inside comparison_markdown
    assert "symbert.analysis.explain" in notebook  # under TYPE_CHECKING
    # models import ops from the package by name: the module, not the package's __init__
    bert = imports("symbert.models.bert", known["symbert.models.bert"], known)
    assert "symbert.ops" in bert and "symbert" not in bert


def test_no_import_circles() -> None:
    circles = sorted(sorted(c) for c in nx.strongly_connected_components(graph()) if len(c) > 1)
    assert circles == []


def test_imports_only_point_down() -> None:
    upward = sorted((a, b) for a, b in graph().edges if floor(b) > floor(a))
    assert upward == []
