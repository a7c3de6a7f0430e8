"""The quantities symbert computes, and the one table of words each may be given as.

Commands take a quantity by its name (``activation_bytes``) or by an alias from :data:`ALIASES`
(``activations``, ``memory``, ``parameters``, ``flops``…), in any case, with ``-`` or ``_``.
"""

from __future__ import annotations

from collections.abc import Sequence

#: The quantities of a report (``params``, ``report``, ``explain``, ``table``, ``latex``, ``compare``).
QUANTITIES = ("params", "activation_bytes", "flops_forward", "flops_backward", "non_matmul_forward")

#: What ``sweep`` adds: model states and the peak of a training step.
TRAINING_QUANTITIES = ("weights", "gradients", "optimizer_states", "peak")

#: Alias → quantity. ``flops`` is the forward matmul FLOPs, as ``report`` and the README count them.
ALIASES: dict[str, str] = {
    "param": "params",
    "parameters": "params",
    "parameter": "params",
    "activations": "activation_bytes",
    "activation": "activation_bytes",
    "activation_memory": "activation_bytes",
    "memory": "activation_bytes",
    "flops": "flops_forward",
    "flop": "flops_forward",
    "forward": "flops_forward",
    "fwd": "flops_forward",
    "flops_fwd": "flops_forward",
    "backward": "flops_backward",
    "bwd": "flops_backward",
    "flops_bwd": "flops_backward",
    "non_matmul": "non_matmul_forward",
    "other": "non_matmul_forward",
    "flops_other": "non_matmul_forward",
    "optimizer": "optimizer_states",
    "states": "optimizer_states",
    "grads": "gradients",
    "weight": "weights",
    "peak_memory": "peak",
}


def canonical(name: str, choices: Sequence[str] = QUANTITIES) -> str:
    """The quantity ``name`` names among ``choices``; a ValueError (one line, naming them) otherwise."""
    key = name.strip().lower().replace("-", "_")
    key = key if key in choices else ALIASES.get(key, key)
    if key not in choices:
        aliases = sorted(a for a, q in ALIASES.items() if q in choices)
        raise ValueError(f"unknown quantity {name!r}: choose from {', '.join(choices)} (or {', '.join(aliases)})")
    return key
