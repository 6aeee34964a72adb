"""benchmarks/fresh_clone: the figures read from a .ci/run log, and the row appended to the results file."""

import json

import pytest

from benchmarks import fresh_clone as F

LOG = """\
Checking ruff... All checks passed!
.venv/bin/python -m pytest -q -n 2 --dist loadfile --durations=10
bringing up nodes...
........................................................................ [ 14%]
============================= slowest 10 durations =============================
274.12s call     tests/test_notebooks.py::test_smoke_run_of_every_notebook
41.50s call     tests/test_training.py::test_resume_after_kill
3.04s setup    tests/test_vicreg.py::test_study_smoke

(7 durations < 0.005s hidden.  Use -vv to show these durations.)
484 passed, 4 skipped, 2 warnings in 634.42s (0:10:34)
CI finished in 748s
"""


def test_parse_log_reads_the_figures():
    parsed = F.parse_log(LOG)
    assert parsed["seconds"] == 748
    assert parsed["pytest_seconds"] == 634
    assert parsed["counts"] == {"passed": 484, "skipped": 4, "warnings": 2}
    assert parsed["pytest_processes"] == 2
    assert parsed["slowest"] == [
        {
            "seconds": 274.1,
            "phase": "call",
            "test": "tests/test_notebooks.py::test_smoke_run_of_every_notebook",
        },
        {"seconds": 41.5, "phase": "call", "test": "tests/test_training.py::test_resume_after_kill"},
        {"seconds": 3.0, "phase": "setup", "test": "tests/test_vicreg.py::test_study_smoke"},
    ]


def test_a_failed_or_unfinished_run_is_not_passed():
    failed = LOG.replace("484 passed, 4 skipped", "482 passed, 2 failed, 1 error, 4 skipped")
    row = F.summary_row(F.parse_log(failed), "abc1234", "2026-12-05T13:00:00+00:00", 1)
    assert (row["passed"], row["failed"], row["tests"]) == (False, 3, 482)
    unfinished = F.parse_log(LOG.split("CI finished")[0])
    assert unfinished["seconds"] is None
    assert F.summary_row(unfinished, "abc1234", "d", 0)["within_target"] is False


def test_row_is_within_target_and_appended(tmp_path):
    row = F.summary_row(F.parse_log(LOG), "abc1234", "2026-12-05T13:00:00+00:00", 0)
    assert row["passed"] and row["within_target"] and row["pytest_processes"] == 2
    path = tmp_path / "fresh.json"
    path.write_text(json.dumps({"what": "w", "rows": [], "summary": [{"commit": "old"}]}))
    doc = F.append_row(row, path)
    assert [r["commit"] for r in json.loads(path.read_text())["summary"]] == ["old", "abc1234"]
    assert doc["date"] and doc["command"].startswith("python")


def test_bad_rev_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exit_:
        F.main(["--rev", "no-such-commit-xyz"])
    assert exit_.value.code == 2
    assert "not a commit" in capsys.readouterr().err


def test_workers_are_read_from_xdist_when_make_echoes_no_command():
    assert F.parse_log("created: 3/3 workers\n")["pytest_processes"] == 3
    assert F.parse_log("2 workers [488 items]\n")["pytest_processes"] == 2
    assert F.parse_log("484 passed in 1.00s\n")["pytest_processes"] == 1
