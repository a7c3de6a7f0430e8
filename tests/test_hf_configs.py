"""Issue 20: config files as transformers' own config classes write them (``save_pretrained``).

Every key of each family's config class is modelled or refused: walked one at a time and in pairs with
type-valid values, symbert either refuses the file in one line naming the key, or counts the parameters
of the model Hugging Face builds from the same file (on the meta device). The checkpoints' published
sizes are read and counted the same way, and ``validate`` builds the real model from the user's file.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import hf
from inprocess import invoke

import symbert
from symbert import ConfigError
from symbert.models import MODELS
from symbert.models.heads import PROBLEM_TYPES

transformers = hf()
import torch  # noqa: E402  (after the skip above)

#: Small sizes per family (the meta-device builds stay fast), with the keys symbert needs set where the
#: config class's default differs (DeBERTa's relative attention, ModernBERT's padding id).
BASES: dict[str, dict[str, object]] = {
    "bert": {"vocab_size": 97, "hidden_size": 24, "num_hidden_layers": 2, "num_attention_heads": 2},
    "roberta": {"vocab_size": 97, "hidden_size": 24, "num_hidden_layers": 2, "num_attention_heads": 2},
    "albert": {
        "vocab_size": 97,
        "embedding_size": 10,
        "hidden_size": 24,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "intermediate_size": 30,
    },
    "distilbert": {"vocab_size": 97, "dim": 24, "n_layers": 2, "n_heads": 2, "hidden_dim": 30},
    "electra": {"vocab_size": 97, "embedding_size": 10, "hidden_size": 24, "num_hidden_layers": 2},
    "deberta-v2": {
        "vocab_size": 97,
        "hidden_size": 24,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "intermediate_size": 30,
        "relative_attention": True,
        "pos_att_type": ["p2c", "c2p"],
        "position_buckets": 4,
        "position_biased_input": False,
        "share_att_key": True,
        "norm_rel_ebd": "layer_norm",
    },
    "modernbert": {
        "vocab_size": 97,
        "hidden_size": 24,
        "num_hidden_layers": 4,
        "num_attention_heads": 2,
        "intermediate_size": 30,
        "pad_token_id": 0,
    },
}
ACTIVATIONS = sorted(transformers.activations.ACT2CLS)
STRINGS = {
    "classifier_pooling": ["cls", "mean"],
    "summary_type": ["first", "last", "mean"],
    "norm_rel_ebd": ["layer_norm", "none"],
    "problem_type": list(PROBLEM_TYPES),
    "dtype": ["float32", "bfloat16"],
}


def config_class(model: str):
    return transformers.CONFIG_MAPPING[model]


def architectures(model: str) -> list[str]:
    spec = MODELS[model]
    return [spec.architecture, *(h.architecture for h in spec.heads.values())]


def candidates(model: str, key: str, default: object) -> list[object]:
    """Type-valid values for ``key`` other than ``default``: flipped flags, small sizes and ids, dropout
    probabilities, the activations of ACT2FN, the names a string key takes, other label maps and
    layer patterns."""
    if key in ("model_type", "transformers_version"):
        return []
    if key == "architectures":
        return [[a] for a in architectures(model)]
    if key in ("id2label", "label2id"):
        labels = {i: f"L{i}" for i in range(3)}
        return [labels if key == "id2label" else {v: k for k, v in labels.items()}]
    if key == "layer_types":
        full, sliding = "full_attention", "sliding_attention"
        return [[full, sliding, full, sliding], [full, sliding, sliding, full], [sliding, full, full, full]]
    if key == "rope_parameters":
        return [{k: {**v, "rope_theta": 500.0} for k, v in default.items()}]
    if key.endswith(("_act", "activation")):
        return [a for a in ACTIVATIONS if a != default]
    if isinstance(default, bool):
        return [not default]
    if key.endswith("token_id") or (default is None and key.endswith("_id")):
        return [1, 5]
    if isinstance(default, int):
        return [v for v in (1, 3, 6, 8, 12, 30) if v != default]
    if isinstance(default, float) or "dropout" in key:
        return [0.0, 0.3]
    if key in STRINGS:
        return [v for v in STRINGS[key] if v != default]
    if key == "pos_att_type":
        return [["c2p", "p2c"], "c2p|p2c", ["c2p"], ["p2c", "c2p", "p2p"]]
    if isinstance(default, str):
        return ["some-name"]
    raise AssertionError(f"no values for {model} {key}={default!r}")


def class_keys(model: str) -> dict[str, object]:
    """Every key of the family's config class with its default (``to_dict``)."""
    return config_class(model)(**BASES[model]).to_dict()


def write(folder: Path, model: str, changes: dict[str, object]) -> None:
    """The family's small config with ``changes``, as the config class writes it."""
    config_class(model)(**{**BASES[model], **changes}).save_pretrained(folder)


def meta_params(folder: Path) -> int:
    """The parameters of the model Hugging Face builds from the file (its ``architectures``' class), on
    the meta device; tied weights count once."""
    config = transformers.AutoConfig.from_pretrained(folder)
    model_class = getattr(transformers, config.architectures[0])
    with torch.device("meta"):
        model = model_class(config)
    return sum(p.numel() for p in model.parameters())


def count(config: symbert.Config) -> int:
    p = symbert.params(symbert.trace(config))
    return p.evaluate(p.total, config.symbols())


def check(folder: Path, model: str, changes: dict[str, object]) -> str:
    """Write the file; symbert refuses it in one line naming a changed key, or counts what Hugging Face
    builds. Returns "refused" or "counted"."""
    write(folder, model, changes)
    try:
        config = symbert.from_file(folder)
    except ConfigError as exc:
        message = str(exc)
        assert "\n" not in message
        assert any(key in message for key in changes), (model, changes, message)
        return "refused"
    assert count(config) == meta_params(folder), (model, changes)
    return "counted"


def walk(model: str, seed: int, pairs: int) -> Iterator[dict[str, object]]:
    """Every key of the class one at a time, each value of a seeded sample of them, and ``pairs`` seeded
    pairs of keys; each with a seeded architecture of the family, masked LM for the untied decoder."""
    rng = random.Random(seed)
    keys = {k: candidates(model, k, v) for k, v in class_keys(model).items()}
    keys = {k: v for k, v in keys.items() if v}
    mlm = {"architectures": [MODELS[model].heads["mlm"].architecture]}
    for key, values in keys.items():
        for value in rng.sample(values, min(2, len(values))):
            head = mlm if key == "tie_word_embeddings" else {"architectures": [rng.choice(architectures(model))]}
            yield {**head, key: value}
    for _ in range(pairs):
        a, b = rng.sample(sorted(keys), 2)
        yield {"architectures": [rng.choice(architectures(model))], a: rng.choice(keys[a]), b: rng.choice(keys[b])}


@pytest.mark.parametrize("model", sorted(MODELS))
def test_every_key_of_the_config_class_has_one_kind(model) -> None:
    spec = MODELS[model]
    kinds = {key: spec.kind(key) for key in config_class(model)().to_dict()}
    assert None not in kinds.values(), {k for k, v in kinds.items() if v is None}


@pytest.mark.parametrize("model", sorted(MODELS))
def test_the_kinds_do_not_overlap(model) -> None:
    """A key is one kind only: its family lists it once among sizes, options, values it is modelled
    with, keys its reader rewrites, and keys that change nothing."""
    from symbert.models.spec import INERT, TASK_KEYS

    spec = MODELS[model]
    lists = [
        list(spec.fields),
        [o.name for o in spec.options if o.from_config],
        list(TASK_KEYS),
        list(spec.all_constraints),
        list(spec.read_keys),
        [*INERT, *spec.inert],
    ]
    keys = [key for keys in lists for key in keys]
    assert len(keys) == len(set(keys)), sorted({k for k in keys if keys.count(k) > 1})


@pytest.mark.parametrize("model", sorted(MODELS))
def test_config_defaults_are_the_config_class_defaults(model) -> None:
    """Where a file leaves a key out, symbert takes what the config class does."""
    spec = MODELS[model]
    for key, value in config_class(model)().to_dict().items():
        if spec.kind(key) in ("size", "option"):
            assert spec.default(key) == value, key


@pytest.mark.parametrize("model", sorted(MODELS))
def test_every_key_is_modelled_or_refused(tmp_path, model) -> None:
    outcomes = [check(tmp_path, model, changes) for changes in walk(model, seed=20, pairs=8)]
    assert "counted" in outcomes and "refused" in outcomes


def deberta_v3(hidden: int, layers: int, heads: int, **extra: object) -> dict[str, object]:
    """microsoft/deberta-v3-*: the released config's keys (the string pos_att_type the class turns into a list)."""
    return {
        "vocab_size": 128100,
        "hidden_size": hidden,
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
        "intermediate_size": 4 * hidden,
        "relative_attention": True,
        "position_buckets": 256,
        "norm_rel_ebd": "layer_norm",
        "share_att_key": True,
        "pos_att_type": "p2c|c2p",
        "layer_norm_eps": 1e-7,
        "max_relative_positions": -1,
        "position_biased_input": False,
        "type_vocab_size": 0,
        "pooler_hidden_size": hidden,
        "pooler_dropout": 0,
        "pooler_hidden_act": "gelu",
        **extra,
    }


MNLI = {"id2label": {0: "CONTRADICTION", 1: "NEUTRAL", 2: "ENTAILMENT"}}
SST2 = {"id2label": {0: "NEGATIVE", 1: "POSITIVE"}, "finetuning_task": "sst-2"}
BERT_LARGE = {"hidden_size": 1024, "num_hidden_layers": 24, "num_attention_heads": 16, "intermediate_size": 4096}
ROBERTA = {"vocab_size": 50265, "max_position_embeddings": 514, "type_vocab_size": 1, "layer_norm_eps": 1e-5}
ELECTRA_SMALL = {"embedding_size": 128, "hidden_size": 256, "num_attention_heads": 4, "intermediate_size": 1024}
ALBERT_BASE = {"hidden_size": 768, "num_attention_heads": 12, "intermediate_size": 3072, "down_scale_factor": 1}
MODERNBERT_LARGE = {"hidden_size": 1024, "num_hidden_layers": 28, "num_attention_heads": 16, "intermediate_size": 2624}

#: Well-known checkpoints by their published sizes (their config.json on the Hugging Face hub), with the
#: class their ``architectures`` names; the config classes fill in what the files leave to defaults.
CHECKPOINTS = {
    "bert-base-uncased": ("bert", "BertForMaskedLM", {}),
    "bert-large-uncased": ("bert", "BertForMaskedLM", BERT_LARGE),
    "roberta-base": ("roberta", "RobertaForMaskedLM", ROBERTA),
    "roberta-large-mnli": ("roberta", "RobertaForSequenceClassification", {**ROBERTA, **BERT_LARGE, **MNLI}),
    "albert-base-v2": ("albert", "AlbertForMaskedLM", ALBERT_BASE),
    "distilbert-base-uncased": ("distilbert", "DistilBertForMaskedLM", {}),
    "distilbert-base-uncased-finetuned-sst-2-english": ("distilbert", "DistilBertForSequenceClassification", SST2),
    "electra-small-discriminator": ("electra", "ElectraForPreTraining", ELECTRA_SMALL),
    "electra-small-generator": ("electra", "ElectraForMaskedLM", ELECTRA_SMALL),
    "electra-base-generator": ("electra", "ElectraForMaskedLM", {**ELECTRA_SMALL, "embedding_size": 768}),
    "deberta-v3-xsmall": ("deberta-v2", "DebertaV2ForMaskedLM", deberta_v3(384, 12, 6)),
    "deberta-v3-base": ("deberta-v2", "DebertaV2ForMaskedLM", deberta_v3(768, 12, 12)),
    "deberta-v3-large": ("deberta-v2", "DebertaV2ForMaskedLM", deberta_v3(1024, 24, 16)),
    "deberta-v3-base-mnli": ("deberta-v2", "DebertaV2ForSequenceClassification", deberta_v3(768, 12, 12, **MNLI)),
    "deberta-v3-large-squad2": ("deberta-v2", "DebertaV2ForQuestionAnswering", deberta_v3(1024, 24, 16)),
    "deberta-v3-xsmall-ner": ("deberta-v2", "DebertaV2ForTokenClassification", deberta_v3(384, 12, 6, **MNLI)),
    "ModernBERT-base": ("modernbert", "ModernBertForMaskedLM", {}),
    "ModernBERT-large": ("modernbert", "ModernBertForMaskedLM", MODERNBERT_LARGE),
}


@pytest.mark.parametrize("name", CHECKPOINTS)
def test_released_checkpoints_are_read_and_counted(tmp_path, name) -> None:
    model, architecture, keys = CHECKPOINTS[name]
    config_class(model)(architectures=[architecture], **keys).save_pretrained(tmp_path / name)
    config = symbert.from_file(tmp_path / name)
    assert config.name == name and config.head.architecture == architecture
    assert count(config) == meta_params(tmp_path / name)


def test_published_count_of_bert_base(tmp_path) -> None:
    """BertConfig's defaults are bert-base's sizes: the bare model's published 109,482,240 parameters."""
    config_class("bert")(architectures=["BertModel"]).save_pretrained(tmp_path)
    assert count(symbert.from_file(tmp_path)) == 109_482_240


def validate(folder: Path) -> tuple[int, str]:
    result = invoke("validate", "--config", str(folder), "--batch", "2", "--seq-len", "5")
    return result.code, result.stdout + result.stderr


UNTIED = {model: spec.heads["mlm"].architecture for model, spec in MODELS.items() if "mlm" in spec.heads}


@pytest.mark.parametrize("model", sorted(UNTIED))
def test_validate_builds_the_users_own_file(tmp_path, model, monkeypatch) -> None:
    """An untied decoder is validated against the model the file describes: exit 0 while symbert models
    it, exit 1 (a params mismatch) once symbert reads the key wrongly, here made to tie it anyway."""
    write(tmp_path, model, {"architectures": [UNTIED[model]], "tie_word_embeddings": False})
    code, out = validate(tmp_path)
    assert code == 0, out
    tied = symbert.models.heads.Encoded.decoder_weight
    monkeypatch.setattr(
        symbert.models.heads.Encoded,
        "decoder_weight",
        lambda e, t=None: tied(e, t) or {"weight": t or e.word_embeddings},
    )
    symbert.api._trace.cache_clear()
    try:
        code, out = validate(tmp_path)
    finally:
        monkeypatch.undo()
        symbert.api._trace.cache_clear()
    assert code == 1 and "params" in out, out


@pytest.mark.parametrize(
    "activation", ["relu", "gelu_pytorch_tanh", "silu", "swish", "tanh", "sigmoid", "quick_gelu", "mish", "linear"]
)
def test_activations_are_exact(tmp_path, activation) -> None:
    """Each activation keeps what PyTorch keeps for it: parameters, saved bytes and FLOPs against the
    real model (BERT's feed-forward and LM head; ModernBERT's GeGLU and classifier head; DeBERTa's
    feed-forward and context pooler)."""
    keys = {
        "bert": {"architectures": ["BertForMaskedLM"], "hidden_act": activation},
        "modernbert": {
            "architectures": ["ModernBertForSequenceClassification"],
            "hidden_activation": activation,
            "classifier_activation": activation,
        },
        "deberta-v2": {
            "architectures": ["DebertaV2ForSequenceClassification"],
            "hidden_act": activation,
            "pooler_hidden_act": activation,
        },
    }
    for model, changes in keys.items():
        write(tmp_path / model, model, changes)
        code, out = validate(tmp_path / model)
        assert code == 0 and out.count(" ok ") == 5, out


@pytest.mark.parametrize("labels", [1, 2, 3])
def test_deberta_classification_without_problem_type(tmp_path, labels) -> None:
    """Fine-tuned DeBERTa configs leave problem_type unset: Hugging Face then runs its older loss code
    (gathering the labelled rows, a copy that keeps the logits and their index), exact in float32, in
    bfloat16 and under bfloat16 autocast."""
    architecture = {"architectures": ["DebertaV2ForSequenceClassification"]}
    write(tmp_path, "deberta-v2", {**architecture, "id2label": {i: f"L{i}" for i in range(labels)}})
    assert symbert.from_file(tmp_path).task.problem_type is None
    for extra in ((), ("--dtype", "bfloat16"), ("--dtype", "bfloat16", "--precision", "amp")):
        result = invoke("validate", "--config", str(tmp_path), "--batch", "3", "--seq-len", "5", *extra)
        checks = 4 if extra == ("--dtype", "bfloat16") else 5  # a bfloat16 model's step peak is not measured
        assert result.code == 0 and result.stdout.count(" ok ") == checks, result


@pytest.mark.parametrize(
    ("key", "value"),
    [("gradient_checkpointing", True), ("output_hidden_states", True), ("chunk_size_feed_forward", 8)],
)
def test_keys_of_older_or_other_uses_are_refused(tmp_path, key, value) -> None:
    """An older config's gradient_checkpointing (Hugging Face switches it on when it builds the model),
    outputs that keep every layer's states alive, a chunked feed-forward: one line naming the key."""
    write(tmp_path, "bert", {key: value})
    result = invoke("params", "--config", str(tmp_path))
    assert result.refused and f"{key}=" in result.stderr and result.stderr.count("\n") == 1


def test_overrides_of_a_file_are_read_with_it(tmp_path) -> None:
    """--set on a config file is the file with that key changed: what it implies is checked again
    (DeBERTa's pooler width, ModernBERT's layer_types), and validate builds the file with the change."""
    write(tmp_path / "deberta", "deberta-v2", {"architectures": ["DebertaV2ForSequenceClassification"]})
    result = invoke("params", "--config", str(tmp_path / "deberta"), "--set", "hidden_size=36")
    assert result.refused and "pooler_hidden_size" in result.stderr
    write(tmp_path / "modernbert", "modernbert", {})
    result = invoke("params", "--config", str(tmp_path / "modernbert"), "--set", "num_hidden_layers=6")
    assert result.refused and "layer_types" in result.stderr
    result = invoke(
        "validate", "--config", str(tmp_path / "modernbert"), "--set", "intermediate_size=17", "-b", "2", "-s", "5"
    )
    assert result.code == 0 and result.stdout.count(" ok ") == 5, result


def test_a_file_without_model_type_is_read_by_its_architecture(tmp_path) -> None:
    """AutoConfig refuses a file without model_type; symbert reads one whose architectures names a class
    it knows, and validate builds it with that family's config class."""
    write(tmp_path, "electra", {"architectures": ["ElectraForMaskedLM"]})
    path = tmp_path / "config.json"
    path.write_text(path.read_text().replace('"model_type": "electra",', ""))
    assert "model_type" not in path.read_text()
    assert symbert.from_file(tmp_path).model == "electra"
    result = invoke("validate", "--config", str(tmp_path), "-b", "2", "-s", "5")
    assert result.code == 0 and result.stdout.count(" ok ") == 5, result


def test_deberta_newer_lm_head_is_tied_whatever_the_config_says(tmp_path) -> None:
    """With legacy false, DeBERTa's LM head scores against the word embeddings themselves, so
    tie_word_embeddings changes nothing; the legacy head's decoder is untied like BERT's."""
    mlm = {"architectures": ["DebertaV2ForMaskedLM"], "tie_word_embeddings": False}
    assert check(tmp_path, "deberta-v2", {**mlm, "legacy": False}) == "counted"
    assert check(tmp_path, "deberta-v2", mlm) == "counted"
