"""Uncertainty of a figure: bootstrap intervals over queries, paired differences, standard errors.

Every figure the suite reports is an average over a finite set of test queries (or pairs), and
often over a few seeds. Three tools say how far it could move:

:func:`bootstrap_interval`
    Percentile bootstrap (Efron & Tibshirani 1993, ch. 13): resample the queries with
    replacement ``n_boot`` times (seeded), recompute the statistic, and take the
    ``(1 - level) / 2`` and ``(1 + level) / 2`` quantiles. With the default statistic (the mean)
    it is the interval of an accuracy, P@1, MAP@R or Recall@K from its per-query values.
:func:`paired_difference`
    Two representations scored on the *same* queries: the interval of the difference of their
    means, resampling the queries jointly, so what the queries share cancels out. Say "better"
    only when the interval excludes 0.
:func:`standard_error`
    The standard error of a mean over seeds, ``s / sqrt(n)`` with the sample standard deviation
    (``ddof=1``), for figures repeated over a few seeds (where a bootstrap has too few points).

``level`` is the coverage of the interval (0.95 by default); the same ``seed`` gives the same
interval.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "IntervalError",
    "bootstrap_interval",
    "paired_difference",
    "standard_error",
    "with_interval",
    "interval_text",
    "interval_table",
]

N_BOOT = 1000


class IntervalError(ValueError):
    """Bad input to an interval function; the message names the fix."""


def _per_query(values, name: str = "values") -> np.ndarray:
    a = np.asarray(values, dtype=np.float64)
    if a.ndim == 0 or len(a) < 2:
        raise IntervalError(f"{name} needs one entry per query (at least 2), got shape {a.shape}.")
    return a


def _check(n_boot: int, level: float) -> None:
    if int(n_boot) < 10:
        raise IntervalError(f"n_boot must be >= 10 (1000 is usual), got {n_boot}.")
    if not 0.0 < float(level) < 1.0:
        raise IntervalError(f"level must be in (0, 1), e.g. 0.95, got {level}.")


def _quantiles(stats: np.ndarray, level: float) -> tuple[float, float]:
    alpha = (1.0 - float(level)) / 2.0
    low, high = np.nanquantile(np.asarray(stats, dtype=np.float64), [alpha, 1.0 - alpha], axis=0)
    if np.ndim(low) == 0:
        return float(low), float(high)
    return low, high


def bootstrap_interval(
    values, statistic=None, n_boot: int = N_BOOT, seed: int = 0, level: float = 0.95, strata=None
) -> tuple[float, float]:
    """Percentile bootstrap interval of ``statistic(values)``, resampling the first axis.

    Parameters
    ----------
    values : array-like of shape (n, ...) or a tuple of such arrays
        One entry (row) per query, e.g. 1/0 correct flags, per-query average precisions, or
        (distance, genuine) pairs as a tuple ``(d, same)``; a tuple is resampled jointly.
    statistic : callable, default=None
        Takes the resampled ``values`` (the tuple unpacked) and returns a float, or a 1-D array
        of several figures (then ``low`` and ``high`` are arrays); ``None`` is the mean.
    n_boot : int, default=1000
    seed : int, default=0
    level : float, default=0.95
    strata : array-like of shape (n,), default=None
        Group of each entry (e.g. genuine / impostor pairs): each resample then draws every
        group's entries from that group only, so each keeps its size (a stratified bootstrap).

    Returns
    -------
    (low, high) : floats (arrays for an array-valued statistic)
    """
    _check(n_boot, level)
    arrays = values if isinstance(values, tuple) else (values,)
    arrays = tuple(np.asarray(a) for a in arrays)
    n = len(_per_query(arrays[0].astype(np.float64)))
    if any(len(a) != n for a in arrays):
        raise IntervalError(f"the arrays of values have lengths {[len(a) for a in arrays]}; they must match.")
    draw = _resampler(n, strata, np.random.default_rng(seed))
    if statistic is None:
        if len(arrays) != 1:
            raise IntervalError("pass a statistic to bootstrap a tuple of arrays.")
        a = arrays[0].astype(np.float64)
        stats = np.array([a[draw()].mean(axis=0) for _ in range(int(n_boot))])
    else:
        stats = np.array(
            [statistic(*(a[idx] for a in arrays)) for idx in (draw() for _ in range(int(n_boot)))]
        )
    return _quantiles(stats, level)


def _resampler(n: int, strata, rng):
    """A function returning the row indices of one bootstrap resample (within strata if given)."""
    if strata is None:
        return lambda: rng.integers(0, n, n)
    strata = np.asarray(strata).reshape(-1)
    if len(strata) != n:
        raise IntervalError(f"strata has {len(strata)} entries for {n} values; give one per value.")
    groups = [np.flatnonzero(strata == g) for g in np.unique(strata)]
    return lambda: np.concatenate([g[rng.integers(0, len(g), len(g))] for g in groups])


def paired_difference(a, b, n_boot: int = N_BOOT, seed: int = 0, level: float = 0.95) -> dict:
    """Mean of ``a - b`` over the same queries, with its percentile bootstrap interval.

    ``a`` and ``b`` are per-query values of two representations on the same queries in the same
    order (e.g. the 1/0 correct flags of :func:`helpers.evaluation.per_query_scores`).

    Returns
    -------
    dict with ``difference``, ``ci_low``, ``ci_high`` and ``excludes_zero`` (the interval lies
    entirely above or below 0: the one case the prose may call one of them better)
    """
    a, b = _per_query(a, "a"), _per_query(b, "b")
    if a.shape != b.shape:
        raise IntervalError(
            f"a has shape {a.shape} but b {b.shape}; score both representations on the same queries."
        )
    low, high = bootstrap_interval(a - b, n_boot=n_boot, seed=seed, level=level)
    return {
        "difference": float(np.mean(a - b)),
        "ci_low": low,
        "ci_high": high,
        "excludes_zero": bool(low > 0 or high < 0),
    }


def standard_error(values) -> float:
    """Standard error of the mean of ``values`` (e.g. one figure over seeds): ``std(ddof=1) / sqrt(n)``."""
    a = np.asarray(values, dtype=np.float64).reshape(-1)
    if len(a) < 2:
        raise IntervalError(f"a standard error needs at least 2 values (seeds), got {len(a)}.")
    if not np.isfinite(a).all():
        raise IntervalError("values contain NaN or infinite entries; drop the failed runs first.")
    return float(np.std(a, ddof=1) / np.sqrt(len(a)))


def with_interval(row: dict, key: str, values, statistic=None, **bootstrap) -> dict:
    """Add ``key`` (the statistic of ``values``) and ``key_ci_low`` / ``key_ci_high`` to ``row``."""
    arrays = values if isinstance(values, tuple) else (values,)
    value = np.mean(arrays[0]) if statistic is None else statistic(*arrays)
    row[key] = float(value)
    row[f"{key}_ci_low"], row[f"{key}_ci_high"] = bootstrap_interval(values, statistic, **bootstrap)
    return row


def interval_text(row, key: str, digits: int = 4) -> str:
    """``row[key]`` as text "value [low, high]" where ``row`` (a dict or a pandas row) has
    ``key_ci_low`` / ``key_ci_high`` (a 95 % interval, as :func:`with_interval` writes), else the value."""
    import pandas as pd

    value = f"{row[key]:.{digits}f}"
    low, high = row.get(f"{key}_ci_low"), row.get(f"{key}_ci_high")
    if low is None or high is None or pd.isna(low) or pd.isna(high):
        return value
    return f"{value} [{low:.{digits}f}, {high:.{digits}f}]"


def interval_table(table, columns, digits: int = 4):
    """``table[columns]`` as :func:`interval_text` cells: a pandas DataFrame to display."""
    import pandas as pd

    out = pd.DataFrame(index=table.index)
    for column in columns:
        out[column] = [interval_text(row, column, digits) for _, row in table.iterrows()]
    return out
