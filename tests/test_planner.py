"""fit --gpus: the layouts searched, their communication points, the ranking and the explanations,
on cases checked by hand."""

from __future__ import annotations

import json

import pytest
from inprocess import invoke

import symbert
from symbert.analysis.policy import MemoryOptions
from symbert.api import per_gpu
from symbert.formula import quantity
from symbert.parallel import Layout
from symbert.training.planner import Option, collectives, communication, layouts, plan
from symbert.training.states import Training
from symbert.training.step import Point

MIXED = Training("adamw", "mixed", MemoryOptions("megatron"))


def test_layouts_of_four_gpus() -> None:
    """bert-tiny (A = 2, L = 2) on 4 GPUs: t, p ∈ {1, 2}; (1, 1, d = 4), (1, 2, 2) and (2, 1, 2) with
    each of four ZeRO stages, and (2, 2, 1) alone: 13."""
    found = {
        (x.tensor, x.pipeline, x.data, x.zero) for x in layouts(symbert.preset("bert-tiny"), 4, (0, 1, 2, 3), False)
    }
    expected = {(1, 1, 4, z) for z in range(4)} | {(1, 2, 2, z) for z in range(4)} | {(2, 1, 2, z) for z in range(4)}
    assert found == expected | {(2, 2, 1, 0)}


def test_communication_points_by_hand() -> None:
    """Megatron's tensor parallelism on bert-tiny: the vocabulary-split embeddings' all-reduce and two per
    layer (after the attention output and the output dense), 1 + 2·2 = 5; on the first of two stages,
    1 + 2 = 3. Each counts forward and backward; a pipeline adds a send and a receive per micro-batch;
    over 8 GPUs, 24 layers and the root: DDP all-reduces once; ZeRO 1 reduce-scatters and all-gathers
    once; ZeRO 2 reduce-scatters per unit, then all-gathers once; ZeRO 3 all-gathers per unit forward and
    backward and reduce-scatters per unit; FSDP2 without resharding after forward gathers once per unit."""
    tiny = symbert.preset("bert-tiny")
    assert collectives(*per_gpu(tiny, Layout(tensor=2))) == 5
    assert collectives(*per_gpu(tiny, Layout(tensor=2, pipeline=2, microbatches=2))) == 3
    one = Training().sharding
    assert communication(5, Layout(tensor=2), 2, one) == 10
    assert communication(3, Layout(tensor=2, pipeline=2, microbatches=2), 2, one) == 6 + 4
    for stage, points in ((0, 1), (1, 2), (2, 25 + 1), (3, 3 * 25)):
        paper = Training(memory=MemoryOptions("megatron", layout=Layout(data=8, zero=stage))).sharding
        assert communication(0, Layout(data=8, zero=stage), 24, paper) == points
    fsdp = Training(memory=MemoryOptions(layout=Layout(data=8, zero=2))).sharding
    assert communication(0, Layout(data=8, zero=2), 24, fsdp) == 25 + 25


def test_ranking_least_recompute_then_communication_then_batch() -> None:
    point = Point(1, "backward", "x", None, {"weights": 1})

    def option(recompute: str, points: int, batch: int, data: int) -> Option:
        return Option(Layout(data=data), recompute, batch, point, points)

    options = [option("full", 1, 99, 2), option("none", 9, 4, 3), option("none", 9, 8, 4), option("none", 2, 1, 5)]
    assert [o.layout.data for o in sorted(options, key=lambda o: o.rank)] == [5, 4, 3, 2]


def test_two_gpus_fit_and_explain_by_hand() -> None:
    """bert-tiny, Ψ = 4,385,920, mixed Adam, 40,000,000 bytes per GPU, d = 2 (the paper's accounting):
    stage 0 needs 16Ψ = 70,174,720 bytes of model states and stage 1 4Ψ + 6Ψ = 43,859,200, both over
    the budget; every layout that fits peaks within it, and one more in the micro-batch does not."""
    tiny = symbert.preset("bert-tiny")
    result = plan(tiny, MIXED, 2, 40_000_000, 8)
    reasons = {(r.layout.tensor, r.layout.pipeline, r.layout.zero): r.reason for r in result.rejected}
    over = f"> {quantity(40_000_000, 'bytes')}"
    assert reasons[1, 1, 0] == f"model states alone need {quantity(70_174_720, 'bytes')} {over}"
    assert reasons[1, 1, 1] == f"model states alone need {quantity(43_859_200, 'bytes')} {over}"
    assert result.fits and list(result.fits) == sorted(result.fits, key=lambda o: o.rank)
    for o in result.fits:
        assert o.peak.total <= 40_000_000
        bigger = plan(tiny, MIXED, 2, 40_000_000, 8, o.batch + 1)
        assert all(f.layout != o.layout or f.recompute != o.recompute for f in bigger.fits)


def test_cli_plans_a_model_too_large_for_one_gpu() -> None:
    """bert-3.9b (3,862,484,480 parameters) on 8 A100-40GB: 16 bytes a parameter on one GPU of each
    data-parallel group is 61,799,751,680 bytes, over 40 GiB; sharded or split layouts fit."""
    args = ("fit", "--preset", "bert-3.9b", "--gpus", "8", "--gpu", "a100-40gb", "--policy", "megatron")
    outcome = invoke(*args, "--precision", "mixed", "--seq-len", "512", "--json")
    assert outcome.code == 0, outcome.stderr
    doc = json.loads(outcome.stdout)
    assert doc["fits"] and all(f["peak"] <= 40960 * 2**20 for f in doc["fits"])
    (rejected,) = doc["rejected"]
    assert rejected["layout"] == {
        "tensor": 1,
        "sequence": False,
        "pipeline": 1,
        "microbatches": 1,
        "data": 8,
        "zero": 0,
    }
    assert rejected["reason"].startswith(f"model states alone need {quantity(61_799_751_680, 'bytes')} > ")
    tiny = ("fit", "--preset", "bert-tiny", "--gpus", "2", "--gpu-memory", "40000000", "--policy", "megatron")
    text = invoke(*tiny, "--precision", "mixed", "--seq-len", "8").stdout
    assert "layouts fit" in text and "t=1, p=1, d=2, ZeRO 0: model states alone need 66.92 MiB > 38.15 MiB" in text


@pytest.mark.parametrize(
    "args",
    [
        ("--gpus", "4", "--tensor-parallel", "2", "--gpu", "a100-40gb"),
        ("--gpus", "4"),
        ("--gpus", "0", "--gpu", "a100-40gb"),
    ],
)
def test_cli_plan_errors_are_one_line(args: tuple[str, ...]) -> None:
    assert invoke("fit", "--preset", "bert-tiny", *args).refused


def test_layouts_a_family_cannot_take_are_rejected_with_their_reason() -> None:
    """ModernBERT declares no tensor-parallel plan and is not one repeated stack of layers: on four GPUs
    only t = p = 1 can run it; every other layout is rejected, saying which of the two stops it."""
    result = plan(symbert.preset("modernbert-base"), Training(), 4, 80 * 2**30, 512)
    assert result.fits and {(o.layout.tensor, o.layout.pipeline) for o in result.fits} == {(1, 1)}
    reasons = {(r.layout.tensor > 1, r.layout.pipeline > 1): r.reason for r in result.rejected}
    assert "declares no tensor-parallel plan" in reasons[(True, False)]
    assert "not one repeated stack" in reasons[(False, True)]
