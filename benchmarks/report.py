"""Print the README's benchmark tables (markdown) from ``benchmarks/results/*.json``.

.venv/bin/python benchmarks/report.py
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


STALE, UNSTAMPED = "†", "‡"
FRESHNESS_NOTES = {
    STALE: f"{STALE} measured with an earlier version of this registry entry: re-measure before quoting.",
    UNSTAMPED: f"{UNSTAMPED} measured before rows recorded their registry entry: it may have changed since.",
}


def freshness_marks(rows, key: str = "model") -> tuple[list[str], list[str]]:
    """Each row's ``key`` with a mark when its registry entry changed since it was measured (its
    ``registry_fingerprint`` differs from today's: :data:`STALE`) or when the row has no stamp
    (:data:`UNSTAMPED`), and the footnotes of the marks used. Baselines are never marked."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from benchmarks.common import registry_fingerprint

    names, used = [], set()
    for row in rows:
        now = registry_fingerprint(row[key])
        recorded = row.get("registry_fingerprint")
        mark = "" if now is None else UNSTAMPED if recorded is None else "" if recorded == now else STALE
        used.add(mark)
        names.append(f"{row[key]}{mark}")
    return names, [FRESHNESS_NOTES[m] for m in (STALE, UNSTAMPED) if m in used]


def _load(name):
    path = RESULTS / name
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
    value = f"{s[metric]:.{digits}f}"
    if f"{metric}_ci_low" in s:
        return f"{value} [{s[f'{metric}_ci_low']:.{digits}f}, {s[f'{metric}_ci_high']:.{digits}f}]"
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
        "schedule and cnn_simple_v1's P×K batch-contrastive recipe",
        "",
        "| study | model | split seeds | 3-NN | silhouette | MAP@R | train s | machine | commit | command |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    out += [
        f"| {r['what']} | {r['model']} | {' '.join(map(str, r['split_seeds']))} | "
        f"{r['3nn_accuracy']:.4f} ± {r['3nn_accuracy_std']:.4f} | {r['silhouette']:.3f} ± "
        f"{r['silhouette_std']:.3f} | {r['map_at_r']:.4f} | {r['train_seconds']:.0f} | "
        f"{_row_machine(r, d)} | {r['commit']} | `{r['command']}` |"
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
        f"{d['model']} on a P x K batch of {d['batch']}, best of {d['repeats']} rounds of {d['steps']} "
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
                f"{base['cold']['seconds']:.0f} s{busy(base['cold'])} at {base['commit']} "
                f"(now {p['cold']['seconds'] / base['cold']['seconds']:.2f}x)"
                if base
                else "—"
            )
            out.append(
                f"| {profile} | `{d['command']}` | {d['date'][:10]} | {cold} | {cached} | {before} | "
                f"≤ {p['target_seconds']} s |"
            )
    return out


def main():
    lines = []
    q = _load("quality.json")
    if q:
        lines += quality(q, "Quality at the default budgets") + [""]
    q = _load("quality_heldout.json")
    if q:  # one run per model (split seed 42, weight seed 0): both of its tables are that run
        t = q["tables"]["weight_seeds"]
        title = "Quality on the held-out test set, with 95 % intervals over its 1,000 queries"
        lines += _quality_table(t, title, t["commands"], q["data"], q) + [""]
    q = _load("quality_studies.json")
    if q and studies(q):
        lines += studies(q) + [""]
    for file, render in (
        ("bn_recalibration.json", bn_recalibration),
        ("data_size.json", data_size),
        ("shift_averaging.json", shift_averaging),
        ("refit_train_val.json", refit_train_val),
    ):
        q = _load(file)
        if q:
            lines += render(q) + [""]
    for file, title in (
        ("semi_hard_loss.json", "Semi-hard triplet loss"),
        ("batch_all_loss.json", "Batch-all triplet loss"),
    ):
        q = _load(file)
        if q:
            lines += sorted_loss(q, title) + [""]
    t = _load("throughput.json")
    if t:
        lines += throughput(t) + [""]
        lines += gpu(t)
    q = _load("quality_full.json")
    if q:
        lines += quality_full(q) + [""]
    suite_files = ("suite_time_smoke.json", "suite_time.json", "suite_time_recalibrate.json")
    docs = [d for d in map(_load, suite_files) if d]
    if docs:
        lines += suite(docs)
    sys.stdout.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
