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
