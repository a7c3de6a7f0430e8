"""ELECTRA: formulas worked by hand, the released checkpoints' parameter counts, Hugging Face parity on
small random configs (projection or none, every head, eager and sdpa, fp32, bf16 and autocast), and E as
a symbol of its own in the renderers."""

from __future__ import annotations

import json

import pytest
import sympy
from conftest import hf, hf_param_shapes, random_configs, traced_param_shapes
from inprocess import invoke

import symbert
from symbert.analysis.activations import activations
from symbert.analysis.policy import MemoryOptions
from symbert.configs import with_task
from symbert.models.heads import Task
from symbert.symbols import B, E, H, I, L, position_size, seq_len, type_size, vocab_size

S = seq_len
#: A small ELECTRA with E ≠ H: embeddings of width 6 projected to three heads of width 4.
SMALL = {
    "vocab_size": 29,
    "embedding_size": 6,
    "hidden_size": 12,
    "num_hidden_layers": 2,
    "num_attention_heads": 3,
    "intermediate_size": 17,
    "max_position_embeddings": 20,
    "type_vocab_size": 2,
}


def component(breakdown, name: str) -> sympy.Expr:
    return next(c.total for c in breakdown.components() if c.name == name)


def params_of(config: symbert.Config) -> int:
    p = symbert.params(symbert.trace(config))
    return p.evaluate(p.total, config.symbols())


def exact(config: symbert.Config, batch: int, length: int, dtype: str, **kwargs: object) -> None:
    from symbert.validate.compare import validate

    checks = validate(config, batch, length, dtype, **kwargs)
    assert [(c.quantity, c.predicted) for c in checks] == [(c.quantity, c.measured) for c in checks]


# ---- worked by hand


def test_parameters_by_hand() -> None:
    """Embeddings of width E (three tables and a LayerNorm), the projection E·H + H, BERT's L layers, no
    pooler; with E = H there is no projection and the embeddings are H wide."""
    layers = L * (4 * H**2 + 4 * H + 2 * H * I + I + H + 4 * H)
    projected = symbert.params(symbert.trace("electra")).total
    assert sympy.expand(projected - (E * (vocab_size + position_size + type_size + 2) + E * H + H + layers)) == 0
    same = symbert.params(symbert.trace("electra", embeddings_project=False)).total
    assert sympy.expand(same - (H * (vocab_size + position_size + type_size + 2) + layers)) == 0


def test_heads_parameters_by_hand() -> None:
    """Discriminator: dense H² + H and dense_prediction H + 1. Generator: dense H·E + E, LayerNorm 2E and
    the decoder's bias; its weight is the word embeddings."""
    bare = symbert.params(symbert.trace("electra")).total
    discriminator = symbert.params(symbert.trace("electra", task=Task("pretraining"))).total
    generator = symbert.params(symbert.trace("electra", task=Task("mlm"))).total
    assert sympy.expand(discriminator - bare) == H**2 + 2 * H + 1
    assert sympy.expand(generator - bare) == H * E + 3 * E + vocab_size


def test_projection_keeps_its_input_and_costs_one_product() -> None:
    """fp32: the projection keeps the embeddings' dropped-out output [B, seq_len, E]; forward 2·B·seq_len·E·H,
    backward twice that (the input's gradient and the weight's)."""
    graph = symbert.trace("electra")
    assert component(activations(graph, MemoryOptions()), "embedding projection") == 4 * B * S * E
    flops = symbert.flops(graph)
    assert component(flops["forward"], "embedding projection") == 2 * B * S * E * H
    assert component(flops["backward"], "embedding projection") == 4 * B * S * E * H


@pytest.mark.parametrize(
    ("padding", "dtype", "by_hand"),
    [
        (True, "float32", B * S + 4 * (B * S - 1) + 4 * (B * S - 1)),
        (False, "float32", B * S + 4 * B * S + 4 * B * S),
        (True, "bfloat16", B * S + 2 * (B * S - 1) + 4 * (B * S - 1)),
    ],
)
def test_discriminator_loss_by_hand(padding: bool, dtype: str, by_hand: sympy.Expr) -> None:
    """The bool mask of active tokens [B, seq_len]; the active tokens' logits and their labels as float32,
    [B·seq_len] without padding and [B·seq_len − 1] with (one padded token)."""
    graph = symbert.trace("electra", task=Task("pretraining"), padding=padding)
    loss = component(activations(graph, MemoryOptions("torch-cpu", dtype)), "loss")
    assert sympy.expand(loss - by_hand) == 0


# ---- against Hugging Face


def _meta_count(transformers, architecture: str, values: dict[str, int]) -> int:
    import torch

    with torch.device("meta"):
        model = getattr(transformers, architecture)(transformers.ElectraConfig(**values))
    return sum(p.numel() for p in model.parameters())


HEADS = {"model": "ElectraModel", "pretraining": "ElectraForPreTraining", "mlm": "ElectraForMaskedLM"}


@pytest.mark.parametrize("name", ["electra-small", "electra-base", "electra-large"])
def test_preset_counts_equal_hugging_face(name: str) -> None:
    """The released discriminators' configs: the bare model, the discriminator and the generator's head."""
    transformers = hf()
    config = symbert.preset(name)
    for head, architecture in HEADS.items():
        assert params_of(with_task(config, head=head)) == _meta_count(transformers, architecture, dict(config.values))


def test_electra_small_is_13_5_million() -> None:
    """ElectraModel for google/electra-small-discriminator: 13,483,008 parameters (14M in the paper)."""
    assert params_of(symbert.preset("electra-small")) == 13_483_008


RANDOM = [
    *random_configs("electra", 4, seed=7),
    symbert.Config("electra", {**SMALL, "embedding_size": 12}, "e-equals-h-p0", {"attention_probs_dropout_prob": 0.0}),
]


@pytest.mark.parametrize("config", RANDOM, ids=lambda c: c.name)
def test_parameter_names_and_shapes(config: symbert.Config) -> None:
    transformers = hf()
    model = transformers.ElectraModel(transformers.ElectraConfig(**config.values))
    assert traced_param_shapes(config) == hf_param_shapes(model)


@pytest.mark.parametrize("attention", ["eager", "sdpa"])
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("config", RANDOM[::2], ids=lambda c: c.name)
def test_bare_model_exact(config: symbert.Config, dtype: str, attention: str) -> None:
    hf()
    exact(config, 2, min(5, config.max_length), dtype, attention=attention)


@pytest.mark.parametrize(
    ("head", "padding", "dtype", "attention"),
    [
        ("pretraining", False, "float32", "sdpa"),
        ("pretraining", True, "bfloat16", "sdpa"),
        ("mlm", False, "bfloat16", "sdpa"),
        ("multiple-choice", True, "float32", "sdpa"),
    ],
)
def test_heads_exact(head: str, padding: bool, dtype: str, attention: str) -> None:
    """Beyond tests/test_heads.py (every head, eager, padded): unpadded batches, whose every token is active,
    and sdpa."""
    hf()
    config = with_task(symbert.Config("electra", SMALL, "small", {"padding": padding}), head=head)
    exact(config, 3, 6, dtype, attention=attention)


@pytest.mark.parametrize("head", ["pretraining", "mlm"])
def test_exact_under_cpu_autocast(head: str) -> None:
    """Under autocast the projection's output is bf16, and so is the attention mask Hugging Face builds from
    it; the discriminator's loss runs in float32."""
    hf()
    exact(with_task(symbert.Config("electra", SMALL, "small"), head=head), 2, 7, "bfloat16", amp=True)


@pytest.mark.parametrize("amp", [None, "float16"])
def test_discriminator_training_step_peak(amp: str | None) -> None:
    """Two real CPU training steps of ElectraForPreTraining, measured with torch.profiler, in float32 and
    under fp16 autocast with a GradScaler (measured here: within 24 bytes of 2.2 MB)."""
    hf()
    from symbert.validate.peak import check_peak

    values = {**SMALL, "embedding_size": 40, "hidden_size": 96, "intermediate_size": 200}
    config = with_task(symbert.Config("electra", values, "e40-h96"), head="pretraining")
    check = check_peak(config, 3, 20, "momentum", amp=amp)
    assert abs(check.error) <= 1e-4, f"predicted {check.predicted:,}, measured {check.measured.tensors:,}"


# ---- E through the renderers


def test_e_in_latex_table_and_explain() -> None:
    latex = invoke("latex", "electra-small")
    assert latex.code == 0 and r"N_{\text{embedding projection}} &= H E + H" in latex.stdout
    table = invoke("table", "electra-small", "--format", "csv")
    assert "embedding projection,E*H + H,33024" in table.stdout.splitlines()
    explained = invoke("explain", "params", "--preset", "electra-small")
    row = next(line for line in explained.stdout.splitlines() if "embeddings_project.weight" in line)
    assert "E·H" in row and "32,768" in row


def test_compare_with_bert_base_keeps_e() -> None:
    """bert-base's formula has E = H put in; electra-small's keeps E, and the difference is exact."""
    out = invoke("compare", "bert-base", "electra-small", "--json")
    params = json.loads(out.stdout)["quantities"]["params"]
    assert "E" not in params["configs"][0]["formula"] and "E*H" in params["configs"][1]["formula"]
    assert params["against_first"][0]["difference"] == 13_483_008 - 109_482_240
