"""Search: EmbeddingIndex (exact = brute force, HNSW / IVF recall, add / remove, save / load, atomic
save, model fingerprint), embeddings computed once, image reading, and the CLI (in-process and as a
subprocess) with its one-line errors."""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from helpers import search, training
from helpers.data import load_dataset
from helpers.search import EmbeddingIndex, ModelMismatchError, NotAnIndexError, SearchError

ROOT = Path(__file__).resolve().parents[1]
MODEL = "cnn_simple_v1"
TINY = {"epochs": 1, "steps_per_epoch": 2, "batch_size": 32}
TINY_ARGS = ["--epochs", "1", "--steps-per-epoch", "2", "--batch-size", "32"]


def clustered(n=3000, q=100, dim=16, clusters=30, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 3, (clusters, dim))
    x = (centres[rng.integers(0, clusters, n)] + rng.normal(size=(n, dim))).astype(np.float32)
    queries = (centres[rng.integers(0, clusters, q)] + rng.normal(size=(q, dim))).astype(np.float32)
    return x, rng.integers(0, 10, n), queries


def brute_force(queries, x, k, metric="l2"):
    if metric == "cosine":
        queries = queries / np.linalg.norm(queries, axis=1, keepdims=True)
        x = x / np.linalg.norm(x, axis=1, keepdims=True)
        d = 1.0 - queries.astype(np.float64) @ x.T.astype(np.float64)
    else:
        d = ((queries[:, None, :].astype(np.float64) - x[None].astype(np.float64)) ** 2).sum(-1)
    order = np.argsort(d, axis=1, kind="stable")[:, :k]
    return order, np.take_along_axis(d, order, axis=1)


def recall(found, exact):
    return np.mean([len(set(a) & set(b)) / len(b) for a, b in zip(found, exact, strict=False)])


# --- the index on embeddings ------------------------------------------------------------------------


@pytest.mark.parametrize("metric", ["l2", "cosine"])
def test_flat_index_equals_numpy_brute_force(metric):
    x, y, q = clustered()
    ids = np.array([f"item-{i}" for i in range(len(x))])
    index = EmbeddingIndex(x.shape[1], "flat", metric)
    index.add(x, y, ids)
    result = index.query(q, 7)
    order, dist = brute_force(q, x, 7, metric)
    assert result.ids.shape == result.labels.shape == result.distances.shape == (len(q), 7)
    np.testing.assert_array_equal(result.ids, ids[order])
    np.testing.assert_array_equal(result.labels, y[order])
    np.testing.assert_allclose(result.distances, dist, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("kind", ["hnsw", "ivf"])
def test_approximate_indexes_have_high_recall_on_small_clustered_data(kind):
    x, y, q = clustered()
    index = EmbeddingIndex(x.shape[1], kind, "l2", nprobe=8)
    index.add(x, y)
    exact, _ = brute_force(q, x, 10)
    assert recall(index.query(q, 10).ids, exact) >= 0.9
    if kind == "ivf":  # nlist defaults to min(4 sqrt(n), n / 39); searching every cell is exact
        assert index.params["nlist"] == min(int(4 * np.sqrt(len(x))), len(x) // 39) == 76
        assert recall(index.query(q, 10, nprobe=index.params["nlist"]).ids, exact) == 1.0


@pytest.mark.parametrize("kind", ["flat", "hnsw", "ivf"])
def test_save_load_query_identical_then_add_and_remove(kind, tmp_path):
    x, y, q = clustered()
    index = EmbeddingIndex(x.shape[1], kind, "cosine", class_names=[f"c{i}" for i in range(10)])
    index.add(x[:2000], y[:2000])
    before = index.query(q, 10)
    index.save(tmp_path / "idx")
    assert sorted(os.listdir(tmp_path)) == ["idx"]  # no temporary folder left behind
    assert sorted(os.listdir(tmp_path / "idx")) == sorted(search._FILES)
    meta = json.loads((tmp_path / "idx" / "metadata.json").read_text())
    assert (meta["kind"], meta["metric"], meta["count"]) == (kind, "cosine", 2000)
    assert meta["class_names"][3] == "c3"

    loaded = EmbeddingIndex.load(tmp_path / "idx")
    after = loaded.query(q, 10)
    np.testing.assert_array_equal(after.ids, before.ids)
    np.testing.assert_array_equal(after.labels, before.labels)
    np.testing.assert_array_equal(after.distances, before.distances)

    new_ids = loaded.add(x[2000:], y[2000:])  # add after load continues the integer ids
    np.testing.assert_array_equal(new_ids, np.arange(2000, len(x)))
    assert len(loaded) == len(x)
    assert loaded.query(x[2500:2501], 1).ids[0, 0] == 2500  # a stored vector finds itself
    removed = np.arange(0, len(x), 3)
    assert loaded.remove(removed) == len(removed)
    assert len(loaded) == len(x) - len(removed)
    result = loaded.query(q, 10)
    assert not np.isin(result.ids, removed).any()
    kept = np.setdiff1d(np.arange(len(x)), removed)
    exact, _ = brute_force(q, x[kept], 10, "cosine")
    assert recall(result.ids, kept[exact]) >= (1.0 if kind == "flat" else 0.9)
    np.testing.assert_array_equal(result.labels[:, 0], y[result.ids[:, 0]])
    assert loaded.query(x[1:2], 1).ids[0, 0] == 1  # positions stayed aligned with the ids
    with pytest.raises(SearchError, match="not in the index"):
        loaded.remove([0])


def test_string_ids_round_trip_without_pickle(tmp_path):
    x, y, q = clustered(n=300)
    ids = np.array([f"actor/{i:05d}" for i in range(len(x))])
    index = EmbeddingIndex(x.shape[1])
    index.add(x, y, ids)
    index.save(tmp_path / "idx")
    stored = np.load(tmp_path / "idx" / "ids.npy", allow_pickle=False)
    assert stored.dtype.kind == "U" and stored[12] == "actor/00012"
    loaded = EmbeddingIndex.load(tmp_path / "idx")
    np.testing.assert_array_equal(loaded.query(q, 3).ids, index.query(q, 3).ids)
    loaded.remove(["actor/00000", "actor/00299"])
    assert len(loaded) == 298
    with pytest.raises(SearchError, match="string ids"):
        loaded.add(x[:2], y[:2])  # no ids given for a string-id index
    with pytest.raises(SearchError, match="strings too"):
        loaded.add(x[:2], y[:2], ids=[5, 6])
    with pytest.raises(SearchError, match="already in the index"):
        loaded.add(x[:1], y[:1], ids=["actor/00001"])


def test_bad_input_is_one_clear_error():
    x, y, q = clustered(n=200)
    index = EmbeddingIndex(x.shape[1])
    with pytest.raises(SearchError, match="empty"):
        index.query(q, 3)
    index.add(x, y)
    with pytest.raises(SearchError, match="k must be an integer >= 1"):
        index.query(q, 0)
    with pytest.raises(SearchError, match="larger than the number of stored items"):
        index.query(q, 201)
    with pytest.raises(SearchError, match=r"shape \(n, 16\)"):
        index.query(q[:, :8], 3)
    with pytest.raises(SearchError, match="no model to embed"):
        index.query(np.zeros((2, 28, 28, 1)), 3)
    with pytest.raises(SearchError, match="unique"):
        index.add(x[:2], y[:2], ids=[900, 900])
    with pytest.raises(SearchError, match="one per item"):
        index.add(x[:2], y[:3])
    with pytest.raises(SearchError, match="kind must be one of"):
        EmbeddingIndex(16, kind="lsh")
    with pytest.raises(SearchError, match="nlist=64 cells needs at least 64"):
        EmbeddingIndex(16, kind="ivf", nlist=64).add(x[:10])


# --- embeddings are computed once -------------------------------------------------------------------


class CountingEmbed:
    """A stand-in model: flattens images to vectors and counts every image it embeds."""

    def __init__(self):
        self.calls = 0

    def __call__(self, images):
        self.calls += len(images)
        return np.asarray(images, np.float32).reshape(len(images), -1)[:, :32] * 1.0


def test_a_query_embeds_only_the_query_images(tmp_path):
    rng = np.random.default_rng(1)
    catalogue = rng.random((500, 28, 28, 1), dtype=np.float32)
    count = CountingEmbed()
    index = EmbeddingIndex(32, embed_fn=count, input_shape=(28, 28, 1))
    index.add(catalogue, rng.integers(0, 10, 500))
    assert count.calls == 500  # each stored item embedded once, at add
    result = index.query(catalogue[[4, 9, 250]], 2)
    assert count.calls == 503  # the query embeds its 3 images, never the catalogue again
    np.testing.assert_array_equal(result.ids[:, 0], [4, 9, 250])
    np.testing.assert_allclose(result.distances[:, 0], 0.0, atol=1e-5)
    index.save(tmp_path / "idx")
    loaded = EmbeddingIndex.load(tmp_path / "idx", embed_fn=count)
    loaded.query(catalogue[:1], 1)
    assert count.calls == 504  # loading reads the stored vectors instead of embedding


# --- atomic save --------------------------------------------------------------------------------------


def test_a_crash_mid_save_leaves_the_previous_index_loadable(tmp_path, monkeypatch):
    x, y, q = clustered(n=400)
    index = EmbeddingIndex(x.shape[1])
    index.add(x[:300], y[:300])
    index.save(tmp_path / "idx")
    expected = index.query(q, 5)
    index.add(x[300:], y[300:])

    real_save = np.save
    calls = {"n": 0}

    def crashing_save(*args, **kwargs):  # the disk fills up after the first array
        calls["n"] += 1
        if calls["n"] == 2:
            raise OSError("No space left on device")
        return real_save(*args, **kwargs)

    monkeypatch.setattr(search.np, "save", crashing_save)
    with pytest.raises(OSError, match="No space"):
        index.save(tmp_path / "idx")
    monkeypatch.undo()
    assert sorted(os.listdir(tmp_path)) == ["idx"]
    old = EmbeddingIndex.load(tmp_path / "idx")
    assert len(old) == 300
    np.testing.assert_array_equal(old.query(q, 5).ids, expected.ids)

    # a crash between the two renames (old folder moved away, new one not yet in place)
    real_rename = os.rename

    def crash_on_second_rename(src, dst):
        if ".tmp-" in str(src):
            raise OSError("killed")
        return real_rename(src, dst)

    monkeypatch.setattr(search.os, "rename", crash_on_second_rename)
    with pytest.raises(OSError, match="killed"):
        index.save(tmp_path / "idx")
    monkeypatch.undo()
    assert not (tmp_path / "idx").exists()
    old = EmbeddingIndex.load(tmp_path / "idx")  # found beside it
    np.testing.assert_array_equal(old.query(q, 5).ids, expected.ids)
    index.save(tmp_path / "idx")  # the next save restores order
    assert sorted(os.listdir(tmp_path)) == ["idx"]
    assert len(EmbeddingIndex.load(tmp_path / "idx")) == 400


def test_save_refuses_to_replace_a_folder_that_is_not_an_index(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "notes.txt").write_text("keep me")
    index = EmbeddingIndex(4)
    index.add(np.eye(4, dtype=np.float32))
    with pytest.raises(SearchError, match="not an index folder"):
        index.save(tmp_path / "docs")
    assert (tmp_path / "docs" / "notes.txt").read_text() == "keep me"
    with pytest.raises(NotAnIndexError, match="missing index.faiss"):
        EmbeddingIndex.load(tmp_path / "docs")


# --- image files ----------------------------------------------------------------------------------------


def test_read_image_greys_resizes_and_inverts_a_light_background(tmp_path):
    digit = np.zeros((56, 56), np.float32)
    digit[12:44, 24:32] = 1.0  # a light vertical bar: a "1" on a dark background
    expected = cv2.resize(digit, (28, 28), interpolation=cv2.INTER_AREA)

    cv2.imwrite(str(tmp_path / "dark.png"), (digit * 255).astype(np.uint8))
    out = search.read_image(tmp_path / "dark.png")
    assert out.shape == (28, 28, 1) and out.dtype == np.float32
    np.testing.assert_allclose(out[..., 0], expected, atol=1 / 255)

    paper = np.stack([255 - (digit * 255).astype(np.uint8)] * 3, axis=-1)  # dark ink on white, colour
    paper[..., 2] = np.minimum(paper[..., 2], 250)  # a slightly tinted sheet
    cv2.imwrite(str(tmp_path / "paper.jpg"), paper)
    out = search.read_image(tmp_path / "paper.jpg")
    assert np.median(out[0]) < 0.1 and out[10:18, 13, 0].min() > 0.8  # inverted: light stroke on dark

    rgba = np.zeros((56, 56, 4), np.uint8)
    rgba[..., 3] = (digit * 255).astype(np.uint8)  # black strokes on a transparent background
    cv2.imwrite(str(tmp_path / "alpha.png"), rgba)
    np.testing.assert_allclose(search.read_image(tmp_path / "alpha.png")[..., 0], expected, atol=2 / 255)


# --- with a trained (tiny) model ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def data():
    return load_dataset("mnist", source="bundled", verbose=False)


@pytest.fixture(scope="module")
def cache(data, tmp_path_factory):
    folder = tmp_path_factory.mktemp("models_cache")
    training.train(MODEL, data, cache_dir=folder, **TINY)
    return folder


def test_from_model_queries_images_and_refuses_a_changed_model(data, cache, tmp_path):
    own_cache = tmp_path / "cache"
    shutil.copytree(cache, own_cache)
    index = EmbeddingIndex.from_model(
        MODEL, data.x_test[:300], data.y_test[:300], data=data, cache_dir=own_cache, train_kwargs=TINY
    )
    assert index.fingerprint == training.read_cache_record(MODEL, own_cache)["fingerprint"]
    by_image = index.query(data.x_test[:20], 3)
    np.testing.assert_array_equal(by_image.ids[:, 0], np.arange(20))
    np.testing.assert_allclose(by_image.distances[:, 0], 0.0, atol=1e-4)
    np.testing.assert_array_equal(by_image.labels[:, 0], data.y_test[:20])
    by_vector = index.query(index.vectors[:20], 3)
    np.testing.assert_array_equal(by_vector.ids, by_image.ids)

    index.save(tmp_path / "idx")
    loaded = EmbeddingIndex.load(tmp_path / "idx")  # the model comes from the cache it was built with
    assert loaded.class_names == data.class_names
    np.testing.assert_array_equal(loaded.query(data.x_test[:20], 3).ids, by_image.ids)

    training.train(MODEL, data, cache_dir=own_cache, **{**TINY, "steps_per_epoch": 1})  # the model changes
    with pytest.raises(ModelMismatchError, match="changed since this index was built"):
        EmbeddingIndex.load(tmp_path / "idx")
    with pytest.raises(ModelMismatchError, match="changed since"):
        loaded2 = EmbeddingIndex.load(tmp_path / "idx", verify_model=False)  # embeddings only...
        loaded2.query(index.vectors[:2], 1)  # ...work,
        loaded2.query(data.x_test[:2], 1)  # but images need the model
    with pytest.raises(ModelMismatchError, match="not in the cache"):
        EmbeddingIndex.load(tmp_path / "idx", cache_dir=tmp_path / "empty_cache_dir")


def _query_png(data, tmp_path, row=7):
    png = tmp_path / f"test_{row}.png"
    search.write_image(png, data.x_test[row])
    return png


def test_cli_build_and_query_return_the_image_itself_first(data, cache, tmp_path, capsys):
    out = tmp_path / "idx"
    rc = search.main(
        [
            "build",
            "--model",
            MODEL,
            "--dataset",
            "mnist",
            "--source",
            "bundled",
            "--split",
            "test",
            "--out",
            str(out),
            "--cache-dir",
            str(cache),
            *TINY_ARGS,
        ]
    )
    assert rc == 0 and search.is_index_folder(out)
    capsys.readouterr()
    png = _query_png(data, tmp_path)
    figure = tmp_path / "fig.png"
    rc = search.main(["query", "--index", str(out), "--image", str(png), "-k", "3", "--figure", str(figure)])
    lines = capsys.readouterr().out.splitlines()
    assert rc == 0 and figure.is_file()
    rank, item, name, distance = lines[2].split()
    assert (rank, item, name) == ("1", "7", data.class_names[data.y_test[7]])
    assert float(distance) < 1e-4
    assert len([line for line in lines if line.strip()[:1].isdigit()]) == 3

    # once as a real subprocess, with two images
    other = _query_png(data, tmp_path, row=11)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "3"}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "helpers.search",
            "query",
            "--index",
            str(out),
            "--image",
            str(png),
            "--image",
            str(other),
            "-k",
            "2",
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    rows = [line.split() for line in proc.stdout.splitlines() if line.strip()[:1].isdigit()]
    assert [r[:3] for r in (rows[0], rows[2])] == [
        ["1", "7", data.class_names[data.y_test[7]]],
        ["1", "11", data.class_names[data.y_test[11]]],
    ]


def test_cli_bad_input_exits_2_with_one_line_and_writes_nothing(data, cache, tmp_path, capsys):
    out = tmp_path / "idx"
    assert (
        search.main(
            [
                "build",
                "--model",
                MODEL,
                "--source",
                "bundled",
                "--split",
                "val",
                "--out",
                str(out),
                "--cache-dir",
                str(cache),
                *TINY_ARGS,
            ]
        )
        == 0
    )
    png = _query_png(data, tmp_path)
    (tmp_path / "broken.png").write_bytes(b"not a png at all")
    (tmp_path / "plain").mkdir()
    capsys.readouterr()
    before = sorted(p.name for p in tmp_path.iterdir())
    figure = tmp_path / "fig.png"
    cases = {
        "does not exist": ["query", "--index", str(out), "--image", str(tmp_path / "nope.png")],
        "cannot read image": ["query", "--index", str(out), "--image", str(tmp_path / "broken.png")],
        "not an index folder": ["query", "--index", str(tmp_path / "plain"), "--image", str(png)],
        "folder .* does not exist": ["query", "--index", str(tmp_path / "missing"), "--image", str(png)],
        "-k must be >= 1": ["query", "--index", str(out), "--image", str(png), "-k", "0"],
        "unknown model": ["build", "--model", "nope", "--source", "bundled", "--out", str(tmp_path / "new")],
        "required": ["query", "--image", str(png)],
    }
    for message, argv in cases.items():
        rc = search.main(argv + (["--figure", str(figure)] if argv[0] == "query" else []))
        captured = capsys.readouterr()
        assert rc == 2, message
        assert captured.out == "", message
        err = captured.err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error: "), (message, captured.err)
        assert re.search(message, err[0]), (message, err[0])
        assert sorted(p.name for p in tmp_path.iterdir()) == before, message

    # from a shell too: the input is checked before Keras is imported (and prints its own lines)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "helpers.search",
            "query",
            "--index",
            str(out),
            "--image",
            str(tmp_path / "broken.png"),
            "--figure",
            str(figure),
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.splitlines() == [
        f"error: cannot read image file {tmp_path / 'broken.png'}: not an "
        f"image OpenCV can decode (PNG, JPEG, ...)."
    ]
    assert sorted(p.name for p in tmp_path.iterdir()) == before
