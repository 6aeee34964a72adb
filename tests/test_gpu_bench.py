"""The GPU benchmark's pieces that run anywhere: its command line, the compute-only feed, and the
CPU-side check of weights trained elsewhere."""

import json
import tarfile

import numpy as np

from benchmarks import gpu, gpu_check


def test_command_drops_the_output_folder_gpu_sh_passes():
    assert gpu.gpu_command(["--out", "/root/out", "--jobs", "6"]) == "bash benchmarks/gpu.sh --jobs 6"
    assert gpu.gpu_command([]) == "bash benchmarks/gpu.sh"


def test_in_memory_batches_cycle_through_what_was_drawn():
    batches = [("a", 0), ("b", 1)]
    feed = gpu.InMemoryBatches(batches, steps=5)
    assert len(feed) == 5 and [feed[i][0] for i in range(5)] == ["a", "b", "a", "b", "a"]


def _tar_of(tmp_path, name, weights, embeddings):
    folder = tmp_path / "src" / name
    folder.mkdir(parents=True)
    weights_path = folder / f"{name}.feature_extractor.weights.h5"
    weights(weights_path)
    np.save(folder / f"{name}.reference_embeddings.npy", embeddings, allow_pickle=False)
    tar_path = tmp_path / "gpu_weights.tar"
    with tarfile.open(tar_path, "w") as tar:
        tar.add(folder, arcname=name)
    return tar_path


def test_check_weights_accepts_the_same_embeddings_and_refuses_others(tmp_path):
    from helpers.data import load_dataset
    from helpers.evaluation import embed
    from helpers.registry import build_embedding

    name = "cnn_with_attention_cls_head_v1"
    data = load_dataset("mnist", source="bundled", verbose=False)
    model = build_embedding(name)
    images = data.x_test[:8]
    results = {"full_profile": {"dataset": "mnist bundled", "reference_images": 8}}
    good = embed(model, images)
    rows = gpu_check.check_weights(results, _tar_of(tmp_path / "a", name, model.save_weights, good), 1e-4)
    assert rows[0]["model"] == name and rows[0]["same"] and rows[0]["max_abs_diff"] < 1e-5
    bad = good + 1e-3
    rows = gpu_check.check_weights(results, _tar_of(tmp_path / "b", name, model.save_weights, bad), 1e-4)
    assert not rows[0]["same"] and abs(rows[0]["max_abs_diff"] - 1e-3) < 1e-5


def test_gpu_check_without_results_exits_2(tmp_path, capsys):
    assert gpu_check.main(["--from", str(tmp_path), "--no-merge"]) == 2
    assert "gpu_results.json not found" in capsys.readouterr().err
    (tmp_path / "gpu_results.json").write_text(json.dumps({"sections": {}}))
    assert gpu_check.main(["--from", str(tmp_path), "--no-merge"]) == 0
