"""How long training will take: budgets in steps, expected seconds, progress lines over a list."""

from __future__ import annotations

import time

import numpy as np

from helpers.registry import get_spec

#: CPU seconds per training step of each core model at its registry batch size on a 2-core CPU: the
#: median of the six runs of each in ``benchmarks/results/quality.json`` (``train_seconds`` divided by
#: the registry budget, at the time of writing). Only an order hint for :func:`expected_seconds`
#: (which model a worker pool starts first) and a rough estimate in messages; re-derive it when a
#: budget or an architecture changes much. A model without a row gets the median of the rows.
SECONDS_PER_STEP = {
    "cnn_simple_v1": 0.25,
    "cnn_simple_v2": 0.78,
    "cnn_with_attention_v1": 0.45,
    "cnn_with_attention_cls_head_v1": 0.46,
    "cnn_with_attention_cls_head_v2": 0.53,
    "cnn_with_attention_vit_style_v1": 0.39,
}


def format_seconds(seconds: float) -> str:
    """``42s``, ``3m05s``, ``1h02m``: short enough for a progress line."""
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def budget_steps(name: str, epochs: int | None = None, steps_per_epoch: int | None = None) -> int:
    """Training steps of ``name``: ``epochs x steps_per_epoch``, each the registry's when not given."""
    spec = get_spec(name)
    return (epochs or spec.epochs) * (steps_per_epoch or spec.steps_per_epoch)


def expected_seconds(names, epochs=None, steps_per_epoch=None, rates=None) -> dict[str, float]:
    """Each model's expected training seconds: its seconds per step times its budget.

    The budget is :func:`budget_steps`; the seconds per step come from ``rates`` (default
    :data:`SECONDS_PER_STEP`). Steps alone are a poor guide: a step of ``cnn_simple_v2`` (128 and 256
    filters) costs several of ``cnn_simple_v1`` (32 and 64). A model with no rate gets the median
    rate of ``rates`` (one second a step when it is empty).
    """
    rates = SECONDS_PER_STEP if rates is None else rates
    default = float(np.median(list(rates.values()))) if rates else 1.0
    return {name: rates.get(name, default) * budget_steps(name, epochs, steps_per_epoch) for name in names}


def track(names, epochs: int | None = None, steps_per_epoch: int | None = None):
    """Yield ``names`` one by one, printing ``== model 2/6 name (~3m10s left for the list)`` first.

    Like tqdm: what is left is estimated from the time so far, weighted by each model's budget in
    steps (the registry's, or ``epochs`` x ``steps_per_epoch`` when given); a model loaded from the
    cache takes seconds, so the estimate falls as the cache fills.
    """
    names = list(names)
    budgets = [budget_steps(name, epochs, steps_per_epoch) for name in names]
    start = time.perf_counter()
    for i, name in enumerate(names):
        done, elapsed = sum(budgets[:i]), time.perf_counter() - start
        eta = ""
        if i and done and elapsed > 1:
            eta = f" (~{format_seconds(elapsed / done * sum(budgets[i:]))} left for the list)"
        print(f"== model {i + 1}/{len(names)} {name}{eta}", flush=True)
        yield name
