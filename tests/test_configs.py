"""Presets, config.json loading, overrides and one-line errors."""

from __future__ import annotations

import json

import pytest
from conftest import run_cli

import symbert
from symbert import ConfigError


def test_all_24_miniatures_exist_with_official_shapes() -> None:
    for layers in (2, 4, 6, 8, 10, 12):
        for hidden in (128, 256, 512, 768):
            c = symbert.preset(f"bert-L{layers}-H{hidden}")
            assert c.values["num_hidden_layers"] == layers
            assert c.values["hidden_size"] == hidden
            assert c.values["num_attention_heads"] == hidden // 64
            assert c.values["intermediate_size"] == 4 * hidden
            assert (c.values["vocab_size"], c.values["max_position_embeddings"], c.values["type_vocab_size"]) == (
                30522,
                512,
                2,
            )


@pytest.mark.parametrize(
    ("alias", "layers", "hidden"),
    [("bert-tiny", 2, 128), ("bert-mini", 4, 256), ("bert-small", 4, 512), ("bert-medium", 8, 512)],
)
def test_aliases(alias: str, layers: int, hidden: int) -> None:
    c = symbert.preset(alias)
    assert (c.values["num_hidden_layers"], c.values["hidden_size"]) == (layers, hidden)


def test_large_preset() -> None:
    c = symbert.preset("bert-large")
    assert (c.values["num_hidden_layers"], c.values["hidden_size"], c.values["num_attention_heads"]) == (24, 1024, 16)


def test_hugging_face_config_json(tmp_path) -> None:
    path = tmp_path / "config.json"
    path.write_text(
        json.dumps(
            {
                "model_type": "bert",
                "architectures": ["BertForMaskedLM"],
                "hidden_size": 256,
                "num_hidden_layers": 4,
                "num_attention_heads": 4,
                "intermediate_size": 1024,
                "vocab_size": 30522,
                "max_position_embeddings": 512,
                "type_vocab_size": 2,
                "hidden_dropout_prob": 0.1,
            }
        )
    )
    c = symbert.from_file(path)
    assert c.symbols() == symbert.preset("bert-mini").symbols()


def test_overrides_parse_integers_only() -> None:
    c = symbert.with_overrides(symbert.preset("bert-base"), ["num_hidden_layers=6"])
    assert c.values["num_hidden_layers"] == 6
    with pytest.raises(ConfigError, match="num_hidden_layers must be a positive integer"):
        symbert.with_overrides(c, ["num_hidden_layers=__import__('os')"])


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--set", "hidden_size=100"], "hidden_size=100 is not divisible by num_attention_heads=12"),
        (["--set", "num_attention_heads=-4"], "num_attention_heads must be a positive integer"),
        (["--set", "intermediate_size=0"], "intermediate_size must be a positive integer"),
        (["--set", "vocab_size=3.5"], "vocab_size must be a positive integer"),
        (["--set", "hidden_sise=4"], "did you mean hidden_size"),
        (["--set", "oops"], "--set expects KEY=VALUE"),
        (["--preset", "bert-bsae"], "did you mean bert-base"),
        (["--preset", "bert-base", "--config", "x.json"], "either --preset or --config"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(args: list[str], message: str) -> None:
    result = run_cli("params", *args)
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1
    assert message in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "is not valid JSON"),
        ("[1, 2]", "must hold a JSON object"),
        ('{"model_type": "bert", "hidden_size": "768"}', "hidden_size must be an integer, got str"),
        ('{"model_type": "bert", "hidden_size": true}', "hidden_size must be an integer, got bool"),
        ('{"model_type": "bert", "hidden_size": 768.5}', "hidden_size must be an integer, got float"),
        ('{"model_type": "t5"}', "unsupported model_type 't5'"),
        ("{}", "has no model_type and no architectures; Hugging Face's AutoConfig refuses it too"),
        ('{"architectures": ["T5Model"]}', "architectures name no class symbert knows ('T5Model')"),
        ('{"model_type": "bert", "id2label": ["a", "b", "c"]}', "id2label must map ids to labels"),
        ('{"model_type": "bert", "is_decoder": true}', "with is_decoder=False only, got True"),
        ('{"model_type": "bert", "add_cross_attention": true}', "add_cross_attention=False only, got True"),
        ('{"model_type": "bert", "hidden_size": 770}', "hidden_size=770 is not divisible by num_attention_heads=12"),
    ],
)
def test_bad_config_files(tmp_path, content: str, message: str) -> None:
    path = tmp_path / "config.json"
    path.write_text(content)
    result = run_cli("params", "--config", str(path))
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and message in result.stderr


def test_missing_file() -> None:
    result = run_cli("params", "--config", "no/such/config.json")
    assert result.returncode == 2 and "cannot read no/such/config.json" in result.stderr
