"""benchmarks/suite_time.py: the baseline run uses the other revision's code, and the ratios (no notebook runs)."""

import json
import subprocess
from pathlib import Path

import pytest

from benchmarks import suite_time

ROOT = Path(__file__).resolve().parents[1]


def test_baseline_runs_the_other_revisions_code_and_reports_the_ratio(tmp_path, monkeypatch, capsys):
    head = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.strip()
    seen = []

    def fake_run(profile, root, code_root=suite_time.config.ROOT):
        code_root = Path(code_root)
        seen.append(code_root)
        assert (code_root / "helpers" / "run.py").exists() and (code_root / "notebooks").is_dir()
        now = code_root == suite_time.config.ROOT
        return {"seconds": 90.0 if now else 120.0, "notebooks": {"01_data.ipynb": 9.0 if now else 12.0}}

    monkeypatch.setattr(suite_time, "run_profile", fake_run)
    out = tmp_path / "suite.json"
    suite_time.main(["--profiles", "default", "--cold-only", "--baseline", "HEAD", "--out", str(out)])
    baseline_tree, current_tree = seen
    assert current_tree == suite_time.config.ROOT and baseline_tree != current_tree
    assert not baseline_tree.exists()  # the temporary worktree is removed afterwards
    doc = json.loads(out.read_text())["profiles"]["default"]
    assert doc["baseline"]["commit"] == head and doc["baseline"]["cold"]["seconds"] == 120.0
    assert doc["cached"] is None and doc["cold"]["seconds"] == 90.0
    printed = capsys.readouterr().out
    assert "0.75" in printed  # 90 s now against 120 s at the baseline, per notebook and in total


def test_unknown_baseline_revision_is_a_clear_error(tmp_path):
    with pytest.raises(SystemExit, match="not a revision"):
        suite_time.main(
            ["--profiles", "default", "--baseline", "no-such-rev-xyz", "--out", str(tmp_path / "s.json")]
        )
