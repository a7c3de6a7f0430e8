"""explain: every term of every formula splits exactly into the graph nodes that produce it."""

from __future__ import annotations

import pytest
import sympy
from conftest import run_cli

import symbert
from symbert.analysis.explain import explain
from symbert.analysis.policy import MemoryOptions
from symbert.analysis.report import report
from symbert.symbols import A, B, L, seq_len

OPTIONS = [
    MemoryOptions(),
    MemoryOptions("torch-cuda", "bfloat16"),
    MemoryOptions("megatron"),
    MemoryOptions("megatron", recompute="selective"),
    MemoryOptions("megatron", recompute="full"),
    MemoryOptions("torch-cuda", attention="flash"),
]
CONFIGS = ["bert-base", "bert-base-no-pooler", "roberta-base", "albert-base-v2", "distilbert-base-uncased"]


def config(name: str) -> symbert.Config:
    if name == "bert-base-no-pooler":
        return symbert.resolve("bert-base", None, pooler=False)
    return symbert.preset(name)


@pytest.mark.parametrize("general", [False, True], ids=["substituted", "general"])
@pytest.mark.parametrize("options", OPTIONS, ids=lambda o: o.describe())
@pytest.mark.parametrize("name", CONFIGS)
def test_terms_account_for_every_formula(name: str, options: MemoryOptions, general: bool) -> None:
    """For every quantity: each term's parts sum to the term, the terms sum to the formula, and every
    contribution is shared out in full."""
    r = report(config(name), 1, 8, options)
    for b in r.breakdowns.values():
        form = sympy.expand if general else b.substituted
        terms = explain(b, general)
        for t in terms:
            assert t.parts and sum(p.coefficient for p in t.parts) == t.coefficient
        assert sympy.expand(sum(t.expr for t in terms) - form(b.total)) == 0
        for c in b.contributions:
            shared = sum(p.coefficient * t.monomial for t in terms for p in t.parts if p.contribution is c)
            assert sympy.expand(shared - form(c.total)) == 0


def test_attention_score_term_under_megatron() -> None:
    """Korthikanti et al. 2022: the 5as²b bytes per layer are the softmax output (2as²b), the dropout mask
    (as²b) and the dropout output (2as²b) that P·V keeps."""
    b = report(symbert.preset("bert-base"), 1, 8, MemoryOptions("megatron")).breakdowns["activation_bytes"]
    top = explain(b)[0]
    assert top.expr == 5 * A * B * L * seq_len**2
    parts = {p.contribution.node: p.coefficient for p in top.parts}
    prefix = "encoder/layer/attention/self/"
    assert parts == {prefix + "softmax": 2, prefix + "dropout": 1, prefix + "context": 2}
    assert "dropout:0" in next(p.contribution.what for p in top.parts if p.contribution.node == prefix + "context")


def test_terms_are_in_degree_order() -> None:
    b = symbert.params(symbert.trace())
    degrees = [sum(sympy.degree_list(t.monomial)) for t in explain(b)]
    assert degrees == sorted(degrees, reverse=True)


def test_cli_explain() -> None:
    result = run_cli("explain", "activation_bytes", "--policy", "megatron", "--attention", "eager", "--format", "csv")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "term,part,node,what,component,value"
    assert any(
        line.startswith("5*A*B*L*seq_len**2,2*A*B*L*seq_len**2,encoder/layer/attention/self/softmax,") for line in lines
    )
    # bert-base, B=1, s=128: L·sbh(34 + 5as/h) + embeddings 3sbh + 16sb + pooler 2sbh + 2bh, by hand
    s, b, h, a = 128, 1, 768, 12
    by_hand = 12 * s * b * h * (34 + 5 * a * s // h) + 3 * s * b * h + 16 * s * b + 2 * s * b * h + 2 * b * h
    parts = [int(line.rsplit(",", 1)[1]) for line in lines[1:-1]]
    assert lines[-1].startswith("total,") and int(lines[-1].rsplit(",", 1)[1]) == sum(parts) == by_hand
