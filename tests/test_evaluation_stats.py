"""Intervals and paired comparisons: Wilson and bootstrap intervals, McNemar, and the marking of differences."""

import pytest

from alignment_pipeline.evaluation.stats import bootstrap_mean, mcnemar_exact, paired_difference, wilson


def test_wilson_matches_the_closed_form():
    ci = wilson(5, 10)
    assert ci.value == 0.5 and ci.low == pytest.approx(0.2366, abs=1e-4) and ci.high == pytest.approx(0.7634, abs=1e-4)
    assert wilson(0, 10).low == 0.0 and wilson(0, 10).high > 0.2
    assert wilson(0, 0).value is None


def test_bootstrap_interval_brackets_the_mean_and_is_seeded():
    values = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]
    ci = bootstrap_mean(values, seed=1)
    assert ci.low < 5.5 < ci.high and ci == bootstrap_mean(values, seed=1)


def test_paired_difference_marks_only_clear_changes():
    base = [0] * 30 + [1] * 30
    better = [1] * 30 + [1] * 30
    d = paired_difference(base, better, binary=True)
    assert d.diff == pytest.approx(0.5) and d.excludes_zero and d.p_value < 1e-6 and d.test == "mcnemar"
    same = paired_difference(base, base, binary=True)
    assert same.diff == 0 and not same.excludes_zero and same.p_value == 1.0
    assert mcnemar_exact(3, 1) == pytest.approx(0.625)
    with pytest.raises(ValueError):
        paired_difference([1, 0], [1], binary=True)
