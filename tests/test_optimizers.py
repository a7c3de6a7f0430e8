"""Adam's implementations (fused, foreach, single-tensor) and the defaults every command shares.

The optimizer steps are measured against torch.profiler's memory events on CPU, as torch.optim runs them
with ``fused=True``, ``foreach=True`` and ``foreach=False``.
"""

from __future__ import annotations

import json
import re

import pytest
import sympy
from conftest import H96_L3, hf, random_configs, run_cli

import symbert
from symbert.analysis.policy import MemoryOptions
from symbert.configs import ConfigError
from symbert.models.heads import Task
from symbert.symbols import B
from symbert.symbols import seq_len as S
from symbert.training.states import Training, model_states
from symbert.training.step import phases, step_memory

CLS = symbert.Config("bert", H96_L3, "h96-cls", task=Task("sequence-classification", 3))


@pytest.mark.parametrize(
    ("optimizer", "amp"),
    [("adamw-fused", None), ("adamw-foreach", None), ("adamw-single", None), ("adamw-fused", "float16")],
)
def test_optimizer_step_against_pytorch(optimizer: str, amp: str | None) -> None:
    """Two real CPU steps under torch.profiler: each optimizer step's highest point is exact to the byte
    (the first step creates the states, step count included, then the implementation's temporaries and
    the Python number each step wraps as a float64 scalar and casts to float32; under fp16 autocast
    GradScaler's found-inf flag, and for the fused step the flags' sum and the scale it is handed), and
    in float32 so is the forward's (in float16 that depends on the CPU's instruction set: issue 19);
    the float32 step's peak is where the prediction says."""
    hf()
    from symbert.validate.hf import hugging_face
    from symbert.validate.peak import measure_steps

    values = {**CLS.symbols(), B: 3, S: 20}
    precision = "amp" if amp else "fp32"
    training = Training(optimizer, precision, MemoryOptions("torch-cpu", amp, attention="sdpa"))
    predicted = phases(step_memory(symbert.trace(CLS), training, values).timeline(values))
    measured, _, _ = measure_steps(lambda: hugging_face(CLS, 3, 20, "float32", "sdpa"), optimizer, amp=amp)
    pairs = [(p, next(m for m in measured.phases if (m.step, m.name) == (p.step, p.name))) for p in predicted]
    compared = ("optimizer",) if amp else ("forward", "optimizer")
    exact = [(p.step, p.name, p.peak.total, m.peak) for p, m in pairs if p.name in compared]
    assert len(exact) == 2 * len(compared)
    assert [(s, n, p) for s, n, p, _ in exact] == [(s, n, m) for s, n, _, m in exact]
    if amp is None:
        top = max(predicted, key=lambda p: p.peak.total)
        assert (top.step, top.name) == (measured.where.step, measured.where.name)


def test_fused_adamw_keeps_its_step_counts_on_the_device() -> None:
    """torch's fused AdamW keeps each parameter tensor's step count as a float32 scalar on the device
    (``_init_group``: ``device=p.device`` when fused), foreach and the single-tensor loop on the CPU. On
    CUDA each count is an allocation rounded up to 512 bytes: 508 bytes of rounding per tensor. bert-base
    has 5 + 16·L + 2 = 199 tensors."""
    base = symbert.preset("bert-base")
    graph, values = symbert.trace(base), {**base.symbols(), B: 1, S: 8}
    extra = {}
    for optimizer in ("adamw-fused", "adamw-foreach", "adamw"):
        training = Training(optimizer, "fp32", MemoryOptions("torch-cuda"))
        extra[optimizer] = sympy.sympify(model_states(graph, training)["optimizer"]).subs(values) - 8 * 109482240
    assert extra == {"adamw-fused": 4 * 199, "adamw-foreach": 0, "adamw": 0}
    fused, foreach = (
        step_memory(graph, Training(o, "fp32", MemoryOptions("torch-cuda")), values) for o in ("adamw-fused", "adamw")
    )
    after_update = [
        next(p for p in m.timeline(values) if p.label == "zero_grad").bytes["runtime"] for m in (fused, foreach)
    ]
    assert after_update[0] - after_update[1] == 508 * 199


def test_plain_adamw_is_what_torch_picks_on_the_device() -> None:
    picked = {p: Training("adamw", "fp32", MemoryOptions(p)).implementation.name for p in ("torch-cpu", "torch-cuda")}
    assert picked == {"torch-cpu": "single-tensor", "torch-cuda": "foreach"}
    assert Training("adamw-fused", "fp32", MemoryOptions("torch-cpu")).implementation.temporaries == "fused"


def test_deberta_refuses_sdpa_everywhere_in_the_api() -> None:
    deberta = symbert.preset("deberta-v3-xsmall")
    with pytest.raises(ConfigError, match="deberta-v2 with eager attention only, not sdpa"):
        step_memory(symbert.trace(deberta), Training(memory=MemoryOptions("torch-cpu", attention="sdpa")))
    assert MemoryOptions(attention=None).for_model(deberta.spec).attention == "eager"
    assert MemoryOptions(attention=None).for_model(symbert.preset("bert-tiny").spec).attention == "sdpa"


# ---- the command line: one set of defaults, stated; one rule for what a family runs


def _json(*args: str) -> dict:
    result = run_cli(*args, "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_every_command_has_the_same_defaults_and_says_so() -> None:
    """report, fit, timeline and sweep default alike: torch-cuda, the model's attention (sdpa for BERT,
    eager for DeBERTa), and the training commands Trainer's fused AdamW; each names the versions it models."""
    for preset, attention in (("bert-tiny", "sdpa"), ("deberta-v3-xsmall", "eager")):
        docs = [
            _json("report", "--preset", preset),
            _json("fit", "--preset", preset, "-b", "1", "-s", "8"),
            _json("timeline", "--preset", preset, "-s", "8"),
        ]
        setups = {(d["policy"], d["attention"], d.get("optimizer", "adamw-fused")) for d in docs}
        assert setups == {("torch-cuda", attention, "adamw-fused")}
        assert {json.dumps(d["models"]) for d in docs} == {'{"torch": "2.13", "transformers": "5.24 to 5.25"}'}
        header, row = run_cli("sweep", preset, "-b", "1", "-s", "8", "-q", "params").stdout.splitlines()
        swept = dict(zip(header.split(","), row.split(","), strict=True))
        assert (swept["policy"], swept["attention"], swept["optimizer"]) == ("torch-cuda", attention, "adamw-fused")


def test_fit_without_flags_states_sdpa_and_fused_adamw() -> None:
    out = run_cli("fit", "--gpu", "t4", "--seq-len", "128")
    assert out.returncode == 0, out.stderr
    setup = out.stdout.splitlines()[1]
    assert setup.startswith("adamw-fused (fused), fp32 precision; torch-cuda, float32, sdpa attention, recompute none")
    assert "models torch 2.13 and transformers 5.24 to 5.25" in setup


@pytest.mark.parametrize(
    "args",
    [
        ("report", "--preset", "deberta-v3-xsmall", "--attention", "sdpa"),
        ("latex", "deberta-v3-xsmall", "--attention", "sdpa"),
        ("fit", "--preset", "deberta-v3-xsmall", "--attention", "sdpa", "-b", "1", "-s", "8"),
        ("timeline", "--preset", "deberta-v3-xsmall", "--attention", "flash"),
        ("plot", "--preset", "deberta-v3-xsmall", "--attention", "sdpa", "-o", "never.png"),
        ("sweep", "deberta-v3-xsmall", "--attention", "sdpa", "-b", "1", "-s", "8"),
        ("validate", "--preset", "deberta-v3-xsmall", "--attention", "sdpa"),
    ],
    ids=lambda a: a[0],
)
def test_every_command_refuses_what_hugging_face_does_not_run(args: tuple[str, ...], tmp_path) -> None:
    """One rule (the family's ModelSpec), one line, nothing on standard output before it."""
    result = run_cli(*args, cwd=str(tmp_path))
    assert (result.returncode, result.stdout) == (2, "")
    kernel = args[args.index("--attention") + 1]
    assert result.stderr == f"symbert: error: Hugging Face runs deberta-v2 with eager attention only, not {kernel}\n"
    assert not (tmp_path / "never.png").exists()


@pytest.mark.parametrize("family", ["bert", "roberta", "albert", "distilbert", "electra", "modernbert", "deberta-v2"])
def test_parameters_in_the_order_the_model_registers_them(family: str) -> None:
    """The optimizer steps parameters (and ``Module.to`` allocates them) in ``Module.parameters()``
    order, which follows each module's ``__init__``, not its forward: BertEmbeddings registers the
    position table before the token-type table it looks up first. Against Hugging Face's model, layer
    indices dropped (each name at its first appearance)."""
    hf()
    from symbert.validate.hf import hugging_face

    config = random_configs(family, 1, seed=3)[0]
    model, _ = hugging_face(config, 1, 4, "float32")
    graph = symbert.trace(config)
    first_use = list(dict.fromkeys(p.name for n in graph.nodes for p in n.params))
    ours = [re.sub(r"\.(global|local)(?=\.)", "", name) for name in graph.parameter_order(first_use)]
    theirs = [re.sub(r"\.\d+(?=\.)", "", name) for name, _ in model.named_parameters()]
    assert list(dict.fromkeys(ours)) == list(dict.fromkeys(theirs))
