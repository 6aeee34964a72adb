"""The runner's parameter overrides (-p NAME=VALUE, read as YAML) and the provenance it records in
run.json and the gallery (git commit and state, package versions, backend, machine)."""

import importlib.metadata
import json
import os
import subprocess

import nbformat
import pytest

from helpers import config, profiles, provenance
from helpers import run as runner


def _notebooks(folder, knobs: dict[str, dict], monkeypatch):
    """Notebooks ``{name: settings}`` whose settings ``helpers.profiles`` holds (the same in every
    profile; None: a notebook that takes no overrides)."""
    folder.mkdir(parents=True)
    for name, settings in knobs.items():
        if settings is not None:
            monkeypatch.setitem(profiles.notebooks(), name, {p: settings for p in profiles.PROFILES})
        nb = nbformat.v4.new_notebook()
        cell = nbformat.v4.new_code_cell('profile = "default"' + ("\noverrides = {}" if settings else ""))
        cell.metadata["tags"] = ["parameters"]
        nb.cells = [cell, nbformat.v4.new_code_cell("print(1)")]
        nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
        nbformat.write(nb, folder / f"{name}.ipynb")
    return folder


@pytest.fixture()
def outputs(tmp_path, monkeypatch):
    """Every output of a run under tmp_path/out; the environment and config restored afterwards."""
    for key in runner._OUTPUTS:
        monkeypatch.setenv(key, "")
    for attr, _ in runner._OUTPUTS.values():
        monkeypatch.setattr(config, attr, getattr(config, attr))
    runner.set_output_root(tmp_path / "out")
    return tmp_path


def test_overrides_are_read_as_yaml():
    parsed = runner.parse_overrides(["epochs=3", "models=[cnn_simple_v1, cnn_simple_v2]", "augment=null"])
    assert parsed == {"epochs": 3, "models": ["cnn_simple_v1", "cnn_simple_v2"], "augment": None}
    assert runner.parse_overrides(["dataset=fashion_mnist", "force=true", "lr=0.001", "tag=1e-3"]) == {
        "dataset": "fashion_mnist",
        "force": True,
        "lr": 0.001,
        "tag": "1e-3",  # YAML 1.1, as papermill's -y: a float needs its dot (1.0e-3)
    }
    with pytest.raises(runner.RunUsageError, match="NAME=VALUE"):
        runner.parse_overrides(["epochs"])
    with pytest.raises(runner.RunUsageError, match="not a YAML value"):
        runner.parse_overrides(["models=[a, b"])


def test_an_override_reaches_every_notebook_that_takes_it_and_the_record_says_what_made_the_run(
    outputs, monkeypatch
):
    folder = _notebooks(
        outputs / "nbs",
        {"01_a": {"epochs": 1, "seed": 0}, "02_b": None, "03_c": {"epochs": 2}},
        monkeypatch,
    )
    received = {}
    monkeypatch.setattr(
        runner, "execute", lambda nb, out, params, kernel: received.setdefault(nb.name, params)
    )
    record = runner.run(
        "smoke", run_dir=outputs / "run", kernel_name="none", overrides={"epochs": 3}, notebooks_dir=folder
    )
    # each notebook gets the profile, and the overrides among its settings (helpers.profiles)
    assert received == {
        "01_a.ipynb": {"profile": "smoke", "overrides": {"epochs": 3}},
        "02_b.ipynb": {"profile": "smoke"},
        "03_c.ipynb": {"profile": "smoke", "overrides": {"epochs": 3}},
    }
    saved = json.loads((outputs / "run" / "run.json").read_text())
    assert saved["overrides"] == {"epochs": 3} and saved["parameters"] == {"profile": "smoke", "epochs": 3}
    made = saved["provenance"]
    head = subprocess.run(
        ["git", "-C", str(config.ROOT), "rev-parse", "HEAD"], capture_output=True, text=True
    )
    assert made["git"]["commit"] == head.stdout.strip() and isinstance(made["git"]["dirty"], bool)
    assert made["packages"]["numpy"] == importlib.metadata.version("numpy")
    assert made["packages"]["keras"] == importlib.metadata.version("keras")
    assert made["backend"] == provenance.keras_backend() and made["machine"]["cores"] == os.cpu_count()
    assert made == {**record["provenance"]}
    gallery = (outputs / "run" / "index.html").read_text()
    assert head.stdout.strip()[:12] in gallery and f"keras {made['packages']['keras']}" in gallery
    assert made["machine"]["cpu"] in gallery


def test_a_parameter_no_notebook_takes_is_a_usage_error_before_anything_runs(outputs, monkeypatch, capsys):
    folder = _notebooks(outputs / "nbs", {"01_a": {"epochs": 1}, "02_b": {"seed": 0}}, monkeypatch)
    monkeypatch.setattr(runner, "execute", lambda *a: pytest.fail("nothing may run"))
    common = ["--profile", "smoke", "--kernel", "none", "--notebooks-dir", str(folder)]
    cases = [
        (["-p", "epoch=3"], "no notebook of this run takes 'epoch'; the parameters they take: epochs, seed"),
        (["--only", "02", "-p", "epochs=3"], "no notebook of this run takes 'epochs'"),
        (["-p", "epochs"], "-p takes NAME=VALUE"),
        (["--profile", "huge"], "invalid choice: 'huge'"),
    ]
    for extra, message in cases:
        assert runner.main([*common, "--run-dir", str(outputs / "run"), *extra]) == 2, extra
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error: ") and message in err[0], err
    assert not (outputs / "run" / "run.json").exists()


def test_git_state_names_the_commit_and_whether_the_tree_changed(tmp_path):
    assert provenance.git_state(tmp_path) == {"commit": None, "dirty": None}  # not a checkout
    git = ["git", "-C", str(tmp_path), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run([*git, "init", "-q"], check=True)
    (tmp_path / "a.py").write_text("x = 1\n")
    subprocess.run([*git, "add", "a.py"], check=True)
    subprocess.run([*git, "commit", "-qm", "a"], check=True)
    head = subprocess.run(
        [*git, "rev-parse", "HEAD"], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert provenance.git_state(tmp_path) == {"commit": head, "dirty": False}
    (tmp_path / "a.py").write_text("x = 2\n")
    assert provenance.git_state(tmp_path) == {"commit": head, "dirty": True}


def test_the_backend_is_read_without_importing_keras(tmp_path):
    assert provenance.keras_backend({"KERAS_BACKEND": "jax"}) == "jax"
    (tmp_path / "keras.json").write_text(json.dumps({"backend": "torch"}))
    assert provenance.keras_backend({"KERAS_HOME": str(tmp_path)}) == "torch"
    assert provenance.keras_backend({"KERAS_HOME": str(tmp_path / "none")}) == "tensorflow"
    line = provenance.summary(
        {
            "git": {"commit": "0123456789abcdef", "dirty": True},
            "packages": {"keras": "3.15.1", "jax": None},
            "backend": "jax",
            "machine": {"cpu": "Some CPU", "cores": 4, "usable_cores": 2},
        }
    )
    assert line == "commit 0123456789ab (uncommitted changes); jax backend; keras 3.15.1; Some CPU, 2/4 cores"
