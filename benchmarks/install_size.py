"""What `make setup` downloads and installs: the wheels of requirements.txt and the size of .venv.

    python -m benchmarks.install_size                      # download the pinned wheels to a temporary folder
    python -m benchmarks.install_size --wheels DIR         # measure wheels already downloaded there
                                                           # (pip download -d DIR -r requirements.txt)

Writes ``benchmarks/results/install_size.json``: the number and total size of the wheels (with their
dependencies, for this Python and platform), the largest ones, and the size of the installed virtual
environment on disk (``--venv``, default ``.venv``; it also holds what pip adds, e.g. ``pip`` itself).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

from benchmarks.common import write_results

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "results" / "install_size.json"
MB = 1_000_000


def folder_bytes(folder: Path) -> int:
    """Bytes of the regular files under ``folder`` (links not followed)."""
    return sum(p.lstat().st_size for p in folder.rglob("*") if p.is_file() and not p.is_symlink())


def measure(wheels: Path, venv: Path) -> tuple[list[dict], dict]:
    files = sorted(wheels.glob("*.whl"), key=lambda p: p.stat().st_size, reverse=True)
    if not files:
        raise SystemExit(f"no wheels in {wheels}; run `pip download -d {wheels} -r requirements.txt` first")
    rows = [{"wheel": p.name, "mb": round(p.stat().st_size / MB, 1)} for p in files]
    summary = {
        "wheels": len(files),
        "download_mb": round(sum(p.stat().st_size for p in files) / MB),
        "venv_mb": round(folder_bytes(venv) / MB) if venv.is_dir() else None,
        "python": f"{sys.version_info.major}.{sys.version_info.minor}",
    }
    return rows, summary


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--wheels", type=Path, help="folder of downloaded wheels (default: download now)")
    parser.add_argument("--venv", type=Path, default=ROOT / ".venv", help="installed environment to size")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        wheels = args.wheels
        if wheels is None:
            wheels = Path(tmp)
            cmd = [
                sys.executable,
                "-m",
                "pip",
                "download",
                "-q",
                "-d",
                str(wheels),
                "-r",
                str(ROOT / "requirements.txt"),
            ]
            subprocess.run(cmd, check=True)
        rows, summary = measure(wheels, args.venv)
    print(f"{summary['wheels']} wheels, {summary['download_mb']} MB; .venv {summary['venv_mb']} MB")
    write_results(
        args.out, "the pinned wheels of requirements.txt and the installed .venv", [summary], rows[:10]
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
