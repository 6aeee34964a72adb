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

import numpy as np
import pytest
from PIL import Image

from helpers import search, training
from helpers.data import load_dataset
from helpers.search import (
    EmbeddingIndex,
    IndexConfig,
    ModelMismatchError,
    NotAnIndexError,
    SearchError,
    store,
)

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
    index = EmbeddingIndex(x.shape[1], IndexConfig("flat", metric))
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
    index = EmbeddingIndex(x.shape[1], IndexConfig(kind, "l2", nprobe=8))
    index.add(x, y)
    exact, _ = brute_force(q, x, 10)
    assert recall(index.query(q, 10).ids, exact) >= 0.9
    if kind == "ivf":  # nlist defaults to min(4 sqrt(n), n / 39); searching every cell is exact
        assert index.params["nlist"] == min(int(4 * np.sqrt(len(x))), len(x) // 39) == 76
        assert recall(index.query(q, 10, nprobe=index.params["nlist"]).ids, exact) == 1.0


@pytest.mark.parametrize("kind", ["flat", "hnsw", "ivf"])
def test_save_load_query_identical_then_add_and_remove(kind, tmp_path):
    x, y, q = clustered()
    index = EmbeddingIndex(x.shape[1], IndexConfig(kind, "cosine"), class_names=[f"c{i}" for i in range(10)])
    index.add(x[:2000], y[:2000])
    before = index.query(q, 10)
    index.save(tmp_path / "idx")
    assert sorted(os.listdir(tmp_path)) == ["idx"]  # no temporary folder left behind
    assert sorted(os.listdir(tmp_path / "idx")) == sorted(search.FILES)
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


@pytest.mark.parametrize("kind", ["flat", "hnsw", "ivf"])
def test_kinds_are_factory_strings_and_keys_survive_remove_then_add(kind, tmp_path):
    x, y, _ = clustered()
    config = IndexConfig(kind, "l2", nlist=16 if kind == "ivf" else None)
    assert (
        config.factory_string() == {"flat": "IDMap2,Flat", "hnsw": "IDMap2,HNSW32", "ivf": "IVF16,Flat"}[kind]
    )
    index = EmbeddingIndex(x.shape[1], config)
    index.add(x[:1000], y[:1000], ids=[f"item{i}" for i in range(1000)])
    index.remove([f"item{i}" for i in range(0, 1000, 2)])
    index.add(x[1000:1100], y[1000:1100], ids=[f"item{i}" for i in range(1000, 1100)])
    index.save(tmp_path / "idx")
    loaded = EmbeddingIndex.load(tmp_path / "idx")
    for row in (1, 999, 1000, 1099):  # a stored vector finds itself, before and after the removal
        assert loaded.query(x[row : row + 1], 1, nprobe=16).ids[0, 0] == f"item{row}"
    meta = json.loads((tmp_path / "idx" / "metadata.json").read_text())
    (tmp_path / "idx" / "metadata.json").write_text(json.dumps({**meta, "format": 1}))
    with pytest.raises(NotAnIndexError, match="format 1.*Rebuild the index"):
        EmbeddingIndex.load(tmp_path / "idx")


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


def test_projector_files_load_as_tsv_with_one_row_per_item(tmp_path):
    import csv

    x, y, _ = clustered(n=50, dim=8)
    index = EmbeddingIndex(8, class_names=[f"class\t{i}" for i in range(10)])
    index.add(x, y, ids=[f"item {i}" for i in range(50)])
    folder = index.write_projector(tmp_path / "proj", images=np.random.default_rng(0).random((50, 28, 28)))
    vectors = np.loadtxt(folder / "vectors.tsv", delimiter="\t", dtype=np.float32)
    np.testing.assert_allclose(vectors, x, rtol=1e-6)
    with open(folder / "metadata.tsv", newline="") as fh:
        rows = list(csv.reader(fh, delimiter="\t"))
    assert rows[0] == ["id", "label", "class"] and len(rows) == 1 + len(vectors) == 51
    assert rows[1] == ["item 0", str(y[0]), f"class {y[0]}"]  # a tab in a name cannot break a row
    config_text = (folder / "projector_config.pbtxt").read_text()
    assert 'tensor_path: "vectors.tsv"' in config_text and "single_image_dim: 28" in config_text
    assert Image.open(folder / "sprite.png").size == (28 * 8, 28 * 8)  # 50 images: an 8 x 8 grid

    plain = index.write_projector(tmp_path / "points")  # no images, no split: points only
    assert (
        not (plain / "sprite.png").exists() and "sprite" not in (plain / "projector_config.pbtxt").read_text()
    )
    with pytest.raises(SearchError, match="one image per stored item"):
        index.write_projector(tmp_path / "bad", images=np.zeros((3, 28, 28)))


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
        EmbeddingIndex(16, IndexConfig("lsh"))
    with pytest.raises(SearchError, match="nlist=64 cells needs at least 64"):
        EmbeddingIndex(16, IndexConfig("ivf", nlist=64)).add(x[:10])


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

    monkeypatch.setattr(store.np, "save", crashing_save)
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

    monkeypatch.setattr(store.os, "rename", crash_on_second_rename)
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
    digit[46:47, 10:40] = 0.5  # and a grey line: halving averages it with its neighbours
    expected = digit.reshape(28, 2, 28, 2).mean(axis=(1, 3))  # pixel-area averaging, 2x2 -> 1

    Image.fromarray((digit * 255).astype(np.uint8)).save(tmp_path / "dark.png")
    out = search.read_image(tmp_path / "dark.png")
    assert out.shape == (28, 28, 1) and out.dtype == np.float32
    np.testing.assert_allclose(out[..., 0], expected, atol=1 / 255)

    paper = np.stack([255 - (digit * 255).astype(np.uint8)] * 3, axis=-1)  # dark ink on white, colour
    paper[..., 2] = np.minimum(paper[..., 2], 250)  # a slightly tinted sheet
    Image.fromarray(paper).save(tmp_path / "paper.jpg")
    out = search.read_image(tmp_path / "paper.jpg")
    assert np.median(out[0]) < 0.1 and out[10:18, 13, 0].min() > 0.8  # inverted: light stroke on dark

    rgba = np.zeros((56, 56, 4), np.uint8)
    rgba[..., 3] = (digit * 255).astype(np.uint8)  # black strokes on a transparent background
    Image.fromarray(rgba).save(tmp_path / "alpha.png")
    np.testing.assert_allclose(search.read_image(tmp_path / "alpha.png")[..., 0], expected, atol=2 / 255)

    wide = np.zeros((16, 32, 3), np.uint8)
    wide[..., 0] = 255  # pure red on a dark ground: grey 0.299 (BT.601), kept (dark border)
    wide[0, :] = wide[-1, :] = wide[:, 0] = wide[:, -1] = 0
    Image.fromarray(wide).save(tmp_path / "red.png")
    out = search.read_image(tmp_path / "red.png", size=(8, 8))
    np.testing.assert_allclose(out[3:5, 3:5, 0], 0.299, atol=1 / 255)
    deep = (digit * 65535).astype(np.uint16)  # 16-bit grey scales like 8-bit
    Image.fromarray(deep).save(tmp_path / "deep.png")
    np.testing.assert_allclose(search.read_image(tmp_path / "deep.png")[..., 0], expected, atol=1 / 255)


def test_write_image_then_read_image_round_trips_to_8_bits(tmp_path):
    image = np.random.default_rng(0).random((28, 28, 1)).astype(np.float32) * 0.4  # dark: no inversion
    search.write_image(tmp_path / "x.png", image)
    assert Image.open(tmp_path / "x.png").mode == "L"
    np.testing.assert_allclose(search.read_image(tmp_path / "x.png"), image, atol=0.5 / 255 + 1e-6)


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
    assert index.model.fingerprint == training.read_cache_record(MODEL, own_cache)["fingerprint"]
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


def test_from_model_without_a_cache_dir_uses_the_suite_models_cache(data, cache, tmp_path, monkeypatch):
    from helpers import config

    monkeypatch.setattr(config, "MODELS_CACHE", tmp_path / "default_cache")
    shutil.copytree(cache, config.MODELS_CACHE)
    index = EmbeddingIndex.from_model(MODEL, data.x_test[:50], data.y_test[:50], data=data, train_kwargs=TINY)
    assert index.model.cache_dir == str(config.MODELS_CACHE.resolve())
    assert index.model.fingerprint == training.read_cache_record(MODEL, config.MODELS_CACHE)["fingerprint"]


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

    rc = search.main(["query", "--index", str(out), "--image", str(png), "-k", "3", "--json"])
    result = json.loads(capsys.readouterr().out)
    assert rc == 0 and result["k"] == 3 and result["queries"][0]["image"] == str(png)
    first = result["queries"][0]["neighbours"][0]
    assert (first["rank"], first["id"], first["label"]) == (1, 7, int(data.y_test[7]))
    assert first["class"] == data.class_names[data.y_test[7]] and first["distance"] < 1e-4

    projector = EmbeddingIndex.load(out).write_projector(tmp_path / "projector")  # sprite from the split
    sprite = np.asarray(Image.open(projector / "sprite.png"), np.float32) / 255
    side = int(np.ceil(np.sqrt(len(data.x_test))))
    assert sprite.shape == (28 * side, 28 * side)
    np.testing.assert_allclose(sprite[28:56, :28], data.x_test[side, ..., 0], atol=1 / 255)

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


def test_cli_usage_errors_exit_2_failures_exit_1_with_one_line_and_write_nothing(
    data, cache, tmp_path, capsys
):
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
    figure = tmp_path / "fig.png"
    (tmp_path / "empty_cache").mkdir()
    (tmp_path / "corrupt").mkdir()
    for name in search.FILES:
        (tmp_path / "corrupt" / name).write_text("{" if name == "metadata.json" else "")
    new, uncached = str(tmp_path / "new"), ["--epochs", "1", "--steps-per-epoch", "3", "--batch-size", "32"]
    cases = {  # message: (arguments, exit status)
        "does not exist": (["query", "--index", str(out), "--image", str(tmp_path / "nope.png")], 2),
        "cannot read image": (["query", "--index", str(out), "--image", str(tmp_path / "broken.png")], 2),
        "-k must be >= 1": (["query", "--index", str(out), "--image", str(png), "-k", "0"], 2),
        "unknown model": (["build", "--model", "nope", "--source", "bundled", "--out", new], 2),
        "required": (["query", "--image", str(png)], 2),
        "invalid choice": (["build", "--model", MODEL, "--dataset", "svhn", "--out", new], 2),
        "not an index folder": (["query", "--index", str(tmp_path / "plain"), "--image", str(png)], 1),
        "folder .* does not exist": (["query", "--index", str(tmp_path / "missing"), "--image", str(png)], 1),
        "unreadable metadata.json.*rebuild": (
            ["query", "--index", str(tmp_path / "corrupt"), "--image", str(png)],
            1,
        ),
        "not in the cache .*--cache-dir": (
            ["query", "--index", str(out), "--image", str(png), "--cache-dir", str(tmp_path / "empty_cache")],
            1,
        ),
        r"not cached .* add --train to train it \(about \d": (
            [
                "build",
                "--model",
                MODEL,
                "--source",
                "bundled",
                "--out",
                new,
                "--cache-dir",
                str(cache),
                *uncached,
            ],
            1,
        ),
    }
    before = sorted(p.name for p in tmp_path.iterdir())
    for message, (argv, status) in cases.items():
        rc = search.main(argv + (["--figure", str(figure)] if argv[0] == "query" else []))
        captured = capsys.readouterr()
        assert rc == status, message
        assert captured.out == "", message
        err = captured.err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error: "), (message, captured.err)
        assert re.search(message, err[0]), (message, err[0])
        assert sorted(p.name for p in tmp_path.iterdir()) == before, message
    assert not training.is_cached(MODEL, data, cache, epochs=1, steps_per_epoch=3, batch_size=32)

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
        f"image Pillow can decode (PNG, JPEG, ...)."
    ]
    assert sorted(p.name for p in tmp_path.iterdir()) == before

    own_cache = tmp_path / "own_cache"  # --train trains, saying how long it will take
    argv = ["build", "--model", MODEL, "--source", "bundled", "--split", "val", "--out", new]
    assert search.main([*argv, "--cache-dir", str(own_cache), *uncached, "--train"]) == 0
    assert re.search(rf"training {MODEL} on mnist: about \d+s on a 2-core CPU", capsys.readouterr().out)
    assert search.is_index_folder(new)
