"""Two ranks on CPU (torch.distributed over gloo): what each rank holds, against truth worked by hand
from bert-tiny's sizes and against one process measured the same way. One spawn per layout."""

from __future__ import annotations

from typing import Any

import pytest
from conftest import hf
from inprocess import invoke

import symbert
from symbert.configs import with_overrides
from symbert.parallel import Layout

TINY = symbert.preset("bert-tiny")
BATCH, SEQ = 2, 16
#: bert-tiny's sizes (INTER is the intermediate size I).
V, POS, TYPES, H, L, A, INTER = 30522, 512, 2, 128, 2, 2, 512
#: Its parameters: embeddings and their layer norm, L layers, the pooler.
PARAMS = (V + POS + TYPES) * H + 2 * H + L * (4 * H * H + 4 * H + 2 * H * INTER + INTER + H + 4 * H) + H * H + H
#: Bytes of the batch every rank takes: input ids, token types and attention mask, int64 [B, S] each.
INPUTS = 3 * 8 * BATCH * SEQ
#: What the profiler may miss under tensor parallelism: a few all-reduce outputs, [B, S, H] float32 each,
#: freed on gloo's worker threads.
ALL_REDUCES = 16 * 4 * BATCH * SEQ * H


def distributed() -> None:
    """Skip, saying why, unless the validate extra and torch.distributed with gloo are there."""
    hf()
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_gloo_available()):
        pytest.skip("this PyTorch has no torch.distributed with the gloo backend")


def ranks(config: symbert.Config, layout: Layout) -> list[Any]:
    distributed()
    from symbert.validate.distributed import measure_ranks

    measured = measure_ranks(config, BATCH, SEQ, layout)
    assert [r.rank for r in measured] == list(range(layout.gpus))
    return measured


@pytest.fixture(scope="module")
def single() -> Any:
    """One process, measured as every rank is: parameters, saved bytes, two training steps."""
    hf()
    from symbert.validate import measure
    from symbert.validate.hf import hugging_face
    from symbert.validate.peak import measure_steps

    steps, model, inputs = measure_steps(lambda: hugging_face(TINY, BATCH, SEQ, "float32"))
    return measure.count_parameters(model), measure.measure_saved_bytes(model, inputs), steps


@pytest.fixture(scope="module")
def ddp() -> list[Any]:
    return ranks(TINY, Layout(data=2))


@pytest.fixture(scope="module")
def fsdp() -> list[Any]:
    """bert-tiny with one word more, so that one parameter has an odd number of rows."""
    return ranks(with_overrides(TINY, [f"vocab_size={V + 1}"]), Layout(data=2, zero=3))


@pytest.fixture(scope="module")
def tensor() -> list[Any]:
    return ranks(TINY, Layout(tensor=2))


def test_one_process_holds_bert_tiny(single: Any) -> None:
    assert single[0] == PARAMS == 4_385_920
    assert single[2].baseline == 4 * PARAMS + INPUTS


def test_ddp_rank_holds_and_saves_what_one_process_does(ddp: list[Any], single: Any) -> None:
    for rank in ddp:
        assert rank.params == PARAMS
        assert rank.saved == single[1]


def test_ddp_buckets_hold_one_float32_copy_of_the_gradients(ddp: list[Any], single: Any) -> None:
    """gradient_as_bucket_view is off: the buckets are allocated when DDP wraps the model and live on."""
    for rank in ddp:
        assert rank.steps.baseline == single[2].baseline + 4 * PARAMS
        assert abs(rank.steps.peak - (single[2].peak + 4 * PARAMS)) <= 64 * 1024


def test_fsdp_rank_holds_its_shard_of_every_parameter(fsdp: list[Any], single: Any) -> None:
    """FSDP2 splits dim 0 of every parameter in ⌈rows/2⌉ and pads the shorter shard: with one word more
    (30,523 rows), rank 1's 15,261 word rows are padded to rank 0's 15,262."""
    held = (PARAMS + H + H) // 2  # the one odd dim 0 gains half a row, all others halve
    assert held == 2_193_088
    for rank in fsdp:
        assert rank.params == held
        assert rank.saved == single[1]  # gathered weights are parameters, not activations; ids are ids
        assert abs(rank.steps.baseline - (4 * held + INPUTS)) <= 1024


def tensor_parallel_params(t: int) -> int:
    """bert-tiny's parameters per rank of t: the word embeddings by rows (vocabulary), query, key and
    value by columns (weight and bias), attention.output.dense by rows (its bias whole),
    intermediate.dense by columns, output.dense by rows; the other embeddings, layer norms and pooler
    whole."""
    split = V * H + L * (3 * (H * H + H) + H * H + (H * INTER + INTER) + INTER * H)
    return PARAMS - split + split // t


def test_tensor_parallel_rank_holds_its_rows_and_columns(tensor: list[Any]) -> None:
    assert tensor_parallel_params(2) == 2_235_008
    for rank in tensor:
        assert rank.params == tensor_parallel_params(2)
        # the device mesh's own small tensors
        assert abs(rank.steps.baseline - (4 * rank.params + INPUTS)) <= 4096


def test_tensor_parallel_rank_saves_half_of_the_split_activations(tensor: list[Any], single: Any) -> None:
    """Per layer, float32: query, key, value and the merged heads [B, S, H] each; softmax's output, the
    dropout noise and its output [B, A, S, S] each; GELU's input and output [B, S, I] each are split
    over the two ranks; the layer norms, residual path and dropouts of [B, S, H] stay whole."""
    split = 4 * (4 * BATCH * SEQ * H + 3 * BATCH * A * SEQ * SEQ + 2 * BATCH * SEQ * INTER)
    for rank in tensor:
        assert rank.saved == single[1] - L * split // 2


def test_tensor_parallel_word_embedding_gradient_is_whole(tensor: list[Any]) -> None:
    """torch's RowwiseParallel embedding returns a Replicate gradient: when the update starts, each rank
    holds its parameters, every gradient of its shards and the word embeddings' whole [V, H] gradient."""
    for rank in tensor:
        update = next(p for p in rank.steps.phases if (p.step, p.name) == (1, "optimizer"))
        assert abs(update.start - (4 * rank.params + 4 * (rank.params + V * H // 2) + INPUTS)) <= ALL_REDUCES


def compared(config: symbert.Config, layout: Layout, measured: list[Any]) -> list[list[Any]]:
    from symbert.validate.distributed import compare_ranks

    checks = compare_ranks(config, BATCH, SEQ, layout, measured)
    for rank in checks:
        assert [c.quantity for c in rank[:2]] == ["params", "activation_bytes"]
        assert rank[2].quantity.startswith("peak (step ")
    return checks


def test_ddp_matches_the_per_gpu_prediction(ddp: list[Any]) -> None:
    """DDP under the torch engine: the buckets in the prediction, the peak to a few kilobytes."""
    for checks in compared(TINY, Layout(data=2), ddp):
        assert all(c.ok for c in checks)
        assert abs(checks[2].predicted - checks[2].measured) <= 64 * 1024


def test_fsdp_matches_the_per_gpu_prediction(fsdp: list[Any]) -> None:
    """Padded dim-0 shards and saved bytes exactly; the peak is shown only (NOTES), and the profiler
    can only miss frees, so the measured peak is never below the prediction by more than the tolerance."""
    config = with_overrides(TINY, [f"vocab_size={V + 1}"])
    for checks in compared(config, Layout(data=2, zero=3), fsdp):
        assert all(c.ok for c in checks[:2]) and checks[2].tolerance is None
        assert checks[2].predicted <= checks[2].measured * 1.02


def test_tensor_parallel_matches_the_per_gpu_prediction(tensor: list[Any]) -> None:
    """Parameters and saved bytes exactly; the peak with the word embeddings' whole gradient (the torch
    engine's convention), above the prediction by no more than the all-reduce outputs the profiler may
    miss (a missed free only adds)."""
    for checks in compared(TINY, Layout(tensor=2), tensor):
        assert all(c.ok for c in checks)
        assert 0 <= checks[2].measured - checks[2].predicted <= ALL_REDUCES


def test_tensor_parallel_validate_exits_0(tensor: list[Any], monkeypatch: pytest.MonkeyPatch) -> None:
    """The command on the two ranks measured above: every check passes on both."""
    from symbert.validate import distributed as module

    monkeypatch.setattr(module, "measure_ranks", lambda *_, **__: tensor)
    flags = ["--batch", str(BATCH), "--seq-len", str(SEQ), "--tensor-parallel", "2"]
    outcome = invoke("validate", "--preset", "bert-tiny", *flags)
    assert outcome.code == 0, outcome
    assert "rank 0 of 2 ranks" in outcome.stdout and "rank 1 of 2 ranks" in outcome.stdout
    assert outcome.stdout.count(" ok ") == 6 and "MISMATCH" not in outcome.stdout


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--tensor-parallel", "3"], "does not divide the 2 attention heads"),
        (["--data-parallel", "2", "--zero", "1"], "ZeRO 0 (DDP) or 3"),
        (["--pipeline-parallel", "2"], "pipeline and sequence parallelism are not run"),
        (["--data-parallel", "2", "--tensor-parallel", "2"], "not both"),
        (["--data-parallel", "2", "--attention", "sdpa"], "float32 eager attention on CPU"),
        (["--data-parallel", "2", "--head", "mlm", "--set", "tie_word_embeddings=false"], "tie_word_embeddings=False"),
    ],
)
def test_layouts_validate_cannot_run_are_refused_in_one_line(flags: list[str], message: str) -> None:
    distributed()
    outcome = invoke("validate", "--preset", "bert-tiny", *flags)
    assert outcome.refused, outcome
    assert message in outcome.stderr
