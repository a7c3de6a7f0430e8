"""The graph itself: nodes, scopes, roles, the symbolic repeat."""

from __future__ import annotations

import sympy

import symbert
from symbert.ir import Role
from symbert.symbols import A, B, H, L, seq_len


def test_layer_is_traced_once_whatever_l() -> None:
    graph = symbert.trace()
    layer_nodes = [n for n in graph.nodes if n.block == "encoder/layer"]
    assert graph.blocks["encoder/layer"].count == L
    # Q, K, V: 3 linears, 3 reshapes, 3 transposes, and torch.matmul's 3 copies folding their batch; Kᵀ; scores,
    # scale, mask, softmax, dropout, context; merge heads: transpose, copy, view; two residual blocks of dense,
    # dropout, add, LayerNorm; dense, GELU.
    assert len(layer_nodes) == 3 * 4 + 1 + 6 + 3 + 2 * 4 + 2
    small = symbert.trace(symbert.preset("bert-tiny"), unroll=True)
    big = symbert.trace(symbert.with_overrides(symbert.preset("bert-tiny"), ["num_hidden_layers=7"]), unroll=True)
    assert len(list(big.nodes)) - len(list(small.nodes)) == 5 * len(layer_nodes)


def test_attention_shapes_and_roles() -> None:
    graph = symbert.trace()
    scores = graph.node("encoder/layer/attention/self/scores")
    assert graph.tensor(scores.outputs[0]).shape == (B, A, seq_len, seq_len)
    q = graph.tensor(scores.inputs[0])
    assert q.shape == (B, A, seq_len, H / A)
    assert q.producer == "encoder/layer/attention/self/query_fold"  # torch.matmul's copy, folding the batch
    fold = graph.node(q.producer)
    assert graph.storage(fold.inputs[0]).producer == "encoder/layer/attention/self/query"
    dropout = graph.node("encoder/layer/attention/self/dropout")
    assert graph.tensor(dropout.outputs[1]).role == Role.MASK
    ln = graph.node("encoder/layer/output/LayerNorm")
    assert [graph.tensor(t).role for t in ln.outputs] == [Role.ACTIVATION, Role.STATISTICS, Role.STATISTICS]
    assert graph.tensor(ln.outputs[1]).shape == (B, seq_len, 1)


def test_scale_factor_is_inverse_sqrt_head_size() -> None:
    node = symbert.trace().node("encoder/layer/attention/self/scale")
    assert sympy.simplify(node.attr("factor") - 1 / sympy.sqrt(H / A)) == 0


def test_index_tensors_do_not_require_grad() -> None:
    graph = symbert.trace()
    assert not graph.tensor("input_ids:0").requires_grad
    assert graph.tensor("embeddings/word_embeddings:0").requires_grad
