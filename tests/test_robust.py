"""Issue 12: bad or unusual input gets one line and exit status 2, or the right exact answer; never a traceback,
never a wrapped-around number."""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import time
from pathlib import Path

import graphviz
import numpy as np
import pytest
from inprocess import invoke

from symbert import parse_formula, preset, with_overrides
from symbert.analysis.policy import MemoryOptions
from symbert.analysis.report import report
from symbert.api import trace
from symbert.configs import MAX_SIZE
from symbert.outputs import writing
from symbert.symbols import B, seq_len
from symbert.training.fit import fit
from symbert.training.states import Training
from symbert.training.step import phases, step_memory
from symbert.training.sweep import compile_quantities

ADAMW = Training("adamw", "fp32", MemoryOptions("torch-cuda"))
#: What every command runs without flags: torch-cuda, sdpa (BERT's default in Hugging Face), Trainer's fused AdamW.
DEFAULTS = Training("adamw-fused", "fp32", MemoryOptions("torch-cuda", attention="sdpa"))
HUGE = "9" * 5000


_REPLAYS: dict[tuple[str, Training], object] = {}


def _replay(config, training: Training):
    key = (json.dumps(config.as_dict(), sort_keys=True, default=str), training)
    if key not in _REPLAYS:
        _REPLAYS[key] = step_memory(trace(config), training, config.symbols())
    return _REPLAYS[key]


def exact_peak(config, training: Training, batch: int, length: int) -> int:
    """The training-step peak from every candidate's terms, in Python integers: no numpy at all."""
    values = {**config.symbols(), B: batch, seq_len: length}
    memory = _replay(config, training)
    at = {m: int(m.xreplace(values)) for m in memory.monomials}
    return max(sum(int(c) * at[m] for s in cand.memory.values() for m, c in s.items()) for cand in memory.candidates)


def write(tmp_path: Path, name: str, content: str | dict) -> str:
    path = tmp_path / name
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    return str(path)


# ---- config files and values


@pytest.mark.parametrize("model_type", [["bert"], {"a": 1}, 7, None, True])
def test_model_type_of_the_wrong_type(tmp_path, model_type) -> None:
    path = write(tmp_path, "f.json", {"model_type": model_type})
    for args in (("params", "--config", path), ("compare", "bert-base", path)):
        result = invoke(*args)
        assert result.refused, result
        assert "unsupported model_type" in result.stderr


@pytest.mark.parametrize("key", ["vocab_size", "num_labels", "hidden_dropout_prob"])
def test_integers_of_thousands_of_digits_in_a_config_file(tmp_path, key) -> None:
    path = write(tmp_path, "big.json", f'{{"model_type": "bert", "{key}": {HUGE}}}')
    result = invoke("params", "--config", path)
    assert result.refused, result
    assert "5000-digit" in result.stderr and len(result.stderr) < 300


@pytest.mark.parametrize(
    "args",
    [
        ("params", "--set", f"vocab_size={HUGE}"),
        ("params", "--set", f"hidden_dropout_prob={HUGE}"),
        ("sweep", "bert-base", "--batch", HUGE),
        ("sweep", "bert-base", "--seq-len", f"1:{HUGE}"),
        ("report", "--batch", HUGE),
        ("fit", "--gpu-memory", HUGE + "GiB", "-s", "128"),
        ("fit", "--gpu-memory", "1." + HUGE + "GiB", "-s", "128"),
    ],
)
def test_integers_of_thousands_of_digits_on_the_command_line(args) -> None:
    result = invoke(*args)
    assert result.refused, result
    assert len(result.stderr) < 600


def test_sizes_above_the_documented_maximum_are_refused() -> None:
    assert invoke("params", "--set", f"vocab_size={MAX_SIZE}").code == 0
    result = invoke("params", "--set", f"vocab_size={MAX_SIZE + 1}")
    assert result.refused and "sizes up to 10**12" in result.stderr
    for args in (("--num-labels", str(10**30), "--head", "sequence-classification"), ("--batch", str(10**13))):
        assert invoke("report", *args).refused


def test_deeply_nested_json(tmp_path) -> None:
    for depth in (100_000, 100):
        path = write(tmp_path, "deep.json", '{"model_type": "bert", "a": ' + "[" * depth + "]" * depth + "}")
        result = invoke("params", "--config", path)
        assert result.refused, result
        assert "nested too deeply" in result.stderr
    nested = '{"model_type": "bert", "a": ' + "[" * 30 + "]" * 30 + "}"
    assert invoke("params", "--config", write(tmp_path, "ok.json", nested)).code == 0


def test_config_files_that_are_not_files_or_too_large(tmp_path) -> None:
    start = time.monotonic()
    assert invoke("params", "--config", "/dev/zero").refused
    assert invoke("params", "--config", str(tmp_path)).refused
    sparse = tmp_path / "huge.json"
    with open(sparse, "wb") as f:
        f.truncate(17 * 2**20)
    result = invoke("params", "--config", str(sparse))
    assert result.refused and "larger than a config file may be" in result.stderr
    assert time.monotonic() - start < 10


def test_a_named_pipe_is_read(tmp_path) -> None:
    fifo = tmp_path / "config.json"
    os.mkfifo(fifo)
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child writes the config and leaves
        with open(fifo, "w") as f:
            f.write('{"model_type": "bert", "num_hidden_layers": 2}')
        os._exit(0)
    result = invoke("params", "--config", str(fifo), "--json")
    os.waitpid(pid, 0)
    assert result.code == 0 and json.loads(result.stdout)["config"]["num_hidden_layers"] == 2


# ---- overflow: exact answers or one line


def test_fit_with_a_huge_batch_is_exact() -> None:
    result = invoke("fit", "--batch", "1000000000000", "--seq-len", "512", "--json")
    assert result.code == 0, result
    data = json.loads(result.stdout)
    assert data["memory"] == exact_peak(preset("bert-base"), DEFAULTS, 10**12, 512)
    formula = parse_formula(data["formula"])
    assert int(formula.subs({B: 10**12, seq_len: 512})) == data["memory"]


def test_fit_never_wraps_around() -> None:
    """Issue 12: `peak -8447835.26 TiB; fits` at batch 10**11 (int64 wrapped)."""
    result = invoke("fit", "--batch", "100000000000", "--seq-len", "512", "--gpu-memory", "16GiB", "--json")
    assert result.code == 0, result
    data = json.loads(result.stdout)
    assert data["fits"] is False
    assert data["memory"] == exact_peak(preset("bert-base"), DEFAULTS, 10**11, 512) > 0
    text = invoke("fit", "--batch", "100000000000", "--seq-len", "512", "--gpu-memory", "16GiB").stdout
    assert "runs out of memory" in text and "-" not in text.split("the closed form: peak", 1)[1].split(" at ", 1)[0]
    assert "over the cap" in text


def test_fit_with_a_huge_budget() -> None:
    assert invoke("fit", "--gpu-memory", "99999999999999999999999TiB", "--seq-len", "512").refused
    result = invoke("fit", "--gpu-memory", "1000000TiB", "--seq-len", "512", "--closed-form", "--json")
    assert result.code == 0, result
    data = json.loads(result.stdout)
    config = preset("bert-base")
    n = data["batch"]
    above = exact_peak(config, DEFAULTS, n + 1, 512)
    assert exact_peak(config, DEFAULTS, n, 512) == data["memory"] <= 10**6 * 2**40 < above
    assert not data["capped_by_size_limit"]


def test_fit_stops_at_the_size_limit() -> None:
    """10**9 TiB would hold about 1.5·10**12 bert-base samples of 512 tokens, more than the 10**12 symbert
    accepts: the answer is 10**12, marked as stopped by the size limit, and its peak is the exact one."""
    result = invoke("fit", "--gpu-memory", "1000000000TiB", "--seq-len", "512", "--json")
    assert result.code == 0, result
    data = json.loads(result.stdout)
    assert (data["batch"], data["capped_by_size_limit"]) == (10**12, True)
    assert exact_peak(preset("bert-base"), DEFAULTS, 10**12, 512) == data["memory"] <= 10**9 * 2**40


@pytest.mark.parametrize("command", ["fit", "timeline", "plot", "sweep"])
def test_vocab_size_of_10_to_the_30(tmp_path, command) -> None:
    args = {
        "fit": ("fit", "-s", "128", "-b", "1"),
        "timeline": ("timeline",),
        "plot": ("plot", "-o", str(tmp_path / "m.png")),
        "sweep": ("sweep", "bert-base", "-b", "1", "-s", "8"),
    }[command]
    result = invoke(*args, "--set", f"vocab_size={10**30}")
    assert result.refused, result
    assert "vocab_size" in result.stderr


def test_sizes_at_the_maximum_are_exact(tmp_path) -> None:
    sets = ("--set", f"vocab_size={MAX_SIZE}", "--set", "hidden_size=999999999996")
    config = with_overrides(preset("bert-base"), [f"vocab_size={MAX_SIZE}", "hidden_size=999999999996"])
    peak = exact_peak(config, DEFAULTS, 3, 128)
    assert peak > 2**63
    fitted = json.loads(invoke("fit", "-s", "128", "-b", "3", *sets, "--json").stdout)
    assert fitted["memory"] == peak
    timeline = json.loads(invoke("timeline", "-b", "3", *sets, "--json").stdout)
    assert timeline["peak"]["bytes"] == peak
    swept = invoke("sweep", "bert-base", "-b", "3", "-s", "128", "-q", "peak", *sets)
    assert swept.stdout.splitlines()[1].endswith(f",{peak}")
    assert invoke("plot", "-o", str(tmp_path / "m.svg"), *sets).code == 0


def test_sweep_huge_batches() -> None:
    assert invoke("sweep", "bert-base", "-b", "100000000000000000000").refused
    result = invoke("sweep", "bert-base", "-b", "1000000000000", "-s", "512")
    assert result.code == 0, result
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    r = report(preset("bert-base"), 10**12, 512, MemoryOptions("torch-cuda", attention="sdpa"))
    for q in ("params", "activation_bytes", "flops_forward", "flops_backward", "non_matmul_forward"):
        assert int(rows[0][q]) == r.value(q)
    assert int(rows[0]["peak"]) == exact_peak(preset("bert-base"), DEFAULTS, 10**12, 512)


def test_sweep_flops_match_report() -> None:
    """Issue 12: sweep printed 880844687890448384 where report gives 19327588761600000000."""
    result = invoke("sweep", "bert-base", "-b", "200000000", "-s", "512", "-q", "flops_forward")
    assert result.stdout.splitlines()[1].endswith(",19327588761600000000")
    assert report(preset("bert-base"), 200000000, 512).value("flops_forward") == 19327588761600000000


def test_sweep_grid_is_bounded() -> None:
    start = time.monotonic()
    for args in (("--batch", "1:1000000000"), ("--batch", "1:900000", "--seq-len", "1:20")):
        result = invoke("sweep", "bert-base", *args)
        assert result.refused, result
    assert time.monotonic() - start < 10


def test_sweep_with_sgd() -> None:
    result = invoke("sweep", "bert-base", "--optimizer", "sgd", "-b", "1,2", "-s", "128")
    assert result.code == 0, result
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert [r["optimizer_states"] for r in rows] == ["0", "0"]
    sgd = Training("sgd", "fp32", MemoryOptions("torch-cuda", attention="sdpa"))
    assert int(rows[1]["peak"]) == exact_peak(preset("bert-base"), sgd, 2, 128)


def test_sweep_quotes_csv_fields(tmp_path) -> None:
    path = write(tmp_path, "a,b.json", {"model_type": "bert", "num_hidden_layers": 2})
    result = invoke("sweep", path, "-b", "1", "-s", "8", "-q", "params")
    assert result.code == 0, result
    rows = list(csv.reader(io.StringIO(result.stdout)))
    assert rows[1][0] == "a,b" and len(rows[1]) == len(rows[0])


def test_timeline_peak_equals_its_formula() -> None:
    result = invoke("timeline", "--batch", "100000000000", "--json")
    assert result.code == 0, result
    data = json.loads(result.stdout)
    config = preset("bert-base")
    formula = parse_formula(data["peak"]["formula"])
    values = {**config.symbols(), B: 10**11, seq_len: 128}
    assert int(formula.subs(values)) == data["peak"]["bytes"] == sum(data["peak"]["components"].values())
    assert data["peak"]["bytes"] == exact_peak(config, DEFAULTS, 10**11, 128)


def test_timeline_with_many_layers_is_fast_and_exact() -> None:
    start = time.monotonic()
    result = invoke("timeline", "--set", "num_hidden_layers=100000", "--json")
    assert result.code == 0, result
    assert time.monotonic() - start < 20
    config = with_overrides(preset("bert-base"), ["num_hidden_layers=100000"])
    assert json.loads(result.stdout)["peak"]["bytes"] == exact_peak(config, DEFAULTS, 1, 128)


@pytest.mark.parametrize("layers", [3, 5])
@pytest.mark.parametrize(
    "training",
    [
        ADAMW,
        Training("sgd", "mixed", MemoryOptions("torch-cuda", None, "flash", "selective")),
        Training("momentum", "fp32", MemoryOptions("torch-cpu", None, "eager", "full")),
    ],
)
def test_timeline_phases_from_three_runs_equal_the_full_replay(layers, training) -> None:
    config = with_overrides(preset("bert-tiny"), [f"num_hidden_layers={layers}"])
    values = {**config.symbols(), B: 3, seq_len: 17}
    graph = trace(config)
    full = phases(step_memory(graph, training, values, full=True).timeline(values))
    short = phases(step_memory(graph, training, config.symbols()).timeline(values))
    assert [(p.step, p.name, dict(p.peak.bytes), p.peak.where, p.end) for p in short] == [
        (p.step, p.name, dict(p.peak.bytes), p.peak.where, p.end) for p in full
    ]


def test_timeline_plot_of_many_layers_is_refused(tmp_path) -> None:
    result = invoke("timeline", "--set", "num_hidden_layers=100000", "--plot", str(tmp_path / "t.png"))
    assert result.refused and "too many" in result.stderr


# ---- output paths


def _outputs(path: str) -> list[tuple[str, ...]]:
    return [
        ("plot", "--preset", "bert-tiny", "-o", path + ".png"),
        ("timeline", "--preset", "bert-tiny", "--plot", path + ".png"),
        ("sweep", "bert-tiny", "-b", "1", "-s", "8", "-o", path + ".csv"),
        ("diagram", "--preset", "bert-tiny", "-o", path + ".dot"),
    ]


@pytest.mark.parametrize("where", ["/proc/x", "/sys/x", "/etc/passwd/x", "{tmp}/missing/x", "{tmp}"])
def test_output_paths_that_cannot_be_written(tmp_path, where) -> None:
    base = where.format(tmp=tmp_path)
    if base == str(tmp_path):
        (tmp_path / "folder.png").mkdir()
        (tmp_path / "folder.csv").mkdir()
        (tmp_path / "folder.dot").mkdir()
        base = str(tmp_path / "folder")
    for args in _outputs(base):
        result = invoke(*args)
        assert result.refused, (args, result)
        assert "cannot write" in result.stderr
    assert not (tmp_path / "missing").exists()


def test_outputs_are_written_whole(tmp_path) -> None:
    for args in _outputs(str(tmp_path / "out")):
        result = invoke(*args)
        assert result.code == 0, (args, result)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.csv", "out.dot", "out.png"]
    assert invoke("sweep", "bert-tiny", "-b", "1", "-s", "8", "-o", "/dev/null").code == 0
    assert Path("/dev/null").is_char_device()


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path) -> None:
    target = tmp_path / "out.csv"
    target.write_text("old\n")
    with pytest.raises(RuntimeError), writing(target) as out:
        out.write(b"config,batch\n")
        raise RuntimeError("the sweep failed half-way")
    assert target.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["out.csv"]


# ---- diagrams


@pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz's dot is not installed")
def test_diagram_of_a_config_file_with_quotes_markup_and_a_trailing_backslash(tmp_path) -> None:
    path = write(tmp_path, 'we"ird<b>&x\\.json', {"model_type": "bert", "num_hidden_layers": 2})
    for fmt in ("dot", "svg"):
        result = invoke("diagram", "--config", path, "--format", fmt, "-o", str(tmp_path / f"d.{fmt}"))
        assert result.code == 0, result
    assert "we&quot;ird&lt;b&gt;&amp;x\\" in (tmp_path / "d.svg").read_text()


def test_a_graphviz_failure_is_one_line(tmp_path, monkeypatch) -> None:
    def fail(*args, **kwargs):
        raise graphviz.CalledProcessError(1, ["dot"], stderr=b"Error: <stdin>: syntax error in line 1\nmore\n")

    monkeypatch.setattr(graphviz, "pipe", fail)
    result = invoke("diagram", "--format", "svg", "-o", str(tmp_path / "d.svg"))
    assert result.refused, result
    assert "syntax error in line 1" in result.stderr
    assert not (tmp_path / "d.svg").exists()


# ---- the fast numeric path against the exact formula


def test_sweep_compiled_polynomials_past_int64() -> None:
    config = with_overrides(preset("bert-large"), [f"vocab_size={MAX_SIZE}", "num_hidden_layers=1000000"])
    compiled = compile_quantities(config, ADAMW)
    batch = np.array([1, 7, 10**12], dtype=np.int64)
    length = np.array([512, 3, 512], dtype=np.int64)
    values = compiled["peak"](batch, length)
    expected = [exact_peak(config, ADAMW, int(b), int(s)) for b, s in zip(batch, length, strict=True)]
    assert [int(v) for v in values] == expected


def test_validate_refuses_a_model_too_large_to_build() -> None:
    start = time.monotonic()
    result = invoke("validate", "--set", f"vocab_size={MAX_SIZE}")
    assert result.refused and "validate builds and runs the real model" in result.stderr
    assert time.monotonic() - start < 10


def test_fit_solution_is_exact_at_huge_sizes() -> None:
    config = with_overrides(preset("bert-base"), ["hidden_size=120000000"])
    result = fit(config, ADAMW, 2**80, length=512)
    n = result.batch
    assert n is not None and result.peak.total > 2**63
    assert exact_peak(config, ADAMW, n, 512) == result.peak.total <= 2**80 < exact_peak(config, ADAMW, n + 1, 512)


# ---- issue 23: the command line's edges

TINY_FILE = {"model_type": "bert", "hidden_size": 128, "num_hidden_layers": 2, "num_attention_heads": 2,
             "intermediate_size": 512}


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (("--preset", "bert-tiny", "--preset", "bert-base"), "this command reads one config"),
        (("--config", "a.json", "--config", "b.json"), "this command reads one config"),
        (("--preset", "bert-tiny", "--config", "a.json", "--preset", "bert-base"), "this command reads one config"),
        (("--preset", "bert-tiny", "--config", "a.json"), "give either --preset or --config, not both"),
    ],
)
def test_a_repeated_one_config_option_is_refused(args, says) -> None:
    for command in ("params", "report", "fit"):
        outcome = invoke(command, *args)
        assert outcome.refused and says in outcome.stderr, outcome.stderr


@pytest.mark.parametrize(
    ("args", "api", "says"),
    [
        (("timeline", "--zero", "3"), {"layout": {"zero": 3}}, "ZeRO shards over the data-parallel group: --zero 3"),
        (("timeline", "--zero-engine", "deepspeed"), {"zero_engine": "deepspeed"}, "--zero-engine changes nothing"),
        (("fit", "--gpu", "h100", "-s", "64", "--closed-form", "--cuda-context", "1GiB"),
         {"gpu": "h100", "seq_len": 64, "closed_form": True, "cuda_context": "1GiB"},
         "--cuda-context sets up the allocator's simulation, which does not run: --closed-form leaves it out"),
        (("fit", "--gpu", "h100", "-s", "64", "--policy", "megatron", "--alloc-conf", "expandable_segments:True"),
         {"gpu": "h100", "seq_len": 64, "policy": "megatron", "alloc_conf": "expandable_segments:True"},
         "--alloc-conf sets up the allocator's simulation, which does not run: it runs under --policy torch-cuda"),
        (("fit", "--gpus", "2", "--gpu", "h100", "--cuda-context", "1GiB"), {"gpus": 2, "gpu": "h100",
         "cuda_context": "1GiB"}, "does not run: --gpus plans with the closed form"),
    ],
)
def test_options_that_change_nothing_are_refused_by_the_command_and_the_api(args, api, says) -> None:
    import symbert
    from symbert.parallel import Layout

    outcome = invoke(*args, "--preset", "bert-tiny")
    assert outcome.refused and says in outcome.stderr, outcome.stderr
    with pytest.raises(ValueError) as raised:
        if "layout" in api:  # the API takes the layout whole
            Layout(**api["layout"])
        else:
            (symbert.fit if args[0] == "fit" else symbert.timeline)("bert-tiny", **api)
    assert says in str(raised.value)


def test_the_options_that_do_matter_are_kept() -> None:
    """--zero-engine over d = 2, and where fit --gpus searches the layouts; --zero 0 on one GPU (the default)."""
    found = invoke("timeline", "--preset", "bert-tiny", "--data-parallel", "2", "--zero", "3", "--zero-engine",
                   "deepspeed", "--json")
    assert found.code == 0, found.stderr
    planned = invoke("fit", "--preset", "bert-tiny", "--gpus", "2", "--gpu", "h100", "-s", "64", "--zero-engine",
                     "deepspeed", "--json")
    assert planned.code == 0, planned.stderr
    assert invoke("timeline", "--preset", "bert-tiny", "--zero", "0", "--json").code == 0


@pytest.mark.parametrize("command", [("params",), ("report", "-s", "8"), ("compare", "bert-tiny")])
def test_control_characters_in_names_are_escaped_and_long_names_shortened(tmp_path, command) -> None:
    evil = write(tmp_path, "evil.json", {**TINY_FILE, "_name_or_path": "evil\x1b[31mred\nline\x07"})
    long = write(tmp_path, "long.json", {**TINY_FILE, "_name_or_path": "a" * 100 + "Z" * 100})
    for path, shown in ((evil, r"evil\x1b[31mred\nline\x07"), (long, "a" * 29 + "…" + "Z" * 30)):
        outcome = invoke(*command, "--config", path)
        assert outcome.code == 0, outcome.stderr
        assert shown in outcome.stdout
        assert not any(c in outcome.stdout for c in "\x1b\x07") and "a" * 30 not in outcome.stdout


def test_errors_about_a_value_in_a_config_file_name_the_file_and_the_key(tmp_path) -> None:
    cases = {"hidden_size": "big", "num_hidden_layers": 0, "intermediate_size": 10**13}
    for key, value in cases.items():
        path = write(tmp_path, f"{key}.json", {**TINY_FILE, key: value})
        outcome = invoke("params", "--config", path)
        assert outcome.refused and outcome.stderr.startswith(f"symbert: error: {path}: {key}"), outcome.stderr
    divides = write(tmp_path, "heads.json", {**TINY_FILE, "num_attention_heads": 3})
    outcome = invoke("params", "--config", divides)
    assert outcome.refused and f"{divides}: hidden_size=128 is not divisible by num_attention_heads=3" in outcome.stderr


def test_config_dash_reads_standard_input() -> None:
    """bert-tiny (google/bert_uncased_L-2_H-128_A-2) has 4,385,920 parameters; read from standard input."""
    outcome = invoke("params", "--config", "-", "--json", stdin=json.dumps(TINY_FILE))
    assert outcome.code == 0, outcome.stderr
    assert json.loads(outcome.stdout)["params"] == 4_385_920
    both = invoke("compare", "-", "bert-tiny", "--json", stdin=json.dumps(TINY_FILE))
    assert both.code == 0, both.stderr
    bad = invoke("params", "--config", "-", stdin=json.dumps({**TINY_FILE, "hidden_size": 0}))
    assert bad.refused and "<stdin>: hidden_size must be a positive integer" in bad.stderr


def test_a_decimal_memory_unit_is_said_plainly() -> None:
    """24GB is 24·10⁹ bytes: 24,000,000,000 / 2³⁰ = 22.3517… GiB; 1.5TB = 1.5·10¹² bytes = 1.364… TiB."""
    from symbert.training.fit import decimal_note

    outcome = invoke("fit", "--preset", "bert-tiny", "-s", "64", "--gpu-memory", "24GB", "--closed-form")
    assert outcome.code == 0
    assert outcome.stderr == "symbert: note: 24GB = 24·10⁹ bytes = 22.35 GiB; write 24GiB for 24·2³⁰\n"
    assert decimal_note("1.5tb") == "1.5TB = 1.5·10¹² bytes = 1.36 TiB; write 1.5TiB for 1.5·2⁴⁰"
    assert decimal_note("1KB") == "1KB = 1·10³ bytes = 1,000 bytes; write 1KiB for 1·2¹⁰"
    for plain in ("24GiB", "17179869184", "16000MiB", "24B", "nonsense"):
        assert decimal_note(plain) is None
    assert invoke("fit", "--preset", "bert-tiny", "-s", "64", "--gpu-memory", "24GiB", "--closed-form").stderr == ""
