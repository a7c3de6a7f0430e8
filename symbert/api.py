"""The Python API: trace a model into a graph, then run passes over it."""

from __future__ import annotations

from functools import lru_cache

from symbert.configs import Config
from symbert.ir import Graph
from symbert.models import MODELS
from symbert.models.heads import BARE, Encoded, Task, encoder_options
from symbert.symbols import B
from symbert.tracer import Tracer, graph_output, scope, tracing


def trace(model: str | Config = "bert", *, unroll: bool = False, task: Task | None = None, **options: object) -> Graph:
    """Trace a model family (or a config's family, options and task) into a symbolic graph.

    The encoder layer is traced once and repeated L times symbolically; ``unroll=True`` with a config
    traces each of its L layers instead. ``task`` puts a head and its loss on the encoder (a config
    carries its own).
    """
    if isinstance(model, Config):
        options = {**model.structure(), **options}
        task = task or model.task
        values = tuple(sorted(model.symbols().items(), key=str)) if unroll else None
        return _trace(model.model, tuple(sorted(options.items())), values, *_task_key(task))
    if unroll:
        raise ValueError("unroll needs a Config that gives L")
    if model not in MODELS:
        raise ValueError(f"unknown model {model!r} (known: {', '.join(MODELS)})")
    spec, task = MODELS[model], task or Task()
    if task.head != BARE and task.head not in spec.heads:
        raise ValueError(f"{model} has no head {task.head!r} (heads: {', '.join(spec.heads)})")
    options = encoder_options(spec.heads.get(task.head), {**spec.defaults, **options})
    return _trace(model, tuple(sorted(options.items())), None, *_task_key(task))


def _task_key(task: Task) -> tuple[str, str]:
    """What of a task shapes the graph: the head and the problem type (the sizes stay symbolic)."""
    return task.head, task.problem


@lru_cache(maxsize=32)
def _trace(model: str, options: tuple[tuple[str, object], ...], unroll: tuple | None, head: str, problem: str) -> Graph:
    spec = MODELS[model]
    task_head = spec.heads.get(head)
    graph = Graph(model=model, head=head, options=dict(options))
    batch = task_head.batch if task_head else (B,)
    tracer = Tracer(graph, identities=spec.derived, unroll=dict(unroll) if unroll is not None else None, batch=batch)
    with tracing(tracer):
        if task_head is None:
            for name, x in spec.build(**dict(options)).items():
                graph_output(name, x)
            return graph
        with scope(spec.prefix, in_path=False):
            outputs = spec.build(**dict(options))
        with scope("head", in_param_name=False):
            loss = task_head.build(Encoded(outputs, dict(options), spec.prefix), problem)
        graph_output("loss", loss)
    return graph
