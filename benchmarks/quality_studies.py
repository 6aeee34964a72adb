"""The studies that choose the registry defaults, scored on the validation split, and their results file.

A study is one registry model with some fields replaced (``STUDIES`` below, defined here in code).
Each runs ``benchmarks/quality.py`` with ``--eval-split val`` (the validation images are the queries,
so the test split that docs/results.md reports is not looked at while choosing) on the split seeds given,
weight seed 0, into its own cache folder, and merges its row into
``benchmarks/results/quality_studies.json``::

    .venv/bin/python -m benchmarks.quality_studies cbam cbam_margin_1 --split-seeds 1 2

A row is keyed by study name, evaluation split and split seeds: rerunning a study replaces its row.
The rows of the older hand-kept file (single seed, scored on the test split, at older commits) are
moved once, unchanged, under ``legacy_test_split``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import subprocess
import tempfile
from pathlib import Path

from benchmarks import quality
from benchmarks.common import BENCHMARK_CACHE, RESULTS_DIR, stamp
from helpers import config
from helpers.registry import MODELS

OUT = RESULTS_DIR / "quality_studies.json"
CACHE = config.ROOT / ".cache" / "studies"
SUMMARY_FIELDS = ("3nn_accuracy", "silhouette", "map_at_r", "precision_at_1", "train_seconds")


@dataclasses.dataclass(frozen=True)
class Study:
    model: str
    overrides: dict
    what: str


# The registry entries before this round of studies (they changed after it): each study names the fields
# it ran with in full, so that its command reruns it whatever the registry holds today.
CBAM_BEFORE = {"margin": 0.5, "learning_rate": 1e-3, "steps_per_epoch": 120}
VIT_BEFORE = {"steps_per_epoch": 80}

STUDIES: dict[str, Study] = {
    # the CBAM model: the candidate for the three targets at once (its silhouette is the gap)
    "cbam": Study(
        "cnn_with_attention_v1",
        {**CBAM_BEFORE},
        "CBAM as registered before: semi-hard, margin 0.5, center pull 5, 720 steps",
    ),
    "cbam_margin_1": Study(
        "cnn_with_attention_v1", {**CBAM_BEFORE, "margin": 1.0}, "CBAM, semi-hard margin 1.0, center pull 5"
    ),
    "cbam_center_10": Study(
        "cnn_with_attention_v1",
        {**CBAM_BEFORE, "center_reg_weight": 10.0},
        "CBAM, semi-hard margin 0.5, center pull 10",
    ),
    "cbam_margin_1_center_10": Study(
        "cnn_with_attention_v1",
        {**CBAM_BEFORE, "margin": 1.0, "center_reg_weight": 10.0},
        "CBAM, semi-hard margin 1.0, center pull 10",
    ),
    "cbam_batch_hard": Study(
        "cnn_with_attention_v1",
        {**CBAM_BEFORE, "loss": "batch_hard_triplet", "margin": 0.2},
        "CBAM, batch-hard triplet margin 0.2 (the reference recipe's mining)",
    ),
    # the center pull is minimised by collapsing everything; only the margin keeps the classes apart,
    # so with a strong pull the gap between classes is about the margin: a weaker pull, a wider margin
    "cbam_margin_1_center_1": Study(
        "cnn_with_attention_v1",
        {**CBAM_BEFORE, "margin": 1.0, "center_reg_weight": 1.0},
        "CBAM, semi-hard margin 1.0, center pull 1",
    ),
    "cbam_margin_1.3": Study(
        "cnn_with_attention_v1",
        {**CBAM_BEFORE, "margin": 1.3},
        "CBAM, semi-hard margin 1.3 (near the widest gap 10 classes leave on the sphere), center pull 5",
    ),
    # batch-hard at 1e-3 collapsed (loss at the margin from the first epoch, as in the reference's
    # plain CNN); the hardest positive is the one term that shrinks each class as a whole
    "cbam_batch_hard_lr_3e-4": Study(
        "cnn_with_attention_v1",
        {**CBAM_BEFORE, "loss": "batch_hard_triplet", "margin": 0.2, "learning_rate": 3e-4},
        "CBAM, batch-hard triplet margin 0.2, learning rate 3e-4",
    ),
    # the loss is still falling when the cosine schedule ends: a longer run
    "cbam_1440": Study(
        "cnn_with_attention_v1",
        {**CBAM_BEFORE, "steps_per_epoch": 240},
        "CBAM as registered, 1440 steps instead of 720",
    ),
    "cbam_margin_1_1440": Study(
        "cnn_with_attention_v1",
        {**CBAM_BEFORE, "margin": 1.0, "steps_per_epoch": 240},
        "CBAM, semi-hard margin 1.0, center pull 5, 1440 steps",
    ),
    "cbam_margin_1_2160": Study(
        "cnn_with_attention_v1",
        {**CBAM_BEFORE, "margin": 1.0, "steps_per_epoch": 360},
        "CBAM, semi-hard margin 1.0, center pull 5, 2160 steps",
    ),
    "cbam_margin_1_lr_2e-3_1440": Study(
        "cnn_with_attention_v1",
        {**CBAM_BEFORE, "margin": 1.0, "steps_per_epoch": 240, "learning_rate": 2e-3},
        "CBAM, semi-hard margin 1.0, center pull 5, learning rate 2e-3, 1440 steps",
    ),
    # 3-NN is the target still missed; the reference recipe lost 3-NN to its augmentation (0.990 without,
    # 0.987 with shifts): the registered CBAM entry with shifts alone (on the device), and with none
    "cbam_shift_only": Study(
        "cnn_with_attention_v1",
        {"augment": "device", "augment_params": {"shift": 2.0, "rotation": 0.0, "noise": 0.0}},
        "CBAM as registered now, augmentation: +-2 px shifts only (no rotation, no noise)",
    ),
    "cbam_no_augment": Study(
        "cnn_with_attention_v1", {"augment": False}, "CBAM as registered now, no augmentation"
    ),
    # the same questions at the registered budget, on a GPU (augmentation on the device draws the same
    # distribution as the generator's numpy augmenter, with other random numbers): the device
    # augmenter at the default strengths is the baseline of the augmentation rows
    "cbam_device_augment": Study(
        "cnn_with_attention_v1", {"augment": "device"}, "CBAM as registered now, augmentation on the device"
    ),
    "cbam_shift_rotation_5": Study(
        "cnn_with_attention_v1",
        {"augment": "device", "augment_params": {"shift": 2.0, "rotation": 5.0, "noise": 0.0}},
        "CBAM as registered now, augmentation: +-2 px shifts, +-5 degree rotations, no noise",
    ),
    "cbam_device_2880": Study(
        "cnn_with_attention_v1",
        {"augment": "device", "steps_per_epoch": 480},
        "CBAM as registered now, augmentation on the device, 2880 steps instead of 1440",
    ),
    # on the GPU, shifts alone (0.985) or with 5-degree rotations (0.985) lost to the default
    # augmentation (0.989) and none lost most (0.977): stronger augmentation, one strength at a time
    **{
        name: Study(
            "cnn_with_attention_v1",
            {"augment": "device", "augment_params": {"shift": shift, "rotation": rotation, "noise": noise}},
            f"CBAM as registered now, augmentation on the device: +-{shift:g} px shifts, "
            f"+-{rotation:g} degree rotations, noise {noise:g}",
        )
        for name, shift, rotation, noise in (
            ("cbam_rotation_15", 2.0, 15.0, 0.05),
            ("cbam_rotation_20", 2.0, 20.0, 0.05),
            ("cbam_shift_3", 3.0, 10.0, 0.05),
            ("cbam_noise_0.1", 2.0, 10.0, 0.1),
            ("cbam_shift_3_rotation_15", 3.0, 15.0, 0.05),
            ("cbam_shift_3_rotation_15_noise_0.1", 3.0, 15.0, 0.1),
        )
    },
    # the augmentation strengths all scored within 0.985-0.990 (noise); the batch and the loss's
    # margin and pull at the registered budget, augmenting on the device as the GPU runs above
    **{
        name: Study(
            "cnn_with_attention_v1",
            {"augment": "device", **fields},
            f"CBAM as registered now, augmentation on the device, {what}",
        )
        for name, fields, what in (
            ("cbam_batch_640", {"batch_size": 640, "steps_per_epoch": 120}, "P10xK64 batches, 720 steps"),
            ("cbam_margin_0.8", {"margin": 0.8}, "semi-hard margin 0.8"),
            ("cbam_margin_1.2", {"margin": 1.2}, "semi-hard margin 1.2"),
            ("cbam_device_center_10", {"center_reg_weight": 10.0}, "center pull 10"),
        )
    },
    # the knobs the GPU search above left alone: the embedding's width and a decoupled weight decay
    "cbam_embedding_128": Study(
        "cnn_with_attention_v1", {"embedding_dim": 128}, "CBAM as registered now, 128-d embedding"
    ),
    "cbam_adamw_0.05": Study(
        "cnn_with_attention_v1",
        {"optimizer": "adamw", "weight_decay": 0.05},
        "CBAM as registered now, AdamW with weight decay 0.05",
    ),
    "cbam_center_2": Study(
        "cnn_with_attention_v1",
        {"center_reg_weight": 2.0},
        "CBAM as registered now, center pull 2 instead of 5",
    ),
    "cbam_lr_3e-3": Study(
        "cnn_with_attention_v1", {"learning_rate": 3e-3}, "CBAM as registered now, learning rate 3e-3"
    ),
    # every knob above tied within 0.984-0.990 (training noise): a distortion the affine augmenter
    # cannot make, the elastic field of Simard et al. (2003), on the host augmenter CBAM trains with
    **{
        f"cbam_elastic_{elastic:g}": Study(
            "cnn_with_attention_v1",
            {"augment_params": {"shift": 2.0, "rotation": 10.0, "noise": 0.05, "elastic": elastic}},
            f"CBAM as registered now, plus an elastic distortion of {elastic:g} px (4 x 4 control points)",
        )
        for elastic in (1.0, 2.0)
    },
    # the elastic field tied too; a moving average of the weights (written into the model at each
    # epoch's end), the one-model cousin of averaging checkpoints
    **{
        f"cbam_weight_ema_{momentum:g}": Study(
            "cnn_with_attention_v1",
            {"weight_ema": momentum},
            f"CBAM as registered now, weights averaged with momentum {momentum:g} (Keras use_ema)",
        )
        for momentum in (0.99, 0.998)
    },
    # the class-head v1 model: the lowest 3-NN of the six; its triplets can be mined in its own space
    # the registry's entry before semi-hard mining was chosen (its rows at commit ac1f747 ran it as
    # registered then, with no overrides: the same spec, so the same fingerprint and weights)
    "cls_head_v1": Study(
        "cnn_with_attention_cls_head_v1",
        {"mining": "random", "steps_per_epoch": 80},
        "class-head v1 as registered: random triplets, 480 steps",
    ),
    "cls_head_v1_semi_hard": Study(
        "cnn_with_attention_cls_head_v1",
        {"mining": "semi-hard", "steps_per_epoch": 80},
        "class-head v1, semi-hard negatives mined in its embedding every epoch",
    ),
    "cls_head_v1_hard": Study(
        "cnn_with_attention_cls_head_v1",
        {"mining": "hard", "steps_per_epoch": 80},
        "class-head v1, hard negatives mined in its embedding every epoch",
    ),
    # the class-head v2 model: the same generator, so the same question
    "cls_head_v2": Study(
        "cnn_with_attention_cls_head_v2",
        {"mining": "random", "steps_per_epoch": 120},
        "class-head v2 as registered: random triplets, 720 steps",
    ),
    "cls_head_v2_semi_hard": Study(
        "cnn_with_attention_cls_head_v2",
        {"mining": "semi-hard", "steps_per_epoch": 112},
        "class-head v2, semi-hard negatives mined in its embedding every epoch, 672 steps",
    ),
    # the ViT-style model: the lowest 3-NN over the split seeds (0.9665); the one model left on the
    # plateau schedule, and the cheapest epoch of the attention models
    "vit": Study(
        "cnn_with_attention_vit_style_v1",
        {**VIT_BEFORE},
        "ViT-style as registered before: plateau schedule, 480 steps",
    ),
    "vit_720": Study(
        "cnn_with_attention_vit_style_v1",
        {**VIT_BEFORE, "steps_per_epoch": 120},
        "ViT-style, plateau schedule, 720 steps",
    ),
    "vit_960": Study(
        "cnn_with_attention_vit_style_v1",
        {**VIT_BEFORE, "steps_per_epoch": 160},
        "ViT-style, plateau schedule, 960 steps",
    ),
    "vit_cosine": Study(
        "cnn_with_attention_vit_style_v1",
        {**VIT_BEFORE, "lr_schedule": "cosine"},
        "ViT-style, cosine learning-rate decay, 480 steps",
    ),
}


# --- pure parts (tests/test_quality_bench.py) ---------------------------------------------------------


def as_registered(study: Study) -> bool:
    """Whether the study's overrides leave its registry entry as it is (it then reuses the benchmark's
    cached models instead of training its own)."""
    spec = MODELS[study.model]
    return all(getattr(spec, field) == value for field, value in study.overrides.items())


def row_key(row: dict) -> tuple:
    return (row["study"], row["eval_split"], tuple(row["split_seeds"]))


def load_doc(path: Path) -> dict:
    """The studies file, with the rows of the older hand-kept format moved to ``legacy_test_split``."""
    doc = json.loads(Path(path).read_text()) if Path(path).exists() else {}
    legacy = list(doc.get("legacy_test_split", []))
    studies = []
    for row in doc.get("studies", []):
        if "eval_split" in row:
            studies.append(row)
        else:  # single seed, test split, at an older commit: kept as it was, apart
            legacy.append({**row, "eval_split": "test"})
    return {**doc, "studies": studies, "legacy_test_split": legacy}


def merge_study(doc: dict, row: dict) -> dict:
    """``doc`` with ``row`` added, replacing the row of the same study, evaluation split and seeds."""
    rows = [r for r in doc.get("studies", []) if row_key(r) != row_key(row)]
    return {**doc, "studies": [*rows, row]}


def study_row(name: str, study: Study, table: dict, command: str, commit: str) -> dict:
    """The results row of ``study`` from the split-seed table of its quality run."""
    summary = next(s for s in table["summary"] if s["model"] == study.model)
    row = {
        "study": name,
        "what": study.what,
        "model": study.model,
        "overrides": dict(study.overrides),
        "eval_split": table["eval_split"],
        "split_seeds": list(summary["over_values"]),
        "seed": quality.SPLIT_TABLE_SEED,
        "command": command,
        "commit": commit,
        # rows from several machines share one file (e.g. a GPU run merged with --merge-from)
        "machine": stamp()["machine"],
    }
    for field in SUMMARY_FIELDS:
        row[field] = summary[field]
        row[f"{field}_std"] = summary[f"{field}_std"]
    return row


def write_doc(path: Path, doc: dict) -> None:
    config.write_json(
        path,
        {
            **doc,
            "what": "studies that choose the registry defaults: one registry model with fields "
            "replaced, weight seed 0, mean and std over the split seeds, scored on the "
            "validation split (queries) against the train split; each row's command reruns it "
            "(on the machine its row names)",
            **stamp(),
        },
    )


def study_command(name: str, split_seeds, eval_split: str) -> str:
    """The command that reruns one study (and rewrites its row)."""
    seeds = " ".join(map(str, split_seeds))
    return f"python -m benchmarks.quality_studies {name} --split-seeds {seeds} --eval-split {eval_split}"


def quality_args(study: Study, split_seeds, eval_split: str, cache_dir: Path, out: Path) -> list[str]:
    """The ``benchmarks/quality.py`` arguments of one study."""
    sets = [f"--set={k}={json.dumps(v)}" for k, v in study.overrides.items()]
    return [
        "--models",
        study.model,
        "--seeds",
        str(quality.SPLIT_TABLE_SEED),
        "--split-seeds",
        *map(str, split_seeds),
        "--eval-split",
        eval_split,
        "--cache-dir",
        str(cache_dir),
        "--out",
        str(out),
        *sets,
    ]


def _commit() -> str:
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            cwd=config.ROOT,
            check=True,
        ).stdout.strip()
        # the code a row ran: the package, and the study definitions and benchmark that run it
        paths = ["helpers", "benchmarks/quality_studies.py", "benchmarks/quality.py"]
        status = subprocess.run(
            ["git", "status", "--porcelain", "--", *paths], capture_output=True, text=True, cwd=config.ROOT
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    dirty = [line[3:] for line in status.splitlines()]
    changed = [p for p in paths if any(f == p or f.startswith(f"{p}/") for f in dirty)]
    return f"{head} ({', '.join(changed)} modified)" if changed else head


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    # no choices=: argparse rejects an empty list against them; checked below
    parser.add_argument("studies", nargs="*", metavar="STUDY", help=f"one of {', '.join(STUDIES)}")
    parser.add_argument("--split-seeds", type=int, nargs="+", default=[1])
    parser.add_argument("--eval-split", choices=("val", "test"), default="val")
    parser.add_argument(
        "--benchmark-cache",
        default=str(BENCHMARK_CACHE),
        help="cache of the registry's own models (a study without overrides reuses it)",
    )
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument(
        "--merge-from",
        type=Path,
        nargs="*",
        default=[],
        help="studies files written elsewhere with --out (e.g. on a GPU machine): their rows are merged "
        "into --out, each keeping its own command, commit and machine",
    )
    args = parser.parse_args(argv)
    if not args.studies and not args.merge_from:
        parser.error("name at least one study, or give --merge-from files")
    unknown = [name for name in args.studies if name not in STUDIES]
    if unknown:
        parser.error(f"unknown study {', '.join(unknown)}: choose from {', '.join(STUDIES)}")
    missing = [str(path) for path in args.merge_from if not path.exists()]
    if missing:
        parser.error(
            f"--merge-from {', '.join(missing)}: no such file; pass studies files a run wrote with --out"
        )
    if args.merge_from:
        doc = load_doc(args.out)
        for path in args.merge_from:
            rows = load_doc(path)["studies"]
            for row in rows:
                doc = merge_study(doc, row)
            print(f"[studies] merging {len(rows)} rows of {path} -> {args.out}", flush=True)
        write_doc(args.out, doc)
    commit = _commit()
    registry = dict(MODELS)
    for name in args.studies:
        study = STUDIES[name]
        cache = Path(args.benchmark_cache) if as_registered(study) else CACHE / name
        with tempfile.TemporaryDirectory() as tmp:
            qargs = quality_args(study, args.split_seeds, args.eval_split, cache, Path(tmp) / "q.json")
            try:
                doc = quality.main(qargs)
            finally:
                MODELS.clear()
                MODELS.update(registry)  # quality.main replaced the model's fields
        command = study_command(name, args.split_seeds, args.eval_split)
        row = study_row(name, study, doc["tables"]["split_seeds"], command, commit)
        write_doc(args.out, merge_study(load_doc(args.out), row))
        print(
            f"[studies] {name}: 3nn={row['3nn_accuracy']:.4f} silhouette={row['silhouette']:.3f} "
            f"map@r={row['map_at_r']:.4f} -> {args.out}",
            flush=True,
        )


if __name__ == "__main__":
    main()
