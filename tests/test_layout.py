"""The layout rules of docs/architecture.md: the core names no study, and no module imports another
module's private names."""

import ast
import re
from pathlib import Path

HELPERS = Path(__file__).resolve().parents[1] / "helpers"
STUDY_WORDS = re.compile(r"densenet|vicreg|4_vs_9|c49|graded", re.IGNORECASE)


def _core_modules():
    return sorted(p for p in HELPERS.rglob("*.py") if "studies" not in p.relative_to(HELPERS).parts)


def _code_names_and_docstrings(path: Path) -> str:
    """The module's code, names, strings and docstrings without its comments (a comment may say where
    a number was measured, a study's benchmark included)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return (
        ast.unparse(tree)
        + "\n"
        + "\n".join(
            node.value
            for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and isinstance(node.value, str)
        )
    )


def _study_mentions() -> dict[str, list[str]]:
    found = {}
    for path in _core_modules():
        hits = sorted({m.group(0).lower() for m in STUDY_WORDS.finditer(_code_names_and_docstrings(path))})
        if hits:
            found[str(path.relative_to(HELPERS.parent))] = hits
    return found


def test_the_core_names_no_study():
    assert _study_mentions() == {}


def _helpers_modules_bound(tree) -> set[str]:
    """The names a module binds to other ``helpers`` modules (``from helpers import x``, ``import
    helpers.x as y``)."""
    bound = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module == "helpers":
            bound |= {a.asname or a.name for a in node.names}
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("helpers."):
            bound |= {a.asname for a in node.names if a.asname}  # a module imported under an alias
        if isinstance(node, ast.Import):
            bound |= {a.asname for a in node.names if a.name.startswith("helpers.") and a.asname}
    return bound


def test_no_module_imports_a_private_name_of_another():
    offenders = []
    for path in sorted(HELPERS.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        modules = _helpers_modules_bound(tree)
        offenders += [
            f"{path.relative_to(HELPERS.parent)}: {node.value.id}.{node.attr}"
            for node in ast.walk(tree)
            if isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id in modules
            and node.attr.startswith("_")
            and not node.attr.startswith("__")
        ]
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("helpers"):
                private = [
                    a.name for a in node.names if a.name.startswith("_") and not a.name.startswith("__")
                ]
                if private:
                    offenders.append(
                        f"{path.relative_to(HELPERS.parent)}: from {node.module} import {private}"
                    )
            if isinstance(node, ast.Import):
                offenders += [
                    f"{path.relative_to(HELPERS.parent)}: import {a.name}"
                    for a in node.names
                    if a.name.startswith("helpers") and any(p.startswith("_") for p in a.name.split("."))
                ]
    assert offenders == []
