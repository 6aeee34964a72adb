"""The allocator the training processes preload: choice, lookup, environment, and a real preload."""

import json
import subprocess
import sys

import pytest

from helpers import allocator, run


@pytest.fixture
def fake_lib(tmp_path, monkeypatch):
    """A folder holding a file named like TCMalloc's library, searched instead of the system's."""
    folder = tmp_path / "lib"
    folder.mkdir()
    (folder / "libtcmalloc_minimal.so.4").write_bytes(b"")
    monkeypatch.setattr(allocator, "SEARCH", (str(folder),))
    return folder / "libtcmalloc_minimal.so.4"


def test_the_default_is_tcmalloc_and_a_bad_choice_names_the_choices():
    assert allocator.choice({}) == "tcmalloc"
    assert allocator.choice({"SIMSUITE_ALLOCATOR": "JEMALLOC "}) == "jemalloc"
    with pytest.raises(ValueError, match="choose one of: system, tcmalloc, jemalloc"):
        allocator.choice({"SIMSUITE_ALLOCATOR": "mimalloc"})


def test_preload_puts_the_library_first_and_keeps_what_was_preloaded(fake_lib):
    env = allocator.preload_env(environ={"LD_PRELOAD": "/opt/other.so"})
    assert env["LD_PRELOAD"] == f"{fake_lib} /opt/other.so"
    again = allocator.preload_env(environ={"LD_PRELOAD": env["LD_PRELOAD"]})
    assert again["LD_PRELOAD"] == env["LD_PRELOAD"]  # not twice
    assert allocator.preload_env(environ={"SIMSUITE_ALLOCATOR": "system"}) == {}


def test_a_missing_library_preloads_nothing_and_says_how_to_install_it(tmp_path, monkeypatch):
    monkeypatch.setattr(allocator, "SEARCH", (str(tmp_path),))
    assert allocator.preload_env(environ={}) == {}
    line = allocator.describe({})
    assert "tcmalloc skipped" in line and "apt-get install libtcmalloc-minimal4" in line
    assert allocator.describe({"SIMSUITE_ALLOCATOR": "system"}).startswith("allocator: glibc")


def test_the_notebook_kernels_get_the_allocator(fake_lib, tmp_path, monkeypatch):
    monkeypatch.setattr(run.config, "ROOT", tmp_path)
    monkeypatch.delenv("LD_PRELOAD", raising=False)
    monkeypatch.delenv("SIMSUITE_ALLOCATOR", raising=False)
    name = run.ensure_run_kernel()
    spec = json.loads((tmp_path / ".cache" / "jupyter" / "kernels" / name / "kernel.json").read_text())
    assert spec["env"]["LD_PRELOAD"] == str(fake_lib)
    assert spec["env"]["TF_CPP_MIN_LOG_LEVEL"] == "3"


def test_the_cli_exits_2_on_a_bad_choice():
    proc = subprocess.run(
        [sys.executable, "-m", "helpers.allocator"],
        env={"SIMSUITE_ALLOCATOR": "bad", "PATH": ""},
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2 and "not an allocator" in proc.stderr


@pytest.mark.skipif(allocator.find("tcmalloc") is None, reason="libtcmalloc-minimal4 is not installed")
def test_a_child_started_with_the_environment_runs_on_tcmalloc():
    env = {"PATH": "", **allocator.preload_env("tcmalloc", environ={})}
    maps = subprocess.run(
        [sys.executable, "-c", "print(open('/proc/self/maps').read())"],
        env=env,
        capture_output=True,
        text=True,
    ).stdout
    assert "libtcmalloc_minimal.so.4" in maps
