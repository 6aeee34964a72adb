"""Write ``docs/results.md``: every benchmark table (markdown) from ``benchmarks/results/*.json`` and
the answered one-off investigations' ``benchmarks/archive/results/*.json``.

    python -m benchmarks.report            # rewrite docs/results.md (atomically)
    python -m benchmarks.report --check    # exit 1 when docs/results.md is not what the results give
    python -m benchmarks.report --stdout   # print the page instead

Each table names the command that produced it, its date and its machine (the results file's stamp).
The page shows no commit hashes: a command that names one shows ``<commit>`` instead. A command recorded
as a script run (``python benchmarks/x.py``, before the scripts ran as modules) shows as the module run
that reruns it today (``python -m benchmarks.x``, or ``benchmarks.archive.x`` for an archived script).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tempfile
from pathlib import Path

from helpers.metrics import interval_text

RESULTS = Path(__file__).resolve().parent / "results"
ARCHIVE = Path(__file__).resolve().parent / "archive" / "results"
PAGE = Path(__file__).resolve().parents[1] / "docs" / "results.md"
COMMAND = "python -m benchmarks.report"


STALE, UNSTAMPED = "†", "‡"
FRESHNESS_NOTES = {
    STALE: f"{STALE} measured with an earlier version of this registry entry: re-measure before quoting.",
    UNSTAMPED: f"{UNSTAMPED} measured before rows recorded their registry entry: it may have changed since.",
}


def freshness_marks(rows, key: str = "model") -> tuple[list[str], list[str]]:
    """Each row's ``key`` with a mark when its registry entry changed since it was measured (its
    ``registry_fingerprint`` differs from today's: :data:`STALE`) or when the row has no stamp
    (:data:`UNSTAMPED`), and the footnotes of the marks used. Baselines are never marked."""
    from benchmarks.common import registry_fingerprint

    names, used = [], set()
    for row in rows:
        now = registry_fingerprint(row[key])
        recorded = row.get("registry_fingerprint")
        mark = "" if now is None else UNSTAMPED if recorded is None else "" if recorded == now else STALE
        used.add(mark)
        names.append(f"{row[key]}{mark}")
    return names, [FRESHNESS_NOTES[m] for m in (STALE, UNSTAMPED) if m in used]


def _load(name, folder: Path = RESULTS):
    path = folder / name
    return json.loads(path.read_text()) if path.exists() else None


def _machine(d):
    m = d["machine"]
    return (
        f"{m['cores']} cores, {m['device']}, Keras {m.get('keras', '')} / {m['keras_backend']}, {d['date']}"
    )


TABLE_TITLES = {
    "split_seeds": "Quality over split seeds",
    "weight_seeds": "Quality over weight seeds",
}


def quality(d, title):
    """The tables of a quality results file: over split seeds (the targets) and over weight seeds."""
    if "tables" not in d:  # an older file: one table, split seed 42
        return _quality_table(d, title, d.get("commands") or [d["command"]], d["data"])
    out = []
    for table in ("split_seeds", "weight_seeds"):
        t = d["tables"].get(table)
        if t:
            out += _quality_table(t, f"{TABLE_TITLES[table]} ({t['what']})", t["commands"], d["data"], d)
            out.append("")
    return out[:-1]


def _quality_table(t, title, commands, data, d=None):
    commands = " then ".join(f"`{c}`" for c in commands)
    seeds = "split seeds" if t["summary"][0].get("over") == "split_seed" else "seeds"
    out = [
        f"**{title}** — {commands} ({_machine(d or t)}; {data})",
        "",
        f"| model | {seeds} | 3-NN accuracy | silhouette | MAP@R | P@1 | train s |",
        "|---|---|---|---|---|---|---|",
    ]
    names, notes = freshness_marks(t["summary"])
    for name, s in zip(names, t["summary"], strict=True):
        out.append(
            f"| {name} | {' '.join(map(str, s.get('over_values', []))) or s['seeds']} | "
            f"{_figure(s, '3nn_accuracy', 4, spread=True)} | {_figure(s, 'silhouette', 3)} | "
            f"{_figure(s, 'map_at_r', 4)} | {_figure(s, 'precision_at_1', 4)} | {s['train_seconds']:.0f} |"
        )
    out += ["", _QUALITY_KEY]
    out += ["", *notes] if notes else []
    if t.get("targets"):
        out += ["", "| target | value | model | met |", "|---|---|---|---|"]
        for key, target in t["targets"].items():
            out.append(
                f"| {key} ≥ {target['target']} | {target['value']:.4f} | {target['model']} | "
                f"{'yes' if target['met'] else '**no**'} |"
            )
    return out


_QUALITY_KEY = (
    "Over several runs: mean ± standard deviation (a spread, not a test), the standard error of the "
    "mean as (SE ...), and the range of the runs for 3-NN; for one run: the value and its 95 % "
    "interval [low, high], a bootstrap over the test queries."
)


def _figure(s, metric, digits, spread=False):
    """One cell: "value [low, high]" for a single run with an interval, else "mean ± std (SE se)"."""
    if f"{metric}_ci_low" in s:
        return interval_text(s, metric, digits)
    value = f"{s[metric]:.{digits}f}"
    if s.get("seeds", 2) < 2 or f"{metric}_std" not in s:
        return value
    se = f" (SE {s[f'{metric}_se']:.{digits}f})" if f"{metric}_se" in s else ""
    lows = f" ({s[f'{metric}_min']:.3f}–{s[f'{metric}_max']:.3f})" if spread else ""
    return f"{value} ± {s[f'{metric}_std']:.{digits}f}{se}{lows}"


def throughput(d):
    stamps = d.get("section_stamps", {})
    command = "" if stamps else f" — `{d['command']}`"  # else each section names its own command
    out = [f"**Throughput**{command} ({_machine(d)})", ""]
    gen = d["sections"].get("generator", [])
    if gen:
        if "generator" in stamps:
            out += [f"Generator: `{stamps['generator']['command']}` ({stamps['generator']['date']})", ""]
        out += ["| sampler | batch | triplets/s | ratio |", "|---|---|---|---|"]
        out += [
            f"| {r['sampler']} | {r['batch_size']} | {r['triplets_per_s']:,.0f} | {r['speedup']:.1f}x |"
            for r in gen
        ]
        out.append("")
    train = d["sections"].get("training", [])
    if train:
        if "training" in stamps:
            out += [f"Training: `{stamps['training']['command']}` ({stamps['training']['date']})", ""]
        out += [
            "| model (training, one epoch after warm-up) | batch | images/s | s/step | data wait share |",
            "|---|---|---|---|---|",
        ]
        out += [
            f"| {r['model']} | {r['batch_size']} | {r['images_per_s']:,.0f} | {r['step_s']:.3f} | "
            f"{r['data_wait_share']:.1%} |"
            for r in train
        ]
    return out


def gpu(d):
    """The GPU sections of throughput.json (each with its own command, date and machine)."""
    stamps = d.get("section_stamps", {})
    out = []
    gen = d["sections"].get("gpu_generator", [])
    if gen:
        st = stamps["gpu_generator"]
        out += [
            f"GPU generator alone: `{st['command']}` ({_gpu_machine(st)})",
            "",
            "| batch | augmentation | threads | triplets/s |",
            "|---|---|---|---|",
        ]
        out += [
            f"| {r['batch_size']} | {'numpy' if r['augment'] else 'none'} | {r['threads']} | "
            f"{r['triplets_per_s']:,.0f} |"
            for r in gen
        ]
        out.append("")
    for section, title in (
        (
            "gpu_training",
            "GPU training, each model as registered (numpy augmentation "
            "in the generator), and cnn_simple_v2 three ways",
        ),
        ("gpu_training_device", "GPU training, every model with on-device augmentation"),
    ):
        rows = d["sections"].get(section, [])
        if not rows:
            continue
        st = stamps[section]
        out += [
            f"{title}: `{st['command']}` ({_gpu_machine(st)}; 60,000 images, {rows[0]['steps']} "
            "timed steps after a warm-up)",
            "",
            "| model | batch | augmentation | workers | images/s | compute-only images/s | data wait share |",
            "|---|---|---|---|---|---|---|",
        ]
        out += [
            f"| {r['model']} | {r['batch_size']} | {_augment(r['augment'])} | {r['workers']} | "
            f"{r['images_per_s']:,.0f} | {r['compute_images_per_s']:,.0f} | {r['data_wait_share']:.1%} |"
            for r in rows
        ]
        out.append("")
    return out


def _augment(value):
    return {True: "numpy (host)", "host": "numpy (host)", "device": "on device", False: "none"}.get(
        value, value
    )


def _gpu_machine(st):
    m = st["machine"]
    return f"{m['device']}, {m['cores']} CPU cores, Keras {m['keras']} / {m['keras_backend']}, {st['date']}"


def quality_full(d):
    fp = d["full_profile"]
    p = fp["params"]
    out = [
        f"**The `full` profile on a GPU** — `{d['command']}` ({_gpu_machine(d)}): the six models on "
        f"Fashion-MNIST (42,000 / 14,000 / 14,000), {p['epochs']} epochs x {p['steps_per_epoch']} steps, "
        f"batch {p['batch_size']}, augmentation {_augment(fp['augment'])}, {fp['jobs']} training processes "
        f"sharing the GPU: training {fp['train_wall_seconds']:.0f} s wall, the whole part "
        f"{fp['seconds']:.0f} s with evaluation.",
        "",
        "| model | 3-NN | MAP@R | silhouette | P@1 | train s (own process) |",
        "|---|---|---|---|---|---|",
    ]
    names, notes = freshness_marks(d["rows"])
    for name, r in zip(names, d["rows"], strict=True):
        train_s = f"{r['train_seconds']:.0f}" if "train_seconds" in r else ""
        out.append(
            f"| {name} | {r['3nn_accuracy']:.4f} | {r['map_at_r']:.4f} | {r['silhouette']:.3f} | "
            f"{r['precision_at_1']:.4f} | {train_s} |"
        )
    out += ["", *notes] if notes else []
    check = d.get("cpu_check")
    if check and check["rows"]:
        worst = max(check["rows"], key=lambda r: r["max_abs_diff"])
        default = max(r.get("max_abs_diff_default_precision", 0.0) for r in check["rows"])
        out += [
            "",
            f"Weights trained there load here ({check['machine']['keras_backend']}, "
            f"{check['machine']['device']}): `{check['command']}` — the {len(check['rows'])} models' embeddings "
            f"of {worst['images']} test images agree with the GPU's to {worst['max_abs_diff']:.1e} at most "
            f"({worst['model']}; target {worst['atol']:g}), with the GPU computing in full float32 "
            f"(`{check['gpu_embeddings']['command'] if check.get('gpu_embeddings') else ''}`). With the GPU's "
            f"default TF32 arithmetic the difference is up to {default:.1e}: the arithmetic, not the weights.",
        ]
    return out


def _row_machine(row, d):
    m = row.get("machine", d["machine"])
    return f"{m['device']}, {m['keras_backend']}"


def studies(d):
    """The studies of ``quality_studies.json`` (scored on the validation split; written by
    ``benchmarks/quality_studies.py``). The legacy rows scored on the test split are not shown."""
    rows = [r for r in d.get("studies", []) if "eval_split" in r]
    if not rows:
        return []
    out = [
        "**Studies** that choose the defaults — each row's command reruns it, on the machine it names "
        f"(`benchmarks/quality_studies.py`; rows without a machine of their own: {_machine(d)}); weight "
        "seed 0, mean ± std over the split seeds, **scored on the validation split**. Older rows scored "
        "on split seed 42's test split (the held-out test set), kept apart as `legacy_test_split` and not "
        "shown, chose four registry values: CBAM's center-pull weight 5, its semi-hard loss, the cosine "
        "schedule and cnn_simple_v1's P×K batch-contrastive recipe ([defaults.md](defaults.md))",
        "",
        "| study | model | split seeds | 3-NN | silhouette | MAP@R | train s | machine | command |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    out += [
        f"| {r['what']} | {r['model']} | {' '.join(map(str, r['split_seeds']))} | "
        f"{r['3nn_accuracy']:.4f} ± {r['3nn_accuracy_std']:.4f} | {r['silhouette']:.3f} ± "
        f"{r['silhouette_std']:.3f} | {r['map_at_r']:.4f} | {r['train_seconds']:.0f} | "
        f"{_row_machine(r, d)} | `{r['command']}` |"
        for r in rows
    ]
    return out


def bn_recalibration(d):
    """``bn_recalibration.json``: one trained model with its moving BatchNorm statistics and with
    statistics recomputed on the clean training images, and the paired gain per split seed."""
    rows = {r["bn_statistics"]: r for r in d["summary"]}
    seeds = sorted({r["split_seed"] for r in d["rows"]})
    gain = rows["gain"]
    out = [
        f"**BatchNorm recalibration, paired** — `{d['command']}` ({_machine(d)}): {d['what']}; "
        f"split seeds {' '.join(map(str, seeds))}",
        "",
        "| BatchNorm statistics | 3-NN | silhouette | MAP@R |",
        "|---|---|---|---|",
    ]
    for name in ("moving", "recalibrated"):
        r = rows[name]
        out.append(
            f"| {name} | {r['3nn_accuracy']:.4f} ± {r['3nn_accuracy_std']:.4f} | {r['silhouette']:.3f} ± "
            f"{r['silhouette_std']:.3f} | {r['map_at_r']:.4f} ± {r['map_at_r_std']:.4f} |"
        )
    per = {
        m: " ".join(f"{v:+.4f}" for v in gain[f"{m}_per_split"])
        for m in ("3nn_accuracy", "silhouette", "map_at_r")
    }
    out.append(
        f"| gain (per split seed) | {gain['3nn_accuracy']:+.4f} ({per['3nn_accuracy']}) | "
        f"{gain['silhouette']:+.3f} ({per['silhouette']}) | {gain['map_at_r']:+.4f} ({per['map_at_r']}) |"
    )
    return out


def data_size(d):
    """``data_size.json``: the model trained on fractions of the train split, mean over split seeds."""
    out = [
        f"**Training-set size** — `{d['command']}` ({_machine(d)}): {d['what']}",
        "",
        "| fraction | training images | split seeds | 3-NN | silhouette | MAP@R |",
        "|---|---|---|---|---|---|",
    ]
    for r in d["summary"]:
        out.append(
            f"| {r['fraction']:g} | {r['train_images']} | {' '.join(map(str, r['split_seeds']))} | "
            f"{r['3nn_accuracy']:.4f} ± {r['3nn_accuracy_std']:.4f} | {r['silhouette']:.3f} ± "
            f"{r['silhouette_std']:.3f} | {r['map_at_r']:.4f} ± {r['map_at_r_std']:.4f} |"
        )
    return out


def shift_averaging(d):
    """``shift_averaging.json``: embeddings averaged over test-time shifts, chosen on val, reported on test."""
    commands = sorted({r["command"] for r in d["rows"]})
    out = [
        f"**Test-time shift averaging** — {' and '.join(f'`{c}`' for c in commands)} ({_machine(d)}): {d['what']}",
        "",
        "| split | shift set | shifts | split seeds | 3-NN | change vs none | silhouette | MAP@R |",
        "|---|---|---|---|---|---|---|---|",
    ]
    sizes = {k: len(v) for k, v in d["shift_sets"].items()}
    for r in sorted(d["summary"], key=lambda r: (r["eval_split"] != "val", sizes[r["shift_set"]])):
        gain = r.get("3nn_gain_over_none")
        out.append(
            f"| {r['eval_split']} | {r['shift_set']} | {sizes[r['shift_set']]} | "
            f"{' '.join(map(str, r['split_seeds']))} | {r['3nn_accuracy']:.4f} ± {r['3nn_accuracy_std']:.4f} | "
            f"{'' if gain is None else f'{gain:+.4f}'} | {r['silhouette']:.3f} | {r['map_at_r']:.4f} |"
        )
    return out


def refit_train_val(d):
    """``refit_train_val.json``: the frozen recipe refit on train + validation, scored on the test split."""
    out = [
        f"**Refit on train + validation** — `{d['command']}` ({_machine(d)}): {d['what']}",
        "",
        "| variant | shift set | training images | references | 3-NN | change vs registry | silhouette | MAP@R |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in d["summary"]:
        out.append(
            f"| {r['variant']} | {r['shift_set']} | {r['train_images']} | {r['references']} | "
            f"{r['3nn_accuracy']:.4f} ± {r['3nn_accuracy_std']:.4f} | {r['3nn_gain']:+.4f} | "
            f"{r['silhouette']:.3f} | {r['map_at_r']:.4f} |"
        )
    return out


def sorted_loss(d, title):
    """A sorted loss's timing (``benchmarks/semi_hard_loss.py``): against the (B, B, B) cube it replaced."""
    out = [
        f"**{title}** — `{d['command']}` ({_machine(d)}): one training step of "
        f"{d['model']} on a P x K batch of {d['batch']}, best of {d['repeats']} repeats of {d['steps']} "
        f"steps, both losses interleaved in one process; largest per-anchor loss difference "
        f"{d['max_abs_loss_difference']:.3g}",
        "",
        "| loss | step s | speed-up | loss forward s |",
        "|---|---|---|---|",
    ]
    for r in d["rows"]:
        out.append(
            f"| {r['loss']} | {r['step_s']:.3f} | {r['step_speedup']:.2f}x | {r['loss_forward_s']:.4f} |"
        )
    return out


def suite(docs):
    out = [
        "**Suite run time** (all notebooks, all six models; `python -m helpers.run` from an empty "
        "cache, then again with everything cached; a baseline is the same profile from an empty cache "
        "with an earlier commit's code, run first by the same command; cores: the CPU seconds of every "
        "process the run started over its wall time, on 2 cores)",
        "",
        "| profile | command | date | cold | cached | baseline (cold) | target |",
        "|---|---|---|---|---|---|---|",
    ]

    def busy(run):
        return f", {run['cpu_seconds'] / run['seconds']:.2f} cores" if run.get("cpu_seconds") else ""

    for d in docs:
        for profile, p in d["profiles"].items():
            cold = f"{p['cold']['seconds']:.0f} s" + busy(p["cold"])
            for jobs, run in p.get("cold_with_jobs", {}).items():
                cold += f" (`--jobs {jobs}`: {run['seconds']:.0f} s{busy(run)})"
            cached = f"{p['cached']['seconds']:.0f} s" if p.get("cached") else "not run"
            base = p.get("baseline")
            before = (
                f"{base['cold']['seconds']:.0f} s{busy(base['cold'])} at an earlier commit "
                f"(now {p['cold']['seconds'] / base['cold']['seconds']:.2f}x)"
                if base
                else "—"
            )
            out.append(
                f"| {profile} | `{d['command']}` | {d['date'][:10]} | {cold} | {cached} | {before} | "
                f"≤ {p['target_seconds']} s |"
            )
    return out


def _stamp(d):
    """``command`` (date, machine) of a results document or of one of its stamps."""
    m = d.get("machine", {})
    keras = f"Keras {m.get('keras', '')} / {m.get('keras_backend', '')}"
    machine = f"{m.get('cores', '?')} cores, {m.get('device', '?')}, {keras}"
    return f"`{d.get('command', '?')}` ({machine}, {d.get('date', '?')})"


def applications(d):
    """``applications.json``: verification, identification and unseen classes per model."""
    s = d["settings"]
    out = [
        f"**Verification and identification** — {_stamp(d)}: {s['pairs']:,} genuine and {s['pairs']:,} "
        f"impostor pairs per split; threshold at FAR {s['target_far']:.0%} set on the validation pairs, "
        f"its FAR and FRR measured on the test pairs; TAR at FAR {s['target_far']:.0%} set on the test "
        f"pairs; identification: mean ± std over {s['episodes']} gallery draws, DIR with "
        f"{s['unknown_classes']} classes left out of the gallery",
        "",
        "| model | AUC | EER | FAR on test | FRR on test | TAR @ FAR | closed 1-shot | closed 5-shot | DIR 1-shot "
        "| DIR 5-shot |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in d["verification"]:
        ids = " | ".join(
            f"{r[k]:.3f} ± {r[k + '_std']:.3f}"
            for k in ("closed_1shot", "closed_5shot", "dir_1shot", "dir_5shot")
        )
        out.append(
            f"| {r['model']} | {r['auc']:.4f} | {r['eer']:.4f} | {r['test_far']:.4f} | {r['test_frr']:.4f} | "
            f"{r['tar_at_far']:.4f} | {ids} |"
        )
    unseen = d.get("unseen") or []
    if unseen:
        out += [
            "",
            f"**Unseen digits {' and '.join(map(str, s['unseen']))}** — {_stamp(d)}, the same run: "
            "verification AUC of pairs "
            "whose first image is unseen; 1- and 5-shot identification in a gallery of all classes "
            "(mean ± std over the draws); P@1 against the train split",
            "",
            "| model | trained on | AUC | 1-shot | 5-shot | P@1 |",
            "|---|---|---|---|---|---|",
        ]
        out += [
            f"| {r['model']} | {r['trained_on']} | {r['auc']:.4f} | {r['1shot']:.3f} ± {r['1shot_std']:.3f} | "
            f"{r['5shot']:.3f} ± {r['5shot_std']:.3f} | {r['p_at_1']:.4f} |"
            for r in unseen
        ]
    return out


def search(d):
    """``search.json``: exact and approximate search on synthetic vectors."""
    data = d["data"]
    out = [
        f"**Search at scale** — {_stamp(d)}; FAISS {d['faiss']['version']}, {d['faiss']['threads']} threads: "
        f"{data['size']:,} vectors of dimension {data['dim']}, {data['queries']:,} queries, "
        f"{data['clusters']:,} Gaussian clusters (seed {data['seed']}); ann_recall@{data['k']}: the share of "
        f"the exact {data['k']} nearest neighbours returned; numpy brute force: {d['numpy_qps']:.0f} queries/s",
        "",
        f"| method | setting | build s | index MiB | queries/s | vs numpy | ann_recall@{data['k']} |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in d["rows"]:
        recall = r.get(f"ann_recall@{data['k']}", r.get(f"recall@{data['k']}"))
        out.append(
            f"| {r['method']} | {r['setting']} | {r['build_s']:.1f} | {r['memory_mb']:.0f} | {r['qps']:,.0f} | "
            f"{r['speedup_vs_numpy']:.1f}x | {recall:.3f} |"
        )
    return out


def contrastive_4_vs_9(d):
    """``contrastive_4_vs_9.json``: the study's models, mean ± std over training seeds."""
    cols = ("knn_plain", "sil_plain", "knn_shifted", "knn_shifted_loo", "sil_shifted", "shift_sil_6",
            "shift_sil_all", "four_cluster_sil")  # fmt: skip
    out = [
        f"**4 vs 9 in two dimensions** — {_stamp(d['measured'])}: {d['data']}; mean ± std over the "
        "training seeds",
        "",
        "| model | seeds | " + " | ".join(cols) + " |",
        "|---|---|" + "---|" * len(cols),
    ]
    for r in d["summary"]:
        cells = [
            f"{r[c]:.3f} ± {r[c + '_std']:.3f}"
            if (c + "_std") in r and r.get("seeds", 1) > 1
            else f"{r[c]:.3f}"
            for c in cols
        ]
        out.append(f"| {r['model']} | {r.get('seeds', 1)} | " + " | ".join(cells) + " |")
    return out


def densenet(d, title):
    """``densenet_fashion_mnist*.json``: classifier accuracy and the three representations."""
    sizes = d["sizes"]
    out = [
        f"**{title}** — {_stamp(d)}: {sizes['train']:,} / {sizes['val']:,} / {sizes['test']:,} images; "
        f"test accuracy {interval_text(d, 'test_accuracy', digits=4)}"
        + (
            " (95 % bootstrap interval over the test images)"
            if d.get("test_accuracy_ci_low") is not None
            else ""
        )
        + (f" (target {d['target_accuracy']})" if d.get("target_accuracy") else "")
        + (f"; {d['note']}" if d.get("note") else ""),
        "",
        "| representation | dim | silhouette | Davies–Bouldin | Calinski–Harabasz | 3-NN | MAP@R | P@1 "
        "| reference silhouette |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    out += [
        f"| {r['representation']} | {r['dim']} | {r['silhouette']:.3f} | {r['davies_bouldin']:.2f} | "
        f"{r['calinski_harabasz']:.0f} | {r['3nn_accuracy']:.3f} | {r['map_at_r']:.3f} | "
        f"{r['precision_at_1']:.3f} | {r['reference_silhouette']} |"
        for r in d["representations"]
    ]
    return out


def vicreg(d):
    """``vicreg.json``: the representations under the probe, kNN, spectrum and anomaly detection, with
    their intervals, the paired differences and k-means."""
    p, n = d["params"], {**d["params"], **(d.get("sizes") or {})}  # sizes: the images actually used
    out = [
        f"**VICReg on Fashion-MNIST ({d['profile']} profile)** — {_stamp(d)}: {n['train']:,} training / "
        f"{n['test']:,} test images, {n['anomalies']:,} MNIST anomalies; VICReg {p['epochs']} epochs of "
        f"{p['steps_per_epoch']} steps, the ablation {p['ablation_epochs']}, the neighbour model "
        f"{p['nn_epochs']}; one seed; [low, high]: 95 % bootstrap intervals over the test images",
        "",
        "| representation | dim | linear probe | 3-NN | effective rank | rank | anomaly AUC |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in d["representations"]:
        auc = f"{r['anomaly_auc']:.4f}" if r.get("anomaly_auc") is not None else "–"
        out.append(
            f"| {r['representation']} | {r['dim']} | {interval_text(r, 'probe', 3)} | "
            f"{interval_text(r, 'knn_accuracy', 3)} | {r['effective_rank']:.1f} | {r['rank']} | {auc} |"
        )
    return out + _vicreg_comparisons(d.get("comparisons") or []) + _vicreg_clusters(d.get("clustering"))


def _vicreg_comparisons(comparisons):
    """The paired differences (same test images) of ``vicreg.json``, one row per pair of representations."""
    if not comparisons:
        return []
    out = ["", "| paired difference | probe | 3-NN |", "|---|---|---|"]
    pairs = dict.fromkeys((c["representation"], c["against"]) for c in comparisons)
    for a, b in pairs:
        cells = {
            c["figure"]: f"{c['difference']:+.3f} [{c['ci_low']:.3f}, {c['ci_high']:.3f}]"
            for c in comparisons
            if (c["representation"], c["against"]) == (a, b)
        }
        out.append(f"| {a} − {b} | {cells.get('probe', '–')} | {cells.get('knn_accuracy', '–')} |")
    return out


def _vicreg_clusters(clusters):
    if not clusters:
        return []
    out = ["", "| k-means | silhouette, clusters | silhouette, labels | NMI | ARI |", "|---|---|---|---|---|"]
    return out + [
        f"| {name} | {c['silhouette_clusters']:.3f} | {c['silhouette_labels']:.3f} | {c['nmi']:.3f} | "
        f"{c['ari']:.3f} |"
        for name, c in clusters.items()
    ]


def cpu_training(d):
    """``cpu_training.json``: one table per run of the file's list (each run pairs its own levers)."""
    return [line for run in d["runs"] for line in [*_cpu_training_run(run), ""]][:-1]


def _cpu_training_run(run):
    """Images/s, kernel share and the paired speed-up per model and lever of one run."""
    st = run["settings"]
    loads = [r["load_1min"] for r in run.get("rows", []) if "load_1min" in r]
    load = f"; the machine's 1-minute load during the run {min(loads):.1f}–{max(loads):.1f}" if loads else ""
    pairing = ""
    if "pair" in st.get("modes", []):
        pairing = (
            "; the two pair workers start their timed epochs together"
            if st.get("pair_start") == "together"
            else "; the pair workers' timed epochs were not aligned (one could be timed while the other "
            "compiled), so trust their images per CPU second over their images/s"
        )
    out = [
        f"**Training speed on the CPU** — {_stamp(run)}: {st.get('epochs')} epochs of {st.get('steps')} "
        f"steps per measurement (the first untimed), {st.get('repeats')} repeats of baseline and lever "
        "alternating; medians over the repeats; speed-up: geometric mean of the paired ratios to the "
        f"baseline of the same repeat (min–max), in images/s and in images per CPU second; on a baseline "
        "row, (≤ N) is 1 / (1 − its kernel share): what removing all its kernel time would give with its "
        f"user time unchanged, the bound for an allocator{load}{pairing}",
        "",
        "| model | mode | lever | images/s | images per CPU s | kernel share | faults/s | speed-up (min–max) "
        "| per CPU s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in run["summary"]:
        speed = (
            f"(≤ {1 / (1 - r['kernel_share']):.2f}x)"  # all kernel time removed, user time unchanged
            if r["lever"] == "baseline"
            else f"{r['speedup']:.2f}x ({r['speedup_min']:.2f}–{r['speedup_max']:.2f})"
        )
        per_cpu = "—" if r["lever"] == "baseline" or "cpu_speedup" not in r else f"{r['cpu_speedup']:.2f}x"
        ipc = f"{r['images_per_cpu_s']:,.0f}" if "images_per_cpu_s" in r else ""
        out.append(
            f"| {r['model']} | {r['mode']} | {r['lever']} | {r['images_per_s']:,.0f} | {ipc} | "
            f"{r['kernel_share']:.1%} | {r['faults_per_s']:,.0f} | {speed} | {per_cpu} |"
        )
    return out


def precision(d):
    """``precision.json``: each model trained in float32 and in bfloat16, paired on the validation split."""
    seeds = sorted({c["seed"] for c in d["summary"]})
    out = [
        f"**Mixed precision on the validation split** — {_stamp(d)}: each model trained at its default "
        "budget in float32 and under Keras' `mixed_bfloat16` policy (same data, split and weight seed; "
        f"weight seeds {', '.join(map(str, seeds))}), its validation images the queries; means over the "
        "seeds; Δ: bfloat16 − float32, paired on the same queries and seed (± standard error over the "
        "seeds); time: the bfloat16 training's wall time over the float32 one's (geometric mean; early "
        "stopping included). The test split was not read",
        "",
        "| model | 3-NN float32 | 3-NN bfloat16 | Δ 3-NN | MAP@R float32 | MAP@R bfloat16 | Δ MAP@R | time |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for m in [*d["per_model"], {**d["overall"], "model": "all models and seeds"}]:
        cells = [
            f"{m[f]['float32']:.4f} | {m[f]['bfloat16']:.4f} | {_mean_se(m[f])}"
            for f in ("3nn_accuracy", "map_at_r")
        ]
        out.append(f"| {m['model']} | {' | '.join(cells)} | {m['time_ratio']:.2f}x |")
    return out


def _mean_se(entry) -> str:
    """ "+0.0012 ± 0.0005": a mean difference with its standard error where it has one."""
    se = f" ± {entry['se']:.4f}" if "se" in entry else ""
    return f"{entry['mean_difference']:+.4f}{se}"


#: The answered one-off investigations of ``benchmarks/archive/``: their results files, rendered as before.
ARCHIVED = (
    ("bn_recalibration.json", bn_recalibration),
    ("data_size.json", data_size),
    ("shift_averaging.json", shift_averaging),
    ("refit_train_val.json", refit_train_val),
    ("semi_hard_loss.json", lambda d: sorted_loss(d, "Semi-hard triplet loss")),
    ("batch_all_loss.json", lambda d: sorted_loss(d, "Batch-all triplet loss")),
)


def archived():
    """The tables of the archived investigations (their scripts are kept for the record)."""
    body = [
        "Questions these scripts answered; the scripts are kept in `benchmarks/archive/` for the record "
        "and may no longer run (each docstring says why). Their results files are in "
        "`benchmarks/archive/results/`.",
        "",
    ]
    for file, render_one in ARCHIVED:
        d = _load(file, ARCHIVE)
        if d:
            body += render_one(d) + [""]
    return body[:-1]


def _last_stamp(entries):
    """The last of a file's runs (or rows) when each carries its own command and date, else None."""
    if isinstance(entries, list) and entries and isinstance(entries[-1], dict) and "date" in entries[-1]:
        return entries[-1]
    return None


def results_files():
    """Every results file with its command, date and machine (a stamp anywhere in the document)."""
    out = [
        "| file | command | date | machine |",
        "|---|---|---|---|",
    ]
    for path in [*sorted(RESULTS.glob("*.json")), *sorted(ARCHIVE.glob("*.json"))]:
        d = json.loads(path.read_text())
        st = d.get("measured") or _last_stamp(d.get("runs")) or _last_stamp(d.get("rows")) or d
        m = st.get("machine", {})
        machine = (
            f"{m.get('cores', '?')} cores, {m.get('device', '?')}, {m.get('keras_backend', '')}" if m else "—"
        )
        name = path.relative_to(RESULTS.parent).as_posix()  # results/x.json or archive/results/x.json
        out.append(
            f"| [{name}](../benchmarks/{name}) | `{st.get('command', '—')}` | "
            f"{str(st.get('date', '—'))[:10]} | {machine} |"
        )
    return out


HASH = re.compile(r"\b(?=[0-9a-f]*[a-f])(?=[0-9a-f]*[0-9])[0-9a-f]{7,40}\b")


SCRIPT_RUN = re.compile(r"\bpython benchmarks/([a-z_0-9]+)\.py\b")


def _module_run(match) -> str:
    """``python benchmarks/x.py`` as the module run that reruns it today (archived scripts included)."""
    name = match.group(1)
    package = "benchmarks.archive" if (ARCHIVE.parent / f"{name}.py").exists() else "benchmarks"
    return f"python -m {package}.{name}"


def _scrub(text: str) -> str:
    """The page without commit hashes (a command that names one shows ``<commit>``), and with a command
    recorded as a script run (``python benchmarks/x.py``) shown as today's module run."""
    return SCRIPT_RUN.sub(_module_run, HASH.sub("<commit>", text))


HEADER = [
    "# Results",
    "",
    f"Generated by `{COMMAND}` from `benchmarks/results/*.json` (and `benchmarks/archive/results/`);",
    "do not edit by hand. Each table",
    "names the command that produced it, its date and its machine. ± is the standard deviation",
    "(population) over the seeds or draws a table names; a figure in parentheses after it is the",
    "standard error of the mean, and [low, high] a 95 % bootstrap interval over the test queries.",
    "The study pages",
    "([defaults](defaults.md), [applications](applications.md), [search](search.md),",
    "[4 vs 9](contrastive_4_vs_9.md), [DenseNet](densenet_fashion_mnist.md), [VICReg](vicreg.md))",
    "say which differences the figures resolve.",
    "",
]


def _one(file: str, render_one) -> list[str]:
    """The tables of one results file, or none when the file is missing."""
    d = _load(file)
    return render_one(d) if d else []


def _joined(*bodies) -> list[str]:
    """The non-empty bodies, one blank line between them (a body's own trailing blank lines dropped)."""
    out = []
    for body in bodies:
        body = list(body)
        while body and body[-1] == "":
            body.pop()
        out += [*body, ""] if body else []
    return out[:-1]


def _quality_body() -> list[str]:
    """quality.json's tables, then the held-out run's (split seed 42, weight seed 0: both its tables
    are that run, so one is shown)."""
    q = _load("quality_heldout.json")
    heldout = []
    if q:
        t = q["tables"]["weight_seeds"]
        title = "Quality on the held-out test set, with 95 % intervals over its 1,000 queries"
        heldout = _quality_table(t, title, t["commands"], q["data"], q)
    return _joined(_one("quality.json", lambda d: quality(d, "Quality at the default budgets")), heldout)


def sections() -> list[tuple[str, list[str]]]:
    """Each section of the page: its title and its lines (a section without lines is left out)."""
    suite_docs = [
        d
        for d in map(
            _load,
            ("suite_time_smoke.json", "suite_time.json", "suite_time_head.json", "suite_time_default.json"),
        )
        if d
    ]
    throughput_json = _load("throughput.json")
    return [
        ("Quality of the six models", _quality_body()),
        ("How the defaults were chosen ([defaults.md](defaults.md))", _one("quality_studies.json", studies)),
        (
            "Verification and identification ([applications.md](applications.md))",
            _one("applications.json", applications),
        ),
        ("Search at scale ([search.md](search.md))", _one("search.json", search)),
        (
            "4 vs 9 ([contrastive_4_vs_9.md](contrastive_4_vs_9.md))",
            _one("contrastive_4_vs_9.json", contrastive_4_vs_9),
        ),
        (
            "DenseNet on Fashion-MNIST ([densenet_fashion_mnist.md](densenet_fashion_mnist.md))",
            _joined(
                _one(
                    "densenet_fashion_mnist.json",
                    lambda d: densenet(d, "DenseNet on Fashion-MNIST, default profile"),
                ),
                _one(
                    "densenet_fashion_mnist_gpu.json",
                    lambda d: densenet(d, "DenseNet on Fashion-MNIST, full profile cut short"),
                ),
            ),
        ),
        ("VICReg ([vicreg.md](vicreg.md))", _one("vicreg.json", vicreg)),
        ("Suite run time", suite(suite_docs) if suite_docs else []),
        (
            "Training speed on the CPU",
            _joined(
                _one("cpu_training.json", lambda d: cpu_training(d) if d.get("runs") else []),
                _one("precision.json", precision),
            ),
        ),
        (
            "Throughput and the GPU",
            _joined(
                throughput(throughput_json) if throughput_json else [],
                gpu(throughput_json) if throughput_json else [],
                _one("quality_full.json", quality_full),
            ),
        ),
        ("Answered investigations ([benchmarks/archive/](../benchmarks/archive/))", archived()),
        ("Every results file", results_files()),
    ]


def render() -> str:
    """The whole page, from the results files as they are now."""
    lines = list(HEADER)
    for title, body in sections():
        if body:
            lines.extend([f"## {title}", "", *body, ""])
    return _scrub("\n".join(lines).rstrip("\n") + "\n")


def write_atomically(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def main(argv=None) -> int:
    # the freshness marks read registry entries only: Keras' numpy backend starts without TensorFlow
    os.environ.setdefault("KERAS_BACKEND", "numpy")
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--check", action="store_true", help="exit 1 when the page is out of date")
    group.add_argument("--stdout", action="store_true", help="print the page instead of writing it")
    parser.add_argument(
        "--out", type=Path, default=PAGE, help="the page to write or check (default: %(default)s)"
    )
    args = parser.parse_args(argv)
    page = render()
    if args.stdout:
        sys.stdout.write(page)
        return 0
    if args.check:
        current = args.out.read_text(encoding="utf-8") if args.out.exists() else None
        if current != page:
            print(f"{args.out} is out of date: run `{COMMAND}`", file=sys.stderr)
            return 1
        return 0
    write_atomically(args.out, page)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
