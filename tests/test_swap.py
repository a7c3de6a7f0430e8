"""Another optimizer swapped into a replay (:mod:`symbert.training.swap`) gives what a replay of its own gives."""

from __future__ import annotations

import pytest

from symbert.analysis.policy import MemoryOptions
from symbert.api import per_gpu
from symbert.configs import resolve
from symbert.parallel import Layout
from symbert.render.explore import replayed
from symbert.training.states import OPTIMIZERS, Training
from symbert.training.step import Candidate, step_memory
from symbert.training.swap import OptimizerSwap


def _seen(candidates: list[Candidate]) -> list[tuple]:
    """What a candidate is: where, its run's index and its bytes per category, term by term."""
    return [((c.event.step, c.event.phase, c.event.label, c.event.run, sorted(c.event.hidden.items())), c.index,
             {category: dict(size) for category, size in c.memory.items()}) for c in candidates]


CUDA = dict(policy="torch-cuda")
SETUPS = {
    "fp32": ("bert-base", "fp32", MemoryOptions(**CUDA), "h100", None),
    "mixed, full recompute": ("bert-base", "mixed", MemoryOptions(**CUDA, recompute="full"), "a100-40gb", None),
    "fp16 amp, GradScaler": ("bert-base", "amp", MemoryOptions(**CUDA, dtype="float16", attention="eager"), "h100",
                             None),
    "cpu": ("bert-base", "fp32", MemoryOptions(), None, None),
    "ddp": ("bert-base", "fp32", MemoryOptions(**CUDA, layout=Layout(data=2)), "h100", None),
    "deepspeed zero 1, mixed": ("bert-base", "mixed", MemoryOptions(**CUDA, layout=Layout(data=2, zero=1)), "h100",
                                "deepspeed"),
    "fsdp zero 3": ("bert-base", "fp32", MemoryOptions(**CUDA, layout=Layout(data=2, zero=3)), "h100", None),
    "pipeline": ("bert-base", "fp32", MemoryOptions(**CUDA, layout=Layout(pipeline=2, microbatches=4)), "h100", None),
    "deberta": ("deberta-v3-base", "fp32", MemoryOptions(**CUDA), "h100", None),
    "modernbert, amp, selective": ("modernbert-base", "amp", MemoryOptions(**CUDA, recompute="selective"), "h100",
                                   None),
}


@pytest.mark.parametrize(("model", "precision", "memory", "gpu", "engine"), SETUPS.values(), ids=SETUPS)
def test_a_swapped_optimizer_replays_as_its_own_replay(model, precision, memory, gpu, engine):
    config = resolve(model, None, ("num_hidden_layers=4",))
    graph, sizes = per_gpu(config, memory.layout)
    first, *others = [Training(o, precision, memory, gpu, None, engine) for o in OPTIMIZERS]
    swap = OptimizerSwap(step_memory(graph, first, sizes))
    for training in others:
        assert _seen(swap.of(training).candidates()) == _seen(step_memory(graph, training, sizes).candidates), \
            training.optimizer


def test_only_the_optimizer_may_differ():
    config = resolve("bert-base", None, ("num_hidden_layers=4",))
    graph, sizes = per_gpu(config)
    swap = OptimizerSwap(step_memory(graph, Training("adamw", "fp32", MemoryOptions(**CUDA), "h100"), sizes))
    with pytest.raises(ValueError, match="more than the optimizer"):
        swap.of(Training("sgd", "mixed", MemoryOptions(**CUDA), "h100"))


def test_the_pages_replays_of_a_walk_are_each_its_own():
    """explore replays one walk for every optimizer and GPU: the workspaces' sizes left open, each GPU's
    evaluated at its own, the other optimizers swapped in, each phase's candidates shifted. That is what
    reducing each setup's replay alone gives."""
    config = resolve("bert-base", None, ("num_hidden_layers=4",))
    for precision in ("fp32", "amp"):
        group = [Training(o, precision, MemoryOptions(**CUDA), gpu) for gpu in ("h100", "a100-40gb")
                 for o in ("sgd", "momentum", "adamw-fused", "adamw-foreach", "adamw-single")]
        shared = replayed(config, group)
        alone = [replayed(config, [t])[0] for t in group]
        assert [_listed(s) for s in shared] == [_listed(a) for a in alone]


def _listed(step) -> list:
    """A reduced replay's phases, each candidate's rows by term rather than by term number."""
    terms = dict(enumerate(step.terms))
    return [(number, phase, [(where, [{terms[j]: v for j, v in row} for row in cats]) for where, cats in kept])
            for number, phase, kept in step.phases]


def test_cards_whose_workspaces_differ_in_more_than_size_share_no_walk():
    config = resolve("bert-base", None, ("num_hidden_layers=4",))
    with pytest.raises(ValueError, match="other workspaces"):
        replayed(config, [Training("sgd", "fp32", MemoryOptions(**CUDA), "h100"), Training("sgd", "fp32")])
