"""The Python API: trace a model into a graph, then run passes over it."""

from __future__ import annotations

from functools import lru_cache

import sympy

from symbert.configs import Config, ConfigError
from symbert.ir import Graph
from symbert.models import MODELS, ModelSpec
from symbert.models.heads import BARE, Encoded, Head, Task, encoder_options
from symbert.parallel import Layout
from symbert.symbols import B, seq_len
from symbert.tensor_parallel import Sharding, StageEnd, last_stage
from symbert.tracer import Tracer, call, graph_output, scope, tracing

#: How a layout shapes the graph: (tensor parallel, sequence parallel, the pipeline stage or "").
Spread = tuple[bool, bool, str]
ONE_GPU: Spread = (False, False, "")


def trace(
    model: str | Config = "bert",
    *,
    unroll: bool = False,
    task: Task | None = None,
    layout: Layout | None = None,
    **options: object,
) -> Graph:
    """Trace a model family (or a config's family, options and task) into a symbolic graph.

    The encoder layer is traced once and repeated L times symbolically; ``unroll=True`` with a config
    traces each of its L layers instead. ``task`` puts a head and its loss on the encoder (a config
    carries its own). ``layout`` gives the graph of one GPU, the most loaded (the first pipeline
    stage) unless it names the last, with the degrees t and p as symbols (:mod:`symbert.tensor_parallel`).
    """
    spread = spread_of(layout)
    name = model.model if isinstance(model, Config) else model
    if spread[0] and name in MODELS:
        MODELS[name].check_runs(tensor_parallel=True)
    if spread[2] and len(trace(model, task=task, **options).blocks) != 1:
        raise ValueError(
            f"{name}'s layers are not one repeated stack, so they cannot be cut into pipeline stages of L/p "
            "layers: --pipeline-parallel 1 only"
        )
    if isinstance(model, Config):
        options = {**model.structure(), **options}
        task = task or model.task
        values = {**model.symbols(), **(layout.values() if layout else {})}
        key = tuple(sorted(values.items(), key=str)) if unroll else None
        return _trace(model.model, tuple(sorted(options.items())), key, *_task_key(task), spread)
    if unroll:
        raise ValueError("unroll needs a Config that gives L")
    if model not in MODELS:
        raise ValueError(f"unknown model {model!r} (known: {', '.join(MODELS)})")
    spec, task = MODELS[model], task or Task()
    if task.head != BARE and task.head not in spec.heads:
        raise ValueError(f"{model} has no head {task.head!r} (heads: {', '.join(spec.heads)})")
    options = encoder_options(spec.heads.get(task.head), {**spec.defaults, **options})
    return _trace(model, tuple(sorted(options.items())), None, *_task_key(task), spread)


def per_gpu(
    config: Config, layout: Layout | None = None, length: int | None = None
) -> tuple[Graph, dict[sympy.Symbol, int]]:
    """The graph of the most loaded GPU under ``layout``, and the values its formulas take there: the
    config's sizes and the parallel degrees. A layout that does not split the model (or a sequence of
    ``length``) evenly is a ConfigError naming the degree."""
    layout = layout or Layout()
    sizes = config.symbols()
    try:
        layout.check({**sizes, seq_len: length} if length else sizes)
        graph = trace(config, layout=layout)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    return graph, {**sizes, **layout.values()}


def spread_of(layout: Layout | None) -> Spread:
    """What of a layout shapes the per-GPU graph; the degrees themselves stay symbols."""
    if layout is None:
        return ONE_GPU
    return layout.tensor > 1, layout.sequence, layout.stage if layout.pipeline > 1 else ""


def _task_key(task: Task) -> tuple[str, str, bool]:
    """What of a task shapes the graph: the head, the problem type and whether the config sets it (the
    sizes stay symbolic)."""
    return task.head, task.problem, task.problem_type is not None


@lru_cache(maxsize=32)
def _trace(
    model: str,
    options: tuple[tuple[str, object], ...],
    unroll: tuple | None,
    head: str,
    problem: str,
    problem_set: bool = True,
    spread: Spread = ONE_GPU,
) -> Graph:
    spec = MODELS[model]
    task_head = spec.heads.get(head)
    graph = Graph(model=model, head=head, options=dict(options))
    batch = task_head.batch if task_head else (B,)
    sharding = Sharding(spec.tensor_plan, *spread) if spread != ONE_GPU else None
    tracer = Tracer(graph, spec.derived, dict(unroll) if unroll is not None else None, batch, sharding)
    with tracing(tracer):
        try:
            _build(spec, task_head, options, problem, problem_set)
        except StageEnd as end:  # the first pipeline stage: the embeddings and L/p layers
            graph_output("to_next_stage", end.output)
    return last_stage(graph) if spread[2] == "last" else graph


def _build(
    spec: ModelSpec, task_head: Head | None, options: tuple[tuple[str, object], ...], problem: str, problem_set: bool
) -> None:
    """Record the model, with its head and loss when it has one."""
    if task_head is None:
        with call():
            outputs = spec.build(**dict(options))
        for name, x in outputs.items():
            graph_output(name, x)
        return
    with scope(spec.prefix, in_path=False), call():
        outputs = spec.build(**dict(options))
    with scope("head", in_param_name=False):
        loss = task_head.build(Encoded(outputs, dict(options), spec.prefix, problem_set), problem)
    graph_output("loss", loss)
