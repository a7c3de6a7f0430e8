"""Tensor, sequence and pipeline parallelism on the traced graph: the published forms as sympy identities,
parameter shards counted by hand, and one GPU as the special case t = p = 1."""

from __future__ import annotations

import pytest
import sympy
from inprocess import invoke

import symbert
from symbert.analysis.activations import activations
from symbert.analysis.flops import flops
from symbert.analysis.policy import MemoryOptions
from symbert.ops import OPS
from symbert.parallel import Layout
from symbert.symbols import A, B, E, H, I, L, m, p, seq_len, t, v

S = seq_len
BERT_LARGE = symbert.preset("bert-large")


def breakdown(layout: Layout, policy: str = "megatron", recompute: str = "none", config=BERT_LARGE, **options):
    graph = symbert.trace(config, layout=layout, **options)
    return activations(graph, MemoryOptions(policy, recompute=recompute, layout=layout))


def per_layer(layout: Layout, **kwargs: object) -> sympy.Expr:
    """The bytes one layer keeps, summed over the components inside the repeated layer, with I = 4H."""
    parts = [c.per_layer for c in breakdown(layout, **kwargs).components() if c.per_layer is not None]
    return sympy.expand(sympy.Add(*parts).subs(I, 4 * H))


def component(layout: Layout, name: str, **kwargs: object) -> sympy.Expr:
    return next(c.total for c in breakdown(layout, **kwargs).components() if c.name == name)


def same(a: sympy.Expr, b: sympy.Expr) -> bool:
    return sympy.simplify(a - b) == 0


TP = Layout(tensor=2)
SP = Layout(tensor=2, sequence=True)


# ---- Korthikanti et al. 2022 (megatron policy, I = 4H)


def test_tensor_parallel_per_layer() -> None:
    """Eq. (3): sbh(10 + 24/t + 5as/(ht)): the layernorm inputs, the QKV and MLP inputs and the two
    output dropout masks stay whole on every rank; everything between the linears is split over t."""
    assert same(per_layer(TP), S * B * H * (10 + 24 / t + 5 * A * S / (H * t)))


def test_sequence_parallel_per_layer() -> None:
    """Eq. (4): sbh(34 + 5as/h)/t, the linears keeping their input sharded and gathering it again."""
    assert same(per_layer(SP), S * B * H * (34 + 5 * A * S / H) / t)


def test_selective_recompute_with_tensor_and_sequence_parallelism() -> None:
    assert same(per_layer(TP, recompute="selective"), S * B * H * (10 + 24 / t))
    assert same(per_layer(SP, recompute="selective"), 34 * S * B * H / t)


def test_full_recompute_keeps_the_sharded_layer_input() -> None:
    assert same(per_layer(SP, recompute="full"), 2 * S * B * H / t)
    assert same(per_layer(TP, recompute="full"), 2 * S * B * H)


def test_first_pipeline_stage_with_interleaving() -> None:
    """Eq. (5): the first stage keeps p micro-batches of its L/p layers, times 1 + (p − 1)/(pv) when v
    stages are interleaved, so L layers' worth; its embeddings (Megatron: the ids, 8sb, and the dropout
    mask, sbh/t, per micro-batch in flight) here two int64 id tensors, the layernorm input and the dropout
    mask, sharded by sequence parallelism."""
    layout = Layout(tensor=2, sequence=True, pipeline=4, microbatches=8, virtual=2)
    factor = 1 + (p - 1) / (p * v)
    b = breakdown(layout, recompute="selective")
    layers = sympy.Add(*(c.total for c in b.components() if c.per_layer is not None))
    assert same(layers.subs(I, 4 * H), 34 * S * B * H * L / t * factor)
    embeddings = component(layout, "embeddings", recompute="selective")
    assert same(embeddings.subs(E, H), p * factor * (2 * 8 * S * B + 3 * S * B * H / t))
    assert "pooler" not in {c.name for c in b.components()}  # the pooler is on the last stage


def test_1f1b_keeps_min_p_m_micro_batches() -> None:
    layout = Layout(pipeline=4, microbatches=2)
    total = breakdown(layout).total
    assert total.has(sympy.Min(p, m))
    values = {**BERT_LARGE.symbols(), B: 1, S: 128}
    two = total.subs({**values, p: 4, m: 2})
    eight = total.subs({**values, p: 4, m: 8})
    assert two * 4 == eight * 2  # min(4, 2) against min(4, 8) micro-batches of the same stage


# ---- one GPU is the special case


@pytest.mark.parametrize("policy", ["megatron", "torch-cpu", "torch-cuda"])
@pytest.mark.parametrize("layout", [TP, SP], ids=["tp", "sp"])
def test_t_equal_1_is_one_gpu(policy: str, layout: Layout) -> None:
    config = symbert.preset("bert-base")
    one = symbert.trace(config)
    spread = symbert.trace(config, layout=layout)
    options = MemoryOptions(policy)
    assert same(symbert.params(spread).total.subs(t, 1), symbert.params(one).total)
    assert same(activations(spread, options).total.subs(t, 1), activations(one, options).total)
    for key, f in flops(spread, options).items():
        assert same(f.total.subs(t, 1), flops(one, options)[key].total)


def test_p_equal_1_is_the_encoder_without_pooler() -> None:
    """The first stage at p = m = 1 is the whole encoder, which ends where the pooler would start."""
    layout = Layout(tensor=2, sequence=True, pipeline=2, microbatches=2)
    stage = breakdown(layout).total.subs({p: 1, m: 1})
    bare = breakdown(Layout(tensor=2, sequence=True), pooler=False).total
    # without a pipeline the sequence is gathered back after the layers; the stage sends it sharded
    assert same(stage, bare)


# ---- parameter shards by hand


def test_bert_tiny_shards_by_hand() -> None:
    """bert-tiny (L=2, H=128, A=2, I=512) with t=2, as ColwiseParallel / RowwiseParallel hold it per rank:
    Q, K, V and the intermediate dense split by rows (weight and bias), the attention output and output
    dense by columns (bias whole), the word embeddings by vocabulary rows (⌈30522/2⌉ = 15261); positions,
    token types, layernorms and the pooler whole."""
    config = symbert.preset("bert-tiny")
    per_layer = 3 * (64 * 128 + 64) + (128 * 64 + 128) + 2 * 256 + (256 * 128 + 256) + (128 * 256 + 128)
    assert per_layer == 99_520
    embeddings = 15261 * 128 + 512 * 128 + 2 * 128 + 256
    by_hand = embeddings + 2 * per_layer + 128 * 128 + 128
    graph = symbert.trace(config, layout=TP)
    total = symbert.params(graph).total
    assert total.subs({**config.symbols(), t: 2}) == by_hand == 2_235_008
    shapes = {p.name: p.shape for n in graph.nodes for p in n.params}
    assert shapes["encoder.layer.attention.self.query.weight"] == (H / t, H)
    assert shapes["encoder.layer.attention.output.dense.weight"] == (H, H / t)
    assert shapes["encoder.layer.attention.output.dense.bias"] == (H,)
    assert shapes["embeddings.word_embeddings.weight"] == (sympy.ceiling(symbert.symbols.vocab_size / t), E)


def test_tied_decoder_is_split_like_the_word_embeddings() -> None:
    config = symbert.with_task(symbert.preset("bert-tiny"), head="mlm")
    graph = symbert.trace(config, layout=TP)
    decoder = next(n for n in graph.nodes if n.name.endswith("predictions/decoder"))
    assert graph.tensor(decoder.outputs[0]).shape[-1] == sympy.ceiling(symbert.symbols.vocab_size / t)
    # the shared weight counts once, at its shard
    names = [p.name for n in graph.nodes for p in n.params]
    assert names.count("bert.embeddings.word_embeddings.weight") == 2
    single = symbert.params(symbert.trace(config)).total
    assert same(symbert.params(graph).total.subs(t, 1), single)


# ---- the collectives


def test_collectives_where_megatron_puts_them() -> None:
    def kinds(layout: Layout) -> list[str]:
        graph = symbert.trace(symbert.preset("bert-base"), layout=layout)
        return [n.op for n in graph.nodes if OPS[n.op].communication]

    # the word embeddings and the two row-parallel linears of the layer (traced once) all-reduce
    assert kinds(TP) == ["all_reduce"] * 3
    # sequence parallelism: split before the embeddings' layernorm; per layer a gather before Q/K/V (one,
    # shared) and before the intermediate dense, a reduce-scatter after each row-parallel linear; the
    # layers' output gathered for the pooler
    assert kinds(SP) == ["all_reduce", "split"] + ["all_gather", "reduce_scatter"] * 2 + ["all_gather"]


def test_collectives_keep_nothing_and_cost_nothing() -> None:
    for kind in ("all_reduce", "all_gather", "reduce_scatter", "split"):
        op = OPS[kind]
        assert op.communication and op.saves == () and op.flops_per_element == 0 and op.matmul is None


def test_torch_keeps_the_gathered_input_megatron_the_shard() -> None:
    """DTensor's all-gather is an autograd op of its own, so the linear after it keeps the gathered
    [B, s, H] input; Megatron keeps the shard and gathers again in backward. Per layer, the QKV and
    intermediate inputs: 2·(2sbh − 2sbh/t) bytes more in bf16, and torch-cuda's float32 layernorm
    statistics (two layernorms, mean and rstd, [B, s/t, 1]) 16sb/t more."""
    graph = symbert.trace(BERT_LARGE, layout=SP)
    ours = activations(graph, MemoryOptions("torch-cuda", dtype="bfloat16", layout=SP))
    megatron = activations(graph, MemoryOptions("megatron", layout=SP))

    def layer(b) -> sympy.Expr:
        return sympy.expand(sympy.Add(*(c.per_layer for c in b.components() if c.per_layer is not None)))

    assert same(layer(ours) - layer(megatron), 2 * (2 * S * B * H - 2 * S * B * H / t) + 16 * S * B / t)


def test_a_layout_that_does_not_divide_is_refused() -> None:
    from symbert.analysis.report import report
    from symbert.configs import ConfigError

    with pytest.raises(ConfigError, match="--tensor-parallel 5 does not divide the attention heads"):
        report(BERT_LARGE, 1, 128, MemoryOptions(layout=Layout(tensor=5)))
    with pytest.raises(ConfigError, match="--pipeline-parallel 5 does not divide the layers"):
        report(BERT_LARGE, 1, 128, MemoryOptions(layout=Layout(pipeline=5)))
    with pytest.raises(ConfigError, match="seq_len"):
        report(BERT_LARGE, 1, 127, MemoryOptions(layout=SP))


def test_report_evaluates_the_degrees() -> None:
    from symbert.analysis.report import report

    r = report(BERT_LARGE, 8, 512, MemoryOptions("megatron", layout=Layout(tensor=4, sequence=True)))
    per_gpu = r.value("activation_bytes")
    b, s, h, a, layers = 8, 512, 1024, 16, 24
    layer = s * b * h * (34 + 5 * a * s // h) // 4
    embeddings = 16 * s * b + 3 * s * b * h // 4
    pooler = 2 * s * b * h + 2 * b * h  # after the layers' output is gathered back
    assert per_gpu == layers * layer + embeddings + pooler
    assert r.value("params") == 85_080_064


# ---- the training step and the commands


def test_replay_adds_the_other_micro_batches_in_flight() -> None:
    """Under 1F1B the first stage runs one micro-batch while min(p, m) − 1 others keep what they saved:
    at the end of forward the replay holds exactly that many more micro-batches' saved activations."""
    from symbert.training.states import Training
    from symbert.training.step import step_memory

    config = symbert.preset("bert-tiny")
    values = {**config.symbols(), B: 2, S: 16}

    def end_of_forward(layout: Layout) -> int:
        graph = symbert.trace(config, layout=layout)
        at = {**values, **layout.values()}
        memory = step_memory(graph, Training("sgd", memory=MemoryOptions("megatron", layout=layout)), at)
        return next(p for p in memory.timeline(at) if p.label == "end of forward" and p.step == 1).bytes

    alone = end_of_forward(Layout(pipeline=2, microbatches=1))
    four = end_of_forward(Layout(pipeline=2, microbatches=4))
    one = activations(symbert.trace(config, layout=Layout(pipeline=2)), MemoryOptions("megatron"))
    saved = one.evaluate(one.total, {**values, p: 2})
    assert four["activations"] + four["attention"] - alone["activations"] - alone["attention"] == saved


def test_report_json_is_per_gpu_and_reads_back(tmp_path) -> None:
    import json

    from conftest import run_cli

    args = ("report", "--preset", "bert-base", "--head", "mlm", "--policy", "megatron", "--json")
    result = run_cli(*args, "--tensor-parallel", "2", "--sequence-parallel", "-s", "128")
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["layout"] == {
        "tensor": 2,
        "sequence": True,
        "pipeline": 1,
        "microbatches": 1,
        "virtual": 1,
        "data": 1,
        "zero": 0,
        "stage": "first",
        "gpus": 2,
    }
    values = {**symbert.with_task(symbert.preset("bert-base"), head="mlm").symbols(), B: 1, S: 128, t: 2}
    for key, formula in doc["formulas"].items():
        value = symbert.parse_formula(formula).subs({**values, p: 1, m: 1, v: 1})
        assert value == (doc["params"] if key == "params" else value)
    layers = [c for c in doc["components"] if c["count"] == "L"]
    assert layers and all(symbert.parse_formula(c["formula"]).subs(values) == c["value"] for c in layers)
    assert "per GPU of 2" in run_cli(*args[:-1], "--tensor-parallel", "2").stdout


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (("--tensor-parallel", "5"), "--tensor-parallel 5 does not divide the attention heads (A=12)"),
        (("--pipeline-parallel", "5"), "--pipeline-parallel 5 does not divide the layers (L=12)"),
        (("--sequence-parallel",), "sequence parallelism shards along the tensor-parallel group"),
        (("--tensor-parallel", "2", "--sequence-parallel", "-s", "127"), "does not divide the seq_len"),
        (("--pipeline-parallel", "2", "--virtual-stages", "2", "--microbatches", "3"), "a multiple of"),
    ],
)
def test_a_bad_layout_is_one_line(flags: tuple[str, ...], message: str) -> None:
    from conftest import run_cli

    for command in ("report", "timeline") if flags[0] == "--tensor-parallel" else ("report",):
        result = run_cli(command, "--preset", "bert-base", *flags)
        assert result.returncode == 2 and message in result.stderr and result.stderr.count("\n") == 1


@pytest.mark.parametrize("name", ["albert-base-v2", "distilbert-base-uncased", "roberta-base"])
@pytest.mark.parametrize("head", ["model", "mlm"])
def test_every_family_has_a_plan(name: str, head: str) -> None:
    """Each family's layer splits like BERT's: Korthikanti's per-layer form under sequence parallelism
    (DistilBERT has no dropout after attention's output and ALBERT none at all, so their constants
    differ; what must hold is that t = 1 is one GPU and that every linear of the layer is split)."""
    config = symbert.preset(name) if head == "model" else symbert.with_task(symbert.preset(name), head=head)
    one, spread = symbert.trace(config), symbert.trace(config, layout=SP)
    options = MemoryOptions("megatron")
    assert same(activations(spread, options).total.subs(t, 1), activations(one, options).total)
    assert same(symbert.params(spread).total.subs(t, 1), symbert.params(one).total)
    block = next(iter(spread.blocks))
    linears = [n for n in spread.nodes if n.op == "linear" and n.block == block]
    assert len(linears) == 6 and all(str(n.params[0].shape).count("t") == 1 for n in linears)


def test_last_stage_holds_the_head_and_a_copy_of_the_tied_embeddings() -> None:
    """With p = 2 the two stages hold every parameter once, and the last stage also the word embeddings
    its tied decoder reads (Megatron-LM keeps that copy and all-reduces its gradient with the first)."""
    config = symbert.with_task(symbert.preset("bert-base"), head="mlm")
    first = symbert.params(symbert.trace(config, layout=Layout(pipeline=2))).total
    last = symbert.params(symbert.trace(config, layout=Layout(pipeline=2, stage="last"))).total
    whole = symbert.params(symbert.trace(config)).total
    assert same((first + last).subs(p, 2), whole + symbert.symbols.vocab_size * H)  # the decoder reads it as [V, H]


def test_last_stage_keeps_one_micro_batch_and_the_head() -> None:
    config = symbert.with_task(symbert.preset("bert-base"), head="mlm")
    layout = Layout(pipeline=4, microbatches=8, stage="last")
    last = breakdown(layout, config=config)
    whole = {c.name: c for c in breakdown(Layout(), config=config).components()}
    for c in last.components():
        if c.per_layer is not None:
            assert same(c.per_layer, whole[c.name].per_layer) and c.count == L / p
        else:
            assert c.name in ("head", "loss") and same(c.total, whole[c.name].total)
    assert "embeddings" not in {c.name for c in last.components()}
    inputs = [n.name for n in symbert.trace(config, layout=layout).nodes if OPS[n.op].graph_input]
    assert inputs == ["from_previous_stage", "attention_mask", "head/labels"]


def test_diagrams_draw_the_collectives_apart() -> None:
    from symbert.render.theme import kind_of

    graph = symbert.trace(symbert.preset("bert-tiny"), layout=SP)
    kinds = {n.op: kind_of(n) for n in graph.nodes}
    assert {kinds[k] for k in ("all_reduce", "all_gather", "reduce_scatter", "split")} == {"communication"}
    assert kinds["linear"] == "dense"


def test_micro_batches_after_the_first_find_every_gradient_there() -> None:
    """Gradient accumulation: from the second micro-batch on, forward runs with every parameter's
    gradient allocated, so the forward peak rises by exactly the gradients (p = 1: nothing in flight)."""
    from symbert.training.states import Training, model_states
    from symbert.training.step import step_memory

    config = symbert.preset("bert-tiny")
    values = {**config.symbols(), B: 2, S: 16}

    def forward_peak(layout: Layout) -> dict[str, int]:
        training = Training("adamw", memory=MemoryOptions(layout=layout))
        memory = step_memory(symbert.trace(config, layout=layout), training, values)
        return max(
            (q for q in memory.timeline({**values, **layout.values()}) if q.phase == "forward"), key=lambda q: q.total
        )

    one, four = forward_peak(Layout()), forward_peak(Layout(microbatches=4))
    gradients = model_states(symbert.trace(config), Training("adamw"))["gradients"].subs(values)
    assert four.bytes["gradients"] == gradients and four.total - one.total == gradients - one.bytes["gradients"]


def test_fit_steps_seq_len_by_t_under_sequence_parallelism() -> None:
    """seq_len must split over t: the answer is a multiple of t, and t more does not fit."""
    from symbert.training.fit import fit
    from symbert.training.states import Training

    layout = Layout(tensor=4, sequence=True)
    training = Training("adamw", memory=MemoryOptions("torch-cuda", layout=layout))
    result = fit(symbert.preset("bert-small"), training, 2**30, batch=64)
    assert result.seq_len % 4 == 0 and result.peak.total <= 2**30 < result.above.total


def test_allocator_rounding_of_a_shard_is_not_dropped() -> None:
    """pad512(4·B·seq_len/t) is not 0 because 4·B·seq_len would be a multiple of 512: at B=64, seq_len=316,
    t=4 the shard is 20,224 bytes, 256 short of a multiple of 512."""
    from symbert.symbols import pad512

    assert pad512(4 * B * S / t).subs({B: 64, S: 316, t: 4}) == 256
    assert pad512(512 * B * S) == 0


def test_a_family_without_a_plan_refuses_tensor_parallelism(monkeypatch: pytest.MonkeyPatch) -> None:
    import dataclasses

    from symbert.models import MODELS

    monkeypatch.setitem(MODELS, "bert", dataclasses.replace(MODELS["bert"], tensor_plan={}))
    with pytest.raises(ValueError, match="bert declares no tensor-parallel plan"):
        symbert.trace("bert", layout=TP)
    assert symbert.trace("bert", layout=Layout(pipeline=2)).blocks  # a pipeline needs no plan


def test_layers_in_several_blocks_refuse_a_pipeline() -> None:
    """ModernBERT traces layer 0, its other global layers and its local layers apart (they differ), so no
    stage boundary after L/p layers exists in its graph: with p = 2 its first stage held only the global
    layers (61,250,304 parameters of 149,014,272). It is refused in one line instead, as the planner's
    reason for every p > 1."""
    modern = symbert.preset("modernbert-base")
    with pytest.raises(ValueError, match="not one repeated stack"):
        symbert.trace(modern, layout=Layout(pipeline=2))
    result = invoke("report", "--preset", "modernbert-base", "--pipeline-parallel", "2")
    assert result.code == 2 and "not one repeated stack" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("policy", "word_gradient_rows"),
    [("megatron", 15261), ("torch-cpu", 30522)],
)
def test_word_embedding_gradient_per_gpu_by_hand(policy: str, word_gradient_rows: int) -> None:
    """bert-tiny with t=2 holds 2,235,008 parameter elements per rank (above), 15,261 of the 30,522 word
    rows. Megatron's VocabParallelEmbedding keeps that shard's gradient; torch's RowwiseParallel embedding
    returns a Replicate gradient, the whole [30522, 128] table on each rank. The weights are shards either
    way, and the replay holds the same gradients as the model states when the update starts."""
    from symbert.training.states import Training, model_states
    from symbert.training.step import step_memory

    config = symbert.preset("bert-tiny")
    values = {**config.symbols(), B: 2, S: 16, t: 2}
    graph = symbert.trace(config, layout=TP)
    training = Training("adamw", memory=MemoryOptions(policy, layout=TP))
    states = {k: v.subs(values) for k, v in model_states(graph, training).items()}
    gradient_bytes = 4 * (2_235_008 - 15261 * 128 + word_gradient_rows * 128)
    assert states["weights"] == 4 * 2_235_008 == 8_940_032
    assert states["gradients"] == gradient_bytes == {"megatron": 8_940_032, "torch-cpu": 16_753_664}[policy]
    timeline = step_memory(graph, training, values).timeline(values)
    update = next(q for q in timeline if q.step == 1 and q.phase == "optimizer")
    assert update.bytes["gradients"] == gradient_bytes
