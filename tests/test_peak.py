"""The training-step peak against PyTorch: torch.profiler's memory events over two real steps on CPU."""

from __future__ import annotations

import pytest
from conftest import H96_L3, hf

import symbert

CASES = [
    (symbert.preset("bert-tiny"), 2, 16, "adamw"),
    (symbert.preset("bert-tiny"), 4, 128, "sgd"),
    (symbert.Config("bert", H96_L3, "h96-a3-l3"), 3, 20, "momentum"),
]


@pytest.mark.parametrize(("config", "batch", "length", "optimizer"), CASES, ids=lambda v: getattr(v, "name", v))
def test_peak_exact_against_pytorch(config: symbert.Config, batch: int, length: int, optimizer: str) -> None:
    """A bare model's step, to the byte: its loss is the caller's float32 sum of the outputs, held with the
    gradient backward seeds it with (4 bytes each) until backward ends; each scaled product keeps the
    Python number it multiplies by (8 bytes, which saved_tensors_hooks do not see); AdamW's single-tensor
    update makes each parameter's Python numbers 0-dim tensors as it goes."""
    hf()
    from symbert.validate.peak import check_peak

    check = check_peak(config, batch, length, optimizer)
    measured = check.measured.tensors
    assert check.predicted == measured, f"predicted {check.predicted:,}, measured {measured:,}"
    where = check.measured.where
    assert check.predicted_where.startswith(f"step {where.step} {where.name}")


@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "float16"])
def test_kernel_scratch_is_told_apart_from_tensors(dtype: str) -> None:
    """Three products of [64, 64] matrices, by hand: the two operands and the products are tensors (five
    of 64·64 elements at the peak, the last product made while the first two live); what
    a kernel allocates and frees within its call (oneDNN's scratchpad, on CPUs whose 16-bit products
    take one) is scratch, and the peak with it is at least the tensors' peak."""
    hf()
    import torch
    from torch.profiler import ProfilerActivity, profile, record_function

    from symbert.validate.peak import _phases, allocations

    size = 64 * 64 * torch.empty((), dtype=getattr(torch, dtype)).element_size()
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof, record_function("symbert::1:forward"):
        a, b = torch.ones(64, 64, dtype=getattr(torch, dtype)), torch.ones(64, 64, dtype=getattr(torch, dtype))
        products = [a @ b, b @ a, a @ a]
        del products
    events, spans = allocations(prof)
    (phase,) = _phases((events, spans), 0)
    assert phase.tensors == 5 * size
    assert phase.end == 2 * size
    assert phase.peak >= phase.tensors
    assert all(e.nbytes in (size, -size) for e in events if not e.scratch)


#: One layer, four heads of width 8: at seq_len 64 (or 128 in float32) and batch 1 the step peaks inside the
#: CPU math attention kernel's backward.
H32_A4 = symbert.Config(
    "bert",
    {
        "vocab_size": 97,
        "hidden_size": 32,
        "num_hidden_layers": 1,
        "num_attention_heads": 4,
        "intermediate_size": 128,
        "max_position_embeddings": 128,
        "type_vocab_size": 2,
    },
    "h32-a4-l1",
)


@pytest.mark.parametrize(
    ("head", "length", "attention", "amp"),
    [
        (None, 64, "sdpa", "bfloat16"),
        (None, 64, "sdpa", "float16"),
        (None, 128, "sdpa", None),
        ("sequence-classification", 64, "eager", "float16"),
    ],
)
def test_every_phase_exact_against_pytorch(head: str | None, length: int, attention: str, amp: str | None) -> None:
    """Every phase of two real AdamW steps on CPU, its highest point (tensors, without kernels' scratch) and
    its end, to the byte: a bare model's loss is the caller's, made when the forward returns (its 4 bytes
    end the forward); the outputs and the loss are held until backward returns; the optimizer updates the
    parameters in the order modules register them (under autocast too: ``embeddings.position_embeddings``
    before ``token_type_embeddings``, the largest update's temporaries beside the previous one's); and the
    math kernel's backward peaks where it has made the attention weights' gradient and V's, from the
    output's gradient copied contiguous in the compute dtype. The optimizer phase here includes zero_grad."""
    hf()
    from symbert.analysis.policy import MemoryOptions
    from symbert.api import trace
    from symbert.configs import with_task
    from symbert.symbols import B, seq_len
    from symbert.training.states import Training
    from symbert.training.step import phases, step_memory
    from symbert.validate.compare import hugging_face
    from symbert.validate.peak import measure_steps

    config = with_task(H32_A4, head=head) if head else H32_A4
    values = {**config.symbols(), B: 1, seq_len: length}
    training = Training("adamw", "amp" if amp else "fp32", MemoryOptions("torch-cpu", amp, attention))
    timeline = step_memory(trace(config), training, values).timeline(values)
    predicted = [(p.step, p.name, p.peak.total, p.end) for p in phases(timeline)]
    measured_phases = measure_steps(lambda: hugging_face(config, 1, length, "float32", attention), amp=amp)[0].phases
    measured = []
    for forward, backward, update, zero_grad in zip(*[iter(measured_phases)] * 4, strict=True):
        measured += [
            (forward.step, "forward", forward.tensors, forward.end),
            (backward.step, "backward", backward.tensors, backward.end),
            (update.step, "optimizer", max(update.tensors, zero_grad.tensors), zero_grad.end),
        ]
    assert predicted == measured
