"""The top-level Python API: the commands' answers at the commands' defaults, and published counts through it."""

from __future__ import annotations

import csv
import inspect
import io
import json

import click
import pytest
from inprocess import invoke

import symbert
from symbert.cli import cli
from symbert.configs import resolve
from symbert.parallel import Layout

#: Each API function and the command whose options it takes.
COMMANDS = {
    "params": "params",
    "report": "report",
    "explain": "explain",
    "compare": "compare",
    "fit": "fit",
    "plan": "fit",
    "timeline": "timeline",
    "sweep": "sweep",
    "validate": "validate",
}
#: The parallel flags, which the API takes as one Layout.
LAYOUT_FLAGS = {
    "--tensor-parallel": "tensor",
    "--sequence-parallel": "sequence",
    "--pipeline-parallel": "pipeline",
    "--microbatches": "microbatches",
    "--virtual-stages": "virtual",
    "--stage": "stage",
    "--data-parallel": "data",
    "--zero": "zero",
}


def doc(*args: str) -> dict:
    """A command's JSON document, without the versions it models."""
    out = invoke(*args)
    assert out.code == 0, out.stderr
    found = json.loads(out.stdout)
    found.pop("models", None)
    return found


def cli_defaults(command: str) -> dict[str, object]:
    """Each option's value by its long flag when the command line leaves it out."""
    cmd = cli.commands[command]
    values = cmd.make_context(command, []).params
    return {max(p.opts, key=len): values[p.name] for p in cmd.params if isinstance(p, click.Option)}


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_api_default_is_the_commands(name: str) -> None:
    flags = cli_defaults(COMMANDS[name])
    compared = 0
    for param in inspect.signature(getattr(symbert, name)).parameters.values():
        if param.default is inspect.Parameter.empty:
            continue
        if param.name in ("config", "model"):
            assert param.default == resolve(None, None).name == "bert-base"
        elif param.name == "layout":
            assert param.default is None
            for flag, field in LAYOUT_FLAGS.items():
                assert str(flags[flag]) == str(getattr(Layout(), field)), flag
        elif param.name != "options":  # a MemoryOptions given whole: no flag
            assert flags[f"--{param.name.replace('_', '-')}"] == param.default, param.name
        compared += 1
    assert compared >= (1 if name == "params" else 3)


def test_defaults_are_the_documented_ones() -> None:
    """torch-cuda, the model's attention (sdpa; eager for DeBERTa, which has no sdpa), fp32, fused AdamW."""
    assert symbert.report("bert-tiny").options.attention == "sdpa"
    deberta = symbert.report("deberta-v3-xsmall").options
    assert (deberta.policy, deberta.attention, deberta.amp) == ("torch-cuda", "eager", False)
    answer = symbert.fit("bert-tiny", batch=2, seq_len=64)
    assert (answer.training.optimizer, answer.training.precision) == ("adamw-fused", "fp32")


def test_published_parameter_counts() -> None:
    """Hugging Face's BertModel: bert-base 109,482,240 and bert-large 335,141,888 parameters."""
    assert symbert.report("bert-base").value("params") == 109_482_240
    large = symbert.params("bert-large")
    assert large.evaluate(large.total, symbert.preset("bert-large").symbols()) == 335_141_888
    assert symbert.params(symbert.trace(symbert.preset("bert-large"))).total == large.total


def test_zero_mixed_precision_adam_is_16_bytes_per_parameter() -> None:
    """Rajbhandari et al.: 2 + 2 + 12 bytes per parameter, in the paper's accounting (megatron)."""
    t = symbert.timeline("bert-base", policy="megatron", optimizer="adam", precision="mixed")
    states = sum(int(v.subs(t.sizes)) for v in t.states.values())
    assert states == 16 * 109_482_240


def test_a_config_is_a_name_a_config_or_a_path(tmp_path) -> None:
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"model_type": "bert", "hidden_size": 128, "num_hidden_layers": 2,
                                "num_attention_heads": 2, "intermediate_size": 512}))
    by_name = symbert.report("bert-tiny")
    assert symbert.report(symbert.preset("bert-tiny")).value("params") == by_name.value("params") == 4_385_920
    assert symbert.report(path).value("params") == symbert.report(str(path)).value("params") == 4_385_920
    with pytest.raises(symbert.ConfigError, match="unknown preset"):
        symbert.report("bert-nope")
    with pytest.raises(symbert.ConfigError, match="unknown policy"):
        symbert.report("bert-tiny", policy="tpu")


def test_params_report_and_compare_as_the_commands() -> None:
    from symbert.render.comparison import comparison_json
    from symbert.render.reports import params_json, report_json

    base = symbert.preset("bert-base")
    assert params_json(base, symbert.params("bert-base")) == doc("params", "--preset", "bert-base", "--json")
    r = symbert.report("bert-tiny", batch=4, seq_len=64, recompute="selective")
    args = ("--preset", "bert-tiny", "--batch", "4", "--seq-len", "64", "--recompute", "selective", "--json")
    assert report_json(r) == doc("report", *args)
    c = symbert.compare(["bert-tiny", "bert-mini", "modernbert-base"], batch=2)
    assert comparison_json(c) == doc("compare", "bert-tiny", "bert-mini", "modernbert-base", "--batch", "2", "--json")


def test_explain_as_the_command() -> None:
    from symbert.render.latex import notation
    from symbert.render.tables import explain_table, render

    r = symbert.report("bert-tiny", seq_len=64)
    terms = symbert.explain("activations", "bert-tiny", seq_len=64)
    assert terms == symbert.explain(r.breakdowns["activation_bytes"])
    table = render([explain_table(terms, r, "activation_bytes")], "csv", notation())
    out = invoke("explain", "activations", "--preset", "bert-tiny", "--seq-len", "64", "--format", "csv")
    assert out.code == 0 and out.stdout == table


def test_fit_plan_and_timeline_as_the_commands() -> None:
    from symbert.render.training import answer_json, timeline_json

    closed = symbert.fit("bert-tiny", seq_len=128, gpu_memory="1GiB", policy="torch-cpu")
    assert answer_json(closed) == doc("fit", "--preset", "bert-tiny", "--seq-len", "128", "--gpu-memory", "1GiB",
                                      "--policy", "torch-cpu", "--json")
    simulated = symbert.fit("bert-tiny", seq_len=128, gpu="t4")
    assert answer_json(simulated) == doc("fit", "--preset", "bert-tiny", "--seq-len", "128", "--gpu", "t4", "--json")
    plan = symbert.plan("bert-tiny", 2, gpu="t4", seq_len=128)
    assert answer_json(plan) == doc("fit", "--preset", "bert-tiny", "--gpus", "2", "--gpu", "t4", "--seq-len", "128",
                                    "--json")
    t = symbert.timeline("bert-tiny", batch=2, gpu_memory=2**30)
    assert timeline_json(t) == doc("timeline", "--preset", "bert-tiny", "--batch", "2", "--gpu-memory", "1GiB",
                                   "--json")


def test_sweep_as_the_command() -> None:
    found = symbert.sweep(["bert-tiny", "bert-mini"], batch="1:3", seq_len=[64, 128], policy=("torch-cpu", "megatron"),
                          quantity=["params", "peak"])
    args = ("bert-tiny", "bert-mini", "--batch", "1:3", "--seq-len", "64,128", "--policy", "torch-cpu", "--policy",
            "megatron", "-q", "params", "-q", "peak")
    out = invoke("sweep", *args)
    assert out.code == 0 and found == out.stdout
    rows = list(csv.DictReader(io.StringIO(found)))
    assert len(rows) == 2 * 2 * 3 * 2
    assert {r["params"] for r in rows if r["config"] == "bert-tiny"} == {"4385920"}


def test_validate_measures_hugging_face() -> None:
    pytest.importorskip("transformers")
    checks = symbert.validate("bert-tiny", batch=1, seq_len=8)
    assert all(c.ok for c in checks)
    assert {c.quantity: c.measured for c in checks}["params"] == 4_385_920
