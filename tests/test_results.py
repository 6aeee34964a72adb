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
