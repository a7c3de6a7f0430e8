"""symbert.parse_formula reads every formula symbert writes back into the same expression, safely."""

from __future__ import annotations

import json

import pytest
import sympy
from click.testing import CliRunner

import symbert
from symbert import parse_formula
from symbert.cli import cli
from symbert.formula import text
from symbert.symbols import BY_NAME, E, I, below, pad512

#: What sympy needs to read symbert's formulas as symbert means them (the reference reading).
NAMES = {**BY_NAME, "pad512": pad512, "below": below, "floor": sympy.floor}

#: JSON keys whose values (strings, or lists or mappings of strings) are formulas.
FORMULA_KEYS = {
    "formula",
    "formula_substituted",
    "formula_at_config",
    "per_layer",
    "count",
    "formulas",
    "substitutions",
    "terms",
    "general",
    "seq_len",
    "ratio",
    "difference_formula",
    "ratio_formula",
    "ratio_limit_seq_len",
}


def formulas(doc: object, key: str = "") -> list[str]:
    """Every formula string in a JSON document."""
    if isinstance(doc, dict):
        return [f for k, v in doc.items() for f in formulas(v, k)]
    if isinstance(doc, list):
        return [f for v in doc for f in formulas(v, key)]
    return [doc] if key in FORMULA_KEYS and isinstance(doc, str) else []


COMMANDS = (
    ("params", "--json"),
    ("params", "--json", "--head", "multiple-choice"),
    ("report", "--json", "-b", "4", "-s", "64", "--policy", "megatron"),
    ("report", "--json", "--head", "sequence-classification", "--num-labels", "3"),
    ("report", "--json", "--preset", "albert-base-v2", "--head", "mlm"),
    ("compare", "--json", "bert-tiny", "bert-mini"),
    ("compare", "--json", "bert-base", "roberta-base"),
    ("compare", "--json", "bert-base", "modernbert-base"),  # below(B, 2): what batch 1 keeps
    ("fit", "--json", "--gpu-memory", "16GiB", "-s", "512"),
    ("fit", "--json", "--gpu", "h100", "-b", "3", "-s", "128"),
    ("timeline", "--json", "--preset", "bert-tiny", "-s", "8"),  # pad512: the CUDA allocator's rounding
)


@pytest.mark.parametrize("args", COMMANDS, ids=" ".join)
def test_every_json_formula_round_trips(args) -> None:
    result = CliRunner().invoke(cli, list(args))
    assert result.exit_code == 0, result.output
    found = formulas(json.loads(result.output))
    assert found
    for f in found:
        expr = parse_formula(f)
        # the same expression sympy itself reads with symbert's symbols, and the same text again (sympy may
        # distribute a number over a sum in reading: 4*(3*H + 1) is 12*H + 4)
        assert sympy.sympify(f, locals=NAMES) == expr
        assert sympy.cancel(expr - sympy.sympify(f, locals=NAMES, evaluate=False)) == 0
        assert parse_formula(text(expr)) == expr


def test_report_formulas_are_the_breakdowns() -> None:
    from symbert.render.reports import report_json

    r = symbert.report(symbert.preset("bert-base"), 2, 16)
    for key, f in report_json(r)["formulas"].items():
        assert parse_formula(f) == r.breakdowns[key].total


def test_i_and_e_are_symberts_symbols() -> None:
    assert sympy.sympify("I") == sympy.I and sympy.sympify("E") == sympy.E  # what the helper avoids
    assert parse_formula("I") == I and parse_formula("E") == E
    assert parse_formula("2*H*I*L + E*vocab_size").free_symbols == {
        BY_NAME[n] for n in ("H", "I", "L", "E", "vocab_size")
    }
    assert parse_formula("4*H**2/(3*seq_len) + sqrt(A)") == 4 * BY_NAME["H"] ** 2 / (
        3 * BY_NAME["seq_len"]
    ) + sympy.sqrt(BY_NAME["A"])
    d = sympy.Symbol("d", positive=True, integer=True)
    assert parse_formula("2*d*L", {"d": d}) == 2 * d * BY_NAME["L"]


@pytest.mark.parametrize(
    "bad",
    [
        "__import__('os').system('true')",
        "H.__class__",
        "().__class__.__bases__",
        "lambda: 1",
        "x + 1",
        "exp(H)",
        "1.5*H",
        "H**",
        "",
        "[H]",
        "H; L",
        "'H'",
        "(" * 200 + "H" + ")" * 200,
        "Symbol('x')",
    ],
)
def test_anything_else_is_refused(bad: str) -> None:
    with pytest.raises(ValueError):
        parse_formula(bad)
