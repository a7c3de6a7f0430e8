"""ALBERT, RoBERTa and DistilBERT: published counts, Hugging Face parity, symbolic contrasts, commands."""

from __future__ import annotations

import json

import pytest
import sympy
from conftest import hf, hf_param_shapes, random_configs, run_cli, traced_param_shapes

import symbert
from symbert.analysis.activations import activations
from symbert.analysis.policy import MemoryOptions
from symbert.symbols import L

HF_CLASSES = {"roberta": "RobertaModel", "albert": "AlbertModel", "distilbert": "DistilBertModel"}


def count(config: symbert.Config) -> int:
    p = symbert.params(symbert.trace(config))
    return p.evaluate(p.total, config.symbols())


@pytest.mark.parametrize(
    ("name", "expected"),
    [("albert-base-v2", 11_683_584), ("roberta-base", 124_645_632), ("distilbert-base-uncased", 66_362_880)],
)
def test_published_counts(name: str, expected: int) -> None:
    assert count(symbert.preset(name)) == expected


def _hf_model(config: symbert.Config):
    transformers = hf()
    structure = config.structure()
    hf_config = transformers.AutoConfig.for_model(config.model, **config.values)
    extra = {"add_pooling_layer": structure["pooler"]} if "pooler" in structure else {}
    return getattr(transformers, HF_CLASSES[config.model])(hf_config, **extra)


CASES = [c for model in HF_CLASSES for c in random_configs(model, 8, seed=11)]


@pytest.mark.parametrize("config", CASES, ids=lambda c: c.name)
def test_parameters_match_hugging_face(config: symbert.Config) -> None:
    model = _hf_model(config)
    assert traced_param_shapes(config) == hf_param_shapes(model)
    assert count(config) == sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("config", CASES[::2], ids=lambda c: c.name)
def test_activations_and_flops_exact_against_pytorch(config: symbert.Config, dtype: str) -> None:
    hf()
    from symbert.validate.compare import validate

    length = min(7, config.max_length)
    checks = validate(config, 2, length, dtype)
    assert [(c.quantity, c.predicted) for c in checks] == [(c.quantity, c.measured) for c in checks]


def test_albert_with_dropout_and_exact_gelu_is_exact() -> None:
    hf()
    from symbert.validate.compare import validate

    config = symbert.with_overrides(
        random_configs("albert", 1, seed=5)[0],
        ["hidden_dropout_prob=0.1", "attention_probs_dropout_prob=0.1", "hidden_act=gelu"],
    )
    checks = validate(config, 3, 4, "float32")
    assert all(c.ok for c in checks), checks


def test_albert_parameters_do_not_grow_with_layers_but_activations_do() -> None:
    graph = symbert.trace("albert")
    assert L not in symbert.params(graph).total.free_symbols
    assert sympy.degree(activations(graph, MemoryOptions()).total, L) == 1


def test_albert_shared_layer_counted_once_unrolled() -> None:
    config = symbert.preset("albert-base-v2")
    unrolled = symbert.params(symbert.trace(config, unroll=True))
    assert unrolled.evaluate(unrolled.total, config.symbols()) == 11_683_584


def test_config_json_dispatches_on_model_type(tmp_path) -> None:
    path = tmp_path / "config.json"
    data = {"model_type": "albert", "embedding_size": 64, "hidden_size": 256, "num_attention_heads": 4}
    path.write_text(json.dumps(data))
    config = symbert.from_file(path)
    assert config.model == "albert" and config.values["embedding_size"] == 64
    path.write_text(json.dumps({"model_type": "albert", "num_hidden_groups": 2}))
    result = run_cli("params", "--config", str(path))
    assert result.returncode == 2 and "num_hidden_groups=1" in result.stderr


def test_roberta_reserves_two_positions() -> None:
    assert run_cli("report", "--preset", "roberta-base", "--seq-len", "512").returncode == 0
    result = run_cli("report", "--preset", "roberta-base", "--seq-len", "513")
    assert result.returncode == 2 and "exceeds the model's 512 positions" in result.stderr


def test_distilbert_has_no_pooler_option() -> None:
    result = run_cli("params", "--preset", "distilbert-base-uncased", "--no-pooler")
    assert result.returncode == 2 and "distilbert has no option 'pooler'" in result.stderr


VARIANTS = {
    "albert-base-v2": "num_hidden_layers",
    "roberta-base": "num_hidden_layers",
    "distilbert-base-uncased": "n_layers",
    "electra-small": "num_hidden_layers",
}
COMMANDS = {
    "params": ["params", "--preset", "{name}"],
    "report": ["report", "--preset", "{name}"],
    "graph": ["graph", "--preset", "{name}"],
    "diagram": ["diagram", "--level", "overview", "--preset", "{name}"],
    "latex": ["latex", "{name}"],
    "table": ["table", "{name}", "--format", "csv"],
    "explain": ["explain", "activation_bytes", "--preset", "{name}"],
    "compare": ["compare", "bert-base", "{name}", "--json"],
    "fit": ["fit", "--preset", "{name}", "--gpu-memory", "16GiB", "--seq-len", "128", "--json"],
    "timeline": ["timeline", "--preset", "{name}"],
    "sweep": ["sweep", "{name}", "--batch", "1,2", "--seq-len", "64"],
}


@pytest.mark.parametrize("name", VARIANTS)
@pytest.mark.parametrize("command", COMMANDS)
def test_commands_work_for_every_variant(name: str, command: str) -> None:
    result = run_cli(*(arg.format(name=name) for arg in COMMANDS[command]))
    assert result.returncode == 0, result.stderr
    assert name in result.stdout


@pytest.mark.parametrize("name", VARIANTS)
def test_validate_command_for_every_variant(name: str) -> None:
    hf()
    result = run_cli("validate", "--preset", name, "--set", f"{VARIANTS[name]}=1", "--batch", "1", "--seq-len", "8")
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count(" ok ") == 5
