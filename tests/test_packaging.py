"""Packaging: every package the code imports is declared (and pinned), every subpackage is found, and
the package installs (not editable) into a fresh virtual environment where every module imports."""

import ast
import importlib.metadata
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def _name(requirement: str) -> str:
    """The normalised distribution name of a requirement line (``Foo_Bar>=1`` -> ``foo-bar``)."""
    return re.sub(r"[-_.]+", "-", re.split(r"[<>=!~;\[ ]", requirement.strip(), maxsplit=1)[0]).lower()


def _third_party_imports() -> dict[str, set[str]]:
    """Top-level modules imported anywhere in helpers/ that are neither the stdlib nor helpers."""
    found: dict[str, set[str]] = {}
    for path in (ROOT / "helpers").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top not in sys.stdlib_module_names and top != "helpers":
                    found.setdefault(top, set()).add(str(path.relative_to(ROOT)))
    return found


def test_every_imported_package_is_declared_and_pinned():
    runtime = {_name(r) for r in PYPROJECT["project"]["dependencies"]}
    extras = {_name(r) for group in PYPROJECT["project"]["optional-dependencies"].values() for r in group}
    distributions = importlib.metadata.packages_distributions()
    imports = _third_party_imports()
    assert {"keras", "numpy", "faiss", "PIL", "sklearn"} <= set(imports)  # the scan sees the code
    assert "cv2" not in imports  # Pillow reads and writes the images
    for module, files in imports.items():
        names = {_name(d) for d in distributions.get(module, [])}
        assert names, f"{module} (imported by {sorted(files)}) is not installed"
        if module == "jax":  # the GPU backend, imported only in its shims: the `gpu` extra
            assert names & extras, "jax must be in an extra"
            continue
        assert names & runtime, f"{module} (imported by {sorted(files)}) is not in pyproject's dependencies"
    pinned = {_name(line) for line in (ROOT / "requirements.txt").read_text().splitlines() if "==" in line}
    assert runtime <= pinned, f"declared but not pinned in requirements.txt: {sorted(runtime - pinned)}"
    assert extras <= pinned | {"jupyterlab"}, sorted(extras - pinned)


def test_every_subpackage_is_found_and_the_python_versions_agree():
    from setuptools import find_packages

    found = set(find_packages(str(ROOT), **PYPROJECT["tool"]["setuptools"]["packages"]["find"]))
    on_disk = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "helpers").rglob("__init__.py")}
    assert found == on_disk and {"helpers.plots", "helpers.search"} <= found
    assert PYPROJECT["project"]["requires-python"] == ">=3.11"
    assert PYPROJECT["tool"]["ruff"]["target-version"] == "py311"


IMPORT_ALL = """
import importlib, pkgutil, sys
import helpers
names = [m.name for m in pkgutil.walk_packages(helpers.__path__, "helpers.") if not m.name.endswith("__main__")]
for name in names:
    importlib.import_module(name)
print(helpers.__file__)
print(len(names))
"""


@pytest.mark.slow
def test_the_package_installs_into_a_fresh_venv_and_every_module_imports(tmp_path):
    """A new venv sees the pinned dependencies through a .pth file naming this environment's
    site-packages (nothing is downloaded); the package is installed from a copy of the sources with
    ``pip install --no-deps --no-build-isolation`` (not editable) and imported from outside the checkout."""
    source = tmp_path / "source"
    shutil.copytree(ROOT / "helpers", source / "helpers", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=300)
    python = venv / "bin" / "python"
    purelib = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    Path(purelib, "pinned_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "SIMSUITE_ROOT")}
    env.update(TF_CPP_MIN_LOG_LEVEL="3", PIP_NO_INDEX="1", PIP_DISABLE_PIP_VERSION_CHECK="1")
    install = [python, "-m", "pip", "install", "--no-deps", "--no-build-isolation", str(source)]
    proc = subprocess.run(install, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    shutil.rmtree(source)  # the import below must find the installed copy, not the sources
    proc = subprocess.run(
        [python, "-c", IMPORT_ALL], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=900
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    location, count = proc.stdout.strip().splitlines()[-2:]
    assert Path(location).is_relative_to(Path(purelib)), location
    on_disk = [p for p in (ROOT / "helpers").rglob("*.py") if p.name not in ("__init__.py", "__main__.py")]
    assert int(count) == len(on_disk) + len(list((ROOT / "helpers").rglob("*/__init__.py")))
    requires = subprocess.run(
        [python, "-c", "import importlib.metadata as m; print('\\n'.join(m.requires('simsuite-helpers')))"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "pillow>=10.1" in requires and "keras>=3.6" in requires
