"""The GPT-2 example in docs/custom-model.md runs as written and matches Hugging Face GPT2Model."""

from __future__ import annotations

import contextlib
import io
import re
from dataclasses import replace
from pathlib import Path

import pytest
import sympy
from conftest import hf, hf_param_shapes, traced_param_shapes

import symbert
from symbert.models import MODELS

DOC = Path(__file__).resolve().parents[1] / "docs" / "custom-model.md"


def blocks(kind: str) -> list[str]:
    return re.findall(rf"```{kind}\n(.*?)```", DOC.read_text(), flags=re.S)


@pytest.fixture(scope="module")
def example() -> dict:
    """Run the page's first Python block; return its namespace and what it printed."""
    namespace: dict = {}
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(blocks("python")[0], str(DOC), "exec"), namespace)
    namespace["printed"] = out.getvalue()
    yield namespace
    MODELS.pop("gpt2", None)


def test_example_prints_what_the_page_says(example: dict) -> None:
    assert example["printed"] == blocks("text")[0]


def test_published_gpt2_count(example: dict) -> None:
    assert "gpt2: 124439808" in example["printed"]


def test_second_block_runs(example: dict) -> None:
    namespace = dict(example)
    exec(compile(blocks("python")[1], str(DOC), "exec"), namespace)


def small(example: dict, seed: int) -> symbert.Config:
    values = {"vocab_size": 37 + seed, "n_embd": 12 * (1 + seed % 3), "n_layer": 1 + seed % 3, "n_head": 1 + seed % 3}
    values["n_positions"] = 16
    return symbert.Config("gpt2", values, f"gpt2-small-{seed}", {"lm_head": False})


@pytest.mark.parametrize("seed", range(4))
def test_parameters_and_activations_match_gpt2model(example: dict, seed: int) -> None:
    transformers = hf()
    from symbert.validate.compare import validate

    config = small(example, seed)
    model = transformers.GPT2Model(transformers.GPT2Config(**config.values))
    assert traced_param_shapes(config) == hf_param_shapes(model)
    checks = validate(config, 2, 5, "float32")
    assert [(c.quantity, c.predicted) for c in checks] == [(c.quantity, c.measured) for c in checks]


def test_tied_head_adds_no_parameters(example: dict) -> None:
    config = symbert.preset("gpt2")
    with_head = symbert.params(symbert.trace(config)).total
    without = symbert.params(symbert.trace(replace(config, options={**config.options, "lm_head": False}))).total
    assert sympy.expand(with_head - without) == 0
