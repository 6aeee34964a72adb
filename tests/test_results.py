"""Committed benchmark results are read one way (helpers.results), as a dict or a table."""

import json

import pytest

from helpers import config, results


def test_read_and_table(tmp_path, monkeypatch):
    monkeypatch.setattr(config, "RESULTS", tmp_path)
    rows = [{"model": "a", "auc": 0.9, "eer": 0.1}, {"model": "b", "auc": 0.8, "eer": 0.2}]
    (tmp_path / "bench.json").write_text(json.dumps({"command": "python x", "tables": {"t": rows}}))
    assert results.exists("bench") and not results.exists("other")
    assert results.read("bench")["command"] == "python x"
    table = results.table("bench", "tables", "t", index="model", columns=["auc"])
    assert list(table.columns) == ["auc"] and table.loc["b", "auc"] == 0.8
    with pytest.raises(results.ResultsMissing, match="other.json is not there; run the benchmark"):
        results.read("other")


def test_the_committed_results_the_notebooks_show_are_there():
    for name in ("quality_studies", "bn_recalibration", "quality", "data_size"):  # notebook 03
        assert results.read(name)["command"]


def test_git_commit_is_modified_by_code_changes_not_by_results_files(tmp_path, monkeypatch):
    import subprocess

    from benchmarks import common
    from helpers import config

    def git(*args):
        subprocess.run(["git", *args], cwd=tmp_path, check=True, capture_output=True)

    for path in ("helpers/a.py", "benchmarks/results/r.json", "benchmarks/b.py"):
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_text("1\n")
    git("init", "-q")
    git("add", ".")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "c")
    monkeypatch.setattr(config, "ROOT", tmp_path)
    head = common.git_commit()
    assert head != "unknown" and not head.endswith("(modified)")
    (tmp_path / "benchmarks/results/r.json").write_text("2\n")  # what a run writes
    assert common.git_commit() == head
    (tmp_path / "benchmarks/b.py").write_text("2\n")  # the code a run runs
    assert common.git_commit() == f"{head} (modified)"
