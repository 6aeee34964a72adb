"""benchmarks/cpu_training.py: the lever settings and the paired summary (no training here); the FLOP count
and the rows of benchmarks/archive/float32_ceiling.py."""

import math
import subprocess
import sys
import time
from pathlib import Path

import pytest

from benchmarks import cpu_training as bench
from helpers import allocator

ROOT = Path(__file__).resolve().parents[1]


def _row(lever, repeat, images, cpu=2.0, mode="alone"):
    return {
        "model": "m", "mode": mode, "lever": lever, "repeat": repeat, "images_per_s": images,
        "kernel_share": 0.1, "faults_per_s": 10.0, "cpu_per_wall": cpu,
    }  # fmt: skip


def test_speedup_pairs_each_lever_with_the_baseline_of_its_own_round():
    # round 0 ran on a fast machine, round 1 on a slow one: 1.5x and 1.2x within each round
    rows = [
        _row("baseline", 0, 1000),
        _row("tcmalloc", 0, 1500),
        _row("baseline", 1, 500),
        _row("tcmalloc", 1, 600),
    ]
    summary = {s["lever"]: s for s in bench.summarise(rows)}
    assert summary["tcmalloc"]["speedup"] == pytest.approx(math.sqrt(1.5 * 1.2))
    assert (summary["tcmalloc"]["speedup_min"], summary["tcmalloc"]["speedup_max"]) == (1.2, 1.5)
    assert summary["baseline"]["speedup"] == 1.0
    assert summary["tcmalloc"]["images_per_s"] == 1050  # median of 1500 and 600


def test_cpu_speedup_divides_out_the_cores_the_machine_left_free():
    # the lever ran with one core free where the baseline had two: same images per CPU second
    rows = [_row("baseline", 0, 1000, cpu=2.0), _row("xla", 0, 500, cpu=1.0)]
    summary = {s["lever"]: s for s in bench.summarise(rows)}
    assert summary["xla"]["speedup"] == 0.5
    assert summary["xla"]["cpu_speedup"] == 1.0


def test_pair_mode_gives_each_worker_one_thread_and_the_threads_lever_two():
    env, args = bench.lever_settings("baseline", "pair")
    assert env == {"TF_NUM_INTRAOP_THREADS": "1", "OMP_NUM_THREADS": "1"} and args == []
    assert bench.lever_settings("threads", "pair")[0]["TF_NUM_INTRAOP_THREADS"] == "2"
    assert bench.lever_settings("baseline", "alone") == ({}, [])
    assert bench.lever_settings("xla", "alone")[1] == ["--xla"]
    assert bench.lever_settings("device_augment", "alone")[1] == ["--augment", "device"]
    assert bench.lever_settings("bf16", "alone") == ({}, ["--policy", "mixed_bfloat16"])
    env, args = bench.lever_settings("tcmalloc_bf16", "alone")
    assert args == ["--policy", "mixed_bfloat16"] and env == bench.lever_settings("tcmalloc", "alone")[0]


def test_bad_arguments_exit_2(capsys):
    with pytest.raises(SystemExit) as exc:
        bench.main(["--epochs", "1"])
    assert exc.value.code == 2 and "first is untimed" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        bench.main(["--models", "resnet"])
    assert exc.value.code == 2


def test_tcmalloc_variants_add_their_one_setting_to_the_allocator():
    if allocator.find("tcmalloc") is None:
        pytest.skip("TCMalloc is not installed here")
    plain = bench.lever_settings("tcmalloc", "pair")[0]
    keep = bench.lever_settings("tcmalloc_keep", "pair")[0]
    interop = bench.lever_settings("tcmalloc_interop1", "pair")[0]
    eigen = bench.lever_settings("tcmalloc_eigen", "pair")[0]
    assert {k: v for k, v in keep.items() if k not in plain} == {"TCMALLOC_RELEASE_RATE": "0"}
    assert {k: v for k, v in interop.items() if k not in plain} == {"TF_NUM_INTEROP_THREADS": "1"}
    assert {k: v for k, v in eigen.items() if k not in plain} == {"TF_ENABLE_ONEDNN_OPTS": "0"}
    assert bench.lever_settings("tcmalloc_spe5", "pair") == (plain, ["--steps-per-execution", "5"])
    assert (
        "TCMALLOC_RELEASE_RATE" not in interop
        and "LD_PRELOAD" not in bench.lever_settings("threads", "pair")[0]
    )


def test_pair_workers_wait_for_each_other_before_the_timed_epochs(tmp_path):
    barrier = f"{tmp_path}:2"
    code = f"from benchmarks.cpu_training import wait_at_barrier; wait_at_barrier({barrier!r}, timeout=60)"
    other = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, env={"PYTHONPATH": str(ROOT)})
    try:
        time.sleep(2.0)
        assert other.poll() is None, "the first worker went on alone"
        bench.wait_at_barrier(barrier, timeout=10)  # the second arrives: both go on
        assert other.wait(timeout=30) == 0
    finally:
        other.kill()
    bench.wait_at_barrier(None)  # alone: no barrier, returns at once


def test_a_barrier_the_other_worker_never_reaches_times_out_naming_it(tmp_path):
    with pytest.raises(TimeoutError, match="other worker never reached"):
        bench.wait_at_barrier(f"{tmp_path}:2", timeout=0.2)


def test_forward_flops_counts_convolution_and_dense_multiply_adds_by_hand():
    import keras

    from benchmarks.archive.float32_ceiling import forward_flops

    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 3, padding="valid")(inputs)  # 6x6 positions, 3*3*3 in, 4 out
    x = keras.layers.MaxPooling2D(2)(x)  # not counted
    x = keras.layers.Dense(5)(x)  # on a 3x3 grid of 4-d vectors: 9 positions, 4 in, 5 out
    x = keras.layers.Flatten()(x)
    outputs = keras.layers.Dense(2)(x)  # 45 in, 2 out
    model = keras.Model(inputs, outputs)
    assert forward_flops(model) == 2 * (36 * 27 * 4 + 9 * 4 * 5 + 45 * 2)


def test_a_ceiling_row_derives_its_rates_and_shares_from_hand_figures():
    from benchmarks.archive.float32_ceiling import row_of

    figures = {"step_s": 0.1, "generator_s": 0.025, "images_per_step": 200, "forward_mflop_per_image": 50.0}
    row = row_of("m", figures, peak=100.0)
    assert row["images_per_s"] == pytest.approx(2000)
    assert row["step_gflops"] == pytest.approx(3 * 50e6 * 2000 / 1e9)  # 300 GFLOP/s
    assert row["share_of_matmul_rate"] == pytest.approx(3.0)
    assert row["generator_share"] == pytest.approx(0.2)  # 0.025 of 0.125
