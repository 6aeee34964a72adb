"""The one exact k-NN path: against brute-force numpy, self-exclusion by index, farthest, errors."""

import numpy as np
import pytest

from helpers.knn import KNNError, exact_knn


def _brute(q, r, metric):
    if metric == "cosine":
        q = q / np.linalg.norm(q, axis=1, keepdims=True)
        r = r / np.linalg.norm(r, axis=1, keepdims=True)
        return 1.0 - q @ r.T
    return ((q[:, None, :] - r[None, :, :]) ** 2).sum(-1)


@pytest.mark.parametrize("metric", ["l2", "cosine"])
@pytest.mark.parametrize("farthest", [False, True])
def test_exact_knn_matches_brute_force(metric, farthest):
    rng = np.random.default_rng(0)
    q, r = rng.normal(size=(40, 7)).astype(np.float32), rng.normal(size=(300, 7)).astype(np.float32)
    idx, dist = exact_knn(q, r, 5, metric=metric, farthest=farthest)
    d = _brute(q.astype(np.float64), r.astype(np.float64), metric)
    want = np.argsort(-d if farthest else d, axis=1, kind="stable")[:, :5]
    np.testing.assert_array_equal(idx, want)
    np.testing.assert_allclose(dist, np.take_along_axis(d, want, 1), rtol=1e-4, atol=1e-4)


def test_exclude_removes_the_query_by_index_but_keeps_its_duplicate():
    r = np.array([[0.0, 0.0], [0.0, 0.0], [1.0, 0.0], [5.0, 5.0]], np.float32)
    idx, dist = exact_knn(r, r, 2, exclude=np.arange(4))
    assert idx[0].tolist() == [1, 2] and idx[1].tolist() == [0, 2]
    assert dist[0, 0] == 0.0  # the duplicate is a neighbour at distance 0
    assert not (idx == np.arange(4)[:, None]).any()


def test_images_are_flattened_and_bad_input_is_named():
    rng = np.random.default_rng(1)
    x = rng.random((10, 4, 4, 1)).astype(np.float32)
    idx, _ = exact_knn(x[:2], x, 1)
    assert idx[:, 0].tolist() == [0, 1]
    with pytest.raises(KNNError, match="k must be in"):
        exact_knn(x, x, 11)
    with pytest.raises(KNNError, match="features"):
        exact_knn(x, x[:, :2], 1)
    bad = x.copy()
    bad[0, 0, 0, 0] = np.nan
    with pytest.raises(KNNError, match="NaN"):
        exact_knn(bad, x, 1)
    with pytest.raises(KNNError, match="metric"):
        exact_knn(x, x, 1, metric="manhattan")
