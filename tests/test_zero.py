"""ZeRO over d data-parallel GPUs: the paper's per-GPU model states as identities, hand-worked cases,
and PyTorch's own engines (FSDP2 fully_shard, DDP) measured on a fake process group."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import sympy
from conftest import hf
from inprocess import invoke

import symbert
from symbert.analysis.params import params
from symbert.analysis.policy import MemoryOptions
from symbert.analysis.states import Training, model_states
from symbert.analysis.training import phases, step_memory
from symbert.configs import Config
from symbert.parallel import Layout, d
from symbert.symbols import B, seq_len

#: bert-tiny's parameters (google/bert_uncased_L-2_H-128_A-2, BertModel).
PSI_TINY = 4_385_920


def states(graph, stage: int, data: int = 2, policy: str = "megatron", precision: str = "mixed", **kw) -> dict:
    layout = Layout(data=data, zero=stage)
    return model_states(graph, Training("adam", precision, MemoryOptions(policy, layout=layout), **kw))


def total(s: dict) -> sympy.Expr:
    return s["weights"] + s["gradients"] + s["optimizer"]


@pytest.mark.parametrize(
    ("stage", "form"),
    [
        (0, lambda psi: (2 + 2 + 12) * psi),
        (1, lambda psi: 4 * psi + 12 * psi / d),
        (2, lambda psi: 2 * psi + 14 * psi / d),
        (3, lambda psi: 16 * psi / d),
    ],
)
def test_paper_forms_are_identities(stage: int, form) -> None:
    """Rajbhandari et al. 2020, mixed-precision Adam: the per-GPU model states, symbolic in d and in the
    config's symbols. Each rank holds ⌈Ψ/d⌉ elements of a sharded state, Ψ/d when d divides Ψ."""
    graph = symbert.trace()
    psi = params(graph).total
    per_gpu = total(states(graph, stage)).replace(sympy.ceiling, lambda x: x)
    assert sympy.expand(per_gpu - form(psi)) == 0


@pytest.mark.parametrize(("stage", "expected"), [(0, 70_174_720), (1, 43_859_200), (2, 39_473_280), (3, 35_087_360)])
def test_bert_tiny_on_two_gpus_by_hand(stage: int, expected: int) -> None:
    """Ψ = 4,385,920 and d = 2: 16Ψ; 4Ψ + 6Ψ = 10Ψ; 2Ψ + 7Ψ = 9Ψ; 8Ψ."""
    tiny = symbert.preset("bert-tiny")
    assert total(states(symbert.trace(tiny), stage)).subs({**tiny.symbols(), d: 2}) == expected


def test_shards_round_up_to_whole_elements() -> None:
    """d = 3 does not divide Ψ: each rank holds ⌈4,385,920 / 3⌉ = 1,461,974 elements, 16 bytes each."""
    tiny = symbert.preset("bert-tiny")
    assert total(states(symbert.trace(tiny), 3)).subs({**tiny.symbols(), d: 3}) == 16 * 1_461_974


def test_one_gpu_is_the_single_gpu_formula() -> None:
    graph = symbert.trace()
    one = model_states(graph, Training("adam", "mixed", MemoryOptions("megatron", layout=Layout(zero=3))))
    assert sympy.expand(total(one) - 16 * params(graph).total) == 0


def test_deepspeed_holds_a_float32_gradient_partition_in_the_update() -> None:
    """The same states as the paper, and during the update 4·⌈Ψ/d⌉ bytes more (Ψ/2 elements at d = 2)."""
    tiny = symbert.preset("bert-tiny")
    graph = symbert.trace(tiny)
    values = {**tiny.symbols(), B: 1, seq_len: 8}
    step = {}
    for engine in ("paper", "deepspeed"):
        layout = Layout(data=2, zero=1)
        training = Training("adam", "mixed", MemoryOptions("megatron", layout=layout), engine=engine)
        assert sympy.expand(total(model_states(graph, training)) - total(states(graph, 1))) == 0
        points = step_memory(graph, training, tiny.symbols()).timeline(values)
        step[engine] = next(p for p in points if p.label == "optimizer step")
    assert step["deepspeed"].bytes["gradients"] - step["paper"].bytes["gradients"] == 4 * PSI_TINY // 2


def test_stage_three_gathers_one_layer_at_a_time() -> None:
    """Paper, stage 3, bert-tiny, d = 2: when the first layer is gathered the GPU holds its 16-bit shard
    (2·Ψ/2), the root's gathered parameters (embeddings and pooler, 3,989,376 elements) and the layer's
    (4·(128² + 128) + 2·(128·512) + 512 + 128 + 2·2·128 = 198,272 elements), 2 bytes each."""
    tiny = symbert.preset("bert-tiny")
    training = Training("adam", "mixed", MemoryOptions("megatron", layout=Layout(data=2, zero=3)))
    memory = step_memory(symbert.trace(tiny), training, tiny.symbols(), full=True)
    events = [(e.phase, e.run[1]) for e in memory.events if e.step == 1 and e.label.startswith("all-gather encoder")]
    assert events == [("forward", 0), ("forward", 1), ("backward", 1), ("backward", 0)]
    points = memory.timeline({**tiny.symbols(), B: 1, seq_len: 8})
    first = next(p for p in points if p.label == "all-gather encoder/layer parameters")
    assert first.bytes["weights"] == 2 * PSI_TINY // 2 + 2 * 3_989_376 + 2 * 198_272


#: The measurement: BertModel on a fake process group of ``world`` ranks (rank 0), fully_shard on each
#: layer and the root, one AdamW step; then DDP with a comm hook that sees every bucket.
MEASURE = """
import json, sys
import torch, torch.distributed as dist
from torch.testing._internal.distributed.fake_pg import FakeStore
from torch.distributed.fsdp import fully_shard
from torch.nn.parallel import DistributedDataParallel
from transformers import BertConfig, BertModel
values, world = json.loads(sys.argv[1]), int(sys.argv[2])
dist.init_process_group("fake", store=FakeStore(), rank=0, world_size=world)
cfg = BertConfig(**values, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
ids = torch.randint(0, values["vocab_size"], (2, 5))
def step(model):
    opt = torch.optim.AdamW(model.parameters())
    out = model(ids)
    (out.last_hidden_state.sum() + out.pooler_output.sum()).backward()
    opt.step()
    return opt
model = BertModel(cfg)
for layer in model.encoder.layer:
    fully_shard(layer)
fully_shard(model)
opt = step(model)
local = lambda t: t.to_local()
nbytes = lambda t: t.numel() * t.element_size()
fsdp = {
    "weights": sum(nbytes(local(p)) for p in model.parameters()),
    "gradients": sum(nbytes(local(p.grad)) for p in model.parameters()),
    "optimizer": sum(nbytes(local(v) if hasattr(v, "to_local") else v) for s in opt.state.values() for v in s.values()),
}
buckets = []
def hook(state, bucket):
    buckets.append(nbytes(bucket.buffer()))
    done = torch.futures.Future()
    done.set_result(bucket.buffer())
    return done
ddp = DistributedDataParallel(BertModel(cfg))
ddp.register_comm_hook(None, hook)
step(ddp)
print(json.dumps({"fsdp": fsdp, "buckets": sum(buckets)}))
"""

ODD = Config(
    "bert",
    {
        "vocab_size": 97,
        "hidden_size": 12,
        "num_hidden_layers": 2,
        "num_attention_heads": 3,
        "intermediate_size": 20,
        "max_position_embeddings": 17,
        "type_vocab_size": 3,
    },
    "bert-odd",
)


@pytest.mark.parametrize("world", [3])
def test_torch_engines_against_fully_shard_and_ddp(world: int) -> None:
    """FSDP2 pads every parameter to a multiple of d along dim 0: rank 0's weights, gradients and AdamW
    states (with CPU step counters) equal ours to the byte; DDP's buckets hold a copy of every gradient."""
    hf()
    run = subprocess.run(
        [sys.executable, "-c", MEASURE, json.dumps(dict(ODD.values)), str(world)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    measured = json.loads(run.stdout)
    graph, values = symbert.trace(ODD), {**ODD.symbols(), d: world}
    sharded = states(graph, 3, world, "torch-cpu", "fp32")
    assert {k: int(sharded[k].subs(values)) for k in measured["fsdp"]} == measured["fsdp"]
    ddp = states(graph, 0, world, "torch-cpu", "fp32")
    assert int(ddp["buckets"].subs(values)) == measured["buckets"]
    assert int(ddp["gradients"].subs(values)) == 2 * measured["buckets"]


def test_replay_is_symbolic_in_d() -> None:
    """Three replayed layers, the others in closed form in L, and d a symbol: every phase's peak and end
    equal the full replay's, at d = 2 and 3 (five layers, a small vocabulary so that the layers matter)."""
    small = Config("bert", {**symbert.preset("bert-tiny").values, "num_hidden_layers": 5, "vocab_size": 50}, "small")
    graph = symbert.trace(small)
    for data, policy, precision, stage in (
        (2, "torch-cpu", "fp32", 3),
        (3, "megatron", "mixed", 2),
        (3, "megatron", "mixed", 3),
    ):
        training = Training("adamw", precision, MemoryOptions(policy, layout=Layout(data=data, zero=stage)))
        values = {**small.symbols(), B: 2, seq_len: 8, d: data}
        closed = step_memory(graph, training, small.symbols())
        full = step_memory(graph, training, values, full=True)
        assert d in closed.formula(values).free_symbols
        summary = [[(x.step, x.name, x.peak.total, x.end) for x in phases(m.timeline(values))] for m in (closed, full)]
        assert summary[0] == summary[1]


def test_unmodelled_stage_is_one_line() -> None:
    outcome = invoke("timeline", "--preset", "bert-tiny", "--data-parallel", "2", "--zero", "1")
    assert outcome.refused and "no ZeRO stage 1" in outcome.stderr
