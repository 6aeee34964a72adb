"""Tests of helpers.metrics: intervals with known answers."""

import numpy as np
import pytest

from helpers import metrics
from helpers.metrics import IntervalError

approx = pytest.approx


def test_bootstrap_interval_covers_a_known_proportion_about_95_percent_of_the_time():
    # 200 draws of 400 Bernoulli(0.9) outcomes: the 95 % interval should hold 0.9 in ~190 of them
    rng = np.random.default_rng(123)
    hits = 0
    for rep in range(200):
        outcomes = rng.random(400) < 0.9
        low, high = metrics.bootstrap_interval(outcomes, n_boot=1000, seed=rep)
        hits += low <= 0.9 <= high
    assert 0.90 <= hits / 200 <= 0.99


def test_bootstrap_interval_width_matches_the_normal_approximation():
    outcomes = np.r_[np.ones(360), np.zeros(40)]  # p = 0.9, n = 400: SE = sqrt(.9 * .1 / 400) = 0.015
    low, high = metrics.bootstrap_interval(outcomes, n_boot=4000, seed=0)
    assert low == approx(0.9 - 1.96 * 0.015, abs=0.005)
    assert high == approx(0.9 + 1.96 * 0.015, abs=0.005)


def test_same_seed_same_interval_other_seed_other_interval():
    values = np.random.default_rng(0).random(300)
    assert metrics.bootstrap_interval(values, seed=7) == metrics.bootstrap_interval(values, seed=7)
    assert metrics.bootstrap_interval(values, seed=7) != metrics.bootstrap_interval(values, seed=8)


def test_paired_difference_worked_example():
    # 100 queries: b is right on the first 80, a on the first 90 (a superset). The difference is
    # 0.1 and every resample's difference is >= 0; ten 1s among 100 entries: SE = sqrt(.1*.9/100) = .03
    a = np.r_[np.ones(90), np.zeros(10)]
    b = np.r_[np.ones(80), np.zeros(20)]
    out = metrics.paired_difference(a, b, n_boot=4000, seed=0)
    assert out["difference"] == approx(0.1)
    assert out["ci_low"] == approx(0.1 - 1.96 * 0.03, abs=0.015)
    assert out["ci_high"] == approx(0.1 + 1.96 * 0.03, abs=0.015)
    assert out["excludes_zero"] is True
    # the two unpaired intervals overlap, the paired one does not reach 0
    assert metrics.bootstrap_interval(a)[0] < metrics.bootstrap_interval(b)[1]


def test_paired_difference_of_identical_scores_is_zero_and_does_not_exclude_zero():
    a = np.random.default_rng(0).random(50)
    out = metrics.paired_difference(a, a.copy())
    assert out == {"difference": 0.0, "ci_low": 0.0, "ci_high": 0.0, "excludes_zero": False}


def test_standard_error_by_hand():
    # mean 0.83, squared deviations .0009 + .0001 + .0001 + .0009 = .002, /3 -> s = 0.0258199
    assert metrics.standard_error([0.80, 0.82, 0.84, 0.86]) == approx(0.0258199 / 2, rel=1e-5)


def test_a_tuple_with_a_statistic_and_strata_keeps_each_group_size():
    d = np.arange(10.0)
    same = np.r_[np.ones(3, bool), np.zeros(7, bool)]
    low, high = metrics.bootstrap_interval((d, same), lambda dd, ss: ss.sum(), n_boot=50, strata=same)
    assert low == high == 3.0


def test_with_interval_adds_the_value_and_its_interval():
    row = metrics.with_interval({}, "acc", np.r_[np.ones(8), np.zeros(2)], n_boot=200)
    assert row["acc"] == approx(0.8) and row["acc_ci_low"] <= 0.8 <= row["acc_ci_high"]


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: metrics.bootstrap_interval([1.0, 0.0], n_boot=5), "n_boot"),
        (lambda: metrics.bootstrap_interval([1.0, 0.0], level=95), "level"),
        (lambda: metrics.bootstrap_interval([1.0]), "at least 2"),
        (lambda: metrics.bootstrap_interval(([1.0, 0.0], [1.0]), np.mean), "lengths"),
        (lambda: metrics.bootstrap_interval([1.0, 0.0], strata=[1]), "strata"),
        (lambda: metrics.paired_difference([1.0, 0.0], [1.0, 0.0, 1.0]), "same queries"),
        (lambda: metrics.standard_error([0.8]), "at least 2"),
        (lambda: metrics.standard_error([0.8, np.nan]), "NaN"),
    ],
)
def test_errors_name_the_problem(call, message):
    with pytest.raises(IntervalError, match=message):
        call()


def test_interval_table_writes_value_and_interval():
    import pandas as pd

    table = pd.DataFrame(
        {"auc": [0.9, 0.8], "auc_ci_low": [0.85, None], "auc_ci_high": [0.95, None], "eer": [0.1, 0.2]},
        index=["a", "b"],
    )
    out = metrics.interval_table(table, ["auc", "eer"], digits=2)
    assert out.loc["a"].tolist() == ["0.90 [0.85, 0.95]", "0.10"]
    assert out.loc["b"].tolist() == ["0.80", "0.20"]


def test_interval_text_writes_the_interval_only_where_the_row_has_both_bounds():
    row = {"acc": 0.86543, "acc_ci_low": 0.85831, "acc_ci_high": 0.87192, "auc": 0.9, "auc_ci_low": None}
    assert metrics.interval_text(row, "acc") == "0.8654 [0.8583, 0.8719]"
    assert metrics.interval_text(row, "acc", digits=3) == "0.865 [0.858, 0.872]"
    assert metrics.interval_text(row, "auc", digits=2) == "0.90"  # a bound missing: the value alone
    assert metrics.interval_text({"f": 0.5, "f_ci_low": float("nan"), "f_ci_high": 0.6}, "f", 1) == "0.5"
