"""Predicted against measured: symbert's numbers next to a real Hugging Face model's."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import sympy

from symbert import symbols
from symbert.analysis.policy import MemoryOptions
from symbert.analysis.report import report
from symbert.configs import Config, ConfigError
from symbert.ops import OPS
from symbert.render.formula import quantity
from symbert.validate import measure

#: The inputs every encoder takes; the graph's other inputs are a head's labels.
ENCODER_INPUTS = ("input_ids", "token_type_ids", "attention_mask")


@dataclass(frozen=True)
class Check:
    """One quantity, as symbert predicts it and as PyTorch measures it."""

    quantity: str
    predicted: int
    measured: int

    @property
    def ok(self) -> bool:
        return self.predicted == self.measured


def hugging_face(config: Config, batch: int, length: int, dtype: str) -> tuple[Any, dict[str, Any]]:
    """The Hugging Face model ``config`` describes (its head's class, or the bare model) and its inputs,
    labels included: each label the traced graph takes, by name, shape and dtype."""
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
    hf_config = {**config.values, **{o.name: structure[o.name] for o in config.spec.options if o.from_config}}
    hf_config |= {k: v for k, v in config.task_dict().items() if k in ("num_labels", "problem_type")}
    head, graph = config.head, trace(config)
    values = {**config.symbols(), symbols.B: batch, symbols.seq_len: length}
    labels = {}
    for node in graph.nodes:
        name = node.name.rsplit("/", 1)[-1]
        if OPS[node.op].graph_input and name not in ENCODER_INPUTS:
            t = graph.tensor(node.outputs[0])
            labels[name] = (tuple(int(sympy.sympify(d).subs(values)) for d in t.shape), t.dtype)
    model = measure.build_model(
        config.model, hf_config, dtype, pooler=structure.get("pooler", True), architecture=head and head.architecture
    )
    choices = config.task.choices if head is not None and len(head.batch) > 1 else None
    return model, measure.make_inputs(config.model, hf_config, batch, length, choices, labels)


#: The most memory validate lets the real model take (its float32 parameters and the activations kept for
#: backward, as predicted), since it builds and runs it on the CPU.
VALIDATE_LIMIT = 16 * 2**30


def validate(config: Config, batch: int, seq_len: int, dtype: str = "float32") -> list[Check]:
    """Build the Hugging Face model for ``config`` and compare every quantity under ``torch-cpu``."""
    predicted = report(config, batch, seq_len, MemoryOptions("torch-cpu", dtype))
    need = 4 * predicted.value("params") + predicted.value("activation_bytes")
    if need > VALIDATE_LIMIT:
        raise ConfigError(
            f"validate builds and runs the real model on the CPU: this one needs about {quantity(need, 'bytes')} "
            f"(at most {quantity(VALIDATE_LIMIT, 'bytes')}); try smaller sizes"
        )
    model, inputs = hugging_face(config, batch, seq_len, dtype)
    saved = measure.measure_saved_bytes(model, inputs)
    forward, backward = measure.measure_flops(model, inputs)
    return [
        Check("params", predicted.value("params"), measure.count_parameters(model)),
        Check("activation_bytes", predicted.value("activation_bytes"), saved),
        Check("flops_forward", predicted.value("flops_forward"), forward),
        Check("flops_backward", predicted.value("flops_backward"), backward),
    ]
