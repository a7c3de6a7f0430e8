"""Task heads and their losses: hand-worked formulas, Hugging Face parity for every head of every family,
the training-step peak against PyTorch, and the command line."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import sympy
from conftest import H96_L3, hf, hf_param_shapes, random_configs, run_cli, traced_param_shapes
from inprocess import invoke

import symbert
from symbert.analysis.activations import activations
from symbert.analysis.policy import MemoryOptions
from symbert.configs import with_task
from symbert.models import MODELS
from symbert.models.heads import PROBLEM_TYPES, Task
from symbert.symbols import B, C, H, L, num_labels, seq_len, vocab_size
from symbert.training.states import Training, model_states
from symbert.training.step import phases, step_memory

S = seq_len


def component(breakdown, name: str) -> sympy.Expr:
    return next(c.total for c in breakdown.components() if c.name == name)


def params_of(config: symbert.Config) -> int:
    p = symbert.params(symbert.trace(config))
    return p.evaluate(p.total, config.symbols())


# ---- worked by hand


def test_mlm_head_parameters_by_hand() -> None:
    """Transform dense H² + H, LayerNorm 2H, decoder bias vocab_size; the decoder weight is the word
    embeddings, counted once; BertForMaskedLM has no pooler (H² + H fewer)."""
    bare = symbert.params(symbert.trace("bert")).total
    mlm = symbert.params(symbert.trace("bert", task=Task("mlm"))).total
    assert sympy.expand(mlm - bare) == H**2 + 3 * H + vocab_size - (H**2 + H)


def test_cross_entropy_keeps_log_probabilities_labels_and_total_weight() -> None:
    """fp32: log_softmax's output [B, num_labels], the int64 labels [B] and a scalar total weight."""
    graph = symbert.trace("bert", task=Task("sequence-classification"))
    loss = component(activations(graph, MemoryOptions()), "loss")
    assert sympy.expand(loss - (4 * B * num_labels + 8 * B + 4)) == 0


def test_regression_keeps_logits_and_float_labels() -> None:
    """MSE keeps its input (the logits) and its float32 target: 4 + 4 bytes per output."""
    graph = symbert.trace("bert", task=Task("sequence-classification", 1))
    loss = component(activations(graph, MemoryOptions("torch-cuda", "bfloat16")), "loss")
    assert sympy.expand(loss - (2 * B * num_labels + 4 * B * num_labels)) == 0


def test_masked_lm_loss_is_as_large_as_the_vocabulary() -> None:
    """The log-probabilities over the vocabulary at every position, the labels and the total weight."""
    graph = symbert.trace("bert", task=Task("mlm"))
    loss = component(activations(graph, MemoryOptions()), "loss")
    assert sympy.expand(loss - (4 * B * S * vocab_size + 8 * B * S + 4)) == 0


def test_multiple_choice_runs_the_encoder_on_every_choice() -> None:
    """Forward matmul FLOPs of the encoder scale with B·C; the classifier is H → 1 per choice."""
    bare = symbert.flops(symbert.trace("bert"))["forward"].total
    choice = symbert.flops(symbert.trace("bert", task=Task("multiple-choice")))["forward"].total
    assert sympy.expand(choice - bare.subs(B, B * C) - 2 * B * C * H) == 0


def test_question_answering_loss_by_hand() -> None:
    """Two cross-entropies over [B, seq_len] (start, end), each with its clamped positions and total weight."""
    graph = symbert.trace("bert", task=Task("question-answering"))
    loss = component(activations(graph, MemoryOptions()), "loss")
    assert sympy.expand(loss - 2 * (4 * B * S + 8 * B + 4)) == 0


def test_hugging_face_problem_type_rule() -> None:
    assert Task("sequence-classification", 1).problem == "regression"
    assert Task("sequence-classification", 5).problem == "single_label_classification"
    assert Task("sequence-classification", 1, "multi_label_classification").problem == "multi_label_classification"


@pytest.mark.parametrize(
    ("name", "head", "expected"),
    [
        ("bert-base", "pretraining", 110_106_428),  # BertForPreTraining, bert-base-uncased
        ("bert-base", "mlm", 109_514_298),  # BertForMaskedLM, bert-base-uncased
        ("roberta-base", "mlm", 124_697_433),  # RobertaForMaskedLM, roberta-base
    ],
)
def test_published_task_model_counts(name: str, head: str, expected: int) -> None:
    assert params_of(with_task(symbert.preset(name), head=head)) == expected


# ---- against Hugging Face


def _cases() -> list[symbert.Config]:
    cases = []
    for model, spec in MODELS.items():
        if not spec.heads:
            continue
        for i, config in enumerate(random_configs(model, len(spec.heads) + 2, seed=21)):
            heads = [*spec.heads, "sequence-classification", "sequence-classification"]
            head = heads[i]
            settings = {"num_labels": 1 + i % 4} if head in ("sequence-classification", "token-classification") else {}
            if head == "sequence-classification":
                settings["problem_type"] = PROBLEM_TYPES[i % 3]
            if head == "multiple-choice":
                settings["choices"] = 3
            config = with_task(replace(config, options={}), head=head, **settings)  # the head decides the pooler
            cases.append(replace(config, name=f"{model}-{head}-{i}"))
    return cases


#: Each masked-LM head untied (``tie_word_embeddings`` false): the decoder gets a weight and a bias of its own,
#: and where the head registers a ``bias`` of its own beside it (BERT, RoBERTa, ALBERT, DeBERTa's legacy head)
#: that bias stays, a parameter that gets no gradient.
UNTIED = [
    with_task(
        replace(random_configs(model, 1, seed=20)[0], options={"tie_word_embeddings": False}, name=f"{model}-untied"),
        head="mlm",
    )
    for model, spec in MODELS.items()
    if "mlm" in spec.heads
]
CASES = _cases() + UNTIED


@pytest.mark.parametrize("config", CASES, ids=lambda c: c.name)
def test_parameter_names_and_shapes_match_hugging_face(config: symbert.Config) -> None:
    """Every parameter, named as Hugging Face names it (the encoder under ``bert.`` and so on), tied
    decoder weights counted once."""
    hf()
    from symbert.validate.hf import hugging_face

    model, _ = hugging_face(config, 1, 2, "float32")
    assert traced_param_shapes(config) == hf_param_shapes(model)
    assert params_of(config) == sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("config", CASES, ids=lambda c: c.name)
def test_saved_bytes_and_flops_exact_against_pytorch(config: symbert.Config, dtype: str) -> None:
    """model(**inputs, labels=...): bytes autograd keeps, loss included, and matmul FLOPs of forward and
    of the loss's backward."""
    hf()
    from symbert.validate.compare import validate

    checks = validate(config, 3, min(6, config.max_length), dtype)
    assert [(c.quantity, c.predicted) for c in checks] == [(c.quantity, c.measured) for c in checks]


@pytest.mark.parametrize(
    ("task", "batch", "length", "optimizer"),
    [(Task("mlm"), 3, 20, "adamw"), (Task("sequence-classification", 3), 4, 16, "momentum")],
    ids=lambda v: getattr(v, "head", v),
)
def test_training_step_peak_against_pytorch(task: Task, batch: int, length: int, optimizer: str) -> None:
    """Two real CPU training steps of the Hugging Face task model, measured with torch.profiler: the
    prediction is off by a few scalars at most (0.01 %), and names the phase that peaks."""
    hf()
    from symbert.validate.peak import check_peak

    config = symbert.Config("bert", H96_L3, f"h96-{task.head}", task=task)
    check = check_peak(config, batch, length, optimizer)
    assert abs(check.error) <= 1e-4, f"predicted {check.predicted:,}, measured {check.measured.tensors:,}"
    where = check.measured.where
    assert check.predicted_where.startswith(f"step {where.step} {where.name}")


def test_untied_lm_head_by_hand() -> None:
    """Untied, BertForMaskedLM's decoder has a weight H·vocab_size and a bias vocab_size of its own, and the
    head keeps its old bias: H·vocab_size + vocab_size more parameters than tied. The old bias gets no
    gradient, so fused AdamW keeps no state and no step count for it: weights exceed gradients by its
    4·vocab_size bytes, and the optimizer holds 8 bytes per other parameter and a step count (4 bytes) per
    other tensor: 5 in the embeddings, 16 per layer, 6 in the head."""
    untied = with_task(symbert.Config("bert", H96_L3, "h96-untied", {"tie_word_embeddings": False}), head="mlm")
    tied = with_task(symbert.Config("bert", H96_L3, "h96"), head="mlm")
    graph = symbert.trace(untied)
    total = symbert.params(graph).total
    assert sympy.expand(total - symbert.params(symbert.trace(tied)).total) == H * vocab_size + vocab_size
    states = model_states(graph, Training("adamw-fused", "fp32", MemoryOptions("torch-cpu")))
    assert sympy.expand(states["weights"] - states["gradients"]) == 4 * vocab_size
    assert sympy.expand(states["optimizer"] - 8 * (total - vocab_size) - 4 * (5 + 16 * L + 6)) == 0


@pytest.mark.parametrize("optimizer", ["adamw-fused", "adamw-single"])
@pytest.mark.parametrize("model", ["bert", "roberta"])
def test_untied_lm_head_training_step_against_pytorch(model: str, optimizer: str) -> None:
    """Two real CPU steps of an untied masked-LM model under torch.profiler: the head's old bias is loaded
    with the weights but gets no gradient, no optimizer state, no step count and no update temporaries
    (AdamW skips a parameter whose gradient is None), so the highest points of backward and of the
    optimizer step are exact to the byte in each step, and so is the peak, where the prediction says."""
    hf()
    from symbert.validate.hf import hugging_face
    from symbert.validate.peak import measure_steps

    config = with_task(symbert.Config(model, H96_L3, f"h96-{model}", {"tie_word_embeddings": False}), head="mlm")
    values = {**config.symbols(), B: 3, S: 20}
    training = Training(optimizer, "fp32", MemoryOptions("torch-cpu", attention="eager"))
    predicted = phases(step_memory(symbert.trace(config), training, values).timeline(values))
    measured, _, _ = measure_steps(lambda: hugging_face(config, 3, 20, "float32", "eager"), optimizer)
    pairs = [(p, next(m for m in measured.phases if (m.step, m.name) == (p.step, p.name))) for p in predicted]
    exact = [(p.step, p.name, p.peak.total, m.tensors) for p, m in pairs if p.name in ("backward", "optimizer")]
    assert len(exact) == 4
    assert [(s, n, p) for s, n, p, _ in exact] == [(s, n, m) for s, n, _, m in exact]
    top = max(predicted, key=lambda p: p.peak.total)
    assert (top.step, top.name, top.peak.total) == (measured.where.step, measured.where.name, measured.tensors)


@pytest.mark.parametrize(
    "config", [c for c in UNTIED if c.model in ("bert", "roberta", "albert", "deberta-v2")], ids=lambda c: c.name
)
def test_untied_lm_head_loads_in_module_to_order(config: symbert.Config) -> None:
    """The head's old bias is loaded with the weights, where ``Module.to`` visits it: after the head
    module's children (ALBERT's as it registers them: LayerNorm, dense, decoder). The requests before
    the first step under torch-cuda are the real model's parameters and buffers in that order."""
    hf()
    from symbert.training.stream import events
    from symbert.validate.hf import hugging_face

    model, _ = hugging_face(config, 1, 2, "float32")
    sizes: list[int] = []

    def visit(module) -> None:
        for child in module.children():
            visit(child)
        sizes.extend(t.numel() * t.element_size() for t in (*module._parameters.values(), *module._buffers.values()))

    visit(model)
    training = Training("adamw", "fp32", MemoryOptions("torch-cuda"))
    stream = events(symbert.trace(config), training, {**config.symbols(), B: 2, S: 8}, steps=1)
    start = next(i for i, e in enumerate(stream) if e[0] == "phase")
    assert [e[2] for e in stream[:start] if e[0] == "alloc"][: len(sizes)] == sizes


def test_untied_lm_head_is_refused_over_data_parallel_gpus() -> None:
    """DDP fails on a parameter that gets no gradient (unless find_unused_parameters is set): over d > 1
    GPUs the untied head is refused in one line naming the key; the planner rejects those layouts only."""
    untied = ("--preset", "bert-tiny", "--head", "mlm", "--set", "tie_word_embeddings=false")
    for layout in (("--data-parallel", "2"), ("--data-parallel", "2", "--zero", "3")):
        result = invoke("timeline", *untied, "-b", "2", "-s", "8", *layout)
        assert result.refused and "tie_word_embeddings=False" in result.stderr, result
    assert invoke("timeline", *untied, "-b", "2", "-s", "8").code == 0
    plan = invoke("fit", *untied, "--gpus", "2", "-s", "8", "--gpu-memory", "1GiB", "--json")
    assert plan.code == 0, plan
    found = json.loads(plan.stdout)
    assert found["fits"] and all(f["layout"]["data"] == 1 for f in found["fits"])
    assert {r["layout"]["data"] for r in found["rejected"]} == {2}
    assert all("tie_word_embeddings=False" in r["reason"] for r in found["rejected"])


# ---- config files and the command line


def _config_file(tmp_path, **extra) -> str:
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"model_type": "bert", **symbert.preset("bert-base").values, **extra}))
    return str(path)


def _params(*args: str) -> int:
    result = run_cli("params", "--json", *args)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)["params"]


def test_architectures_choose_the_head_and_head_overrides(tmp_path) -> None:
    pretraining = _config_file(tmp_path, architectures=["BertForPreTraining"])
    assert _params("--config", pretraining) == 110_106_428
    assert _params("--config", pretraining) == _params("--head", "pretraining")
    assert _params("--config", pretraining, "--head", "model") == 109_482_240


def test_id2label_sets_the_number_of_labels(tmp_path) -> None:
    labels = {str(i): f"L{i}" for i in range(7)}
    path = _config_file(tmp_path, architectures=["BertForSequenceClassification"], id2label=labels)
    assert _params("--config", path) == 109_482_240 + 7 * 768 + 7
    assert _params("--config", path) == _params("--head", "sequence-classification", "--num-labels", "7")


def test_fit_counts_the_masked_lm_head(tmp_path) -> None:
    """Measured on a GPU (bert-base, seq_len 512, AdamW, fp32, 16 GiB): BertModel fits batch 23,
    BertForMaskedLM runs out of memory at 19 and fits 18."""
    path = _config_file(tmp_path, architectures=["BertForMaskedLM"])
    args = ("--seq-len", "512", "--gpu-memory", "16GiB", "--optimizer", "adamw", "--attention", "eager", "--json")
    mlm = run_cli("fit", "--config", path, *args)
    assert mlm.returncode == 0, mlm.stderr
    assert json.loads(mlm.stdout)["batch"] == 18
    assert json.loads(run_cli("fit", *args).stdout)["batch"] == 23


def test_sweep_keeps_heads_of_one_structure_apart(tmp_path) -> None:
    """Masked LM and token classification both drop the pooler; each keeps its own training-step peak."""
    import csv

    from symbert.training.states import Training
    from symbert.training.step import step_memory

    (tmp_path / "mlm").mkdir()
    (tmp_path / "ner").mkdir()
    tiny = {"model_type": "bert", **symbert.preset("bert-tiny").values}
    files = []
    for folder, architecture in (("mlm", "BertForMaskedLM"), ("ner", "BertForTokenClassification")):
        path = tmp_path / folder / "config.json"
        path.write_text(json.dumps({**tiny, "architectures": [architecture]}))
        files.append(str(path))
    setup = ("--attention", "eager", "--optimizer", "adamw")
    result = run_cli("sweep", *files, "-b", "2", "-s", "8", "-q", "peak", *setup)
    assert result.returncode == 0, result.stderr
    rows = list(csv.DictReader(result.stdout.splitlines()))
    assert [r["head"] for r in rows] == ["mlm", "token-classification"]
    for row, path in zip(rows, files, strict=True):
        config = symbert.from_file(path)
        values = {**config.symbols(), B: 2, S: 8}
        memory = step_memory(symbert.trace(config), Training(memory=MemoryOptions("torch-cuda")), values, full=True)
        assert int(row["peak"]) == memory.peak(values).total
    assert rows[0]["peak"] != rows[1]["peak"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--head", "classifier"), "'classifier' is not one of"),
        (("--head", "sequence-classification", "--num-labels", "0"), "0 is not in the range"),
        (("--head", "mlm", "--num-labels", "3"), "--num-labels applies to"),
        (("--preset", "distilbert-base-uncased", "--head", "pretraining"), "distilbert has no head 'pretraining'"),
        (("--head", "sequence-classification", "--no-pooler"), "reads the pooler"),
    ],
)
def test_bad_head_settings_exit_2_with_one_line(args: tuple[str, ...], message: str) -> None:
    result = run_cli("params", *args)
    assert result.returncode == 2 and result.stdout == ""
    assert len(result.stderr.strip().splitlines()) == 1 and message in result.stderr


def test_unknown_architecture_names_the_known_ones(tmp_path) -> None:
    result = run_cli("params", "--config", _config_file(tmp_path, architectures=["BertForCausalLM"]))
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1
    assert "unknown architecture 'BertForCausalLM'" in result.stderr and "BertForMaskedLM" in result.stderr


@pytest.mark.parametrize(
    "command",
    [
        ("report", "-b", "2", "-s", "8"),
        ("graph",),
        ("explain", "activation_bytes"),
        ("latex",),
        ("table", "bert-tiny", "bert-mini"),
        ("compare", "bert-tiny", "bert-mini"),
        ("timeline", "-b", "2", "-s", "8"),
        ("sweep", "bert-tiny", "-b", "1,2", "-s", "8"),
    ],
    ids=lambda c: c[0],
)
def test_every_command_takes_a_head(command: tuple[str, ...]) -> None:
    preset = () if command[0] in ("table", "compare", "sweep", "latex") else ("--preset", "bert-tiny")
    result = run_cli(*command, *preset, "--head", "mlm")
    assert result.returncode == 0, result.stderr
    assert result.stdout
