"""Terminal and JSON output of the training-step commands: fit (its closed form, its simulation and its plan over
N GPUs) and timeline."""

from __future__ import annotations

import sympy
from rich.console import Console
from rich.table import Table

from symbert.configs import Config as Model
from symbert.configs import ConfigError
from symbert.formula import human, quantity, text
from symbert.outputs import check_output, write_output
from symbert.render.reports import console, describe, layout_json, show
from symbert.symbols import pad512
from symbert.training.allocator import Overhead, PhasePeak
from symbert.training.fit import CUDA_CONTEXT_NOTE, Fit, fit_json, step_of
from symbert.training.memviz import dump
from symbert.training.oom import MAX_RUNS, Cap, applies, cap_json, run_json
from symbert.training.planner import Plan, family, plan_json
from symbert.training.solve import Answer, Checked, Simulated
from symbert.training.states import CATEGORIES, Training, setup_json
from symbert.training.timeline import Timeline


def print_answer(answer: Answer) -> None:
    """``fit``'s answer as text, whichever way it was found."""
    if isinstance(answer, Simulated):
        print_simulated(answer)
    elif isinstance(answer, Checked):
        print_checked(answer)
    elif isinstance(answer, Plan):
        print_plan(answer)
    else:
        print_fit(answer)


def answer_json(answer: Answer) -> dict[str, object]:
    """``fit --json``'s document."""
    if isinstance(answer, Simulated | Checked):
        return answer.json()
    return plan_json(answer) if isinstance(answer, Plan) else fit_json(answer)


def print_simulated(answer: Simulated) -> None:
    """The simulated answer, with the setup and the cap it ran under."""
    out = console()
    print_cap(out, answer.config, answer.training, answer.cap)
    for line in simulated_lines(answer):
        out.print(line)


def print_cap(out: Console, config: Model, training: Training, cap: Cap) -> None:
    """The config, the setup and the cap a simulation ran under."""
    out.print(describe(config))
    out.print(f"{training.describe()}; cap {quantity(cap.bytes, 'bytes')}{cap_words(cap)}")


def cap_words(cap: Cap) -> str:
    """Where a cap comes from: the card's memory less the CUDA context, and its source; or --gpu-memory."""
    context = f" = {quantity(cap.card, 'bytes')} less the CUDA context {quantity(cap.context, 'bytes')}"
    return f"{context} ({cap.source})" if cap.context else " (--gpu-memory)"


def print_checked(answer: Checked) -> None:
    """One shape, decided by the simulation, with the closed form's peak and its parts there."""
    out, run, closed = console(), answer.run, answer.closed
    print_cap(out, answer.config, answer.training, answer.cap)
    verdict = "runs" if run.runs else "runs out of memory"
    out.print(f"batch {run.batch}, seq_len {run.length}: {verdict} (the caching allocator simulated over two "
              "training steps)")
    if run.runs:
        top = max(run.phases, key=lambda p: p.allocated)
        out.print(f"  allocated peak {quantity(run.allocated, 'bytes')} = {run.allocated:,} bytes ({top.name}), "
                  f"reserved peak {quantity(run.reserved, 'bytes')} = {run.reserved:,} bytes; "
                  f"headroom {quantity(answer.cap.bytes - run.reserved, 'bytes')}")
    else:
        out.print(f"  {run.failed}")
    peak = closed.peak
    within = "within" if closed.fits else "over"
    out.print(f"  the closed form: peak {quantity(peak.total, 'bytes')} = {peak.total:,} bytes at {peak.where}, "
              f"{within} the cap")
    out.print("  " + ", ".join(f"{name} {quantity(peak.bytes[c], 'bytes')}" for c, name in CATEGORIES.items()))
    out.print(f"  peak formula: {human(closed.formula)}")
    print_knobs(out, closed)


def simulated_lines(answer: Simulated) -> list[str]:
    """The simulated answer: the value, its peaks, the failure one above, and the closed form's answer."""
    result = answer.result
    shape = result.run or result.above
    other = f"seq_len={shape.length}" if result.unknown == "batch" else f"batch={shape.batch}"

    def value(run) -> int:
        return run.batch if result.unknown == "batch" else run.length

    lines = []
    if result.value is None:
        lines.append(f"nothing runs at {other}: at {result.unknown} {value(result.above)}, {result.above.failed}")
    else:
        run = result.run
        top = max(run.phases, key=lambda p: p.allocated)
        lines.append(f"largest {result.unknown} that runs at {other}: {result.value} "
                     "(the caching allocator simulated over two training steps)")
        lines.append(f"  allocated peak {quantity(run.allocated, 'bytes')} = {run.allocated:,} bytes ({top.name}), "
                     f"reserved peak {quantity(run.reserved, 'bytes')} = {run.reserved:,} bytes")
    if result.value is not None and result.above is not None:
        lines.append(f"  {result.unknown} {value(result.above)} runs out of memory: {result.above.failed}")
    elif result.value is not None:
        limit = "all the model's positions" if result.capped == "positions" else "the largest size symbert accepts"
        lines.append(f"  {result.unknown} {result.value} is {limit}")
    lines.append(f"  the closed form (allocated peak within the cap) gave {result.closed}; "
                 f"{result.simulations} simulation{'s' if result.simulations != 1 else ''} decided")
    if result.untried:
        lines.append(f"  {result.untried:,} values between {result.value} and {result.closed} were not simulated: "
                     "near the cap the allocator is not monotone, and one of them may run too")
    return lines


def print_fit(result: Fit) -> None:
    """The closed form's answer (:func:`symbert.training.fit.fit`), as text."""
    budget = result.budget
    out = console()
    out.print(describe(result.config))
    out.print(result.training.describe() + (f"; GPU memory {quantity(budget, 'bytes')}" if budget else ""))
    peak = result.peak
    parts = ", ".join(f"{name} {quantity(peak.bytes[c], 'bytes')}" for c, name in CATEGORIES.items())
    if result.unknown and result.value is None:
        shape = f"batch {result.batch or 1}, seq_len {result.seq_len or 1}"
        out.print(f"nothing fits: at {shape} the peak is {quantity(peak.total, 'bytes')} ({peak.where})")
        out.print(f"  over budget: {result.over_budget()}; {parts}")
    elif result.unknown:
        other = f"seq_len={result.seq_len}" if result.unknown == "batch" else f"batch={result.batch}"
        limit = {"positions": " (all the model's positions)", "size limit": " (the largest size symbert accepts)"}
        out.print(f"largest {result.unknown} that fits at {other}: {result.value}{limit.get(result.capped, '')}")
        out.print(f"  peak {quantity(peak.total, 'bytes')} = {peak.total:,} bytes at {peak.where}")
        out.print(f"  {parts}")
        if result.above is not None:
            above = result.value + step_of(result.training, result.unknown)
            out.print(f"  {result.unknown} {above} would need {result.above.total:,} bytes")
        out.print(f"  peak formula: {human(result.formula)}")
        print_headroom(out, result)
    else:
        verdict = "" if budget is None else ("; fits" if result.fits else "; does NOT fit")
        out.print(f"batch {result.batch}, seq_len {result.seq_len}: peak {quantity(peak.total, 'bytes')}{verdict} "
                  f"at {peak.where}")
        out.print(f"  {parts}")
        out.print(f"  peak formula: {human(result.formula)}")
        print_headroom(out, result)
        if not result.fits:
            out.print(f"  over budget: {result.over_budget()}")
    print_knobs(out, result)


def print_knobs(out: Console, result: Fit) -> None:
    """The single changes to the setup, lowest peak first, and which of them fit."""
    if not result.knobs:
        return
    out.print("single changes, lowest peak first:")
    for k in result.knobs:
        verdict = "" if result.budget is None else ("  fits" if k.peak.total <= result.budget else "")
        out.print(f"  {k.change:<45} {quantity(k.peak.total, 'bytes'):>12}{verdict}")


def print_headroom(out: Console, result: Fit) -> None:
    """Allocated and estimated reserved memory against the budget, and what lies outside it."""
    if result.reserved is None:
        return
    line = (
        f"  allocated {quantity(result.peak.total, 'bytes')}, reserved (estimate) {quantity(result.reserved, 'bytes')}"
    )
    if result.budget is not None:
        line += (
            f"; headroom {quantity(result.budget - result.peak.total, 'bytes')} allocated,"
            f" {quantity(result.budget - result.reserved, 'bytes')} reserved (estimate)"
        )
    out.print(line)
    if result.budget is not None and result.reserved > result.budget:
        out.print("  the reserved estimate is over the budget: the allocator may run out of memory at this size")
    out.print(f"  {CUDA_CONTEXT_NOTE}")


def print_plan(result: Plan) -> None:
    """``fit --gpus``: the layouts that fit, best first, and one line per family that does not."""
    training, gpus, batch = result.training, result.gpus, result.batch
    out = console()
    out.print(describe(result.config))
    each = quantity(result.budget, "bytes")
    out.print(f"{training.describe()}; {gpus} GPUs of {each} each; seq_len {result.seq_len}")
    engine = training.sharding.engine
    out.print(f"ZeRO as {engine.name}: {engine.summary}; per GPU, on the most loaded GPU (first pipeline stage)")
    shape = f"micro-batch {batch}" if batch else "the largest micro-batch"
    if not result.fits:
        out.print(f"no layout of {gpus} GPUs fits at {shape}")
    else:
        order = "best first (least recompute, fewest communication points, largest micro-batch)"
        out.print(f"{len(result.fits)} layouts fit at {shape}, {order}:")
        columns = ("t", "p", "d", "ZeRO", "recompute", "micro-batch", "peak", "comm")
        out.print("  {:>3} {:>3} {:>3} {:>4}  {:<9} {:>11} {:>11} {:>5}".format(*columns))
        for o in result.fits:
            lay = o.layout
            t = f"{lay.tensor}{'s' if lay.sequence else ''}"
            out.print(
                f"  {t:>3} {lay.pipeline:>3} {lay.data:>3} {lay.zero:>4}  {o.recompute:<9} {o.batch:>11}"
                f" {quantity(o.peak.total, 'bytes'):>11} {o.communication:>5}"
            )
    if result.rejected:
        out.print("do not fit:")
        for r in result.rejected:
            out.print(f"  {family(r.layout)}: {r.reason}")


def timeline_json(t: Timeline) -> dict[str, object]:
    """``timeline --json``'s document: the setup, the model states, the phases and the peak."""
    training, m, peak = t.training, t.training.memory, t.peak
    return {
        "config": t.config.as_dict(),
        "batch": t.batch,
        "seq_len": t.seq_len,
        **setup_json(training),
        "gpu": training.gpu,
        "runtime": training.runtime.describe() if training.runtime else None,
        "layout": layout_json(m.layout),
        "model_states": {k: {"formula": text(v), "bytes": int(v.subs(t.sizes))} for k, v in t.states.items()},
        "phases": [
            {"step": p.step, "phase": p.name, "peak": p.peak.total, "where": p.peak.where, "end": p.end,
             **_simulated_json(t.simulated.get(f"{p.step} {p.name}"))}
            for p in t.phases
        ],
        "peak": {"bytes": peak.total, "where": peak.where, "components": dict(peak.bytes), "formula": text(t.formula)},
        "allocator_overhead": overhead_json(t.overhead),
        "gpu_memory": t.budget,
        "fits": t.fits,
        "cap": None if t.cap is None or t.capped is None else {**cap_json(t.cap), "run": run_json(t.capped)},
    }


def overhead_json(overhead: Overhead | None) -> dict[str, int] | None:
    """What the simulated allocator adds beyond the requests at its allocated peak, by kind."""
    if overhead is None:
        return None
    return {"requested": overhead.requested, "rounding": overhead.rounding, "unsplit": overhead.unsplit,
            "allocated": overhead.allocated, "segment_tails": overhead.tails, "holes": overhead.holes,
            "reserved": overhead.reserved, "workspaces": overhead.workspaces}


def overhead_line(overhead: Overhead) -> str:
    """:func:`overhead_json` in one line."""
    q = lambda n: quantity(n, "bytes")  # noqa: E731
    return (f"at the allocated peak: requested {q(overhead.requested)} (workspaces {q(overhead.workspaces)})"
            f" + rounding {q(overhead.rounding)} + unsplit blocks {q(overhead.unsplit)} = allocated"
            f" {q(overhead.allocated)}; + segment tails {q(overhead.tails)} + holes {q(overhead.holes)}"
            f" = reserved {q(overhead.reserved)}")


def check_memory_viz(config: Model, training: Training, path: str) -> None:
    """A path to write the snapshot to, for a setup whose allocator is simulated; else a ConfigError."""
    check_output(path)
    if not applies(config, training):
        raise ConfigError("--memory-viz: the caching allocator is simulated only under the torch-cuda policy on one "
                          f"GPU, with at most {MAX_RUNS} layer runs")


def write_memory_viz(t: Timeline, path: str) -> None:
    """The simulated step as a ``torch.cuda.memory._snapshot()`` pickle, for pytorch.org/memory_viz."""
    check_memory_viz(t.config, t.training, path)
    assert t.snapshot is not None
    write_output(path, dump(t.snapshot))


def _simulated_json(peak: PhasePeak | None) -> dict[str, int]:
    return {} if peak is None else {"allocated": peak.allocated, "reserved": peak.reserved}


def timeline_table(t: Timeline) -> Table:
    """Each phase's peak, where it is, and what it ends at; the simulated allocated and reserved peaks beside."""
    table = Table(title="memory over two training steps", title_justify="left")
    extra = ("allocated", "reserved") if t.simulated else ()
    for col in ("step", "phase", "peak", *extra, "where", "end"):
        table.add_column(col, justify="left" if col in ("step", "phase", "where") else "right")
    for p in t.phases:
        where = p.peak.where.split(": ", 1)[1]
        sim = t.simulated.get(f"{p.step} {p.name}")
        cells = (quantity(sim.allocated, "bytes"), quantity(sim.reserved, "bytes")) if sim else ("",) * len(extra)
        table.add_row(str(p.step), p.name, quantity(p.peak.total, "bytes"), *cells, where, quantity(p.end, "bytes"))
    return table


def print_timeline(t: Timeline) -> None:
    """The model states, the phases' table, and the peak with its formula and the allocator's rounding apart."""
    out = console()
    out.print(describe(t.config))
    out.print(f"batch B={t.batch}, seq_len={t.seq_len}; {t.training.describe()}")
    for k, v in t.states.items():
        out.print(f"{k:<10} {human(v)}  = {quantity(int(v.subs(t.sizes)), 'bytes')}")
    show(timeline_table(t), out)
    if t.simulated:
        out.print("allocated, reserved: the caching allocator simulated over the two steps (max_memory_allocated and "
                  "max_memory_reserved per phase)")
    if t.overhead is not None:
        out.print(overhead_line(t.overhead))
    peak, budget = t.peak, t.budget
    verdict = "" if budget is None or t.capped is not None else (
        "; fits" if t.fits else f"; over {quantity(budget, 'bytes')}")
    out.print(f"peak {quantity(peak.total, 'bytes')} = {peak.total:,} bytes at {peak.where}{verdict}")
    if t.cap is not None and t.capped is not None:
        run, cap = t.capped, t.cap
        outcome = f"runs, headroom {quantity(cap.bytes - run.reserved, 'bytes')}" if run.runs else (
            f"runs out of memory: {run.failed}")
        out.print(f"the two steps under a cap of {quantity(cap.bytes, 'bytes')}{cap_words(cap)}, as fit runs them: "
                  f"{outcome}")
    substitutions = t.config.spec.substitutions
    conventions = ", ".join(f"{k} = {human(v)}" for k, v in substitutions.items())
    expr = sympy.expand(t.formula.subs(substitutions))
    rounding = sympy.Add(*(term for term in sympy.Add.make_args(expr) if term.has(pad512)))
    out.print(f"  = {human(expr - rounding)}" + (f"  (with {conventions})" if conventions else ""))
    if rounding != 0:
        here = quantity(int(rounding.subs(t.values)), "bytes")
        out.print(f"  + the allocator's rounding to 512 bytes ({here} here): {human(rounding)}")
