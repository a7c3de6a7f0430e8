"""Predicted against measured: symbert's numbers next to a real Hugging Face model's."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from symbert.analysis.policy import MemoryOptions
from symbert.analysis.report import report
from symbert.configs import Config, ConfigError
from symbert.formula import quantity
from symbert.training.states import DEFAULT_OPTIMIZER
from symbert.validate import measure
from symbert.validate.hf import ATTENTION, hugging_face
from symbert.validate.peak import check_peak


@dataclass(frozen=True)
class Check:
    """One quantity, as symbert predicts it and as PyTorch measures it."""

    quantity: str
    predicted: int
    measured: int
    #: The relative error allowed: 0 for exact quantities, None for an estimate that is shown, not checked.
    tolerance: float | None = 0.0

    @property
    def ok(self) -> bool:
        if self.tolerance is None:
            return True
        return abs(self.predicted - self.measured) <= self.tolerance * self.measured


#: The training-step peak's allowed relative error on CUDA (against max_memory_allocated).
PEAK_TOLERANCE = 0.005

#: The most memory validate lets the real model take (its float32 parameters and the activations kept for
#: backward, as predicted), since it builds and runs it.
VALIDATE_LIMIT = 16 * 2**30


def check_size(predicted: Any) -> None:
    """A ConfigError when the model a report predicts needs more than :data:`VALIDATE_LIMIT` to run."""
    need = 4 * predicted.value("params") + predicted.value("activation_bytes")
    if need > VALIDATE_LIMIT:
        raise ConfigError(
            f"validate builds and runs the real model: this one needs about {quantity(need, 'bytes')} "
            f"(at most {quantity(VALIDATE_LIMIT, 'bytes')}); try smaller sizes"
        )


def validate(
    config: Config,
    batch: int,
    seq_len: int,
    dtype: str = "float32",
    device: str = "cpu",
    attention: str = "eager",
    amp: bool = False,
    step_peak: bool = False,
) -> list[Check]:
    """Build the Hugging Face model for ``config`` on ``device`` and compare every quantity under
    ``torch-cpu`` or ``torch-cuda``; on CUDA in float32 also the training-step peak (allocated, within
    :data:`PEAK_TOLERANCE`) and the reserved-memory estimate (shown, not checked); with ``step_peak``, on CPU
    in float32 or under autocast, the peak of two AdamW steps' tensors, exactly, and beside it the peak
    with the scratch kernels take (shown, not checked: it depends on the CPU's instruction set).

    ``attention`` is ``eager`` or ``sdpa``, symbert's option and Hugging Face's ``attn_implementation``
    alike (``flash`` forces a kernel Hugging Face has no switch for). ``amp`` runs a float32 model under
    ``torch.autocast(device, dtype)``. The batch has one padded token when the config models padding
    (the default), none with ``padding`` off (:func:`~symbert.validate.hf.padded`).
    """
    if attention not in ATTENTION:
        raise ConfigError(f"validate builds eager or sdpa attention, not {attention!r}")
    options = MemoryOptions(f"torch-{device}", dtype, attention, amp=amp)
    predicted = report(config, batch, seq_len, options)  # checks the shape first
    check_size(predicted)
    try:  # the user's own file may describe a model Hugging Face cannot build or run
        model, inputs = hugging_face(config, batch, seq_len, "float32" if amp else dtype, attention, device)
        saved = measure.measure_saved_bytes(model, inputs, dtype if amp else None)
        forward, backward = measure.measure_flops(model, inputs)
    except (RuntimeError, IndexError, ValueError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ConfigError(f"Hugging Face cannot build or run this model: {first}") from None
    checks = [
        Check("params", predicted.value("params"), measure.count_parameters(model)),
        Check("activation_bytes", predicted.value("activation_bytes"), saved),
        Check("flops_forward", predicted.value("flops_forward"), forward),
        Check("flops_backward", predicted.value("flops_backward"), backward),
    ]
    if device == "cuda" and dtype == "float32":
        del model, inputs
        peak = check_peak(config, batch, seq_len, DEFAULT_OPTIMIZER, "cuda", attention)
        checks.append(Check("peak_allocated", peak.predicted, peak.measured.peak, PEAK_TOLERANCE))
        if peak.predicted_reserved is not None and peak.measured.reserved is not None:
            checks.append(Check("peak_reserved (estimate)", peak.predicted_reserved, peak.measured.reserved, None))
    elif step_peak and device == "cpu" and (amp or dtype == "float32"):
        del model, inputs
        peak = check_peak(config, batch, seq_len, DEFAULT_OPTIMIZER, "cpu", attention, dtype if amp else None)
        checks.append(Check("peak_tensors", peak.predicted, peak.measured.tensors))
        checks.append(Check("peak_with_kernel_scratch (not modelled)", peak.predicted, peak.measured.peak, None))
    return checks
