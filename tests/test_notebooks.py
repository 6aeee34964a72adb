"""Committed notebooks are clean and parameterised; the runner executes them all (smoke profile),
stops at the first failure, and writes a gallery whose every link resolves."""

import html.parser
import json
import os
import subprocess
import sys
import urllib.parse
from pathlib import Path

import nbformat
import pandas as pd
import papermill
import pytest

from helpers import profiles
from helpers import run as runner
from helpers.processes import NOISE
from helpers.registry import MODELS

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = runner.notebooks(ROOT / "notebooks")


def test_the_suite_has_its_numbered_notebooks():
    names = [nb.name for nb in NOTEBOOKS]
    assert names[:6] == [
        "01_data.ipynb",
        "02_generators.ipynb",
        "03_architectures.ipynb",
        "04_training.ipynb",
        "05_evaluation.ipynb",
        "06_kernel_visualization.ipynb",
    ]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_is_committed_clean_with_a_parameters_cell(path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(not c.outputs and c.execution_count is None for c in code), "strip outputs"
    tagged = [c for c in code if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1 and code[0] is tagged[0], "the first code cell is tagged `parameters`"
    assert nb.cells[0].cell_type == "markdown" and nb.cells[0].source.startswith("# ")
    declared = papermill.inspect_notebook(str(path))
    assert declared, "papermill finds the parameters"
    # every parameter line parsed (papermill warns and drops lines it cannot parse)
    assigned = [line for line in tagged[0].source.splitlines() if "=" in line.split("#")[0]]
    assert len(declared) == len(assigned)
    # one way to read settings: the profile and overrides, resolved by helpers.profiles in the next cell
    assert set(declared) == {"profile", "overrides"}
    resolve = code[1].source
    assert f'profiles.settings("{path.stem}", profile, **overrides)' in resolve
    assert profiles.knobs(path.stem)


def _write_notebooks(folder: Path, cells: dict[str, tuple[str, list | None]]) -> None:
    """Tiny notebooks ``{name: (code, needs)}`` with a ``parameters`` cell (needs None: no metadata)."""
    folder.mkdir()
    for name, (code, needs) in cells.items():
        nb = nbformat.v4.new_notebook()
        params = nbformat.v4.new_code_cell("seed = 0")
        params.metadata["tags"] = ["parameters"]
        nb.cells = [params, nbformat.v4.new_code_cell(code)]
        nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
        if needs is not None:
            nb.metadata["simsuite"] = {"needs": needs}
        nbformat.write(nb, folder / f"{name}.ipynb")


def test_a_notebook_needs_what_its_metadata_names_or_every_earlier_one(tmp_path):
    _write_notebooks(
        tmp_path / "nbs",
        {
            "01_a": ("", []),
            "02_b": ("", None),
            "03_c": ("", ["01"]),
            "04_d": ("", ["04"]),
            "05_e": ("", "01"),
        },
    )
    nbs = {nb.name[:2]: nb for nb in runner.notebooks(tmp_path / "nbs")}
    numbers = list(nbs)
    assert runner.notebook_needs(nbs["01"], numbers) == set()
    assert runner.notebook_needs(nbs["02"], numbers) == {"01"}  # says nothing: every earlier one
    assert runner.notebook_needs(nbs["03"], numbers) == {"01"}
    assert runner.notebook_needs(nbs["03"], ["02", "03"]) == set()  # 01 is not in this run
    with pytest.raises(ValueError, match=r"04_d.ipynb: metadata simsuite.needs must list .*earlier"):
        runner.notebook_needs(nbs["04"], numbers)  # itself: not earlier
    with pytest.raises(ValueError, match=r"05_e.ipynb: metadata simsuite.needs"):
        runner.notebook_needs(nbs["05"], numbers)
    # the suite's own: the studies and the first four stand alone; evaluation, kernels and search
    # read notebook 04's models
    suite = {nb.name[:2]: runner.notebook_needs(nb, [n.name[:2] for n in NOTEBOOKS]) for nb in NOTEBOOKS}
    assert suite["04"] == set() and suite["05"] == suite["06"] == suite["07"] == {"04"}


def test_images_go_to_the_notebook_that_logged_them_else_to_the_one_running():
    entries = [
        {"name": "01", "images": ["a.png", "b.png", "u.png"], "logged_images": ["a.png"]},
        {"name": "02", "images": ["a.png", "b.png", "u.png"], "logged_images": ["b.png"]},
        {"name": "03", "images": ["c.png"], "logged_images": []},
    ]
    credited = runner.credit_images(entries)
    # u.png changed while 01 and 02 ran and neither logged it: both windows keep it
    assert [e["images"] for e in credited] == [["a.png", "u.png"], ["b.png", "u.png"], ["c.png"]]
    assert all("logged_images" not in e for e in credited)


def test_the_image_snapshot_skips_a_folder_removed_while_it_walks(tmp_path, monkeypatch):
    # A parallel notebook's training removes its .work folder while the runner lists images;
    # CI once failed on exactly this race. Here the folder goes just before it is listed.
    cache = tmp_path / "models_cache"
    work = cache / "mnist" / "cnn_simple_v1.work" / "abc"
    work.mkdir(parents=True)
    (work / "partial.png").write_bytes(b"x")
    (cache / "mnist" / "kept.png").write_bytes(b"x")
    (cache / "mnist" / "history.json").write_text("{}")
    monkeypatch.setattr(runner, "output_folders", lambda: [cache, tmp_path / "absent"])
    real_scandir = os.scandir

    def scandir_after_removal(path="."):
        if Path(path).name == "abc":
            for child in Path(path).iterdir():
                child.unlink()
            Path(path).rmdir()
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir_after_removal)
    assert set(runner._snapshot()) == {cache / "mnist" / "kept.png"}


@pytest.mark.slow
def test_jobs_run_independent_notebooks_at_once_and_wait_for_what_they_need(tmp_path, monkeypatch, capfd):
    out = tmp_path / "out"
    # monkeypatch records the environment and the config first, so both are restored afterwards
    # (a variable it sets is removed again; one it only deletes while absent is not recorded)
    for key in runner._OUTPUTS:
        monkeypatch.setenv(key, "")
    for attr, _ in runner._OUTPUTS.values():
        monkeypatch.setattr(runner.config, attr, getattr(runner.config, attr))
    runner.set_output_root(out)  # the environment the notebook processes inherit
    figure = (
        "import time, matplotlib\nmatplotlib.use('Agg')\nimport matplotlib.pyplot as plt\n"
        "from helpers import config\n"
        "start = time.time()\n"
        "config.save_figure(plt.figure(), config.FIGURES / '{name}.png')\n"
        "(config.FIGURES / '{name}.started').write_text(str(start))\n"
        "time.sleep(2)\n"
        "(config.FIGURES / '{name}.done').write_text(str(time.time()))\n"
    )
    _write_notebooks(
        tmp_path / "nbs",
        {
            "01_slow": (figure.format(name="one"), []),
            "02_alone": (figure.format(name="two"), []),
            # reads what 01 wrote: it must not start before 01 has finished
            "03_after_01": (
                "from helpers import config\nassert (config.FIGURES / 'one.done').exists()",
                ["01"],
            ),
        },
    )
    record = runner.run("smoke", run_dir=out / "run", notebooks_dir=tmp_path / "nbs", jobs=2)
    stdout = capfd.readouterr().out
    assert [n["name"] for n in record["notebooks"]] == [
        "01_slow.ipynb",
        "02_alone.ipynb",
        "03_after_01.ipynb",
    ]
    figures = out / "figures"
    # 01 and 02 overlapped: each started before the other finished
    assert float((figures / "one.started").read_text()) < float((figures / "two.done").read_text())
    assert float((figures / "two.started").read_text()) < float((figures / "one.done").read_text())
    # each image is credited to the notebook that wrote it, though the other ran meanwhile
    assert [[Path(i).name for i in n["images"]] for n in record["notebooks"]] == [
        ["one.png"],
        ["two.png"],
        [],
    ]
    assert "[01] == [1/3] 01_slow.ipynb" in stdout and "[03] == [3/3] 03_after_01.ipynb" in stdout
    assert json.loads((out / "run" / "run.json").read_text())["jobs"] == 2
    assert (out / "run" / "index.html").exists()


def test_with_jobs_a_failing_notebook_stops_the_run_and_is_named(tmp_path):
    _write_notebooks(
        tmp_path / "nbs",
        {
            "01_broken": ("raise RuntimeError('boom')", []),
            "02_alone": ("x = 1", []),
            "03_needs_01": ("y = 2", ["01"]),
        },
    )
    with pytest.raises(runner.NotebookFailed, match=r"01_broken\.ipynb failed .*RuntimeError: boom"):
        runner.run("smoke", run_dir=tmp_path / "run", notebooks_dir=tmp_path / "nbs", jobs=2)
    assert (tmp_path / "run" / "02_alone.ipynb").exists()  # it was running: it finished
    assert not (tmp_path / "run" / "03_needs_01.ipynb").exists()
    assert not (tmp_path / "run" / "run.json").exists()


class _Links(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.targets = []

    def handle_starttag(self, tag, attrs):
        for key, value in attrs:
            if key in ("href", "src") and value and not value.startswith("#"):
                self.targets.append(value)


def gallery_targets(index: Path) -> list[Path]:
    parser = _Links()
    parser.feed(index.read_text(encoding="utf-8"))
    return [(index.parent / urllib.parse.unquote(t)).resolve() for t in parser.targets]


def test_gallery_links_resolve_and_escape_spaces(tmp_path, monkeypatch):
    monkeypatch.setattr(runner.config, "FIGURES", tmp_path / "figures")
    monkeypatch.setattr(runner.config, "EVALUATION_CSV", tmp_path / "model_evaluation.csv")
    image = tmp_path / "figures" / "Trial 1" / "kernel no 0 Output.png"
    image.parent.mkdir(parents=True)
    image.write_bytes(b"\x89PNG")
    executed = tmp_path / "run" / "01_x.ipynb"
    executed.parent.mkdir()
    executed.write_text("{}")
    pd.DataFrame([{"model": "a<b", "3nn_accuracy": 0.5}]).to_csv(
        tmp_path / "model_evaluation.csv", index=False
    )
    record = {
        "profile": "smoke",
        "parameters": {},
        "seconds": 1.0,
        "notebooks": [
            {"name": "01_x.ipynb", "seconds": 1.0, "executed": str(executed), "images": [str(image)]}
        ],
    }
    index = runner.write_gallery(record, tmp_path / "run")
    text = index.read_text()
    assert "kernel%20no%200%20Output.png" in text and "a&lt;b" in text
    targets = gallery_targets(index)
    assert image.resolve() in targets and executed.resolve() in targets
    assert all(t.exists() for t in targets)


@pytest.mark.slow
def test_a_failing_notebook_stops_the_run_and_is_named(tmp_path):
    folder = tmp_path / "nbs"
    folder.mkdir()
    for name, code in [
        ("01_ok", "x = 1"),
        ("02_broken", "raise RuntimeError('boom')"),
        ("03_never", "y = 2"),
    ]:
        nb = nbformat.v4.new_notebook()
        params = nbformat.v4.new_code_cell("seed = 0")
        params.metadata["tags"] = ["parameters"]
        nb.cells = [params, nbformat.v4.new_code_cell(code)]
        nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
        nbformat.write(nb, folder / f"{name}.ipynb")
    with pytest.raises(runner.NotebookFailed, match=r"02_broken\.ipynb failed .*RuntimeError: boom"):
        runner.run("smoke", run_dir=tmp_path / "run", notebooks_dir=folder)
    assert (tmp_path / "run" / "01_ok.ipynb").exists()
    assert not (tmp_path / "run" / "03_never.ipynb").exists()
    # the failed notebook's executed copy (with its traceback) was moved into place whole
    broken = nbformat.read(tmp_path / "run" / "02_broken.ipynb", as_version=4)
    assert any(o.get("ename") == "RuntimeError" for c in broken.cells for o in c.get("outputs", []))
    assert not list((tmp_path / "run").glob(".*partial*"))


@pytest.mark.slow
def test_a_run_streams_cells_and_kernel_output_without_start_up_noise(tmp_path, capfd):
    folder = tmp_path / "nbs"
    folder.mkdir()
    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell('profile = "default"')
    params.metadata["tags"] = ["parameters"]
    noise = (
        "import sys\n"
        "print('I0000 00:00:1795704764.933181    7383 port.cc:153] oneDNN custom operations are on.',"
        " file=sys.stderr)\n"
        "print('WARNING: All log messages before absl::InitializeLog() is called', file=sys.stderr)\n"
        "print('a warning a user should see', file=sys.stderr)\n"
        "import os\n"  # what the kernel's C++ libraries write goes to the inherited descriptor
        "os.write(2, b'I0000 00:00:1795704765.030437    7383 cpu_feature_guard.cc:227] TF says hi\\n')\n"
        "os.write(2, b'a C library line a user should see\\n')"
    )
    nb.cells = [
        nbformat.v4.new_markdown_cell("# Title"),
        params,
        nbformat.v4.new_code_cell("# a comment first\nfor i in range(2):\n    print(f'line {i}')"),
        nbformat.v4.new_code_cell(noise),
    ]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, folder / "01_progress.ipynb")
    capfd.readouterr()
    record = runner.run("smoke", run_dir=tmp_path / "run", notebooks_dir=folder)
    out, err = capfd.readouterr()
    assert "== [1/1] 01_progress.ipynb" in out
    # one line per code cell as it starts (papermill's injected parameters cell included)
    assert 'cell 1/4  profile = "default"' in out and "cell 2/4  (injected parameters: profile)" in out
    assert "cell 3/4  for i in range(2):" in out
    assert "   | line 0\n   | line 1\n" in out
    assert "   ! a warning a user should see" in out
    assert "oneDNN" not in out + err and "absl" not in out + err and "TF says hi" not in out + err
    assert "a C library line a user should see" in out + err
    assert "without encryption" not in err  # the kernel's own start-up warning
    # the executed notebook rendered to HTML beside it
    html_copy = Path(record["notebooks"][0]["html"])
    assert html_copy == tmp_path / "run" / "01_progress.html" and "line 1" in html_copy.read_text()


@pytest.mark.slow
def test_smoke_run_executes_every_notebook_and_writes_every_output(tmp_path):
    out = tmp_path / "out"
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "helpers.run",
            "--profile",
            "smoke",
            "--output-root",
            str(out),
            "--run-dir",
            str(out / "run"),
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=1200,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    # progress: the notebook, its cells and one line per model and epoch, without start-up noise
    assert f"== [4/{len(NOTEBOOKS)}] 04_training.ipynb" in proc.stdout and "   cell 1/" in proc.stdout
    assert "   | [cnn_simple_v1] epoch 1/1 loss=" in proc.stdout
    assert "== model 2/6 cnn_simple_v2" in proc.stdout
    assert not [line for line in (proc.stdout + proc.stderr).splitlines() if NOISE.match(line)]
    record = json.loads((out / "run" / "run.json").read_text())
    assert [n["name"] for n in record["notebooks"]] == [nb.name for nb in NOTEBOOKS]
    for entry in record["notebooks"]:
        executed = nbformat.read(entry["executed"], as_version=4)
        assert any(c.get("outputs") for c in executed.cells if c.cell_type == "code")

    table = pd.read_csv(out / "model_evaluation.csv")
    assert set(MODELS) | {"raw_pixels", "pca_64"} == set(table["model"])
    assert table["3nn_accuracy"].is_monotonic_decreasing
    for name in MODELS:
        assert (out / "models_cache" / "mnist" / f"{name}.feature_extractor.weights.h5").exists()
        assert (out / "latent_space" / f"{name} latent space.png").exists()
        assert (out / "models_explain" / "Trial 1" / name / "kernel no 0 Output.png").exists()
        kernels = out / "models_explain" / "Intermediate Kernels" / name
        assert (kernels / "layer no 0 kernel weights.png").exists()
    for n in (1, 2, 3):
        assert (out / "models_explain" / f"Trial {n}" / "input_image.png").exists()

    index = out / "run" / "index.html"
    targets = gallery_targets(index)
    assert all(t.exists() for t in targets), [t for t in targets if not t.exists()]
    assert sum(t.suffix == ".png" for t in targets) >= 6 * 3
    assert sum(t.suffix == ".ipynb" for t in targets) == len(NOTEBOOKS)
    assert sum(t.suffix == ".html" for t in targets) == len(NOTEBOOKS)
    assert "class='table'" in index.read_text()  # the evaluation table scrolls inside the page
    # the committed notebooks stayed clean
    for nb in NOTEBOOKS:
        assert not any(
            c.get("outputs") for c in nbformat.read(nb, as_version=4).cells if c.cell_type == "code"
        )


def test_each_profile_keeps_its_outputs_and_shares_the_per_dataset_models(tmp_path, monkeypatch):
    for key in runner._OUTPUTS:  # set then delete: monkeypatch restores the environment afterwards
        monkeypatch.setenv(key, "")
        monkeypatch.delenv(key)
    for attr, _ in runner._OUTPUTS.values():
        monkeypatch.setattr(runner.config, attr, getattr(runner.config, attr))
    shared_cache = runner.config.MODELS_CACHE
    runner.set_profile_outputs("default", tmp_path / "runs" / "default")
    assert runner.config.FIGURES == tmp_path / "runs" / "default" / "figures"
    assert os.environ["SIMSUITE_LATENT_SPACE"] == str(tmp_path / "runs" / "default" / "latent_space")
    assert runner.config.EVALUATION_CSV == tmp_path / "runs" / "default" / "model_evaluation.csv"
    assert runner.config.MODELS_CACHE == shared_cache and "SIMSUITE_MODELS_CACHE" not in os.environ
    # the smoke profile's one-step models do not replace the default profile's
    runner.set_profile_outputs("smoke", tmp_path / "runs" / "smoke")
    assert runner.config.MODELS_CACHE == tmp_path / "runs" / "smoke" / "models_cache"
    # an output the user placed with a SIMSUITE_* variable stays where it is
    for key in runner._OUTPUTS:
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("SIMSUITE_FIGURES", str(tmp_path / "mine"))
    runner.set_profile_outputs("full", tmp_path / "runs" / "full")
    assert os.environ["SIMSUITE_FIGURES"] == str(tmp_path / "mine")
    assert runner.config.LATENT_SPACE == tmp_path / "runs" / "full" / "latent_space"
