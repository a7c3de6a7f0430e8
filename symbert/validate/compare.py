"""Predicted against measured: symbert's numbers next to a real Hugging Face model's."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import sympy

from symbert import symbols
from symbert.analysis.policy import MemoryOptions
from symbert.analysis.report import report
from symbert.configs import Config, ConfigError
from symbert.formula import quantity
from symbert.ops import OPS
from symbert.training.states import DEFAULT_OPTIMIZER
from symbert.validate import measure

#: The inputs every encoder takes; the graph's other inputs are a head's labels.
ENCODER_INPUTS = ("input_ids", "token_type_ids", "attention_mask")


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


def hugging_face(
    config: Config, batch: int, length: int, dtype: str, attention: str = "eager", device: str = "cpu"
) -> tuple[Any, dict[str, Any]]:
    """The Hugging Face model ``config`` describes (its head's class, or the bare model), built with
    ``attention`` (``attn_implementation``), and its inputs, labels included: each label the traced
    graph takes, by name, shape and dtype; one token padded when the graph has padding (:func:`padded`).
    Both are on ``device``."""
    from symbert.api import trace

    try:
        import torch  # noqa: F401
        import transformers  # noqa: F401
    except ImportError:
        raise ConfigError("validate needs the validate extra: pip install 'symbert[validate]'") from None
    structure = config.structure()
    if not structure.get("token_types", True):
        raise ConfigError(
            f"Hugging Face's {config.model} model always has token-type embeddings; drop --no-token-types"
        )
    hf_config = user_config(config)
    head, graph = config.head, trace(config)
    values = {**config.symbols(), symbols.B: batch, symbols.seq_len: length}
    labels = {}
    for node in graph.nodes:
        name = node.name.rsplit("/", 1)[-1]
        if OPS[node.op].graph_input and name not in ENCODER_INPUTS:
            t = graph.tensor(node.outputs[0])
            labels[name] = (tuple(int(sympy.sympify(d).subs(values)) for d in t.shape), t.dtype)
    model = measure.build_model(
        config.model,
        hf_config,
        dtype,
        pooler=structure.get("pooler", True),
        architecture=head and head.architecture,
        attention=attention,
    )
    choices = config.task.choices if head is not None and len(head.batch) > 1 else None
    inputs = measure.make_inputs(config.model, hf_config, batch, length, choices, labels)
    if padded(config):
        inputs = measure.pad(inputs)
    return model.to(device), {k: v.to(device) for k, v in inputs.items()}


def user_config(config: Config) -> Any:
    """The Hugging Face config the real model is built from. For a config file, the user's own: read by
    ``AutoConfig`` from the file with every key kept (by the family's config class when the file names
    no ``model_type`` but a class symbert knows), then the changes made since (``--set``, labels) set on
    it; never symbert's reading of it, so a key symbert mishandles shows as a mismatch. For a preset, its
    keys (:meth:`~symbert.configs.Config.hugging_face`)."""
    if config.source is None:
        return config.hugging_face()
    import transformers

    source = config.source
    reader = transformers.AutoConfig if "model_type" in source.data else transformers.CONFIG_MAPPING[config.model]
    try:
        hf_config = reader.from_pretrained(source.path)
    except (OSError, ValueError, TypeError, KeyError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(f"Hugging Face cannot read {source.path}: {first}") from None
    for key, value in source.changes.items():
        setattr(hf_config, key, value)
    return hf_config


def padded(config: Config) -> bool:
    """Whether the batch symbert models for ``config`` has padding (option ``padding``, on where a family
    has none). Measurements then pad one token (:func:`~symbert.validate.measure.pad`), so that Hugging
    Face builds and passes the padding mask too; otherwise every token is real and it passes none (a
    sliding-window mask is built either way)."""
    return bool(config.structure().get("padding", True))


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
    (the default), none with ``padding`` off (:func:`padded`).
    """
    if attention not in measure.ATTENTION:
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
        from symbert.validate.peak import check_peak

        del model, inputs
        peak = check_peak(config, batch, seq_len, DEFAULT_OPTIMIZER, "cuda", attention)
        checks.append(Check("peak_allocated", peak.predicted, peak.measured.peak, PEAK_TOLERANCE))
        if peak.predicted_reserved is not None and peak.measured.reserved is not None:
            checks.append(Check("peak_reserved (estimate)", peak.predicted_reserved, peak.measured.reserved, None))
    elif step_peak and device == "cpu" and (amp or dtype == "float32"):
        from symbert.validate.peak import check_peak

        del model, inputs
        peak = check_peak(config, batch, seq_len, DEFAULT_OPTIMIZER, "cpu", attention, dtype if amp else None)
        checks.append(Check("peak_tensors", peak.predicted, peak.measured.tensors))
        checks.append(Check("peak_with_kernel_scratch (not modelled)", peak.predicted, peak.measured.peak, None))
    return checks
