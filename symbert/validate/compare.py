"""Predicted against measured: symbert's numbers next to a real Hugging Face model's."""

from __future__ import annotations

from dataclasses import dataclass

from symbert.analysis.policy import MemoryOptions
from symbert.analysis.report import report
from symbert.configs import Config, ConfigError
from symbert.validate import measure


@dataclass(frozen=True)
class Check:
    """One quantity, as symbert predicts it and as PyTorch measures it."""

    quantity: str
    predicted: int
    measured: int

    @property
    def ok(self) -> bool:
        return self.predicted == self.measured


def validate(config: Config, batch: int, seq_len: int, dtype: str = "float32") -> list[Check]:
    """Build the Hugging Face model for ``config`` and compare every quantity under ``torch-cpu``."""
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
    hf_config = {**config.values, **{o.name: structure[o.name] for o in config.spec.options if o.from_config}}
    predicted = report(config, batch, seq_len, MemoryOptions("torch-cpu", dtype))
    model = measure.build_model(config.model, hf_config, dtype, pooler=structure.get("pooler", True))
    inputs = measure.make_inputs(config.model, hf_config, batch, seq_len)
    saved = measure.measure_saved_bytes(model, inputs)
    forward, backward = measure.measure_flops(model, inputs)
    return [
        Check("params", predicted.value("params"), measure.count_parameters(model)),
        Check("activation_bytes", predicted.value("activation_bytes"), saved),
        Check("flops_forward", predicted.value("flops_forward"), forward),
        Check("flops_backward", predicted.value("flops_backward"), backward),
    ]
