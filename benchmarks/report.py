"""Print the README's benchmark tables (markdown) from ``benchmarks/results/*.json``.

    .venv/bin/python benchmarks/report.py
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def _load(name):
    path = RESULTS / name
    return json.loads(path.read_text()) if path.exists() else None


def _machine(d):
    m = d["machine"]
    return f"{m['cores']} cores, {m['device']}, Keras {m.get('keras', '')} / {m['keras_backend']}, {d['date']}"


def quality(d, title):
    commands = " then ".join(f"`{c}`" for c in (d.get("commands") or [d["command"]]))
    out = [f"**{title}** — {commands} ({_machine(d)}; {d['data']})", "",
           "| model | seeds | 3-NN accuracy mean ± std (min–max) | silhouette | MAP@R | P@1 |",
           "|---|---|---|---|---|---|"]
    for s in d["summary"]:
        out.append(
            f"| {s['model']} | {s['seeds']} | {s['3nn_accuracy']:.4f} ± {s['3nn_accuracy_std']:.4f} "
            f"({s['3nn_accuracy_min']:.3f}–{s['3nn_accuracy_max']:.3f}) | {s['silhouette']:.3f} ± "
            f"{s['silhouette_std']:.3f} | {s['map_at_r']:.4f} ± {s['map_at_r_std']:.4f} | "
            f"{s['precision_at_1']:.4f} |")
    if d.get("targets"):
        out += ["", "| target | value | model | met |", "|---|---|---|---|"]
        for key, t in d["targets"].items():
            out.append(f"| {key} ≥ {t['target']} | {t['value']:.4f} | {t['model']} | "
                       f"{'yes' if t['met'] else '**no**'} |")
    return out


def throughput(d):
    stamps = d.get("section_stamps", {})
    command = "" if stamps else f" — `{d['command']}`"  # else each section names its own command
    out = [f"**Throughput**{command} ({_machine(d)})", ""]
    gen = d["sections"].get("generator", [])
    if gen:
        if "generator" in stamps:
            out += [f"Generator: `{stamps['generator']['command']}` ({stamps['generator']['date']})", ""]
        out += ["| sampler | batch | triplets/s | ratio |", "|---|---|---|---|"]
        out += [f"| {r['sampler']} | {r['batch_size']} | {r['triplets_per_s']:,.0f} | {r['speedup']:.1f}x |"
                for r in gen]
        out.append("")
    train = d["sections"].get("training", [])
    if train:
        if "training" in stamps:
            out += [f"Training: `{stamps['training']['command']}` ({stamps['training']['date']})", ""]
        out += ["| model (training, one epoch after warm-up) | batch | images/s | s/step | data wait share |",
                "|---|---|---|---|---|"]
        out += [f"| {r['model']} | {r['batch_size']} | {r['images_per_s']:,.0f} | {r['step_s']:.3f} | "
                f"{r['data_wait_share']:.1%} |" for r in train]
    return out


def studies(d):
    out = ["**Single-seed studies** that chose the defaults (seed 0; each row's command reproduces it at "
           "the named commit, whose registry is the base of its `--set` overrides)", "",
           "| study | model | 3-NN | silhouette | MAP@R | train s | commit | command |",
           "|---|---|---|---|---|---|---|---|"]
    out += [f"| {r['study']} | {r['model']} | {r['3nn_accuracy']:.3f} | {r['silhouette']:.3f} | "
            f"{r['map_at_r']:.4f} | {r['train_seconds']:.0f} | {r['commit']} | `{r['command']}` |"
            for r in d["studies"]]
    return out


def suite(docs):
    out = ["**Suite run time** (all notebooks, all six models; `python -m helpers.run` from an empty "
           "cache, then again with everything cached)", "",
           "| profile | command | cold | cached | target |", "|---|---|---|---|---|"]
    for d in docs:
        for profile, p in d["profiles"].items():
            out.append(f"| {profile} | `{d['command']}` | {p['cold']['seconds']:.0f} s | "
                       f"{p['cached']['seconds']:.0f} s | ≤ {p['target_seconds']} s |")
    return out


def main():
    lines = []
    q = _load("quality.json")
    if q:
        lines += quality(q, "Quality at the default budgets") + [""]
    q = _load("quality_studies.json")
    if q:
        lines += studies(q) + [""]
    t = _load("throughput.json")
    if t:
        lines += throughput(t) + [""]
    docs = [d for d in (_load("suite_time_smoke.json"), _load("suite_time.json")) if d]
    if docs:
        lines += suite(docs)
    sys.stdout.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
