"""One interface: --preset/--config everywhere, CONFIG precedence, labels, refused sizes and formats, help,
quantity aliases, validate's early checks, output that fits 80 columns, and deterministic diagram PDFs."""

from __future__ import annotations

import csv
import io
import json
import re
import shutil
import subprocess
import sys
import time

import pytest
from conftest import ROOT, run_cli

import symbert
from symbert.cli import main
from symbert.quantities import ALIASES, QUANTITIES, TRAINING_QUANTITIES, canonical

BERT_TINY = symbert.preset("bert-tiny")
needs_dot = pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz's dot is not installed")


@pytest.fixture
def cli(capsys, monkeypatch):
    """Run ``symbert ARGS`` in-process through the real entry point: (exit status, stdout, stderr)."""
    monkeypatch.delenv("COLUMNS", raising=False)

    def run(*args: str) -> tuple[int, str, str]:
        monkeypatch.setattr(sys, "argv", ["symbert", *args])
        with pytest.raises(SystemExit) as exc:
            main()
        out, err = capsys.readouterr()
        return exc.value.code, out, err

    return run


def one_line_error(result: tuple[int, str, str], message: str = "") -> None:
    code, out, err = result
    assert code == 2, err
    assert out == ""
    assert err.startswith("symbert: error: ") and err.count("\n") == 1, err
    assert message in err


def write_config(path, **extra) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({**BERT_TINY.values, "model_type": "bert", **extra}))


# --preset / --config on every command that reads a config


SINGLE = (
    ("params",),
    ("graph",),
    ("report", "-s", "8"),
    ("diagram", "--level", "overview"),
    ("explain", "params"),
    ("fit", "-b", "1", "-s", "8"),
    ("timeline", "-s", "8"),
)
MULTI = (
    ("latex", "-q", "params"),
    ("table",),
    ("sweep", "-b", "1", "-s", "8", "-q", "params"),
)


@pytest.mark.parametrize("args", SINGLE + MULTI, ids=lambda a: a[0])
def test_every_config_command_takes_preset_and_config(cli, tmp_path, args) -> None:
    path = tmp_path / "tiny-conf" / "config.json"  # a label as long as bert-tiny
    write_config(path)
    by_preset = cli(*args, "--preset", "bert-tiny")
    by_file = cli(*args, "--config", str(path))
    assert by_preset[0] == 0 and by_file[0] == 0, (by_preset[2], by_file[2])
    assert by_preset[1].replace("bert-tiny", "tiny-conf") == by_file[1]


def test_validate_and_plot_take_preset_and_config(cli) -> None:
    for command in ("validate", "plot"):
        code, out, _ = cli(command, "--help")
        assert code == 0 and "--preset NAME" in out and "--config FILE" in out


def test_multi_config_commands_take_repeated_options_in_order(cli, tmp_path) -> None:
    path = tmp_path / "small" / "config.json"
    write_config(path, hidden_size=256, num_attention_heads=4, intermediate_size=1024, num_hidden_layers=4)
    args = ("--preset", "bert-tiny", "--config", str(path), "--preset", "bert-mini")
    code, out, err = cli("table", *args, "--format", "csv")
    assert code == 0, err
    assert out.splitlines()[0] == "component,formula,bert-tiny,small,bert-mini"
    code, out, err = cli("compare", "--config", str(path), "--preset", "bert-tiny", "--json")
    assert code == 0, err
    data = json.loads(out)
    assert [c["name"] for c in data["configs"]] == ["small", "bert-tiny"]
    code, out, _ = cli("sweep", "bert-tiny", "--preset", "bert-mini", "-b", "1", "-s", "8", "-q", "params")
    assert [row["config"] for row in csv.DictReader(io.StringIO(out))] == ["bert-tiny", "bert-mini"]


def test_compare_needs_two_configs(cli) -> None:
    one_line_error(cli("compare", "--preset", "bert-tiny"), "compare needs two or more configs")
    one_line_error(cli("table"), "give at least one CONFIG")


def test_presets_lists_and_filters(cli) -> None:
    code, out, _ = cli("presets", "bert-L2*")
    assert code == 0 and out.split() == ["bert-L2-H128", "bert-L2-H256", "bert-L2-H512", "bert-L2-H768"]
    one_line_error(cli("presets", "gpt*"), "no preset matches")


# CONFIG precedence


def test_files_named_like_presets_never_shadow_them(tmp_path) -> None:
    (tmp_path / "bert-large").mkdir()
    (tmp_path / "bert-tiny").write_text("not json")
    result = run_cli("table", "bert-tiny", "bert-large", "--format", "csv", cwd=str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0] == "component,formula,bert-tiny,bert-large"
    # A path (a separator, or .json) is always a file.
    result = run_cli("table", "./bert-tiny", cwd=str(tmp_path))
    one_line_error((result.returncode, result.stdout, result.stderr), "is not valid JSON")


def test_positional_config_rules(cli, tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    write_config(tmp_path / "mine.json")
    write_config(tmp_path / "plain")  # not a preset name and no .json: an existing file
    code, out, err = cli("table", "mine.json", "plain", "--format", "csv")
    assert code == 0, err
    assert out.splitlines()[0] == "component,formula,mine,plain"
    one_line_error(cli("table", "bert-tinyy"), "unknown preset 'bert-tinyy'; did you mean bert-tiny")
    one_line_error(cli("table", "missing.json"), "cannot read missing.json")
    one_line_error(cli("table", ""), "empty CONFIG")


# labels of config files


def test_checkpoint_configs_are_labelled_by_folder_or_name_or_path(cli, tmp_path) -> None:
    write_config(tmp_path / "ckpt-a" / "config.json")
    write_config(tmp_path / "ckpt-b" / "config.json")
    assert symbert.from_file(tmp_path / "ckpt-a" / "config.json").name == "ckpt-a"
    assert symbert.from_file(tmp_path / "ckpt-b").name == "ckpt-b"  # a checkpoint folder reads its config.json
    write_config(tmp_path / "named" / "config.json", _name_or_path="google-bert/bert-base-uncased")
    assert symbert.from_file(tmp_path / "named" / "config.json").name == "google-bert/bert-base-uncased"
    write_config(tmp_path / "local" / "config.json", _name_or_path="/home/me/runs/step-1000/")
    assert symbert.from_file(tmp_path / "local" / "config.json").name == "step-1000"
    code, out, err = cli("compare", str(tmp_path / "ckpt-a" / "config.json"), str(tmp_path / "ckpt-b"), "--json")
    assert code == 0, err
    data = json.loads(out)
    assert [c["name"] for c in data["configs"]] == ["ckpt-a", "ckpt-b"]


def test_configs_that_share_a_label_are_labelled_by_path(cli, tmp_path) -> None:
    a, b = tmp_path / "a" / "config.json", tmp_path / "b" / "config.json"
    write_config(a, _name_or_path="bert-base-uncased")
    write_config(b, _name_or_path="bert-base-uncased")
    code, out, err = cli("table", str(a), str(b), "--format", "csv")
    assert code == 0, err
    assert out.splitlines()[0] == f"component,formula,{a},{b}"


# refused input


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("params", "--preset", ""), "unknown preset ''"),
        (("params", "--config", ""), "--config needs a file name"),
        (("diagram", "--batch", "-1"), "--batch must be a positive integer, got"),
        (("diagram", "--seq-len", "0"), "--seq-len must be a positive integer, got"),
        (("report", "--batch", "0"), "--batch must be a positive integer, got"),
        (("explain", "params", "-s", "0"), "--seq-len must be a positive integer, got"),
        (("latex", "-b", "0"), "--batch must be a positive integer, got"),
        (("table", "bert-tiny", "-b", "0"), "--batch must be a positive integer, got"),
        (("compare", "bert-tiny", "bert-mini", "-s", "-5"), "--seq-len must be a positive integer, got"),
        (("fit", "--batch", "0", "--gpu-memory", "16GiB"), "--batch must be a positive integer, got"),
        (("timeline", "--seq-len", "0"), "--seq-len must be a positive integer, got"),
        (("plot", "--batch", "0", "-o", "x.png"), "--batch must be a positive integer, got"),
        (("plot", "--max", "0", "-o", "x.png"), "--max must be an integer of at least 2"),
        (("plot", "--max", "1", "-o", "x.png"), "--max must be an integer of at least 2"),
        (("validate", "--batch", "0"), "--batch must be a positive integer, got"),
        (("diagram", "--format", "svg", "-o", "a.png"), "--format svg but 'a.png' names png"),
        (("explain",), "explain needs a QUANTITY: params, activation_bytes, flops_forward"),
        (("explain", "speed"), "unknown quantity 'speed'"),
        (("table", "bert-tiny", "-q", "speed"), "unknown quantity 'speed'"),
        (("sweep", "bert-tiny", "-q", "speed"), "unknown quantity 'speed'"),
    ],
)
def test_refused_input_is_one_line(cli, tmp_path, monkeypatch, args, message) -> None:
    monkeypatch.chdir(tmp_path)
    one_line_error(cli(*args), message)
    assert list(tmp_path.iterdir()) == []


@needs_dot
def test_diagram_format_and_suffix_that_agree(cli, tmp_path) -> None:
    code, _, err = cli("diagram", "--preset", "bert-tiny", "--format", "svg", "-o", str(tmp_path / "a.svg"))
    assert code == 0, err
    assert (tmp_path / "a.svg").read_bytes().lstrip().startswith(b"<?xml")


def test_bare_symbert_prints_help_and_exits_0() -> None:
    result = run_cli()
    assert result.returncode == 0 and result.stderr == ""
    assert result.stdout.startswith("Usage: ") and "Commands:" in result.stdout and "explain" in result.stdout


# quantity aliases


def test_one_alias_table() -> None:
    assert all(q in QUANTITIES + TRAINING_QUANTITIES for q in ALIASES.values())
    for word, quantity in {
        "activations": "activation_bytes",
        "Activations": "activation_bytes",
        "memory": "activation_bytes",
        "flops": "flops_forward",
        "params": "params",
        "parameters": "params",
        "backward": "flops_backward",
        "non-matmul-forward": "non_matmul_forward",
    }.items():
        assert canonical(word) == quantity
    assert canonical("peak", QUANTITIES + TRAINING_QUANTITIES) == "peak"
    with pytest.raises(ValueError, match="unknown quantity 'peak'"):
        canonical("peak")


def test_commands_accept_aliases(cli) -> None:
    assert cli("explain", "activations", "-s", "8") == cli("explain", "activation_bytes", "-s", "8")
    assert cli("table", "bert-tiny", "-q", "parameters") == cli("table", "bert-tiny", "-q", "params")
    assert cli("latex", "-q", "flops") == cli("latex", "-q", "flops_forward")
    code, out, _ = cli("sweep", "bert-tiny", "-b", "1", "-s", "8", "-q", "memory", "-q", "parameters")
    assert code == 0 and out.splitlines()[0].endswith("activation_bytes,params")


# validate checks its arguments before importing torch


@pytest.mark.parametrize("args", [("--batch", "0"), ("--seq-len", "100000"), ("--preset", "nope")])
def test_validate_rejects_before_importing_torch(args) -> None:
    code = (
        "import sys\n"
        "from symbert.cli import main\n"
        f"sys.argv = ['symbert', 'validate', *{list(args)!r}]\n"
        "try:\n    main()\nexcept SystemExit as exc:\n    assert exc.code == 2, exc.code\n"
        "print('torch' in sys.modules, 'transformers' in sys.modules)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert result.stdout.strip() == "False False", result.stderr
    assert result.stderr.startswith("symbert: error: ") and result.stderr.count("\n") == 1


# 80 columns


def narrow(*args: str) -> str:
    result = run_cli(*args, env={"COLUMNS": "80"})
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert max(len(line) for line in lines) <= 80, max(lines, key=len)
    assert "…" not in result.stdout.replace("as … → ∞", ""), "a cell was cut"
    return result.stdout


def test_table_of_the_24_miniatures_fits_80_columns() -> None:
    out = narrow("table", "bert-L*-H*")
    rows = list(csv.reader(io.StringIO(run_cli("table", "bert-L*-H*", "--format", "csv").stdout)))
    names = rows[0][2:]
    assert len(names) == 24
    for name in names:
        assert name in out
    for row in rows[1:]:
        for value in row[2:]:
            assert f"{int(value):,}" in out
    assert "12·H²·L + H² + 13·H·L" in out


def test_compare_never_cuts_a_number() -> None:
    out = narrow("compare", "bert-base", "bert-large")
    data = json.loads(run_cli("compare", "bert-base", "bert-large", "--json").stdout)
    for q in data["quantities"].values():
        for number in (q["configs"][0]["value"], q["configs"][1]["value"]):
            assert f"{number:,}" in out
        assert f"{q['against_first'][0]['ratio_decimal']:.6g}" in out


def test_graph_keeps_node_names_whole() -> None:
    out = narrow("graph", "--preset", "bert-tiny", "--head", "mlm")
    for node in symbert.trace(symbert.with_task(BERT_TINY, head="mlm")).nodes:
        assert re.search(rf"│ {re.escape(node.name)} +│", out), node.name


def test_config_header_wraps_between_words() -> None:
    out = narrow("params", "--preset", "bert-base", "--head", "mlm", "--by-component")
    words = " ".join(out.split())
    assert "num_attention_heads=12 intermediate_size=3072 max_position_embeddings=512" in words
    assert "109,514,298" in out
    for args in (("report", "-b", "32", "-s", "512"), ("fit", "--gpu-memory", "16GiB", "-s", "512")):
        narrow(*args, "--preset", "bert-base")
    narrow("timeline", "--preset", "bert-tiny", "-s", "8")
    narrow("explain", "activations", "--preset", "bert-tiny", "-s", "8")


def test_output_to_a_pipe_is_not_wrapped() -> None:
    out = run_cli("params", "--preset", "bert-base").stdout
    assert max(len(line) for line in out.splitlines()) > 150


# diagram PDFs


@needs_dot
def test_diagram_pdf_is_deterministic() -> None:
    drawing = symbert.diagram(BERT_TINY, "overview")
    first = drawing.render("pdf")
    time.sleep(1.1)  # cairo writes the creation date to the second
    assert drawing.render("pdf") == first
    assert first.startswith(b"%PDF") and b"/CreationDate" not in first
