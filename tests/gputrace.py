"""The real H100 allocation trace (tests/fixtures/gpu/) and how its events fall into phases."""

from __future__ import annotations

import functools
import json
from collections.abc import Iterator

from tests.conftest import ROOT, hf

TRACE = json.loads((ROOT / "tests/fixtures/gpu/h100-trace-bert-base-b8-s128-fp32.json").read_text())

#: The measurement script's lines (first frame outside torch): the model call and the loss are in its
#: ``forward``; line 100 is ``loss.backward()``, line 103 ``optimizer.step()`` and ``zero_grad``. Requests
#: with no Python frame run on autograd's backward thread and belong to the phase under way.
PHASE_OF_LINE = {"65": "forward", "67": "forward", "100": "backward", "103": "optimizer"}


def phased() -> Iterator[tuple[str | None, list]]:
    """Each event with the phase it starts ("1 forward", …), or None when it continues the one under way."""
    phase = None
    step = 0
    for event in TRACE["events"]:
        name = PHASE_OF_LINE.get(event[3].split(":")[1])
        if name and name != phase and (event[0] == "a" or name != "forward"):
            step += name == "forward"
            phase = name
            yield f"{step} {name}", event
        else:
            yield None, event


@functools.cache
def base_requests() -> tuple[int, ...]:
    """The bytes of each parameter and buffer in ``Module.to("cuda")`` order, then the inputs."""
    transformers = hf()
    import torch

    with torch.device("meta"):
        model = transformers.BertModel(transformers.BertConfig(**TRACE["config"]))
    sizes: list[int] = []

    def visit(module) -> None:
        for child in module.children():
            visit(child)
        for tensor in (*module._parameters.values(), *module._buffers.values()):
            if tensor is not None:
                sizes.append(tensor.numel() * tensor.element_size())

    visit(model)
    inputs = TRACE["case"]["B"] * TRACE["case"]["s"] * 8  # input_ids, token_type_ids, attention_mask: int64
    return (*sizes, *[inputs] * 3)
