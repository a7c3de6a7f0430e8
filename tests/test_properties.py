"""Property-based tests (hypothesis): generated configs, sizes, shapes, paths and flags.

Two properties, over valid and invalid input alike:

* the command line never ends in a traceback: exit 0, or exit 2 with one line ``symbert: error: ...``;
* the fast numeric paths (sweep's compiled numpy evaluation, fit's solve, timeline's replay) agree with the
  exact formula evaluated in Python integers, at odd and huge sizes as well as ordinary ones.

The examples are derandomized and bounded, so that CI is deterministic and the file runs in well under a
minute.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np
import pytest
import sympy
from conftest import has_sdpa
from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st
from inprocess import invoke

from symbert import parse_formula
from symbert.analysis.policy import MemoryOptions
from symbert.analysis.report import report
from symbert.api import trace
from symbert.configs import MAX_SIZE, Config, ConfigError, validated
from symbert.models import MODELS
from symbert.symbols import B, seq_len
from symbert.training.fit import fit
from symbert.training.states import Training, model_states
from symbert.training.step import step_memory
from symbert.training.sweep import compile_quantities

BASE = settings(
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
)


def examples(n: int) -> settings:
    """Deterministic settings with at most ``n`` examples."""
    return settings(BASE, max_examples=n)


#: Sizes a user might type: ordinary, odd, at and past the maximum, past int64, absurd.
ODD_SIZES = (1, 2, 3, 7, 97, 4095, 2**31 - 1, MAX_SIZE - 1, MAX_SIZE, MAX_SIZE + 1, 2**63 - 1, 2**64 + 1, 10**40)
sizes = st.one_of(st.integers(1, 64), st.sampled_from(ODD_SIZES), st.integers(-3, 0))
junk = st.one_of(
    st.none(),
    st.booleans(),
    st.floats(allow_nan=True),
    st.text(max_size=8),
    st.lists(st.integers(0, 3), max_size=3),
    st.dictionaries(st.text(max_size=3), st.integers(0, 3), max_size=2),
)
values = st.one_of(sizes, sizes, sizes, junk)
model_types = st.sampled_from(["bert", "roberta", "albert", "distilbert", "t5", "", 3, ["bert"], {"a": 1}, None])
ALL_KEYS = sorted({k for spec in MODELS.values() for k in spec.fields} | {"num_labels", "architectures", "id2label"})


@st.composite
def config_files(draw) -> dict:
    """A config.json's content: a model type (maybe wrong), some fields with generated values, maybe junk."""
    data = {}
    if draw(st.booleans()):
        data["model_type"] = draw(model_types)
    for key in draw(st.lists(st.sampled_from(ALL_KEYS), max_size=5, unique=True)):
        data[key] = draw(values)
    if draw(st.integers(0, 4)) == 0:
        data["architectures"] = draw(st.one_of(st.just(["BertForMaskedLM"]), junk))
    return data


shapes = st.one_of(st.integers(1, 600), st.sampled_from(ODD_SIZES), st.integers(-2, 0)).map(str)
memory_sizes = st.one_of(
    st.sampled_from(["16GiB", "1B", "0", "1.5GiB", "1.3B", "2TB", "1YB", "99999999999999999999999TiB", "x", ""]),
    st.integers(1, 2**90).map(str),
)


def _commands(path: str, batch: str, length: str, budget: str) -> dict[str, tuple[str, ...]]:
    return {
        "params": ("params", "--config", path, "--json"),
        "report": ("report", "--config", path, "-b", batch, "-s", length, "--json"),
        "fit": ("fit", "--config", path, "-s", length, "--gpu-memory", budget, "--json"),
        "fit-both": ("fit", "--config", path, "-b", batch, "-s", length, "--gpu-memory", budget),
        "timeline": ("timeline", "--config", path, "-b", batch, "-s", length, "--json"),
        "sweep": ("sweep", path, "-b", f"{batch},1", "-s", length, "-q", "peak", "-q", "flops_forward"),
        "diagram": ("diagram", "--config", path, "--level", "overview", "--format", "dot"),
        "compare": ("compare", "bert-tiny", path, "-b", batch, "-s", length, "--json"),
        "explain": ("explain", "activation_bytes", "--config", path, "-b", batch, "-s", length),
    }


def _no_traceback(args: tuple[str, ...]) -> None:
    result = invoke(*args)
    event(f"exit {result.code}")
    assert result.code == 0 or result.refused, (args, result)


#: Config files that are valid (sizes up to the maximum) half the time, anything at all otherwise.
any_config_files = st.one_of(
    config_files(),
    st.deferred(lambda: valid_configs().map(lambda c: {"model_type": c.model, **c.hugging_face()})),
)


@examples(60)
@given(
    data=any_config_files,
    command=st.sampled_from(sorted(_commands("", "", "", ""))),
    batch=shapes,
    length=shapes,
    budget=memory_sizes,
)
def test_the_command_line_never_ends_in_a_traceback(data, command, batch, length, budget) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder, "config.json")
        path.write_text(json.dumps(data))
        _no_traceback(_commands(str(path), batch, length, budget)[command])


set_values = st.one_of(shapes, st.sampled_from(["true", "0.5", "gelu", "1e3", "-", "=", "9" * 5000, "0x10"]))
SET_KEYS = ["num_hidden_layers", "n_layers", "vocab_size", "intermediate_size", "max_position_embeddings"]
SET_KEYS += ["type_vocab_size", "hidden_act", "hidden_dropout_prob", "bogus", ""]
FLAGS = [
    (),
    ("--head", "mlm"),
    ("--head", "sequence-classification", "--num-labels", "3"),
    ("--head", "token-classification", "--num-labels", str(10**13)),
    ("--head", "multiple-choice", "--choices", "5"),
    ("--choices", "0"),
    ("--no-pooler",),
    ("--no-token-types",),
]
TRAINING_FLAGS = [
    (),
    ("--optimizer", "sgd"),
    ("--precision", "mixed"),
    ("--recompute", "full"),
    ("--attention", "flash"),
]


@examples(30)
@given(
    preset=st.sampled_from(["bert-tiny", "albert-base-v2", "roberta-base", "distilbert-base-uncased", "bert"]),
    key=st.sampled_from(SET_KEYS),
    value=set_values,
    flags=st.sampled_from(FLAGS),
    training=st.sampled_from(TRAINING_FLAGS),
    command=st.sampled_from(["params", "fit", "timeline", "sweep"]),
)
def test_set_and_flags_never_end_in_a_traceback(preset, key, value, flags, training, command) -> None:
    extra = flags if command == "params" else (*flags, *training)
    where = (command, "--preset", preset)
    if command == "sweep":
        where = ("sweep", preset, "-b", "1,2", "-s", "8")
    shape = ("-s", "16", "-b", "2") if command in ("fit", "timeline") else ()
    _no_traceback((*where, *shape, "--set", f"{key}={value}", *extra))


paths = st.one_of(
    st.sampled_from(["/proc/x", "/sys/x", "/etc/passwd/x", "/dev/null", "missing/x", ".", "sub", ""]),
    st.text(st.characters(codec="utf-8", exclude_characters="/\x00"), min_size=1, max_size=12),
)
suffixes = st.sampled_from([".png", ".svg", ".pdf", ".csv", ".dot", ".gif", ""])


@examples(40)
@given(
    path=paths,
    suffix=suffixes,
    command=st.sampled_from(["plot", "timeline", "sweep", "diagram"]),
)
def test_output_paths_never_end_in_a_traceback(path, suffix, command) -> None:
    with tempfile.TemporaryDirectory() as folder:
        (Path(folder) / "sub").mkdir()
        target = path + suffix if path.startswith("/") else str(Path(folder) / (path + suffix))
        args = {
            "plot": ("plot", "--preset", "bert-tiny", "--max", "8", "-o", target),
            "timeline": ("timeline", "--preset", "bert-tiny", "-s", "8", "--plot", target),
            "sweep": ("sweep", "bert-tiny", "-b", "1", "-s", "8", "-o", target),
            "diagram": ("diagram", "--preset", "bert-tiny", "--level", "overview", "-o", target),
        }[command]
        _no_traceback(args)
        assert not (Path(folder) / "missing").exists()
        leftovers = [p.name for p in Path(folder).rglob("*.tmp")]
        assert not leftovers


# ---- the fast numeric paths against the exact formula


TRAININGS = [
    Training("adamw", "fp32", MemoryOptions("torch-cuda")),
    Training("sgd", "mixed", MemoryOptions("torch-cuda", None, "flash", "selective")),
    Training("momentum", "fp32", MemoryOptions("megatron", None, "eager", "full")),
    Training("adam", "mixed", MemoryOptions("torch-cpu")),
]
big_sizes = st.one_of(st.integers(1, 40), st.sampled_from([97, 4096, 10**6 + 3, 10**9 + 7, MAX_SIZE]))


@st.composite
def valid_configs(draw) -> Config:
    """A valid config of any family, with sizes from 1 to the maximum (huge ones included)."""
    model = draw(st.sampled_from(sorted(MODELS)))
    spec = MODELS[model]
    by_key = {key: draw(big_sizes) for key in spec.fields}
    heads = draw(st.sampled_from([1, 2, 3, 12]))
    whole, part = spec.divides[0]
    by_key[part] = heads
    by_key[whole] = heads * draw(st.one_of(st.integers(1, 24), st.sampled_from([10**5, MAX_SIZE // 12])))
    layers = next(k for k, s in spec.fields.items() if str(s) == "L")
    by_key[layers] = draw(st.one_of(st.integers(1, 5), st.sampled_from([12, 10**6, MAX_SIZE])))
    positions = "max_position_embeddings"
    by_key[positions] = draw(st.one_of(st.integers(3, 600), st.just(MAX_SIZE)))
    padding = {"padding": draw(st.booleans())} if spec.option("padding") else {}  # unpadded: brackets
    try:
        return validated(Config(model, by_key, f"{model}-generated", options=padding))
    except ConfigError:
        assume(False)
        raise


def _exact(config: Config, training: Training, batch: int, length: int) -> dict[str, int]:
    """Every sweep quantity at one point, from the formulas in Python integers (sympy), no numpy."""
    values = {**config.symbols(), B: batch, seq_len: length}
    r = report(config, batch, length, training.memory)
    out = {
        q: r.value(q) for q in ("params", "activation_bytes", "flops_forward", "flops_backward", "non_matmul_forward")
    }
    states = model_states(trace(config), training)
    out |= {name: int(sympy.sympify(states[key]).xreplace(values)) for name, key in _STATES.items()}
    memory = step_memory(trace(config), training, config.symbols())
    at = {m: int(m.xreplace(values)) for m in memory.monomials}
    out["peak"] = max(
        sum(int(c) * at[m] for s in cand.memory.values() for m, c in s.items()) for cand in memory.candidates
    )
    return out


_STATES = {"weights": "weights", "gradients": "gradients", "optimizer_states": "optimizer"}
points = st.tuples(st.one_of(st.integers(1, 64), st.sampled_from([10**6, 10**9, MAX_SIZE])), st.integers(1, 600))


@examples(25)
@given(config=valid_configs(), training=st.sampled_from(TRAININGS), grid=st.lists(points, min_size=1, max_size=4))
def test_sweep_agrees_with_the_exact_formula(config, training, grid) -> None:
    assume(training.memory.attention == "eager" or has_sdpa(config))
    grid = [(b, min(s, config.max_length or s)) for b, s in grid]
    compiled = compile_quantities(config, training)
    batch = np.array([b for b, _ in grid], dtype=np.int64)
    length = np.array([s for _, s in grid], dtype=np.int64)
    for i, (b, s) in enumerate(grid):
        expected = _exact(config, training, b, s)
        for q, c in compiled.items():
            got = c.constant if c.constant is not None else int(c(batch, length)[i])
            assert got == expected[q], (q, b, s)


@examples(20)
@given(
    config=valid_configs(),
    training=st.sampled_from(TRAININGS),
    unknown=st.sampled_from(["batch", "seq_len"]),
    fixed=st.one_of(st.integers(1, 64), st.sampled_from([10**6, MAX_SIZE])),
    budget=st.one_of(st.integers(1, 2**36), st.integers(2**36, 2**80)),
)
def test_fit_agrees_with_the_exact_formula(config, training, unknown, fixed, budget) -> None:
    assume(training.memory.attention == "eager" or has_sdpa(config))
    if unknown == "batch":
        fixed = min(fixed, config.max_length or fixed)
    args = {"length": fixed} if unknown == "batch" else {"batch": fixed}
    result = fit(config, training, budget, **args)
    b, s = (result.batch, fixed) if unknown == "batch" else (fixed, result.seq_len)
    n = result.value
    if n is None:
        one = _exact(config, training, b or 1, s or 1)["peak"]
        assert result.peak.total == one > budget
        return
    assert result.peak.total == _exact(config, training, b, s)["peak"] <= budget
    formula = result.formula.xreplace({B: b, seq_len: s})
    assert int(formula) == result.peak.total
    if not result.capped:
        above = (b + 1, s) if unknown == "batch" else (b, s + 1)
        assert _exact(config, training, *above)["peak"] > budget


@examples(15)
@given(
    config=valid_configs(),
    training=st.sampled_from(TRAININGS[:2]),
    batch=st.one_of(st.integers(1, 8), st.sampled_from([10**11, MAX_SIZE])),
)
def test_timeline_peak_agrees_with_its_formula(config, training, batch) -> None:
    assume(training.memory.attention == "eager" or has_sdpa(config))
    length = min(16, config.max_length or 16)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder, "config.json")
        path.write_text(json.dumps({"model_type": config.model, **config.hugging_face()}))
        flags = ("--optimizer", training.optimizer, "--precision", training.precision)
        memory = ("--attention", training.memory.attention, "--recompute", training.memory.recompute)
        result = invoke(
            "timeline", "--config", str(path), "-b", str(batch), "-s", str(length), *flags, *memory, "--json"
        )
    assert result.code == 0, result
    peak = json.loads(result.stdout)["peak"]
    values = {**config.symbols(), B: batch, seq_len: length}
    assert int(parse_formula(peak["formula"]).xreplace(values)) == peak["bytes"]
    assert peak["bytes"] == sum(peak["components"].values()) == _exact(config, training, batch, length)["peak"]


@pytest.mark.parametrize("model", sorted(MODELS))
def test_generated_configs_cover_every_family(model) -> None:
    assert MODELS[model].divides and any(str(s) == "L" for s in MODELS[model].fields.values())
