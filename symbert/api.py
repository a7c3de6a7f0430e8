"""The Python API: trace a model into a graph, then run passes over it."""

from __future__ import annotations

from functools import lru_cache

from symbert.configs import Config
from symbert.ir import Graph
from symbert.models import MODELS
from symbert.tracer import Tracer, tracing


def trace(model: str | Config = "bert", *, unroll: bool = False, **options: object) -> Graph:
    """Trace a model family (or a config's family and options) into a symbolic graph.

    The encoder layer is traced once and repeated L times symbolically; ``unroll=True`` with a config
    traces each of its L layers instead.
    """
    if isinstance(model, Config):
        options = {**model.structure(), **options}
        if unroll:
            return _trace(model.model, tuple(sorted(options.items())), tuple(sorted(model.symbols().items(), key=str)))
        model = model.model
    elif unroll:
        raise ValueError("unroll needs a Config that gives L")
    if model not in MODELS:
        raise ValueError(f"unknown model {model!r} (known: {', '.join(MODELS)})")
    return _trace(model, tuple(sorted({**MODELS[model].defaults, **options}.items())), None)


@lru_cache(maxsize=32)
def _trace(model: str, options: tuple[tuple[str, object], ...], unroll: tuple | None) -> Graph:
    spec = MODELS[model]
    graph = Graph(model=model, options=dict(options))
    tracer = Tracer(graph, identities=spec.derived, unroll=dict(unroll) if unroll is not None else None)
    with tracing(tracer):
        spec.build(**dict(options))
    return graph
