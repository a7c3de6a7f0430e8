"""``symbert validate --device cuda --record``: a CUDA snapshot turned into a fixture (a worked example built by
hand), the first difference between symbert's requests and recorded ones (worked by hand, and on the real H100
trace), the recording script's grid, and the recording itself where a GPU is at hand."""

from __future__ import annotations

import importlib.util
import json
import sys

import pytest

from symbert.configs import resolve
from symbert.validate.record import Difference, Job, compare, first_difference, fixture_events, real_requests
from tests.conftest import ROOT, run_cli
from tests.gputrace import TRACE, phased

HERE = "/repo/symbert/validate/record.py"
LIB = "/venv/lib/python3.11/site-packages"


def frame(filename: str, line: int, name: str) -> dict:
    return {"filename": filename, "line": line, "name": name}


def test_a_snapshot_becomes_the_fixtures_events_and_phases():
    """A hand-made ``_snapshot()``: the model's weight moved by ``Module.to`` in ``_load``, a forward's
    embedding, a request from autograd's backward thread (no Python frame), a segment event (dropped), the
    optimizer's state and free, and the second step's forward."""
    load = [frame(f"{LIB}/torch/nn/modules/module.py", 1343, "convert"), frame(HERE, 170, "_load")]
    embed = [frame(f"{LIB}/torch/nn/functional.py", 2567, "embedding"),
             frame(f"{LIB}/transformers/models/bert/modeling_bert.py", 101, "forward"), frame(HERE, 185, "_forward")]
    step = [frame(f"{LIB}/torch/optim/adamw.py", 400, "_init_group"), frame(HERE, 196, "_optimizer")]
    trace = [
        {"action": "segment_alloc", "addr": 0, "size": 2097152, "frames": load},
        {"action": "alloc", "addr": 0, "size": 1000, "frames": load},
        {"action": "alloc", "addr": 1024, "size": 3145728, "frames": embed},
        {"action": "alloc", "addr": 4096, "size": 512, "frames": []},
        {"action": "free_requested", "addr": 4096, "size": 512, "frames": []},
        {"action": "free_completed", "addr": 4096, "size": 512, "frames": []},
        {"action": "alloc", "addr": 8192, "size": 1000, "frames": step},
        {"action": "alloc", "addr": 1024, "size": 3145728, "frames": embed},
    ]
    events, marks = fixture_events({"device_traces": [trace], "segments": []})
    assert events == [
        ["a", 0, 1000, "record.py:170:_load", "module.py:1343:convert"],
        ["a", 1024, 3145728, "record.py:185:_forward", "functional.py:2567:embedding"],
        ["a", 4096, 512, "?:0:?", "?:0:?"],
        ["f", 4096, 512, "?:0:?", "?:0:?"],
        ["c", 4096, 512, "?:0:?", "?:0:?"],
        ["a", 8192, 1000, "record.py:196:_optimizer", "adamw.py:400:_init_group"],
        ["a", 1024, 3145728, "record.py:185:_forward", "functional.py:2567:embedding"],
    ]
    assert marks == [[0, "load"], [1, "1 forward"], [5, "1 optimizer"], [6, "2 forward"]]
    fixture = {"events": events, "marks": marks}
    assert real_requests(fixture) == {
        "load": [(1000, "module.py:1343:convert")],
        "1 forward": [(3145728, "functional.py:2567:embedding"), (512, "?:0:?")],
        "1 optimizer": [(1000, "adamw.py:400:_init_group")],
        "2 forward": [(3145728, "functional.py:2567:embedding")],
    }


def test_the_first_difference_is_named():
    real = {"load": [(1000, "a.py:1:f")], "1 forward": [(512, "b.py:2:g"), (2048, "c.py:3:h"), (4, "d.py:4:k")]}
    assert first_difference({"load": [1000], "1 forward": [512, 2048, 4]}, real) is None
    assert first_difference({"load": [1000], "1 forward": [512, 1024, 4]}, real) == Difference(
        "1 forward", 1, (1024,), (2048,), "c.py:3:h")
    assert first_difference({"load": [1000], "1 forward": [512, 2048]}, real) == Difference(
        "1 forward", 2, (), (4,), "d.py:4:k")
    assert first_difference({"load": [1000], "1 forward": [512, 2048, 4], "1 backward": [8]}, real) == Difference(
        "1 backward", 0, (8,), (), "")


def test_the_real_traces_first_difference_is_the_callers_loss():
    """The real H100 trace, with its phases marked as tests/gputrace.py reads them, against symbert's stream
    and simulation of its job: the first difference is where the trace's script sums its outputs (line 67),
    as tests/test_allocator_stream.py finds; the simulated peaks are those that test states."""
    marks = [[i, phase] for i, (phase, _) in enumerate(phased()) if phase]
    fixture = {**TRACE, "marks": marks}
    config = resolve("bert-base", None, (), None, padding=False)
    comparison = compare(Job(config, TRACE["case"]["B"], TRACE["case"]["s"], "adamw"), fixture, "h100")
    forward = real_requests(fixture)["1 forward"]
    index = len(forward) - 4
    assert comparison.difference == Difference("1 forward", index, (), (384, 4, 4, 4), forward[index][1])
    assert forward[index][1] == "gpu_measure2.py:67:forward"
    assert [r[1] for r in comparison.rows] == [peak for _, _, peak in TRACE["phases"]]
    assert [r[2] - r[1] for r in comparison.rows] == [0, 3_170_304, -524_288, 4_456_448, 7_626_752, 9_175_040]
    assert comparison.failed is None
    assert comparison.lines()[-1].startswith("first difference: 1 forward, request")


def _script():
    spec = importlib.util.spec_from_file_location("record_gpu_fixtures", ROOT / "scripts/record_gpu_fixtures.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_the_recording_scripts_jobs_are_valid(capsys):
    script = _script()
    assert script.main(["--dry-run"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[-1] == f"{len(script.JOBS)} jobs" and len({s.name for s in script.JOBS}) == len(script.JOBS)
    covered = {(s.amp, s.attention, s.optimizer, s.recompute, s.alloc_conf is not None) for s in script.JOBS}
    assert {c[0] for c in covered} == {None, "bfloat16", "float16"}
    assert {c[2] for c in covered} >= {"sgd", "adamw-foreach", "adamw-fused"}
    assert {"full", "none"} == {c[3] for c in covered} and any(c[4] for c in covered)
    assert {s.preset.split("-")[0] for s in script.JOBS} == {"bert", "roberta", "modernbert", "deberta"}


def test_a_bad_job_fails_the_dry_run():
    script = _script()
    with pytest.raises(ValueError, match="eager or sdpa"):
        script.check(script.Spec("bert-tiny", attention="flash"))


def test_record_needs_cuda(tmp_path):
    for args, message in ((["--record", str(tmp_path)], "add --device cuda"),
                          (["--device", "cuda", "--record", str(tmp_path), "--data-parallel", "2"], "one GPU")):
        result = run_cli("validate", "--preset", "bert-tiny", *args)
        assert result.returncode != 0 and result.stderr.count("\n") == 1 and message in result.stderr
    assert not any(tmp_path.iterdir())


@pytest.mark.skipif(not __import__("torch").cuda.is_available(), reason="records a real CUDA allocation trace")
def test_a_recorded_fixture_on_the_gpu(tmp_path):
    """bert-tiny recorded on this GPU: the fixture's format, its loading requests are those of the model's
    parameters and buffers then the inputs, and the comparison runs on it."""
    from symbert.validate.record import record_and_compare

    config = resolve("bert-tiny", None, (), None, padding=False)
    path, comparison = record_and_compare(Job(config, 2, 16), tmp_path)
    fixture = json.loads(path.read_text())
    assert [m[1] for m in fixture["marks"]] == ["load", *(f"{s} {p}" for s in (1, 2)
                                                         for p in ("forward", "backward", "optimizer"))]
    load = [size for size, _ in real_requests(fixture)["load"]]
    from symbert.validate.hf import hugging_face

    hf_model, inputs = hugging_face(config, 2, 16, "float32")
    tensors = [*hf_model.parameters(), *hf_model.buffers(), *inputs.values()]
    assert sorted(load) == sorted(t.numel() * t.element_size() for t in tensors)
    assert fixture["base"] >= sum(load)
    assert [r[0] for r in comparison.rows] == [m[1] for m in fixture["marks"][1:]]


def test_the_time_budget_stops_the_run(tmp_path, capsys):
    """With no time left, no job starts: each is listed as skipped in the summary table, and the run fails."""
    script = _script()
    assert script.main(["--budget", "0", "--out", str(tmp_path)]) == 1
    table = capsys.readouterr().out.splitlines()
    skipped = [line for line in table if "skipped: 0 s left of the budget" in line]
    assert [line.split()[0] for line in skipped] == [spec.name for spec in script.JOBS]
    assert not any(tmp_path.iterdir())
