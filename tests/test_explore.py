"""``symbert explore``: the page's JavaScript, run in node, against the Python API at a grid of points.

The page's calculator script (``<script id="calc">``) is the code under test: node runs it on the
page's own data, and every number it gives must equal what ``symbert report``, ``timeline`` and ``fit``
compute in Python for the same setup, built here from the public classes, not from the page builder.
"""

from __future__ import annotations

import functools
import itertools
import json
import os
import re
import shutil
import subprocess
import sys

import pytest
import sympy
from inprocess import invoke

from symbert.analysis.policy import MemoryOptions
from symbert.analysis.report import report
from symbert.api import trace
from symbert.configs import ConfigError, preset
from symbert.gpus import GPUS
from symbert.render import js
from symbert.render.explore import page
from symbert.symbols import B, below, pad512, seq_len
from symbert.training.fit import fit
from symbert.training.states import CATEGORIES, Training, model_states
from symbert.training.step import phases, step_memory

NODE = shutil.which("node")
needs_node = pytest.mark.skipif(NODE is None, reason="node (a JavaScript engine) is not installed")

CONFIG = "bert-tiny"  # the page of the explore_page fixture (tests/conftest.py)


def node(script: str, tmp_path) -> object:
    path = tmp_path / "run.js"
    path.write_text(script)
    done = subprocess.run([NODE, str(path)], capture_output=True, text=True, timeout=60, check=True)
    return json.loads(done.stdout)


def scripts(html: str) -> tuple[str, str]:
    """The page's data and its calculator script."""
    data = re.search(r'<script type="application/json" id="data">(.*?)</script>', html, re.S)[1]
    calc = re.search(r'<script id="calc">(.*?)</script>', html, re.S)[1]
    return data.replace("<\\/", "</"), calc


@needs_node
def test_compiled_brackets_roundings_and_bigints(tmp_path):
    """Each construct the formulas hold, compiled, against sympy's exact value at points that cross
    every bracket and rounding, and past 2**53."""
    exprs = [
        7 * B * seq_len**2 + 3 * below(B, 2) * seq_len,
        sympy.ceiling(seq_len / 32) * B * 4 + 1,
        sympy.floor(seq_len / 3) * 5 + below(seq_len, 33) * B,
        pad512(12 * B * seq_len + 4),
        B * seq_len * (seq_len + 1) / 2,
        sympy.Min(B, 3) * seq_len,
        123456789 * B**3 * seq_len**2,
    ]
    points = [(1, 1), (1, 31), (2, 32), (3, 33), (7, 64), (10**6, 10**5 + 7)]
    fns = ",\n".join(js.function(e, (B, seq_len)) for e in exprs)
    script = f"{js.HELPERS}\nconst F = [{fns}];\nconst P = {json.dumps(points)};\n"
    script += "console.log(JSON.stringify(F.map((f) => P.map(([b, s]) => f(BigInt(b), BigInt(s)).toString()))));"
    got = node(script, tmp_path)
    want = [[str(int(e.subs({B: b, seq_len: s}))) for b, s in points] for e in exprs]
    assert got == want
    assert int(got[-1][-1]) > 2**53  # a value no double holds, exact


def truth(config, training: Training, batch: int, length: int) -> dict:
    """What the CLI's report, timeline and fit give at one point."""
    graph, sizes = trace(config), config.symbols()
    r = report(config, batch, length, training.memory)
    states = model_states(graph, training)
    memory = _memory(config.name, training)
    steps = phases(memory.timeline({**sizes, B: batch, seq_len: length}))
    top = max((p.peak for p in steps), key=lambda p: p.total)
    return {
        "params": str(r.value("params")),
        "act": str(r.value("activation_bytes")),
        "ff": str(r.value("flops_forward")),
        "fb": str(r.value("flops_backward")),
        **{k: str(int(states[k].subs(sizes))) for k in ("weights", "gradients", "optimizer")},
        "phases": [[p.step, p.name, str(p.peak.total), p.peak.where, str(p.end)] for p in steps],
        "peak": [str(top.bytes[c]) for c in CATEGORIES],
        "where": top.where,
    }


@functools.lru_cache(maxsize=64)
def _memory(name: str, training: Training):
    config = preset(name)
    return step_memory(trace(config), training, config.symbols())


CALL = """
const DATA = JSON.parse(require("fs").readFileSync(process.argv[2], "utf8"));
%s
const out = %s.map((st) => {
  const r = evaluate(DATA.models[0], st);
  return {params: String(r.params), act: String(r.act), ff: String(r.ff), fb: String(r.fb),
    weights: String(r.weights), gradients: String(r.gradients), optimizer: String(r.optimizer),
    phases: r.phases.map((p) => [p.step, p.phase, String(p.peak.total), p.peak.where, String(p.end)]),
    peak: r.peak.parts.map(String), where: r.peak.where, largest: String(r.largest),
    fit: r.fit === null ? null : String(r.fit), reserved: r.reserved === null ? null : String(r.reserved)};
});
console.log(JSON.stringify(out));
"""


def run_page(html: str, states: list[dict], tmp_path) -> list[dict]:
    data, calc = scripts(html)
    (tmp_path / "data.json").write_text(data)
    path = tmp_path / "calc.js"
    path.write_text(CALL % (calc, json.dumps(states)))
    done = subprocess.run(
        [NODE, str(path), str(tmp_path / "data.json")], capture_output=True, text=True, timeout=60, check=True
    )
    return json.loads(done.stdout)


def _training(precision: str, attention: str, recompute: str, optimizer: str, gpu: str) -> Training:
    return Training(optimizer, precision, MemoryOptions("torch-cuda", attention=attention, recompute=recompute), gpu)


@needs_node
def test_page_equals_report_timeline_and_fit(tmp_path, explore_page):
    """Every setup of the page, at points that cross B = 1 and the ⌈seq_len/32⌉ steps, equals the CLI."""
    config, (path, axes, _) = preset(CONFIG), explore_page
    setups = list(itertools.product(axes.precision, axes.attention, axes.recompute, axes.optimizer, axes.gpu))
    points = [(1, 1), (2, 33), (3, 128), (5, 512)]
    states = [  # one point per setup, each point at eight setups
        dict(zip(("precision", "attention", "recompute", "optimizer", "gpu"), s, strict=True), B=b, seq_len=n)
        for s, (b, n) in zip(setups, itertools.cycle(points), strict=False)
    ]
    got = run_page(path.read_text(), states, tmp_path)
    for state, page_values in zip(states, got, strict=True):
        setup = tuple(state[k] for k in ("precision", "attention", "recompute", "optimizer", "gpu"))
        want = truth(config, _training(*setup), state["B"], state["seq_len"])
        assert {k: page_values[k] for k in want} == want, (setup, state["B"], state["seq_len"])


def cli_json(*args: str) -> dict:
    outcome = invoke(*args, "--preset", CONFIG, "--json")
    assert outcome.code == 0, outcome.stderr
    return json.loads(outcome.stdout)


def flags(state: dict) -> list[str]:
    return [f"--{k}={state[k]}" for k in ("precision", "attention", "recompute", "optimizer", "gpu")]


@needs_node
def test_largest_batch_and_reserved_equal_fit(tmp_path, explore_page):
    """The page's closed-form largest batch is `fit --closed-form`'s at any point. On the grid, for the
    command's precision, attention, recompute and optimizer and every GPU, its allocator answers are the
    CLI's simulation: the largest batch `fit` finds without --closed-form, and the reserved peak of `timeline`
    (the highest of its phases'); off the grid, or at another setup, they are absent."""
    config, (path, _, base) = preset(CONFIG), explore_page
    own = {"precision": "fp32", "attention": "eager", "recompute": "none", "optimizer": "adamw"}
    assert (base.precision, base.optimizer, base.memory.recompute) == ("fp32", "adamw", "none")
    states = [
        {**own, "gpu": "h100", "B": 2, "seq_len": 8},
        {**own, "gpu": "t4", "B": 2, "seq_len": 16},
        {**own, "gpu": "t4", "B": 3, "seq_len": 16},  # B off the grid: the largest batch only
        {**own, "gpu": "h100", "B": 2, "seq_len": 32},  # seq_len off the grid: neither
        {"precision": "amp", "attention": "sdpa", "recompute": "full", "optimizer": "sgd", "gpu": "t4", "B": 2,
         "seq_len": 16},  # another setup: neither
    ]
    got = run_page(path.read_text(), states, tmp_path)
    for i, (state, page_values) in enumerate(zip(states, got, strict=True)):
        training = _training(*(state[k] for k in ("precision", "attention", "recompute", "optimizer", "gpu")))
        budget = GPUS[state["gpu"]].memory
        assert page_values["largest"] == str(fit(config, training, budget, length=state["seq_len"]).value)
        if i < 3:
            solved = cli_json("fit", *flags(state), "--seq-len", str(state["seq_len"]))
            assert solved["allocator"]["simulations"] >= 1  # the allocator's answer, not the closed form's
            assert page_values["fit"] == str(solved["batch"] or 0)
        else:
            assert page_values["fit"] is None
        if i < 2:
            timeline = cli_json("timeline", *flags(state), "-b", str(state["B"]), "-s", str(state["seq_len"]))
            assert page_values["reserved"] == str(max(p["reserved"] for p in timeline["phases"] if "reserved" in p))
        else:
            assert page_values["reserved"] is None


BUILD = """
import sys
from symbert.analysis.policy import MemoryOptions
from symbert.training.states import Training
from symbert.configs import preset
from symbert.render.explore import Axes, page
axes = Axes(("fp32",), ("sdpa",), ("none",), ("adamw",), ("t4", "h100"))
base = Training("adamw", "fp32", MemoryOptions("torch-cuda", attention="sdpa"), "t4")
sys.stdout.write(page([preset("bert-tiny"), preset("bert-mini")], base, 2, 64, ([1], [8, 16]), axes))
"""


def test_deterministic_and_refusals(explore_page):
    """Two builds in processes with different hash seeds are the same bytes; a grid or seq_len out of
    range is refused."""
    runs = [
        subprocess.Popen(
            [sys.executable, "-c", BUILD], stdout=subprocess.PIPE, env={**os.environ, "PYTHONHASHSEED": seed}
        )
        for seed in ("1", "2")
    ]
    first, second = (run.communicate(timeout=120)[0] for run in runs)
    assert first == second and b"bert-mini" in first
    _, axes, base = explore_page
    with pytest.raises(ConfigError, match="positions"):
        page([preset(CONFIG)], base, 8, 513, ([1], [8]), axes)
    with pytest.raises(ConfigError, match="at most 64"):
        page([preset(CONFIG)], base, 8, 128, (list(range(1, 10)), list(range(1, 10))), axes)


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (("--grid-batch", "x"), "cannot read --grid-batch"),
        (("--seq-len", "513"), "exceeds bert-tiny's 512 positions"),
        (("--data-parallel", "2"), "explore draws one GPU"),
        (("--gpu", "h1000"), "unknown GPU"),
    ],
)
def test_command_refuses_in_one_line(args, says, tmp_path):
    outcome = invoke("explore", "--preset", "bert-tiny", *args, "-o", str(tmp_path / "a.html"))
    assert outcome.refused and says in outcome.stderr
    assert not (tmp_path / "a.html").exists()
