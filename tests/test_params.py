"""Parameter counts from the graph against published figures, hand derivations and Hugging Face."""

from __future__ import annotations

import pytest
import sympy
from conftest import hf, hf_param_shapes, random_bert_configs, traced_param_shapes

import symbert
from symbert.symbols import E, H, I, L, position_size, type_size, vocab_size


def count(config: symbert.Config) -> int:
    breakdown = symbert.params(symbert.trace(config))
    return breakdown.evaluate(breakdown.total, config.symbols())


@pytest.mark.parametrize(("name", "expected"), [("bert-base", 109_482_240), ("bert-large", 335_141_888)])
def test_published_counts(name: str, expected: int) -> None:
    assert count(symbert.preset(name)) == expected


def test_formula_matches_hand_derivation() -> None:
    """The seed's count: embeddings (vocab + position + type)·E + 2E; per layer 4H² + 2HI + 9H + I; pooler H² + H."""
    breakdown = symbert.params(symbert.trace())
    by_hand = (vocab_size + position_size + type_size) * E + 2 * E + L * (4 * H**2 + 2 * H * I + 9 * H + I) + H**2 + H
    assert sympy.expand(breakdown.total - by_hand) == 0
    assert sympy.expand(breakdown.substituted(breakdown.total) - by_hand.subs({E: H, I: 4 * H})) == 0


def test_components_by_hand() -> None:
    comps = {c.name: c for c in symbert.params(symbert.trace()).components()}
    assert sympy.expand(comps["self-attention"].per_layer - (3 * H**2 + 3 * H)) == 0
    assert sympy.expand(comps["attention output"].per_layer - (H**2 + H)) == 0
    assert sympy.expand(comps["intermediate"].per_layer - (H * I + I)) == 0
    assert sympy.expand(comps["output"].per_layer - (H * I + H)) == 0
    assert sympy.expand(comps["layernorms"].per_layer - 4 * H) == 0
    assert comps["self-attention"].count == L
    assert sympy.expand(comps["pooler"].total - (H**2 + H)) == 0


def test_structural_options_remove_their_parameters() -> None:
    full = symbert.params(symbert.trace()).total
    assert sympy.expand(full - symbert.params(symbert.trace(pooler=False)).total - (H**2 + H)) == 0
    assert sympy.expand(full - symbert.params(symbert.trace(token_types=False)).total - type_size * E) == 0


@pytest.mark.parametrize("layers", [1, 2, 5])
def test_unrolled_graph_counts_the_same(layers: int) -> None:
    config = symbert.with_overrides(symbert.preset("bert-L4-H256"), [f"num_hidden_layers={layers}"])
    unrolled = symbert.params(symbert.trace(config, unroll=True))
    assert unrolled.evaluate(unrolled.total, config.symbols()) == count(config)
    assert L not in unrolled.total.free_symbols


def _hf_model(config: symbert.Config):
    transformers = hf()
    hf_config = transformers.BertConfig(**config.values)
    return transformers.BertModel(hf_config, add_pooling_layer=config.structure()["pooler"])


@pytest.mark.parametrize("config", random_bert_configs(24), ids=lambda c: c.name)
def test_random_configs_match_hugging_face(config: symbert.Config) -> None:
    model = _hf_model(config)
    assert count(config) == sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("config", random_bert_configs(3, seed=7), ids=lambda c: c.name)
def test_every_parameter_shape_matches_hugging_face(config: symbert.Config) -> None:
    """Each traced parameter has the name (layer index aside) and shape of one in BertModel."""
    model = _hf_model(config)
    assert traced_param_shapes(config) == hf_param_shapes(model)


@pytest.mark.parametrize("name", ["bert-base", "bert-large", "bert-tiny"])
def test_presets_match_hugging_face(name: str) -> None:
    config = symbert.preset(name)
    assert count(config) == sum(p.numel() for p in _hf_model(config).parameters())
