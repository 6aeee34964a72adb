"""Notebook 05 checks the suite's silhouette against scikit-learn's with the suite's own sampling
(a seeded sample of ``SILHOUETTE_SAMPLE_SIZE`` points), so the check holds past 5,000 test points."""

import numpy as np
import pytest
from sklearn.metrics import silhouette_score

from helpers import evaluation


def notebook_check(x, y):
    """The expression of notebook 05's check cell."""
    sample = min(len(x), evaluation.SILHOUETTE_SAMPLE_SIZE)
    return silhouette_score(x, y, sample_size=sample, random_state=0)


@pytest.mark.parametrize("n", [1200, evaluation.SILHOUETTE_SAMPLE_SIZE + 1000])
def test_the_notebook_check_matches_cluster_metrics_below_and_above_the_sample_size(n):
    rng = np.random.default_rng(0)
    y = rng.integers(0, 4, size=n)
    x = (rng.normal(size=(n, 8)) + 1.5 * y[:, None]).astype(np.float32)
    noisy = rng.random(n) < 0.3  # mislabel some points: the silhouette then varies with the sample
    y[noisy] = rng.integers(0, 4, size=int(noisy.sum()))
    suite = evaluation.cluster_metrics(x, y, seed=0)["silhouette"]
    assert np.isclose(suite, notebook_check(x, y), atol=1e-5)
    if n > evaluation.SILHOUETTE_SAMPLE_SIZE:  # the former check, on every point, would fail here
        assert not np.isclose(suite, silhouette_score(x, y), atol=1e-4)
