"""Tensor, sequence and pipeline parallelism on the traced graph: the published forms as sympy identities,
parameter shards counted by hand, and one GPU as the special case t = p = 1."""

from __future__ import annotations

import pytest
import sympy

import symbert
from symbert.analysis.activations import activations
from symbert.analysis.flops import flops
from symbert.analysis.policy import MemoryOptions
from symbert.ops import OPS
from symbert.parallel import Layout, m, p, t, v
from symbert.symbols import A, B, E, H, I, L, seq_len

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
