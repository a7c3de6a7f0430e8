"""cli.py stays thin: each command parses its options, calls the layers below and prints; none is over 40 lines."""

from __future__ import annotations

import ast

from conftest import ROOT

MAX_LINES = 40


def commands(tree: ast.Module) -> dict[str, int]:
    """Each function decorated as a command (``@cli.command()``) and its length, from ``def`` to its last line."""
    found = {}
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and any("command" in ast.unparse(d) for d in node.decorator_list):
            found[node.name] = node.end_lineno - node.lineno + 1
    return found


def test_every_command_function_is_at_most_40_lines() -> None:
    found = commands(ast.parse((ROOT / "symbert" / "cli.py").read_text()))
    assert {"params", "report", "fit", "timeline", "sweep", "compare", "explain", "validate"} <= found.keys()
    assert {name: n for name, n in found.items() if n > MAX_LINES} == {}


def test_the_count_sees_a_long_command() -> None:
    body = "\n".join(f"    x{i} = {i}" for i in range(MAX_LINES))
    source = f"@cli.command()\n@config_options\ndef long() -> None:\n{body}\n\n\ndef helper() -> None:\n{body}\n"
    tree = ast.parse(source)
    assert commands(tree) == {"long": MAX_LINES + 1}
